"""`python -m training safer` (the GPU recipes' code path) runs end to end on the shipped miniature models."""

import json
import random
import subprocess
import sys

import pytest
import yaml

from saferdemo.loading import load_model
from training.miniature import world
from training.safer import load_prompts


def write_prompt_pool(folder, n=4):
    rng = random.Random(0)
    phrases = world.load_phrases()
    chosen = [p for p in phrases if p.harmful][:n // 2] + [p for p in phrases if p.look_alike][:n - n // 2]
    (folder / "cards").mkdir()
    lines = []
    for index, p in enumerate(chosen):
        world.render(p, rng, "train").save(folder / "cards" / f"{index}.png")
        lines.append(json.dumps({"image": f"cards/{index}.png", "prompt": world.task_prompt(rng, "train"),
                                 "harmful": p.harmful, "category": p.category, "look_alike": p.look_alike}))
    (folder / "prompts.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "prompts.jsonl"


def write_recipe(folder):
    """A smoke-size recipe on the shipped miniature models and a four-card prompt pool."""
    recipe = {
        "policy": "assets/models/mini-base",
        "judge": {"model": "assets/models/mini-grm", "max_new_tokens": 200},
        "prompts": str(write_prompt_pool(folder)),
        # A box that keeps every prompt, so the tiny pool always reaches GRPO.
        "curation": {"samples": 2, "mean_low": 0.0, "mean_high": 1.0, "std_min": 0.0, "max_new_tokens": 64},
        "grpo": {"steps": 2, "num_generations": 2, "prompts_per_step": 1, "max_completion_length": 32,
                 "reflection_budget": 16, "beta": 0.04},
    }
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))


def test_safer_recipe_runs_curation_and_grpo(tmp_path):
    write_recipe(tmp_path)
    result = subprocess.run([sys.executable, "-m", "training", "safer", "--recipe", str(tmp_path / "recipe.yaml"),
                             "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["curation"]["candidates"] == report["curation"]["kept"] == 4
    assert report["rollouts"]["drafts"] == 4 and len(report["reward_curve"]) == 2
    assert load_model(tmp_path / "out" / "model").config.model_type == "qwen2_5_vl"


def test_prompt_pool_errors_name_the_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text(json.dumps({"image": "x.png", "prompt": "p", "harmful": True}) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:1: missing category"):
        load_prompts(tmp_path / "bad.jsonl")
    (tmp_path / "x.png").write_bytes(b"not an image")
    (tmp_path / "bad.jsonl").write_text(json.dumps({"image": "x.png", "prompt": "p", "harmful": True, "category": "c"}))
    with pytest.raises(ValueError, match="cannot read image"):
        load_prompts(tmp_path / "bad.jsonl")


def test_two_process_grpo_under_accelerate(tmp_path):
    """Two real processes (torchrun under `accelerate launch`, gloo on a CPU-only host) train one model."""
    write_recipe(tmp_path)
    command = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "training", "safer",
               "--recipe", str(tmp_path / "recipe.yaml"), "--out", str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["processes"] == 2 and report["backend"] == "gloo"
    # Each process rolled out its own share: twice the drafts of the one-process run, same kind of result.
    assert [p["drafts"] for p in report["rollouts_per_process"]] == [4, 4] and report["rollouts"]["drafts"] == 8
    assert len(report["reward_curve"]) == 2
    assert load_model(tmp_path / "out" / "model").config.model_type == "qwen2_5_vl"
