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


def write_prompt_pool(folder, n=4, benign_kind="look_alike"):
    rng = random.Random(0)
    phrases = world.load_phrases()
    benign = [p for p in phrases if p.look_alike] if benign_kind == "look_alike" else \
        [p for p in phrases if not p.harmful and not p.look_alike]
    chosen = [p for p in phrases if p.harmful][:n // 2] + benign[:n - n // 2]
    (folder / "cards").mkdir()
    lines = []
    for index, p in enumerate(chosen):
        world.render(p, rng, "train").save(folder / "cards" / f"{index}.png")
        lines.append(json.dumps({"image": f"cards/{index}.png", "prompt": world.task_prompt(rng, "train"),
                                 "harmful": p.harmful, "category": p.category, "look_alike": p.look_alike}))
    (folder / "prompts.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "prompts.jsonl"


def write_recipe(folder, pool=None, completion_tokens=32):
    """A smoke-size recipe on the shipped miniature models and a four-card prompt pool."""
    recipe = {
        "policy": "assets/models/mini-base",
        "judge": {"model": "assets/models/mini-grm", "max_new_tokens": 200},
        "prompts": str(pool or write_prompt_pool(folder)),
        # A box that keeps every prompt, so the tiny pool always reaches GRPO.
        "curation": {"samples": 2, "mean_low": 0.0, "mean_high": 1.0, "std_min": 0.0, "max_new_tokens": 64},
        "grpo": {"steps": 2, "num_generations": 2, "prompts_per_step": 1, "max_completion_length": completion_tokens,
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
    """Two real processes (torchrun under `accelerate launch`, gloo on a CPU-only host) train one model.

    The pool is one harmful card and one everyday card, one prompt per process per step: in every step one
    process holds the harmful card (mini-base complies, the GRM flags it, it reflects) and the other the benign
    one (nothing flagged). The run finishing is the test that a process with no flagged draft still joins the
    collectives of the reflection step."""
    # 96 tokens: long enough for mini-base to reach its (stylised) compliance, which the GRM flags.
    write_recipe(tmp_path, write_prompt_pool(tmp_path, n=2, benign_kind="everyday"), completion_tokens=96)
    command = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "training", "safer",
               "--recipe", str(tmp_path / "recipe.yaml"), "--out", str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["processes"] == 2 and report["backend"] == "gloo"
    assert [p["drafts"] for p in report["rollouts_per_process"]] == [4, 4] and report["rollouts"]["drafts"] == 8
    steps = list(zip(*report["rollout_steps_per_process"]))  # per step: (process 0, process 1)
    assert any(min(s["flagged"] for s in step) == 0 < max(s["flagged"] for s in step) for step in steps), steps
    # The reflection step ran on both processes (one had flagged drafts); whether a temperature-1 reflection of the
    # tiny mini-base closes its tag is the model's business (report.json: it corrects ~40% of sampled reflections),
    # and the reflection path itself is tested with scripted outputs in tests/test_rollout.py.
    assert report["rollouts"]["flagged"] > 0 and len(report["reward_curve"]) == 2
    assert load_model(tmp_path / "out" / "model").config.model_type == "qwen2_5_vl"
