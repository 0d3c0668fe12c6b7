"""SaFeR training of any Qwen2.5-VL-style checkpoint: `python -m training safer --recipe R --out DIR`.

The two stages that follow a base model in the miniature build, on a real prompt pool: QI-Safe curation
(training/curate.py) with the policy and a judge, then GRPO with safety-aware rollouts (training/grpo.py).
Recipes: training/recipes/qwen2.5-vl-3b.yaml and -7b.yaml (bf16, LoRA, vLLM colocate); several GPUs through
`accelerate launch --config_file training/accelerate/zero2.yaml -m training safer ...`. The same function runs
on a CPU with the miniature models (tests/test_safer_pipeline.py), so the GPU recipe exercises tested code.

The prompt pool is a JSONL in the audit's format (saferdemo/datasets.py), one object per line: `image` (path
relative to the file), `prompt`, `harmful` (bool), `category`, optional `look_alike` (a benign request that
resembles a harmful one) and `reference`.
Output: DIR/curation/ (see curate.py), DIR/model/ (merged weights + processor), DIR/report.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from saferdemo.datasets import load_dataset
from saferdemo.images import InputError
from saferdemo.loading import load_model, load_processor, pick_dtype
from training.curate import CurationConfig, curate
from training.grm import GRMJudge
from training.grpo import GRPOStageConfig, curated_dataset, train_safer


def load_prompts(path: str | Path) -> list[dict]:
    """The prompt pool, read as an audit JSONL (saferdemo.datasets). Every image is opened now, so a bad
    line is reported before any GPU time is spent."""
    rows = []
    for item in load_dataset(str(path)):
        try:
            image = item.image()
        except InputError as error:
            raise ValueError(f"{path}: {item.id}: cannot read image: {error}") from error
        rows.append({"image": image, "prompt": item.prompt, "harmful": item.harmful, "category": item.category,
                     "look_alike": item.look_alike, "label": item.reference or item.prompt})
    if not rows:
        raise ValueError(f"{path}: no prompts")
    return rows


def run(recipe: dict, out_dir: str | Path) -> dict:
    """Curate on the main process, then GRPO on every process (accelerate), then save on the main one."""
    from accelerate import PartialState

    state = PartialState()  # one process, or one per GPU under `accelerate launch`
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings, started = {}, time.perf_counter()
    max_pixels = recipe.get("max_pixels")
    processor = load_processor(recipe["policy"], max_pixels)
    # The policy stays on the CPU until the trainer places it (one GPU per process); the judge goes to ours.
    policy = load_model(recipe["policy"], "cpu", pick_dtype(str(state.device)))
    grm_cfg = recipe["grm"]
    judge = GRMJudge(load_model(grm_cfg["model"], str(state.device)), load_processor(grm_cfg["model"], max_pixels),
                     grm_cfg.get("rubric", "full"), grm_cfg.get("max_new_tokens", 512), grm_cfg.get("batch_size", 16))

    curation_dir = out_dir / "curation"
    stats = None
    if state.is_main_process:
        t = time.perf_counter()
        config = CurationConfig(**recipe.get("curation", {}), rubric=judge.rubric)
        stats = curate(policy.to(state.device), judge, processor, load_prompts(recipe["prompts"]), config, curation_dir)
        policy.to("cpu")
        timings["curation"] = time.perf_counter() - t
    state.wait_for_everyone()
    rows = [json.loads(line) for line in (curation_dir / "curated.jsonl").read_text().splitlines()]
    if not rows:
        raise SystemExit(f"curation kept no prompts (see {curation_dir / 'stats.json'}); widen the box in the recipe")

    t = time.perf_counter()
    model, log, history = train_safer(policy, processor, judge, curated_dataset(curation_dir, rows),
                                      GRPOStageConfig(**recipe["grpo"]), str(out_dir / "grpo-run"))
    timings["grpo"] = time.perf_counter() - t
    from accelerate.utils import gather_object

    per_process = gather_object([log.totals()])  # every process rolled out its own share of each batch
    if not state.is_main_process:
        return {}
    model.save_pretrained(out_dir / "model")
    processor.save_pretrained(out_dir / "model")
    timings["total"] = time.perf_counter() - started
    report = {
        "policy": recipe["policy"], "grm": grm_cfg["model"], "prompts": str(recipe["prompts"]),
        "processes": state.num_processes, "backend": str(state.backend), "curation": stats,
        "rollouts": {key: sum(totals[key] for totals in per_process) for key in per_process[0]},
        "rollouts_per_process": per_process, "rollout_steps": log.steps,
        "reward_curve": [round(float(h["reward"]), 4) for h in history if "reward" in h],
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
