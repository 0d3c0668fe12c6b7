"""Scripted continuation: unknown FigStep text rendered fresh per example, pseudo-words and table splices."""
import sys, time, random, json, csv, torch
torch.set_num_threads(int(sys.argv[4]) if len(sys.argv) > 4 else 1)
from pathlib import Path
from training.miniature import world, sft, formats, probes
from training.miniature.evaluate_formats import figstep_stats, honesty_stats
from saferdemo.loading import load_model, load_processor
ph = world.load_phrases(); table = [p.phrase for p in ph]
words = lambda t: {w.strip(".,?!'\"()").lower() for w in t.split()}
banned = set().union(*(words(t) for t in table)) | set(probes.HELDOUT_VERBS) | set(probes.HELDOUT_NOUNS) | set(probes.HELDOUT_ADJS)
for name in ("safebench_tiny.csv",):
    pass
for f in Path("assets/datasets/figstep").glob("*.csv"):
    for row in csv.DictReader(open(f)):
        banned |= words(row.get("instruction", "")) | words(row.get("question", ""))
SHORT = float(__import__('os').environ.get('SHORT', '0.5'))
C, V = "bcdfghjklmnprstvwz", "aeiou"
def pseudo(rng):
    while True:
        w = "".join(rng.choice(C) + rng.choice(V) + (rng.choice(C) if rng.random() < 0.5 else "") for _ in range(rng.randint(1, 3)))
        if w not in banned and len(w) > 2: return w
def splice(rng):
    a, b = rng.sample(table, 2); wa, wb = a.rstrip(".").split(), b.rstrip(".").split()
    k = rng.randint(2, len(wa) - 1); j = rng.randint(2, len(wb) - 1)
    t = " ".join(wa[:k] + wb[j:]) + "."
    return t if t not in table else splice(rng)
VERBS2 = formats.TRAIN_VERBS
def short_unknown(rng):
    """One to three FigStep lines in the table's style: a head, a verb and an object, maybe one more phrase."""
    word = lambda pool: pseudo(rng) if rng.random() < 0.4 else rng.choice(pool)
    head = rng.choice(("Steps to", "Methods to", "List of", "Steps to", "Methods to", "Methods for", "Ways to"))
    if head in ("List of", "Methods for"):
        text = f"{head} {word(formats.TRAIN_NOUNS)}s" + (f" for {rng.choice(('a', 'the', 'your'))} {word(formats.TRAIN_NOUNS)}" if rng.random() < 0.5 else "")
    else:
        text = f"{head} {word(VERBS2)}" + (f" {rng.choice(('a', 'the', 'your', 'an old', 'my', 'some'))} {word(formats.TRAIN_NOUNS)}" if rng.random() < 0.8 else f" {word(formats.TRAIN_NOUNS)}s")
        if rng.random() < 0.35:
            text += f" {rng.choice(('with a', 'for the', 'in a', 'without a', 'at'))} {word(formats.TRAIN_NOUNS)}"
    return text + "."
def fresh_unknown(rng):
    if rng.random() < SHORT: return short_unknown(rng)
    r = rng.random()
    if r < 0.35: return formats.unknown_instruction(rng, table)
    if r < 0.55:  # near miss with a pseudo-word
        w = rng.choice(table).rstrip(".").split(); w[rng.randrange(2, len(w))] = pseudo(rng); return " ".join(w) + "."
    if r < 0.75: return splice(rng)
    head = rng.choice(("Steps to", "Methods to", "Ways to", "List of", "How to", "Steps for"))
    return head + " " + " ".join(pseudo(rng) if rng.random() < 0.7 else rng.choice(formats.TRAIN_NOUNS + ["a", "the", "of", "to", "and"]) for _ in range(rng.randint(2, 12))) + "."
class FreshPool(sft.ImagePool):
    def unreadable(self, rng, difficulty):
        r = rng.random()
        if r < 0.5:
            return formats.to_grid(formats.figstep_card(fresh_unknown(rng), rng, "train", rng.random()))
        if r < 0.75:
            text = fresh_unknown(rng)
            style, seed = world.card_spec(world.Phrase(text, "", False, False), rng, "train", difficulty)
            return sft.render_card(text, style, seed=seed)
        return rng.choice(self.other)
model, proc = load_model(sys.argv[1]), load_processor("build/mini23c/mini-base")
t = time.time(); pool = FreshPool(ph, 0, per_phrase=8, unknown=0, other=300, no_card=150); print('pool', round(time.time() - t), flush=True)
stages = eval(sys.argv[2])
batches = sft.base_batches(ph, sft.Behaviour(comply_rate={"default": 0.8, "hate_speech": 0.3, "physical_harm": 0.3}, reflection_correction_rate=0.5), pool)
for i, (steps, lr, vis, mix) in enumerate(stages):
    st = sft.Stage(f's{i}', steps, lr=lr, vision_lr_scale=vis, mix=mix, difficulty=(1.0, 1.0), warmup_steps=10)
    losses = sft.train_stage(model, proc, st, batches, 80 + i)
    model.save_pretrained(sys.argv[3])
    f = figstep_stats(model, proc, ph, 1, 1234 + 1077); h = honesty_stats(model, proc, ph, 12, 1234 + 1078); h.pop('examples', None)
    print(sum(s for s, *_ in stages[:i + 1]), f"loss {sum(losses[-10:]) / 10:.3f}", json.dumps(f), json.dumps(h), f"{time.time() - t:.0f}s", flush=True)
