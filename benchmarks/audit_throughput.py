"""Audit throughput by concurrency: `python benchmarks/audit_throughput.py [--items 64] [--rounds 3] [--json F]`.

The same audit (the first `--items` items of the miniature held-out split, both bundled models answering, the
bundled GRM judging every response, greedy, `--max-new-tokens`) runs at each `--concurrency` (default 1, 4, 8)
two ways:

- **in process**: `run_audit` on the bundled checkpoints' batching engines, as `saferdemo audit` runs it (the
  models' workers share the CPU's cores, `share_cpu_cores`, as the CLI arranges);
- **loopback**: the same three checkpoints each behind `tools/openai_server.py` on 127.0.0.1 (a process each,
  `--server-threads` torch threads each, default 1), reached through the OpenAI engine as
  `--base-url/--aligned-url/--grm-url` reach them; the judge keeps its checkpoint's own rubric.

Variants are interleaved round by round (the order rotates each round), so a load change on the machine hits
them alike; the servers are paused (SIGSTOP) while the in-process variants run. Every run writes to a fresh
folder; its records, less the judge's timings, must equal the same way's concurrency-1 records (same seeds):
a difference is printed and makes the exit status 1. Prints items/s (dataset items, each answered by both
models and judged twice) as median, min-max and IQR over rounds, and the ratio of medians to concurrency 1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # read when tqdm is imported

import httpx  # noqa: E402
import torch  # noqa: E402

from saferdemo.app.models import DEFAULTS, ModelChoice, load_models, share_cpu_cores  # noqa: E402
from saferdemo.audit.datasets import load_dataset  # noqa: E402
from saferdemo.audit.runner import AuditConfig, run_audit  # noqa: E402
from saferdemo.engines.openai_engine import OpenAIEngine  # noqa: E402
from saferdemo.judge import GRMClient, rubric_of, sees_conversation  # noqa: E402


def comparable(record: dict) -> dict:
    """A record without what varies from run to run by design: the judge's wall-clock seconds."""
    record = json.loads(json.dumps(record))
    for judgement in [record.get("judgement"), *(record.get("span_judgements") or {}).values()]:
        if isinstance(judgement, dict):
            judgement.pop("seconds", None)
    return record


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_servers(threads: int) -> dict[str, tuple[subprocess.Popen, str]]:
    servers = {}
    for role in ("base", "aligned", "grm"):
        port = free_port()
        process = subprocess.Popen([sys.executable, str(ROOT / "tools" / "openai_server.py"), str(DEFAULTS[role]),
                                    "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   env={**os.environ, "OMP_NUM_THREADS": str(threads)})
        servers[role] = (process, f"http://127.0.0.1:{port}/v1")
    for role, (process, url) in servers.items():
        for _ in range(600):
            try:
                if httpx.get(url.removesuffix("/v1") + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None:
                raise RuntimeError(f"the {role} server exited with {process.returncode}")
            time.sleep(0.5)
        else:
            raise RuntimeError(f"the {role} server did not answer /health in 300 s")
    return servers


def pause(servers: dict, paused: bool) -> None:
    for process, _ in servers.values():
        process.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)
    time.sleep(0.1)


def remote_models(servers: dict):
    engines = {role: OpenAIEngine(url, DEFAULTS[role].name, name=role, timeout_s=120.0)
               for role, (_, url) in servers.items()}
    judge = GRMClient(engines.pop("grm"), rubric_of(DEFAULTS["grm"]), conversation=sees_conversation(DEFAULTS["grm"]))
    return engines, judge


def one_run(models, judge, items, concurrency: int, max_new_tokens: int) -> tuple[float, list]:
    with tempfile.TemporaryDirectory(prefix="audit-bench-") as out:
        config = AuditConfig("miniature", len(items), max_new_tokens=max_new_tokens, concurrency=concurrency)
        start = time.perf_counter()
        run_audit(models, judge, items, out, config)
        seconds = time.perf_counter() - start
        records = [json.loads(line) for line in Path(out, "items.jsonl").read_text().splitlines()]
    return len(items) / seconds, records


def spread(values: list[float]) -> str:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return f"{statistics.median(values):.3f} (min {min(values):.3f}, max {max(values):.3f}, IQR {q[2] - q[0]:.3f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--ways", nargs="+", choices=("in-process", "loopback"), default=["in-process", "loopback"])
    parser.add_argument("--json", type=Path, help="write every run's numbers here")
    parser.add_argument("--server-threads", type=int, default=1, help="torch threads of each server process (three "
                        "servers and this process share the cores: 2 threads each on a loaded 2-core machine made "
                        "loopback audits 30x slower, every op waiting for a descheduled thread)")
    args = parser.parse_args(argv)
    items = load_dataset("miniature", limit=args.items)
    columns, judge = load_models(ModelChoice.resolve(), "cpu")
    threads = share_cpu_cores(columns, judge) or torch.get_num_threads()  # as `saferdemo audit` does
    ways = {"in-process": ({name: column.engine for name, column in columns.items()}, judge)}
    servers = start_servers(args.server_threads) if "loopback" in args.ways else {}
    if servers:
        ways["loopback"] = remote_models(servers)
    ways = {way: ways[way] for way in args.ways}
    variants = [(way, c) for way in ways for c in args.concurrency]
    rates: dict[tuple, list[float]] = {v: [] for v in variants}
    reference: dict[str, dict] = {}
    differences = 0
    print(f"{len(items)} items x 2 models, greedy, {args.max_new_tokens} new tokens; {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f} at start; torch threads {threads} in process (each model's "
          f"worker), {args.server_threads} in each server", flush=True)
    try:
        for round_ in range(args.rounds):
            shift = round_ % len(variants)
            for way, concurrency in variants[shift:] + variants[:shift]:
                if servers:
                    pause(servers, paused=way == "in-process")
                models, grm = ways[way]
                rate, records = one_run(models, grm, items, concurrency, args.max_new_tokens)
                rates[(way, concurrency)].append(rate)
                got = {(r["id"], r["model"]): comparable(r) for r in records}
                key = way
                if concurrency == min(args.concurrency) and key not in reference:
                    reference[key] = got
                elif key in reference and got != reference[key]:
                    changed = [k for k in got if got[k] != reference[key].get(k)]
                    differences += 1
                    fields = sorted({f for k in changed for f in got[k] if got[k][f] != reference[key][k].get(f)})
                    print(f"  DIFFERENT records: {way} concurrency {concurrency}, {len(changed)} of {len(got)} "
                          f"(fields {fields}): {changed[:4]}", flush=True)
                print(f"round {round_ + 1} {way:10} concurrency {concurrency}: {rate:.3f} items/s "
                      f"(load {os.getloadavg()[0]:.2f})", flush=True)
    finally:
        for process, _ in servers.values():
            process.send_signal(signal.SIGCONT)
            process.terminate()
            process.wait(timeout=30)
    print("\n| way | concurrency | items/s, median (min, max, IQR) | x concurrency 1 | n |\n|---|---|---|---|---|")
    for way, concurrency in variants:
        values = rates[(way, concurrency)]
        base = statistics.median(rates[(way, min(args.concurrency))])
        print(f"| {way} | {concurrency} | {spread(values)} | {statistics.median(values) / base:.2f} | {len(values)} |")
    print("records: " + ("identical at every concurrency (less the judge's timings)" if not differences
                         else f"{differences} run(s) differed"))
    if args.json:
        args.json.write_text(json.dumps({f"{w}:{c}": v for (w, c), v in rates.items()}, indent=1) + "\n")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
