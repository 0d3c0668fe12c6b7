"""The GPU check (benchmarks/gpu_check.py) runs its CPU mode here, so the script a lent GPU runs cannot rot.

The gpu_smoke.py row is skipped here: tests/test_gpu_smoke.py runs that script on the CPU already."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def test_gpu_check_cpu_smoke_runs_every_row(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--cpu-smoke", "--skip", "smoke", "--out", str(tmp_path),
                             "--prepared", str(tmp_path / "not-prepared")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    rows = {row["check"].split(":")[0]: row for row in report["rows"]}
    assert all(row["status"] == "ran" for row in report["rows"]), report["rows"]
    assert set(rows) >= {"install", "build", "generate", "GRPO", "`</reflection>` splice, real tokenizer"}
    assert "image tokens [484, 128, 396, 49]" in rows["generate"]["detail"]  # 760x760 capped at 512 tokens
    assert "merged, saved (Qwen2_5_VLProcessor), reloaded and generated" in rows["GRPO"]["detail"]
    assert "gate_proj" in rows["GRPO"]["detail"] and "is 3 tokens" in rows["`</reflection>` splice, real tokenizer"]["detail"]
    assert (tmp_path / "report.md").read_text().startswith("GPU check on CPU")
    assert (tmp_path / "grpo" / "model" / "config.json").is_file()


def test_the_3b_config_has_the_published_dimensions():
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_check import qwen25_vl_3b_config

    config = qwen25_vl_3b_config()
    with torch.device("meta"):  # no memory: only the shapes
        model = Qwen2_5_VLForConditionalGeneration(config)
    assert 3.75e9 < sum(p.numel() for p in model.parameters()) < 3.76e9  # "3.75B" on the model card
    text, vision = config.text_config, config.vision_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_key_value_heads, vision.depth) == (2048, 36, 2, 32)
    assert text.rope_parameters["mrope_section"] == [16, 24, 24] and config.image_token_id == 151655
