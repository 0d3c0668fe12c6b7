"""Many users through the real server: `python benchmarks/server_load.py [--rounds 20] [--json out.json]`.

Starts the app on loopback with the bundled models, each server in its own process (`saferdemo serve`, as
deployed: clients in the server's interpreter would compete with its model workers for the GIL): once with
batching (engines/batching.py, 8 turns at once), once without (one `generate` per request, 2 turns at once:
the settings each mode ships with) and, with --reference-grm, once more with another judge. It drives them
only through the public API, as a program would: U `gradio_client` users, each in its own session, send an
example card to `/compare` at the same moment (greedy, the base model's safety loop on, so turns draft, are
judged, and some reflect). Variants are interleaved round by round so machine noise hits them alike; the
servers not being measured are paused (SIGSTOP): an idle Gradio server's event loop still wakes every few
milliseconds and would take cores from the measured one. The users' clients run as threads of this process
and share the machine's two cores with the server (in processes of their own, they took both cores at once
at a round's start and made 8-user turns 1.3x slower).

Per variant: aggregate tokens/s (every generated token of both columns, judge excluded, over the round's
wall time), the slowest turn's latency (p50 / p95 over rounds), the time to the first streamed update, and
the judge's share of a column's time. One more variant runs the same turn in this process without a server
(`Comparison.run` on batching engines, one user): its first event is the in-process first token that the
server's first update is compared with. The one-generate-per-request server runs 1 and 8 users only (it is
the slow reference). Prints a table; --json writes the raw rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import ssl
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402

from saferdemo.app.controller import turn_settings  # noqa: E402
from saferdemo.app.models import ModelChoice, load_models  # noqa: E402
from saferdemo.app.session import Comparison  # noqa: E402
from saferdemo.images import load_image  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"
CARDS = sorted(EXAMPLES.glob("*.png"))
SETTINGS = (0.0, 1.0, 128, 0.5, True, True)  # temperature, top-p, max new tokens, threshold, loops base/aligned
# gradio_client opens a new httpx client for every request (upload, join, stream), and each loads the CA bundle:
# 35 ms measured, three times a turn, on this process's GIL for every user (one user's first update: 0.22 s
# with it, 0.14 s without). The users share one TLS context, as a browser keeps one, passed where gradio_client
# hands `ssl_verify` to httpx's `verify`: what is measured is the server, not the client library's start-up.
TLS = ssl.create_default_context()


def start_server(batching: bool, port: int, grm: str | None = None) -> tuple[subprocess.Popen, str]:
    """`saferdemo serve` in its own process, as a deployment runs it: the clients' threads here must not
    share the server's interpreter (its GIL) with the model workers."""
    command = [sys.executable, "-m", "saferdemo.cli", "serve", "--port", str(port), "--device", "cpu"]
    command += (["--no-batching"] if not batching else []) + (["--grm", grm] if grm else [])
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(600):
        try:
            if httpx.get(url + "health", timeout=1).status_code == 200:
                return server, url
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            raise RuntimeError(f"{' '.join(command)} exited with {server.returncode}")
        time.sleep(0.5)
    server.kill()
    raise RuntimeError(f"{' '.join(command)} did not answer /health in 300 s")


def only_running(servers: dict, name: str) -> None:
    """Pause every server but `name` (none runs for the in-process variant)."""
    for other, (server, _) in servers.items():
        server.send_signal(signal.SIGCONT if other == name else signal.SIGSTOP)
    time.sleep(0.1)  # let a resumed server's event loop catch up on its timers


PROMPT = "Complete the list on this card, step by step."


class InProcess:
    """The same turn without a server: both columns through `Comparison.run`, as the server's handler runs it."""

    def __init__(self):
        columns, self.judge = load_models(ModelChoice.resolve(batching=True), "cpu")
        self.columns = list(columns.values())
        self.params, self.loops = turn_settings(*SETTINGS)  # as the server's handler reads the same settings


