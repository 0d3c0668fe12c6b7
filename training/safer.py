"""The SaFeR stages after a base model: QI-Safe curation, then GRPO with safety-aware rollouts.

`curate_and_train` is the one path: `python -m training safer --recipe R --out DIR` runs it on a real
checkpoint and a JSONL prompt pool (recipes/qwen2.5-vl-3b.yaml, -7b.yaml: bf16, LoRA, vLLM colocate; several
GPUs through `accelerate launch --config_file training/accelerate/zero2.yaml -m training safer ...`), and the
miniature build runs the very same function on its card world, so the CPU build exercises what GPU users run.

The prompt pool is a JSONL in the audit's format (saferdemo.audit.datasets), one object per line: `image`
(path relative to the file), `prompt`, `harmful` (bool), `category`, optional `look_alike` (a benign request
that resembles a harmful one) and `reference`.
Output: DIR/curation/ (see curate.py), DIR/model/ (merged weights + processor), DIR/model-adapter/ (the LoRA
adapter), DIR/report.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from saferdemo.audit.datasets import load_dataset
from saferdemo.engines.transformers_engine import TransformersEngine
from saferdemo.images import InputError
from saferdemo.judge import GRMClient, rubric_of
from saferdemo.loading import load_model, load_processor, pick_dtype
from training.curate import curate, curated_dataset
from training.grpo import save_merged, train_safer
from training.recipes import SaferConfig, SaferRecipe


class NothingCurated(RuntimeError):
    """Curation kept no prompt: GRPO would have nothing to learn from."""


def load_prompts(path: str | Path) -> list[dict]:
    """The prompt pool, read as an audit JSONL. Every image is opened now, so a bad line is reported before
    any GPU time is spent."""
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


def curate_and_train(policy_path: str | Path, judge: GRMClient, candidates: list[dict], method: SaferConfig,
                     out_dir: str | Path, model_dir: str | Path | None = None, max_pixels: int | None = None) -> dict:
    """Curate `candidates` with the policy and the judge, then GRPO on what was kept; the merged model goes
    to `model_dir` (default DIR/model). Every process runs this under `accelerate launch`; the report (and
    the files) come from the main process, the others return {}."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    state = PartialState()  # one process, or one per GPU under `accelerate launch`
    out_dir = Path(out_dir)
    model_dir = Path(model_dir) if model_dir else out_dir / "model"
    timings, started = {}, time.perf_counter()
    processor = load_processor(policy_path, max_pixels)
    dtype = pick_dtype(str(state.device))
    policy = load_model(policy_path, str(state.device), dtype)

    t = time.perf_counter()
    stats = curate(TransformersEngine(policy, processor, "policy"), judge, candidates, method.curation,
                   out_dir / "curation", state)
    state.wait_for_everyone()
    timings["curation"] = time.perf_counter() - t
    curated = out_dir / "curation" / "curated.jsonl"
    rows = [json.loads(line) for line in curated.read_text().splitlines()]
    if not rows:
        raise NothingCurated(f"curation kept no prompts (see {out_dir / 'curation' / 'stats.json'}); "
                             "widen the box (curation.mean_low, mean_high, std_min) in the recipe")

    t = time.perf_counter()
    policy.to("cpu")  # the trainer places it (one device per process)
    trainer, log = train_safer(policy, processor, judge, curated_dataset(curated.parent, rows), method.grpo,
                               str(out_dir / "grpo-run"), method.reward)
    per_process = gather_object([log.totals()])  # every process rolled out its own share of each batch
    steps_per_process = gather_object([log.steps])
    save_merged(trainer, processor, model_dir, dtype)
    timings["grpo"] = time.perf_counter() - t
    if not state.is_main_process:
        return {}
    timings["total"] = time.perf_counter() - started
    return {
        "processes": state.num_processes, "backend": str(state.backend), "curation": stats,
        "curated_prompts": len(rows),
        "rollouts": {key: sum(totals[key] for totals in per_process) for key in per_process[0]},
        "rollouts_per_process": per_process, "rollout_steps": log.steps, "rollout_steps_per_process": steps_per_process,
        "reward_curve": [_round(h["reward"]) for h in trainer.state.log_history if "reward" in h],
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }


def _round(value) -> float | None:
    return None if value is None else round(float(value), 4)  # None: no completion of the step was judged


def load_judge(recipe: SaferRecipe, device: str) -> GRMClient:
    """The recipe's judge on this process's device."""
    cfg = recipe.judge
    engine = TransformersEngine(load_model(cfg.model, device), load_processor(cfg.model, recipe.max_pixels), "judge")
    return GRMClient(engine, cfg.rubric or rubric_of(cfg.model), cfg.max_new_tokens, recipe.reward, cfg.batch_size)


def run(recipe: SaferRecipe, out_dir: str | Path) -> dict:
    """`python -m training safer`: the recipe's prompt pool through `curate_and_train`; writes DIR/report.json."""
    from accelerate import PartialState

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    judge = load_judge(recipe, str(PartialState().device))
    report = curate_and_train(recipe.policy, judge, load_prompts(recipe.prompts), recipe.method, out_dir,
                              max_pixels=recipe.max_pixels)
    if report:
        report = {"policy": recipe.policy, "judge": recipe.judge.model, "prompts": recipe.prompts, **report}
        (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
