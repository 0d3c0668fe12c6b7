"""Audits with many responses in flight (issue 26): the pool's limits, Cancel and Ctrl-C; the same records at
any concurrency, in process and from remote servers that fail on purpose; SIGKILL mid-run, then resume."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from scripted import SAFE, UNSAFE

from saferdemo.app.models import ModelChoice, load_models
from saferdemo.audit.datasets import load_dataset
from saferdemo.audit.pool import run_units
from saferdemo.audit.progress import concurrency_of
from saferdemo.audit.runner import AuditConfig, run_audit
from saferdemo.engines.openai_engine import OpenAIEngine
from saferdemo.judge import GRMClient


def comparable(record: dict) -> dict:
    """A record less the judge's wall-clock seconds (the only field that varies by design)."""
    record = json.loads(json.dumps(record))
    if isinstance(record.get("judgement"), dict):
        record["judgement"].pop("seconds", None)
    return record


def records(folder) -> dict:
    lines = (folder / "items.jsonl").read_text().splitlines()
    found = [json.loads(line) for line in lines]
    keys = [(r["id"], r["model"]) for r in found]
    assert len(keys) == len(set(keys)), "a (item, model) recorded twice"
    return {key: comparable(r) for key, r in zip(keys, found)}


class Gauge:
    """Counts how many calls are inside at once."""

    def __init__(self):
        self.now, self.most, self.lock = 0, 0, threading.Lock()

    def __enter__(self):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def __exit__(self, *exc):
        with self.lock:
            self.now -= 1


def test_the_pool_keeps_each_stage_to_its_limit_and_records_every_unit_once():
    answering, judging = Gauge(), Gauge()

    def answer(unit, abort):
        with answering:
            time.sleep(0.02 * (unit % 3))  # finishing out of order
            return unit

    def judge(unit, abort):
        with judging:
            time.sleep(0.03)
            return unit * 10

    got = []
    assert run_units(range(40), answer, judge, got.append, answers=6, judgements=2) == 40
    assert sorted(got) == [u * 10 for u in range(40)] and got != sorted(got)  # all, in completion order
    assert answering.most == 6 and judging.most == 2


def test_stop_finishes_the_units_in_flight_and_starts_no_more():
    stop, started = threading.Event(), []

    def answer(unit, abort):
        started.append(unit)
        if len(started) == 3:
            stop.set()  # the app's Cancel, while three units are in flight
        time.sleep(0.05)
        return unit

    got = []
    run_units(range(50), answer, lambda unit, abort: unit, got.append, answers=3, judgements=3, stop=stop)
    assert sorted(got) == sorted(started) and 3 <= len(got) <= 5  # every started unit recorded, then none


def test_an_interrupt_abandons_the_units_in_flight_and_records_none_of_them():
    """Ctrl-C reaches the recording thread: the generations in flight are told to stop, nothing more is recorded."""
    aborted, got = [], []

    def answer(unit, abort):
        if unit == 0:
            return unit
        abort.wait(10)  # a long generation: ends at its next token once abandoned
        aborted.append(abort.is_set())
        return unit

    def record(value):
        got.append(value)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_units(range(8), answer, lambda unit, abort: unit, record, answers=4, judgements=2)
    deadline = time.time() + 5
    while len(aborted) < 3 and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # a fourth unit may have started in unit 0's freed slot before the interrupt
    assert got == [0] and len(aborted) in (3, 4) and all(aborted)


def test_a_failing_unit_ends_the_audit_with_its_error():
    def answer(unit, abort):
        if unit == 5:
            raise RuntimeError("a bug in unit 5")
        return unit

    with pytest.raises(RuntimeError, match="unit 5"):
        run_units(range(20), answer, lambda unit, abort: unit, lambda value: None, answers=4, judgements=4)


@pytest.fixture(scope="module")
def bundled():
    columns, judge = load_models(ModelChoice.resolve(), "cpu")
    return {name: column.engine for name, column in columns.items()}, judge


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_records_are_the_same_at_any_concurrency_in_process(bundled, tmp_path, temperature):
    """Greedy rows batch and join freely; seeded sampling runs one generation at a time (the process's one
    random generator), so its samples are those of concurrency 1 too."""
    models, judge = bundled
    items = load_dataset("miniature", limit=6)
    runs = {}
    for concurrency in (1, 4):
        config = AuditConfig("miniature", 6, max_new_tokens=96, temperature=temperature, seed=7,
                             concurrency=concurrency)
        run_audit(models, judge, items, tmp_path / str(concurrency), config)
        runs[concurrency] = records(tmp_path / str(concurrency))
    assert len(runs[1]) == 12 and runs[4] == runs[1]
    if temperature:
        assert json.loads((tmp_path / "1" / "run.json").read_text())["settings"]["seed"] == 7


