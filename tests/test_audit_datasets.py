"""Hostile rows in an audit JSONL are named and skipped, never abort the run or take the machine's memory
(issue 25, item 12: an unknown card style key, a card without text, a non-string prompt, a 40000x40000 card)."""

import json
import subprocess
import sys

import pytest

from saferdemo.audit.datasets import load_dataset

GOOD = {"card": {"text": "Steps to clean a window."}, "prompt": "Complete the list.", "category": "household",
        "harmful": False}
HOSTILE = [
    ({**GOOD, "card": {"text": "x", "style": {"colour": "red"}}}, "unknown card style 'colour'"),
    ({**GOOD, "card": {"style": {}}}, "card must be an object with non-empty text"),
    ({**GOOD, "card": "Steps to clean a window."}, "card must be an object"),
    ({**GOOD, "prompt": 123}, "prompt must be a non-empty string"),
    ({**GOOD, "prompt": "x" * 20_000}, "the limit is 16,000"),
    ({**GOOD, "category": None}, "category must be a non-empty string"),
    ({**GOOD, "card": {"text": "x", "style": {"width": 40000, "height": 40000}}}, "width must be an integer from 16 to 4096"),
    ({**GOOD, "card": {"text": "x", "style": {"font_size": "big"}}}, "font_size must be an integer"),
    ({**GOOD, "card": {"text": "x", "seed": "s"}}, "card seed must be an integer"),
    ({**GOOD, "card": {"text": "x", "style": {"margin": [1, 2, 3]}}}, None),  # CardStyle takes it; rendering may not
    ({**GOOD, "card": None, "image": 5}, "image must be a path"),
]


@pytest.mark.parametrize("row, message", [h for h in HOSTILE if h[1]], ids=lambda v: str(v)[:40])
def test_each_hostile_row_is_named(tmp_path, row, message):
    path = tmp_path / "items.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(row) + "\n")
    problems = []
    items = load_dataset(str(path), problems=problems)
    assert len(items) == 1 and len(problems) == 1
    assert problems[0].startswith(f"{path}:2: ") and message in problems[0]


def test_the_cli_audits_the_good_rows_and_names_the_rest(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(json.dumps(row) for row, message in HOSTILE if message) + "\n" + json.dumps(GOOD) + "\n")
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "saferdemo.cli", "audit", "--dataset", str(path), "--out", str(out),
                           "--max-new-tokens", "48"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.count("saferdemo: skipped") == sum(1 for _, m in HOSTILE if m)
    assert len((out / "items.jsonl").read_text().splitlines()) == 2  # one item, both models
