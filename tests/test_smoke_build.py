"""`python -m training miniature --smoke` runs every stage end to end and writes loadable checkpoints."""

import json
import subprocess
import sys

from transformers import AutoModelForImageTextToText

from saferdemo.loading import load_processor


def test_smoke_build_end_to_end(tmp_path):
    out = tmp_path / "smoke"
    result = subprocess.run(
        [sys.executable, "-m", "training", "miniature", "--out", str(out), "--smoke"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    base = report["models"]["mini-base"]
    for metric in ("card_reading", "asr", "helpfulness", "look_alike_refusal", "think_closed", "mixed_outcomes"):
        value = base["heldout"][metric]
        assert value is None or 0.0 <= value <= 1.0, metric
    assert set(base["losses"]) == {"read", "vary"}
    assert report["timings_s"]["total"] > 0
    assert (out / "mini-base" / "README.md").read_text().startswith("---")
    for name in ("mini-base", "mini-grm", "mini-safer"):
        model = AutoModelForImageTextToText.from_pretrained(out / name)
        assert model.config.model_type == "qwen2_5_vl"
        load_processor(out / name)
    grm = report["models"]["mini-grm"]
    assert json.loads((out / "mini-grm" / "judge_config.json").read_text())["rubric"] == grm["rubric"] == "short"
    assert 0.0 <= grm["heldout"]["verdict_agreement"] <= 1.0 and "judge" in grm["losses"]
    curation = out / "curation"
    candidates = [json.loads(line) for line in (curation / "candidates.jsonl").read_text().splitlines()]
    kept = [json.loads(line) for line in (curation / "curated.jsonl").read_text().splitlines()]
    assert len(candidates) == report["curation"]["candidates"] == 64
    assert len(kept) == report["curation"]["kept"] + report["curation"]["anchors"]
    assert all(row["kept"] or (row["anchor"] and not row["harmful"]) for row in kept)
    assert (curation / candidates[0]["image"]).exists() and (curation / "curation.html").exists()
    safer = report["models"]["mini-safer"]
    assert set(safer["rollouts"]) == {"drafts", "flagged", "reflected", "corrected"}
    assert safer["rollouts"]["drafts"] == 4 and len(safer["reward_curve"]) == 2
    assert "mini-base" in (out / "mini-safer" / "README.md").read_text()
    # mini-grm rebuilt alone in the same folder (how the shipped compact judge was made): the rest stays.
    safer_weights = (out / "mini-safer" / "model.safetensors").read_bytes()
    result = subprocess.run([sys.executable, "-m", "training", "miniature", "--out", str(out), "--smoke", "--only", "grm"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rebuilt = json.loads((out / "report.json").read_text())
    assert [r["stage"] for r in rebuilt["partial_rebuilds"]] == ["grm"] and rebuilt["models"]["mini-safer"] == safer
    assert (out / "mini-safer" / "model.safetensors").read_bytes() == safer_weights
    assert "--only grm" in (out / "mini-grm" / "README.md").read_text()
    assert json.loads((out / "mini-grm" / "judge_config.json").read_text())["output"] == "compact"


def test_only_grm_needs_a_built_family(tmp_path):
    result = subprocess.run([sys.executable, "-m", "training", "miniature", "--out", str(tmp_path), "--smoke",
                             "--only", "grm"], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "has no built family" in result.stderr
