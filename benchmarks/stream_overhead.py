"""What streaming and the side-by-side session cost: `python benchmarks/stream_overhead.py [--repeats 5]`.

Rows: plain `model.generate` (no streamer), the streaming engine (thread + TextIteratorStreamer + stop
criterion), one column's full safety-loop turn (draft + GRM), and both columns at once versus one after
the other. Prints a table of medians; run it on the machine you care about (defaults: bundled models, CPU).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from saferdemo.app.models import DEFAULTS
from saferdemo.app.session import Column, Comparison
from saferdemo.engines.base import GenerationParams, collect
from saferdemo.engines.transformers_engine import TransformersEngine
from saferdemo.images import load_image
from saferdemo.judge import GRMClient, rubric_of
from saferdemo.prompts import user_turn
from saferdemo.safety_loop import LoopConfig, run_turn

CARD = Path(__file__).resolve().parent.parent / "assets" / "examples" / "3-household.png"
PROMPT = "Complete the list on this card, step by step."


def timed(fn, repeats: int) -> tuple[float, int]:
    seconds, tokens = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        tokens = fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default=None)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()
    engines = {role: TransformersEngine.from_pretrained(DEFAULTS[role], args.device, name=role) for role in DEFAULTS}
    judge = GRMClient(engines["grm"], rubric_of(DEFAULTS["grm"]))
    image, messages = load_image(CARD), [user_turn(PROMPT)]
    params = GenerationParams(max_new_tokens=args.max_new_tokens)
    base = engines["base"]

    def plain():
        inputs = base.processor(text=[base.prompt_text(messages)], images=[image], return_tensors="pt").to(base.model.device)
        with torch.inference_mode():
            out = base.model.generate(**inputs, max_new_tokens=params.max_new_tokens, do_sample=False)
        return out.shape[1] - inputs["input_ids"].shape[1]

    def streamed():
        generation = base.start(messages, [image], params, threading.Event())
        collect(generation)
        return generation.stats.tokens

    def one_column():
        turns = list(run_turn(base, judge, messages, [image], PROMPT, params, LoopConfig(enabled=False), threading.Event()))
        return turns[-1].draft_stats.tokens

    columns = [Column("base", engines["base"], LoopConfig(False)), Column("aligned", engines["aligned"], LoopConfig(False))]

    def side_by_side():
        for _ in Comparison(columns, judge).run([], PROMPT, [image], params):
            pass
        return 0

    def one_after_the_other():
        for column in columns:
            for _ in Comparison([column], judge).run([], PROMPT, [image], params):
                pass
        return 0

    rows = [("model.generate, no streaming", plain), ("engine: streamed (thread + streamer)", streamed),
            ("one column: draft + GRM", one_column), ("two columns, concurrently", side_by_side),
            ("two columns, one after the other", one_after_the_other)]
    timed(streamed, 1)  # warm-up
    print(f"device: {base.model.device}, torch threads: {torch.get_num_threads()}, repeats: {args.repeats}\n")
    print(f"| {'what':<38} | median s | tokens | tokens/s |")
    print(f"|{'-' * 40}|----------|--------|----------|")
    for label, fn in rows:
        seconds, tokens = timed(fn, args.repeats)
        rate = f"{tokens / seconds:8.1f}" if tokens else "       -"
        print(f"| {label:<38} | {seconds:8.3f} | {tokens or '-':>6} | {rate} |")


if __name__ == "__main__":
    main()