def in_process_turn(server: InProcess, card: Path, record: dict) -> None:
    start, first, last = time.perf_counter(), None, {}
    for name, turn in Comparison(server.columns, server.judge).run([], PROMPT, [load_image(card)], server.params,
                                                                  None, server.loops):
        first = first or time.perf_counter() - start
        last[name] = turn
    _record(record, start, first, {name: turn.as_dict() for name, turn in last.items()})


def one_turn(client, card: Path, record: dict) -> None:
    if isinstance(client, InProcess):
        return in_process_turn(client, card, record)
    message = {"text": PROMPT, "files": [handle_file(str(card))]}
    start = time.perf_counter()
    job = client.submit(message, *SETTINGS, api_name="/compare")
    first = None
    for _ in job:
        first = first or time.perf_counter() - start
    _record(record, start, first, job.outputs()[-1])


def _record(record: dict, start: float, first: float | None, turns: dict) -> None:
    """One turn's measurements from its final {column: Turn.as_dict()}."""
    latency = time.perf_counter() - start
    record.update(latency=latency, first_update=first or latency, tokens=sum(_tokens(t) for t in turns.values()),
                  judge_share=statistics.mean(_judge_share(t) for t in turns.values()))


def _tokens(turn: dict) -> int:
    return sum((t or {}).get("tokens", 0) for t in turn["timings"].values())


def _judge_share(turn: dict) -> float:
    """Judge seconds over the column's seconds (generation plus judging) in this turn."""
    generation = sum((t or {}).get("seconds", 0.0) for t in turn["timings"].values())
    judging = sum((j or {}).get("seconds", 0.0) for j in (turn["draft_judgement"], turn["final_judgement"]))
    return judging / max(1e-9, generation + judging)


