"""`saferdemo audit` on the miniature models: outputs, and resuming after a kill without redoing work."""

import html
import json
import os
import signal
import subprocess
import sys
import time

from saferdemo.audit.datasets import load_dataset


def audit(out, limit=10):
    return [sys.executable, "-m", "saferdemo.cli", "audit", "--dataset", "miniature", "--limit", str(limit),
            "--out", str(out), "--max-new-tokens", "128"]


def lines(path):
    return path.read_text().splitlines() if path.exists() else []


def test_audit_writes_all_outputs(tmp_path):
    result = subprocess.run(audit(tmp_path), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in lines(tmp_path / "items.jsonl")]
    assert len(records) == 20 and {r["model"] for r in records} == {"base", "aligned"}
    summary = json.loads((tmp_path / "summary.json").read_text())
    for name in ("base", "aligned"):
        m = summary["models"][name]
        assert m["n_items"] == 10 and m["asr"]["n"] + m["over_refusal"]["n"] + m["parse_failures"] == 10
    assert summary["paired"]["answer_unsafe"]["n_pairs"] > 0
    assert summary["models"]["base"]["asr"]["rate"] > summary["models"]["aligned"]["asr"]["rate"]
    report = (tmp_path / "report.html").read_text()
    assert "plotly" in report and "Definitions" in report and "McNemar" in report
    assert "<td>max new tokens</td><td>128</td>" in report  # readable settings, not a Python dict
    items = report.split("<h2>Every item</h2>")[1]
    assert items.count('src="data:image/png;base64,') == 10 and html.escape(records[0]["prompt"]) in items  # every item
    assert "small)" in report  # categories with tiny n are marked


def test_killed_audit_resumes_without_redoing_items(tmp_path):
    items = tmp_path / "items.jsonl"
    process = subprocess.Popen(audit(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while len(lines(items)) < 6 and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = [json.loads(line) for line in lines(items) if line.strip().endswith("}")]
    assert 6 <= len(finished) < 20
    # Mark the finished records: a redone item would come back without the mark.
    items.write_text("".join(json.dumps({**r, "marker": 1}) + "\n" for r in finished) + '{"id": "half-writ')
    result = subprocess.run(audit(tmp_path), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in lines(items)]
    keys = [(r["id"], r["model"]) for r in records]
    assert len(records) == 20 and len(set(keys)) == 20  # complete, no duplicates, the half line dropped
    assert sum("marker" in r for r in records) == len(finished)
    assert {r["id"] for r in records} == {item.id for item in load_dataset("miniature", limit=10)}


def test_resuming_with_other_settings_is_refused(tmp_path):
    first = subprocess.run(audit(tmp_path, limit=2), capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    before = lines(tmp_path / "items.jsonl")
    other = subprocess.run(audit(tmp_path, limit=2) + ["--temperature", "0.7"], capture_output=True, text=True,
                           timeout=600)
    assert other.returncode == 2 and "other settings (settings.temperature)" in other.stderr
    model = subprocess.run(audit(tmp_path, limit=2) + ["--base", "assets/models/mini-grm"], capture_output=True,
                           text=True, timeout=600)
    assert model.returncode == 2 and "models.base" in model.stderr
    assert lines(tmp_path / "items.jsonl") == before  # nothing was added or lost
    more = subprocess.run(audit(tmp_path, limit=3), capture_output=True, text=True, timeout=600)
    assert more.returncode == 0 and len(lines(tmp_path / "items.jsonl")) == 6  # a larger limit resumes


def test_bad_jsonl_rows_are_named_and_skipped(tmp_path):
    rows = [{"card": {"text": "Steps to clean a window."}, "prompt": "p", "category": "c", "harmful": False},
            {"card": {"text": "x"}, "prompt": "p", "category": "c", "harmful": "false"},
            {"card": {"text": "x"}, "prompt": "p", "harmful": True}]
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    problems = []
    items = load_dataset(str(path), problems=problems)
    assert [i.prompt for i in items] == ["p"] and len(problems) == 3
    assert "items.jsonl:2: harmful must be true or false, got 'false'" in problems[0]
    assert "items.jsonl:3: missing category" in problems[1] and "items.jsonl:4:" in problems[2]
