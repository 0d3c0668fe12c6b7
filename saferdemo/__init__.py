"""saferdemo: see and train safety-aware reasoning in vision-language models.

The core library shared by the app (`app.py`) and the training pipeline (`training/`); it imports neither.
At the top, the ideas everything else uses:

- formats: `prompts` (the conversation format), `segments` (the one parser of a response into think,
  reflection and answer), `cards` (FigStep-style typographic cards), `images` (opening uploads safely);
- judging: `judgement` (the GRM's schema, its parser and the reward), `judge` (the one judge client and its
  failure policy);
- `safety_loop`: draft → judge → reflect → corrected → judge, for one column;
- `loading`: checkpoints and processors (full or LoRA, with or without torchvision).

Folders: `engines/` (generation backends behind one streaming interface), `app/` (the Gradio app),
`audit/` (the safety benchmark). `cli` is the `saferdemo` command.
"""

import os

__version__ = "0.1.0"

# Before torch loads OpenMP (so an import of saferdemo first is enough): its worker threads sleep between ops
# instead of spinning. On a shared CPU, spinning workers take the free core from the app's own threads, which hand
# every token over to each other. Measured on 2 cores with one taken by another process (benchmarks/busy_cpu.py,
# README): spinning, batched one user made 0.77x plain generate's tokens/s and eight users 355 tok/s; passive, 0.95x
# and 964 tok/s.
# An explicit OMP_WAIT_POLICY is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
