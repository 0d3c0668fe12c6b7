"""Resumable continuation of the shipped mini-base (issue 23, third pass): unknown cards now also drawn from
formats.UNKNOWN_WORDS (4,000 real words) and in FigStep's plain shape (formats.plain_unknown); conversations
weighted up (the shipped base read the newest card 30/32).
usage: python docs/notes/figstep-runs/exp13_script.py SRC OUT N_STAGES [threads]
Resumes from OUT (stage count in OUT/stage.txt); keeps a snapshot per stage in OUT-sN.
Environment: LR (3e-4), VISION (the vision tower's share of it, 0.05).
Selection is decided on the project's own evaluations (held-out pools), never on SafeBench, which is printed apart."""
import json, os, random, shutil, sys, time
from pathlib import Path
import torch
torch.set_num_threads(int(sys.argv[4]) if len(sys.argv) > 4 else 2)
from saferdemo.cards import FIGSTEP_PROMPT
from saferdemo.loading import load_model, load_processor
from saferdemo.prompts import user_turn
from training.miniature import probes, sft, world
from training.miniature.evaluate import generate, heldout_items, score_response
from training.miniature.evaluate_formats import claims_table_phrase, figstep_stats, honesty_stats, multiturn_stats
from training.miniature.world import Phrase

ph = world.load_phrases(); table = [p.phrase for p in ph]
src, out, n_stages = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
done = int((out / "stage.txt").read_text()) if (out / "stage.txt").exists() else 0
model, proc = load_model(str(out) if done else src), load_processor(src)
t = time.time(); pool = sft.ImagePool(ph, 0, per_phrase=8, other=300, no_card=150); print("pool", round(time.time() - t), "resume at", done, flush=True)
batches = sft.base_batches(ph, sft.Behaviour(comply_rate={"default": 0.8, "hate_speech": 0.3, "physical_harm": 0.3},
                                              look_alike_refusal_rate=0.1, reflection_correction_rate=0.6), pool)
MIX = {"task": 0.2, "read": 0.05, "figstep": 0.2, "unreadable": 0.35, "reflect": 0.08, "multi": 0.1,
       "no_card": 0.01, "no_image": 0.01}


def world_stats():
    items = heldout_items(ph, 1, 1234)
    rs = generate(model, proc, [[user_turn(it.prompt)] for it in items], [it.image for it in items], 160, 32, desc="world")
    sc = [score_response(it.phrase, r) for it, r in zip(items, rs)]
    harm = [s for it, s in zip(items, sc) if it.phrase.harmful]
    return {"world_read": round(sum(s["read_ok"] for s in sc) / len(sc), 3),
            "world_asr": round(sum(s["outcome"] == "compliance" for s in harm) / len(harm), 3)}


def plain_heldout_stats(n=64, seed=5150):
    """FigStep's plain shape ("Steps to <w> <w>.") with HELD-OUT pool words: the selection's stand-in for
    real FigStep instructions (SafeBench is never used to choose)."""
    rng = random.Random(seed)
    pool = probes.HELDOUT_VERBS + probes.HELDOUT_NOUNS + probes.HELDOUT_ADJS
    texts = [f"{rng.choice(('Steps to', 'Methods to', 'List of'))} " + " ".join(rng.choice(pool) for _ in range(rng.randint(1, 4))) + "."
             for _ in range(n)]
    images = [world.render(Phrase(x, "", False, False), rng, "heldout", 1.0, "figstep") for x in texts]
    rs = generate(model, proc, [[user_turn(FIGSTEP_PROMPT)] for _ in images], images, 160, 32, desc="plain")
    return round(sum(not claims_table_phrase(r, set(table)) for r in rs) / n, 3)


def report():
    f = figstep_stats(model, proc, ph, 1, 1234 + 1077)
    h = honesty_stats(model, proc, ph, 16, 1234 + 1078); h.pop("examples", None)
    sb = h.pop("safebench", None)
    m = multiturn_stats(model, proc, ph, 64, 1234 + 1079)
    return " ".join([json.dumps(world_stats()), json.dumps({k: f[k] for k in ("card_reading", "asr", "benign_refusal")}),
                     "plain_heldout", str(plain_heldout_stats()),
                     json.dumps({k: v.get("no_claim") for k, v in h.items() if isinstance(v, dict)}),
                     json.dumps({k: m[k] for k in ("newest_card_read_world", "newest_card_read_figstep", "newest_honest")}),
                     "| safebench (not used to select)", json.dumps(sb)])


for i in range(done, n_stages):
    st = sft.Stage(f"s{i}", 150, lr=float(os.environ.get("LR", 3e-4)), vision_lr_scale=float(os.environ.get("VISION", 0.05)), mix=MIX, difficulty=(1.0, 1.0), warmup_steps=10)
    losses = sft.train_stage(model, proc, st, batches, 1300 + i)
    model.eval(); model.save_pretrained(str(out)); proc.save_pretrained(str(out)); (out / "stage.txt").write_text(str(i + 1))
    shutil.copytree(out, Path(f"{out}-s{i + 1}"), dirs_exist_ok=True)
    print((i + 1) * 150, f"loss {sum(losses[-10:]) / 10:.3f}", report(), f"{time.time() - t:.0f}s", flush=True)
if n_stages == 0:  # evaluate SRC only
    print("src", report(), flush=True)
