"""What streaming costs: `python benchmarks/stream_overhead.py [--rounds 20] [--tokens 128] [--json out.json]`.

Variants, interleaved round by round (each round runs every variant once, in a rotated order) so machine
noise hits them alike, on mini-base with an example card, greedy, every request forced to exactly --tokens
new tokens (end of sequence suppressed):

- `model.generate` on a worker thread, no streamer: the reference;
- the streaming engine (`TransformersEngine.start`: its own thread, a streamer, the stop criterion);
- the batching engine with one user (`BatchingEngine`: the app's default worker).

Everything runs on a worker thread, as the app runs it (the main thread's OpenMP behaviour differs). Prints
tokens/s and time to first token (median, IQR) and the ratio to `generate`; --json writes the raw rounds.
`model.generate`'s first token is timed as a one-token generate, also on a worker thread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from saferdemo.app.models import DEFAULTS  # noqa: E402
from saferdemo.engines.base import GenerationParams, collect  # noqa: E402
from saferdemo.engines.batching import BatchingEngine  # noqa: E402
from saferdemo.engines.transformers_engine import TransformersEngine  # noqa: E402
from saferdemo.images import load_image  # noqa: E402
from saferdemo.prompts import user_turn  # noqa: E402

CARD = Path(__file__).resolve().parent.parent / "assets" / "examples" / "3-household.png"
MESSAGES = [user_turn("Complete the list on this card, step by step.")]


def on_worker(fn):
    """fn() run on a fresh thread, as the app's generation runs; returns its result."""
    box = {}
    thread = threading.Thread(target=lambda: box.update(result=fn()))
    thread.start()
    thread.join()
    return box["result"]


def plain_generate(engine: TransformersEngine, image, tokens: int) -> dict:
    def run():
        inputs = engine._inputs([engine.prompt_text(MESSAGES)], [image])
        start = time.perf_counter()
        with torch.inference_mode():
            engine.model.generate(**inputs, max_new_tokens=1, do_sample=False)
        first = time.perf_counter() - start
        start = time.perf_counter()
        with torch.inference_mode():
            out = engine.model.generate(**inputs, max_new_tokens=tokens, do_sample=False)
        seconds = time.perf_counter() - start
        return {"ttft_s": first, "tok_s": (out.shape[1] - inputs["input_ids"].shape[1]) / seconds}

    return on_worker(run)


def streamed(engine, image, tokens: int) -> dict:
    def run():
        start = time.perf_counter()
        generation = engine.start(MESSAGES, [image], GenerationParams(max_new_tokens=tokens), threading.Event())
        collect(generation)
        return {"ttft_s": generation.stats.first_token_at - start,
                "tok_s": generation.stats.tokens / (time.perf_counter() - start)}

    return on_worker(run)


def _stats(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=4)
    return statistics.median(values), q[2] - q[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    engine = TransformersEngine.from_pretrained(DEFAULTS["base"], "cpu", name="base")
    engine.model.generation_config.eos_token_id = None  # forced length: every variant makes --tokens tokens
    image = load_image(CARD)
    variants = {"model.generate (worker thread, no streamer)": lambda: plain_generate(engine, image, args.tokens),
                "streaming engine (TransformersEngine.start)": lambda: streamed(engine, image, args.tokens),
                "batching engine, one user (BatchingEngine)": lambda: streamed(batching, image, args.tokens)}
    batching = BatchingEngine(engine)
    for run in variants.values():  # warm-up
        run()
    rounds = {name: [] for name in variants}
    names = list(variants)
    for i in range(args.rounds):
        for name in names[i % len(names):] + names[: i % len(names)]:
            rounds[name].append(variants[name]())
    reference = statistics.median(r["tok_s"] for r in rounds[names[0]])
    print(f"n = {args.rounds} interleaved rounds, {args.tokens} forced new tokens, mini-base on CPU, "
          f"torch threads {torch.get_num_threads()}\n")
    print("| variant | tok/s (median ± IQR) | × generate | time to first token (median ± IQR, ms) |")
    print("|---|---|---|---|")
    for name, records in rounds.items():
        rate, rate_iqr = _stats([r["tok_s"] for r in records])
        first, first_iqr = _stats([1000 * r["ttft_s"] for r in records])
        print(f"| {name} | {rate:.0f} ± {rate_iqr:.0f} | {rate / reference:.2f} | {first:.0f} ± {first_iqr:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(rounds, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
