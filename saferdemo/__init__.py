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

__version__ = "0.1.0"
