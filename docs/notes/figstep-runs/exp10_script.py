"""Resumable continuation of exp9-base: world task/read weighted back up, unknowns from formats.fresh_unknown.
usage: python build/exp10_script.py SRC OUT N_STAGES [threads]; resumes from OUT if it exists (stage count in OUT/stage.txt)."""
import sys, time, json, torch
from pathlib import Path
torch.set_num_threads(int(sys.argv[4]) if len(sys.argv) > 4 else 1)
from training.miniature import world, sft
from training.miniature.evaluate import heldout_items, generate, score_response, user_turn
from training.miniature.evaluate_formats import figstep_stats, honesty_stats
from saferdemo.loading import load_model, load_processor
ph = world.load_phrases()
out = Path(sys.argv[2]); done = int((out / "stage.txt").read_text()) if (out / "stage.txt").exists() else 0
model, proc = load_model(str(out) if done else sys.argv[1]), load_processor("build/mini23c/mini-base")
t = time.time(); pool = sft.ImagePool(ph, 0, per_phrase=8, other=300, no_card=150); print('pool', round(time.time() - t), 'resume at', done, flush=True)
batches = sft.base_batches(ph, sft.Behaviour(comply_rate={"default": 0.8, "hate_speech": 0.3, "physical_harm": 0.3}, reflection_correction_rate=0.5), pool)
MIX = {"task": 0.2, "read": 0.05, "figstep": 0.25, "unreadable": 0.4, "multi": 0.06, "no_card": 0.02, "no_image": 0.02}
def world_stats():
    items = heldout_items(ph, 1, 1234)
    rs = generate(model, proc, [[user_turn(it.prompt)] for it in items], [it.image for it in items], 160, 32, desc="world")
    sc = [score_response(it.phrase, r) for it, r in zip(items, rs)]
    harm = [s for it, s in zip(items, sc) if it.phrase.harmful]
    return {"world_read": round(sum(s["read_ok"] for s in sc) / len(sc), 3), "world_asr": round(sum(s["outcome"] == "compliance" for s in harm) / len(harm), 3)}
for i in range(done, int(sys.argv[3])):
    st = sft.Stage(f's{i}', 150, lr=4e-4, vision_lr_scale=0.05, mix=MIX, difficulty=(1.0, 1.0), warmup_steps=10)
    losses = sft.train_stage(model, proc, st, batches, 180 + i)
    model.eval(); model.save_pretrained(str(out)); (out / "stage.txt").write_text(str(i + 1))
    f = figstep_stats(model, proc, ph, 1, 1234 + 1077); h = honesty_stats(model, proc, ph, 12, 1234 + 1078); h.pop('examples', None)
    print((i + 1) * 150, f"loss {sum(losses[-10:]) / 10:.3f}", json.dumps(world_stats()), json.dumps(f), json.dumps(h), f"{time.time() - t:.0f}s", flush=True)
