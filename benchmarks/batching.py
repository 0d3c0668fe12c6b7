"""Many users on one model: batched vs one generate per request, `python benchmarks/batching.py [--rounds 20]`.

Each round starts U requests at the same moment, one per simulated user, each on its own thread (as the
app's columns are), on the bundled mini-base with the example cards, greedy, the same forced length for
everyone (EOS is suppressed so every request makes exactly --tokens tokens). Variants are interleaved round
by round so machine noise hits them alike. Prints aggregate tokens/s and per-request latency (median and
p95 over rounds, with the spread), and the ratios the issue asks for; --json writes the raw rounds.

--busy N starts N busy-loop processes beside the benchmark for its whole run: a shared CPU (a free Space, a
laptop compiling something) where N cores are taken by someone else.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from saferdemo.app.models import DEFAULTS  # noqa: E402
from saferdemo.engines.base import GenerationParams, collect  # noqa: E402
from saferdemo.engines.batching import BatchingEngine  # noqa: E402
from saferdemo.engines.transformers_engine import TransformersEngine  # noqa: E402
from saferdemo.images import load_image  # noqa: E402
from saferdemo.prompts import user_turn  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"
CARDS = sorted(EXAMPLES.glob("*.png"))


def one_round(engine, users: int, tokens: int) -> dict:
    """U concurrent requests; returns the wall time, every request's latency and the tokens made."""
    barrier, latencies, made = threading.Barrier(users + 1), [0.0] * users, [0] * users
    params = GenerationParams(max_new_tokens=tokens)

    def user(i):
        image = load_image(CARDS[i % len(CARDS)])
        barrier.wait()
        start = time.perf_counter()
        generation = engine.start([user_turn(f"Complete the list on this card ({i}).")], [image], params,
                                  threading.Event())
        collect(generation)
        latencies[i], made[i] = time.perf_counter() - start, generation.stats.tokens

    threads = [threading.Thread(target=user, args=(i,)) for i in range(users)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return {"wall": time.perf_counter() - start, "latencies": latencies, "tokens": sum(made)}


def spin() -> None:
    """Another tenant's work: one core kept busy in pure Python (no torch, no shared memory)."""
    while True:
        pass


def start_busy(n: int) -> list[multiprocessing.Process]:
    processes = [multiprocessing.Process(target=spin, daemon=True) for _ in range(n)]
    for process in processes:
        process.start()
    return processes


def summary(rounds: list[dict]) -> dict:
    throughput = [r["tokens"] / r["wall"] for r in rounds]
    latency = [max(r["latencies"]) for r in rounds]
    q = lambda v, p: sorted(v)[min(len(v) - 1, int(p * len(v)))]  # noqa: E731
    return {"tok_s": statistics.median(throughput), "tok_s_iqr": q(throughput, 0.75) - q(throughput, 0.25),
            "p50": statistics.median(latency), "p95": q(latency, 0.95)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--users", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--busy", type=int, default=0, help="busy-loop processes beside the benchmark")
    args = parser.parse_args(argv)
    busy = start_busy(args.busy)
    plain = TransformersEngine.from_pretrained(DEFAULTS["base"], "cpu", name="base")
    plain.model.generation_config.eos_token_id = None  # forced length: every request makes --tokens tokens
    variants = {"one generate per request": plain, "batched": BatchingEngine(plain)}
    results = {(name, u): [] for name in variants for u in args.users}
    one_round(plain, 1, 8)  # warm-up
    for _ in range(args.rounds):  # interleaved: every variant and user count once per pass
        for users in args.users:
            for name, engine in variants.items():
                results[(name, users)].append(one_round(engine, users, args.tokens))
    table = {key: summary(rounds) for key, rounds in results.items()}
    base = table[("one generate per request", 1)]
    for process in busy:
        process.terminate()
    import torch
    print(f"n = {args.rounds} rounds per row, {args.tokens} tokens per request, mini-base on CPU, "
          f"{torch.get_num_threads()} torch threads, {args.busy} busy-loop processes beside it\n")
    print("| variant | users | aggregate tok/s (median, IQR) | × 1 user | slowest request p50 / p95 (s) | p95 × 1 user |")
    print("|---|---|---|---|---|---|")
    for (name, users), s in table.items():
        print(f"| {name} | {users} | {s['tok_s']:.0f} ± {s['tok_s_iqr']:.0f} | {s['tok_s'] / base['tok_s']:.2f} "
              f"| {s['p50']:.2f} / {s['p95']:.2f} | {s['p95'] / base['p95']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({f"{n}|{u}": r for (n, u), r in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