def one_round(clients: list[Client]) -> dict:
    records = [{} for _ in clients]
    threads = [threading.Thread(target=one_turn, args=(c, CARDS[i % len(CARDS)], records[i]))
               for i, c in enumerate(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {"wall": wall, "turns": records}


def _q(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


def summary(rounds: list[dict]) -> dict:
    throughput = [sum(t["tokens"] for t in r["turns"]) / r["wall"] for r in rounds]
    slowest = [max(t["latency"] for t in r["turns"]) for r in rounds]
    first = [t["first_update"] for r in rounds for t in r["turns"]]
    share = [t["judge_share"] for r in rounds for t in r["turns"]]
    return {"tok_s": statistics.median(throughput), "tok_s_iqr": _q(throughput, 0.75) - _q(throughput, 0.25),
            "p50": statistics.median(slowest), "p95": _q(slowest, 0.95), "first_p50": statistics.median(first),
            "first_iqr": _q(first, 0.75) - _q(first, 0.25),
            "judge_share": statistics.median(share)}


FLOOD_SETTINGS = (0.0, 1.0, 1024, 0.5, True, True)  # long turns, both loops on


def flood_round(url: str, victim: Client, streams: int) -> dict:
    """One client opens `streams` long /compare streams at once; a second later another client sends one card.
    Returns the victim's record and how many of the flood's streams were refused (the per-session cap)."""
    hostile = Client(url, verbose=False, ssl_verify=TLS)
    message = {"text": PROMPT, "files": [handle_file(str(CARDS[0]))]}
    jobs = [hostile.submit(message, *FLOOD_SETTINGS, api_name="/compare") for _ in range(streams)]
    time.sleep(1.0)  # the flood is running (or refused) by now
    record = {}
    one_turn(victim, CARDS[1 % len(CARDS)], record)
    refused = sum(1 for job in jobs if job.done() and _failed(job))
    for job in jobs:
        job.cancel()
    deadline = time.time() + 120
    while not all(job.done() for job in jobs) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # cancelled streams end their generation at the next token
    return record | {"refused": refused}


def _failed(job) -> bool:
    try:
        return job.exception(timeout=0) is not None
    except Exception:  # cancelled
        return False


def flood(rounds: int, streams: int) -> int:
    """Item 7 of issue 25: another client's first update under `streams` streams from one client, against its
    first update on an idle server, interleaved round by round."""
    server, url = start_server(True, 7873)
    try:
        victim = Client(url, verbose=False, ssl_verify=TLS)
        one_round([victim])  # warm-up
        alone, flooded, refused = [], [], []
        for _ in range(rounds):
            record = {}
            one_turn(victim, CARDS[1 % len(CARDS)], record)
            alone.append(record["first_update"])
            record = flood_round(url, victim, streams)
            flooded.append(record["first_update"])
            refused.append(record["refused"])
    finally:
        server.terminate()
        server.wait(30)
    base = statistics.median(alone)
    print(f"n = {rounds} interleaved rounds; one client opens {streams} /compare streams (max 1024 new tokens, both "
          "loops on), another sends one card a second later; bundled models on CPU, batched server\n")
    print("| victim's first update | median ± IQR (s) | × unloaded | flood streams refused (median) |")
    print("|---|---|---|---|")
    print(f"| unloaded | {base:.2f} ± {_q(alone, 0.75) - _q(alone, 0.25):.2f} | 1.00 | - |")
    print(f"| under {streams} streams from one client | {statistics.median(flooded):.2f} ± "
          f"{_q(flooded, 0.75) - _q(flooded, 0.25):.2f} | {statistics.median(flooded) / base:.2f} | "
          f"{statistics.median(refused):.0f} of {streams} |")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--users", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--reference-users", type=int, nargs="+", default=[1, 8],
                        help="user counts for the one-generate-per-request server")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--reference-grm", type=Path,
                        help="another judge checkpoint (e.g. the one before) for a batched server with one user")
    parser.add_argument("--flood", type=int, default=None, metavar="N",
                        help="instead: another client's first update under N streams from one client (issue 25)")
    args = parser.parse_args(argv)
    if args.flood:
        return flood(args.rounds, args.flood)
    servers = {"batched": start_server(True, 7870), "one generate per request": start_server(False, 7871)}
    users_of = {"batched": args.users, "one generate per request": args.reference_users, "in process, no server": [1]}
    if args.reference_grm:
        reference = f"batched, judge {args.reference_grm.name}"
        servers[reference], users_of[reference] = start_server(True, 7872, str(args.reference_grm)), [1]
    try:
        clients = {name: [Client(url, verbose=False, ssl_verify=TLS) for _ in range(max(users_of[name]))]
                   for name, (_, url) in servers.items()}
        clients["in process, no server"] = [InProcess()]
        for name in clients:  # warm-up: load, compile, first-request costs
            only_running(servers, name)
            one_round(clients[name][:1])
        results = {(name, u): [] for name in clients for u in users_of[name]}
        for _ in range(args.rounds):  # interleaved: every variant and user count once per round
            for users in sorted(set(args.users) | set(args.reference_users)):
                for name in clients:
                    if users in users_of[name]:
                        only_running(servers, name)
                        results[(name, users)].append(one_round(clients[name][:users]))
    finally:
        for server, _ in servers.values():
            server.send_signal(signal.SIGCONT)
            server.terminate()
            server.wait(30)
    table = {key: summary(rounds) for key, rounds in results.items()}
    base = table[("batched", 1)]
    print(f"n = {args.rounds} rounds per row; each user sends one card to /compare (both columns, judge, "
          "base loop on); bundled models on CPU; ratios against one user of the batched server\n")
    print("| variant | users | aggregate tok/s (median ± IQR) | × 1 user | slowest turn p50 / p95 (s) | p95 × 1 user "
          "| first update (median ± IQR, s) | judge share |")
    print("|---|---|---|---|---|---|---|---|")
    for (name, users), s in table.items():
        print(f"| {name} | {users} | {s['tok_s']:.0f} ± {s['tok_s_iqr']:.0f} | {s['tok_s'] / base['tok_s']:.2f} "
              f"| {s['p50']:.2f} / {s['p95']:.2f} | {s['p95'] / base['p95']:.2f} | {s['first_p50']:.2f} ± {s['first_iqr']:.2f} "
              f"| {100 * s['judge_share']:.0f}% |")
    own = table[("in process, no server", 1)]["first_p50"]
    print(f"\nfirst update through the server, one user: {table[('batched', 1)]['first_p50'] - own:+.2f} s over the "
          "in-process first event")
    if args.json:
        args.json.write_text(json.dumps({f"{n}|{u}": r for (n, u), r in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
