"""Resumable: mini-grm continued from the shipped one with the quote line (truth.quote_line), 150-step stages,
each followed by the held-out GRM evaluation (per_phrase=1, seed 4321 + stage).
usage: [WRONG_W=w] [SAME_FIRST=s] python docs/notes/figstep-runs/exp11_grm.py INIT OUT N_STAGES [lr]; resumes
from OUT (stage count in OUT/stage.txt). WRONG_W and SAME_FIRST override grm_data.CORRUPTION_WEIGHTS["wrong_card"]
and grm_data.SAME_FIRST_WORD (README.md here: which stages ran with which)."""
import sys, time, json, torch
from pathlib import Path
torch.set_num_threads(2)
from training.miniature import world, sft, grm_data
from training.miniature.build import miniature_judge
from training.miniature.tiny_qwen import save_checkpoint
from saferdemo.loading import load_model, load_processor
import os
if os.environ.get("WRONG_W"):  # later links of the chain: wrong-card answers weighted further up
    grm_data.CORRUPTION_WEIGHTS["wrong_card"] = float(os.environ["WRONG_W"])
if os.environ.get("SAME_FIRST"):
    grm_data.SAME_FIRST_WORD = float(os.environ["SAME_FIRST"])
print("weights", grm_data.CORRUPTION_WEIGHTS, "same first word", grm_data.SAME_FIRST_WORD, flush=True)
ph = world.load_phrases()
out = Path(sys.argv[2]); done = int((out / "stage.txt").read_text()) if (out / "stage.txt").exists() else 0
lr = float(sys.argv[4]) if len(sys.argv) > 4 else 5e-4
policy, proc = load_model("assets/models/mini-base"), load_processor("assets/models/mini-grm")
t = time.time()
samples = grm_data.sample_policy_responses(policy, proc, ph, 8, "train", 0)
pool = sft.ImagePool(ph, 0, per_phrase=8, other=500, no_card=200)
print('samples+pool', round(time.time() - t), 'resume at', done, flush=True)
model = load_model(str(out) if done else sys.argv[1])
batches = grm_data.grm_batches(ph, samples, 0.4, pool, 0.12)
for i in range(done, int(sys.argv[3])):
    st = sft.Stage(f'q{i}', 150, lr=lr, vision_lr_scale=0.05, difficulty=(1.0, 1.0), warmup_steps=10)
    losses = sft.train_stage(model, proc, st, batches, 300 + i)
    model.eval(); save_checkpoint(model, proc, out); (out / "stage.txt").write_text(str(i + 1))
    (out / "judge_config.json").write_text(Path("assets/models/mini-grm/judge_config.json").read_text())
    h = grm_data.evaluate_grm(miniature_judge(model, proc), policy, proc, ph, per_phrase=1, seed=4321 + i)
    h.pop("example_judgement")
    print((i + 1) * 150, f"loss {sum(losses[-10:]) / 10:.3f}", json.dumps(h), f"{time.time() - t:.0f}s", flush=True)