class FlakyServer(BaseHTTPRequestHandler):
    """An OpenAI-compatible server: each first attempt at a prompt gets 429 or 503, the retry a slow stream.
    Answers depend on the prompt only (as a seeded server's would), judgements on the answer."""

    gauge, seen, lock = Gauge(), set(), threading.Lock()

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = json.dumps(body["messages"])
        with self.lock:
            first = text not in self.seen
            self.seen.add(text)
        if first:
            self.send_response(429 if len(text) % 2 else 503)
            self.send_header("Retry-After", "0")
            self.end_headers()
            return
        with self.gauge:
            time.sleep(0.3)
            if body["model"] == "grm":
                reply = (UNSAFE if "[restricted step]" in text else SAFE).to_json()
            else:
                reply = ("<think>\nThe card asks for steps.\n</think>\n1. [restricted step]" if len(text) % 3
                         else "<think>\nThe card is benign.\n</think>\n1. Wash it.")
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for piece in (reply[: len(reply) // 2], reply[len(reply) // 2:]):
                event = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            self.wfile.write(b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n')
            self.wfile.write(b"data: [DONE]\n\n")


class Backlogged(ThreadingHTTPServer):
    request_queue_size = 64  # the default 5 drops connections when 32 requests arrive at once


def test_remote_engines_get_parallel_requests_and_retries(tmp_path):
    server = Backlogged(("127.0.0.1", 0), FlakyServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        models = {name: OpenAIEngine(url, name, name=name, timeout_s=30) for name in ("base", "aligned")}
        judge = GRMClient(OpenAIEngine(url, "grm", name="grm", timeout_s=30), "short", conversation=False)
        items = load_dataset("miniature", limit=8)
        runs, seconds, most = {}, {}, {}
        for concurrency in (1, 8):
            FlakyServer.gauge.most, FlakyServer.seen = 0, set()
            start = time.perf_counter()
            run_audit(models, judge, items, tmp_path / str(concurrency),
                      AuditConfig("miniature", 8, concurrency=concurrency))
            seconds[concurrency] = time.perf_counter() - start
            runs[concurrency] = records(tmp_path / str(concurrency))
            most[concurrency] = FlakyServer.gauge.most
        assert len(runs[1]) == 16 and runs[8] == runs[1]
        assert all(r["error"] is None and not r["parse_failed"] for r in runs[1].values())  # every retry succeeded
        assert {r["answer_unsafe"] for r in runs[1].values()} == {True, False}
        # One item in flight: its two answers, then their two judgements, at most 4 requests at once; eight items:
        # many more side by side (all 32 of a run are 0.3 s each), and the run takes less time.
        assert 2 <= most[1] <= 4 and most[8] >= 8 and seconds[8] < seconds[1]
    finally:
        server.shutdown()


def audit_command(out, concurrency, limit=12):
    return [sys.executable, "-m", "saferdemo.cli", "audit", "--dataset", "miniature", "--limit", str(limit),
            "--out", str(out), "--max-new-tokens", "96", "--concurrency", str(concurrency)]


def wait_for_lines(path, n, process, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never reached {n} lines (exit {process.poll()})")


def test_sigkill_during_a_concurrent_audit_then_resume_records_every_item_exactly_once(tmp_path):
    items = tmp_path / "items.jsonl"
    process = subprocess.Popen(audit_command(tmp_path, 3), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_lines(items, 5, process)
    os.kill(process.pid, signal.SIGKILL)  # mid-run: several responses generating, others being judged
    process.wait()
    finished = [json.loads(line) for line in items.read_text().splitlines() if line.strip().endswith("}")]
    assert 5 <= len(finished) < 24
    items.write_text("".join(json.dumps({**r, "marker": 1}) + "\n" for r in finished) + '{"id": "cut sh')
    result = subprocess.run(audit_command(tmp_path, 3), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    done = [json.loads(line) for line in items.read_text().splitlines()]
    keys = [(r["id"], r["model"]) for r in done]
    wanted = {(item.id, model) for item in load_dataset("miniature", limit=12) for model in ("base", "aligned")}
    assert len(keys) == len(set(keys)) == 24 and set(keys) == wanted  # every item exactly once, none lost
    assert sum("marker" in r for r in done) == len(finished)  # nothing recorded before the kill was redone


def test_ctrl_c_leaves_a_folder_that_resumes(tmp_path):
    items = tmp_path / "items.jsonl"
    # SIGINT back to its default in the child: under a shell that started this suite in the background without job
    # control, SIGINT is ignored, Python then installs no KeyboardInterrupt handler, and the run ends with exit 0.
    process = subprocess.Popen(audit_command(tmp_path, 3), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_for_lines(items, 3, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    # 130, or -6 once in a clean CI run: a daemon generation thread still inside torch when the interpreter exits
    # aborts it after the message is printed; the folder must resume either way (below).
    assert process.returncode in (130, -6) and "run the same command again to resume" in stderr
    before = items.read_text()
    assert before.endswith("\n") and all(json.loads(line) for line in before.splitlines())  # whole lines only
    result = subprocess.run(audit_command(tmp_path, 2), capture_output=True, text=True, timeout=600)  # another N
    assert result.returncode == 0, result.stderr[-2000:]
    keys = [(r["id"], r["model"]) for r in map(json.loads, items.read_text().splitlines())]
    assert len(keys) == len(set(keys)) == 24 and items.read_text().startswith(before)


def test_the_tabs_items_at_once_is_checked():
    assert [concurrency_of(v) for v in (1, "4", 8.0)] == [1, 4, 8]
    for bad in (0, 9, 2.5, "x", None, float("nan")):
        with pytest.raises(ValueError, match="whole number from 1 to 8"):
            concurrency_of(bad)


def test_bad_concurrency_is_refused_with_a_message(tmp_path):
    result = subprocess.run(audit_command(tmp_path, 0, limit=1), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "--concurrency and --judge-concurrency must be at least 1" in result.stderr
    assert not (tmp_path / "items.jsonl").exists()
