"""A shared CPU: how batching and plain generate degrade when other processes take cores,
`python benchmarks/busy_cpu.py [--repeats 4] [--rounds 5]`.

Runs benchmarks/batching.py (one user and eight, plain generate and batched) in child processes, because
OpenMP's wait policy is read once when torch loads: OpenMP's default (worker threads spin between ops) against
saferdemo's (`OMP_WAIT_POLICY=PASSIVE`, set when saferdemo is imported), each on an idle CPU and with --busy
busy-loop processes beside it. The variants take turns, --repeats times, so machine noise hits them alike; every
round of every repeat is one sample (n = repeats x rounds). Prints tokens/s (median and IQR) and the ratios the
issue asks for: batched against plain, and each against the idle CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BATCHING = Path(__file__).resolve().parent / "batching.py"
POLICIES = {"spin (OpenMP's default)": {"OMP_WAIT_POLICY": "ACTIVE"},
            "short spin (GOMP_SPINCOUNT=10000)": {"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": "10000"},
            "passive (saferdemo's)": {"OMP_WAIT_POLICY": "PASSIVE"}}
ROWS = [("one generate per request", 1), ("batched", 1), ("batched", 8)]


def run_child(policy: dict[str, str], busy: int, rounds: int) -> dict[str, list[float]]:
    """One batching.py run; returns tokens/s per round for each row."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "rounds.json"
        env = dict(os.environ, **policy)
        subprocess.run([sys.executable, str(BATCHING), "--rounds", str(rounds), "--users", "1", "8",
                        "--busy", str(busy), "--json", str(out)], env=env, check=True, capture_output=True)
        rounds_by_row = json.loads(out.read_text())
    return {key: [r["tokens"] / r["wall"] for r in value] for key, value in rounds_by_row.items()}


def iqr(values: list[float]) -> float:
    q = sorted(values)
    return q[min(len(q) - 1, int(0.75 * len(q)))] - q[int(0.25 * len(q))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--busy", type=int, default=1, help="busy-loop processes in the busy variant")
    args = parser.parse_args(argv)
    samples: dict[tuple, list[float]] = {}
    for _ in range(args.repeats):
        for label, policy in POLICIES.items():
            for busy in (0, args.busy):
                for key, values in run_child(policy, busy, args.rounds).items():
                    samples.setdefault((label, busy, key), []).extend(values)
    median = {key: statistics.median(values) for key, values in samples.items()}
    print(f"n = {args.repeats * args.rounds} rounds per cell, 64 tokens per request, mini-base on CPU, "
          f"{os.cpu_count()} cores; busy = {args.busy} busy-loop processes beside it\n")
    print("| wait policy | CPU | plain, 1 user (tok/s) | batched, 1 user | batched, 8 users | batched 1 / plain 1 "
          "| batched 8 / plain 1 |")
    print("|---|---|---|---|---|---|---|")
    for label in POLICIES:
        for busy in (0, args.busy):
            cells = [(median[(label, busy, f"{name}|{users}")], iqr(samples[(label, busy, f"{name}|{users}")]))
                     for name, users in ROWS]
            plain = cells[0][0]
            print(f"| {label} | {'idle' if busy == 0 else f'{busy} core(s) taken'} | "
                  + " | ".join(f"{m:.0f} ± {q:.0f}" for m, q in cells)
                  + f" | {cells[1][0] / plain:.2f} | {cells[2][0] / plain:.2f} |")
    print("\nAgainst the idle CPU (same policy): " + "; ".join(
        f"{label}: plain {median[(label, args.busy, 'one generate per request|1')] / median[(label, 0, 'one generate per request|1')]:.2f}x, "
        f"batched 8 users {median[(label, args.busy, 'batched|8')] / median[(label, 0, 'batched|8')]:.2f}x"
        for label in POLICIES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
