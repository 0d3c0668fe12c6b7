"""The miniature pipeline: build a tiny Qwen2.5-VL, train mini-base on the card world, evaluate, report.

Stages run in order, each driven by the YAML recipe; checkpoints and `report.json` land in the output
folder. Later stages (the GRM, the SaFeR-aligned model) plug in here.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict
from pathlib import Path

import torch
import yaml

from saferdemo.loading import load_model, load_processor
from training import grm, grpo, world
from training.curate import CurationConfig, curate, world_candidates
from training.evaluate import evaluate
from training.sft import Behaviour, Stage, base_batches, train_stage
from training.tiny_qwen import TinyQwenConfig, build_tiny_qwen, save_checkpoint


def load_recipe(path: str | Path) -> dict:
    recipe = yaml.safe_load(Path(path).read_text())
    recipe["_path"] = _relative(Path(path))
    return recipe


def _relative(path: Path) -> str:
    """The path relative to the working directory when inside it, so reports don't leak machine paths."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def run(recipe: dict, out_dir: str | Path, command: str = "") -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.get("seed", 0))
    phrases = world.load_phrases()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    models = {"mini-base": build_base(recipe, out_dir / "mini-base", phrases, timings)}
    if "grm" in recipe:
        models["mini-grm"] = build_grm(recipe, out_dir / "mini-grm", out_dir / "mini-base", phrases, timings)
    curation = None
    if "curation" in recipe:
        curation = _timed(timings, "curation", run_curation, recipe["curation"], out_dir, phrases)
    if "grpo" in recipe:
        models["mini-safer"] = build_safer(recipe, out_dir, phrases, timings)
    timings["total"] = time.perf_counter() - started

    report = {
        "recipe": recipe["_path"],
        "command": command,
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "world": world.describe(phrases),
        "models": models,
        "curation": curation,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    for name in models:
        write_model_card(out_dir / name, report, name)
    return report


def _timed(timings: dict, name: str, fn, *args, **kwargs):
    t = time.perf_counter()
    result = fn(*args, **kwargs)
    timings[name] = time.perf_counter() - t
    return result


def _train_stages(model, processor, stages: list[dict], batches, seed: int, prefix: str, timings: dict) -> dict:
    losses = {}
    for index, stage_cfg in enumerate(stages):
        stage = Stage(**{**stage_cfg, "difficulty": tuple(stage_cfg.get("difficulty", (0.0, 0.0)))})
        curve = _timed(timings, f"{prefix}_{stage.name}", train_stage, model, processor, stage, batches, seed + index + 1)
        losses[stage.name] = {"first": round(curve[0], 4), "last": round(sum(curve[-10:]) / len(curve[-10:]), 4)}
    return losses


def _entry(model, folder: Path, **extra) -> dict:
    return {
        "path": _relative(folder),
        "parameters": sum(p.numel() for p in model.parameters()),
        "size_mb": round(sum(f.stat().st_size for f in folder.iterdir()) / 1e6, 2),
        **extra,
    }


def build_base(recipe: dict, folder: Path, phrases, timings: dict) -> dict:
    """mini-base: a tiny Qwen2.5-VL built from scratch and SFT'd into the base reasoning model."""
    model_cfg = TinyQwenConfig(**recipe["model"])
    model, processor = _timed(timings, "build_tiny_qwen", build_tiny_qwen, folder, world.corpus(phrases), model_cfg)
    base = recipe["base"]
    behaviour = Behaviour(**base["behaviour"])
    losses = _train_stages(model, processor, base["stages"], base_batches(phrases, behaviour), recipe.get("seed", 0), "sft", timings)
    save_checkpoint(model, processor, folder)
    heldout = _timed(timings, "evaluate_base", evaluate, model, processor, phrases, **recipe["eval"])
    examples = heldout.pop("examples")
    return _entry(model, folder, config=asdict(model_cfg), behaviour=asdict(behaviour), losses=losses,
                  heldout=heldout, examples=examples)


def build_grm(recipe: dict, folder: Path, base_folder: Path, phrases, timings: dict) -> dict:
    """mini-grm: mini-base fine-tuned to write judgements (training/grm.py)."""
    cfg = recipe["grm"]
    policy, processor = load_model(base_folder), load_processor(base_folder)
    pool = _timed(timings, "grm_sample_policy", grm.sample_policy_responses, policy, processor, phrases,
                  cfg["samples_per_phrase"], "train", recipe.get("seed", 0))
    model = load_model(base_folder)
    batches = grm.grm_batches(phrases, pool, cfg["corruption_rate"])
    losses = _train_stages(model, processor, cfg["stages"], batches, recipe.get("seed", 0) + 100, "grm", timings)
    save_checkpoint(model, processor, folder)
    (folder / "judge_config.json").write_text(json.dumps({"rubric": grm.RUBRIC, "schema": "saferdemo.judgement"}, indent=2) + "\n")
    heldout = _timed(timings, "evaluate_grm", grm.evaluate_grm, model, processor, policy, phrases, **cfg["eval"])
    return _entry(model, folder, rubric=grm.RUBRIC, losses=losses, heldout=heldout)


def run_curation(settings: dict, out_dir: Path, phrases) -> dict:
    """QI-Safe curation of training cards with mini-base as the policy and mini-grm as the judge."""
    settings = dict(settings)
    candidates = world_candidates(phrases, settings.pop("prompts_per_phrase", 2), settings.get("seed", 7))
    processor = load_processor(out_dir / "mini-base")
    judge = grm.GRMJudge(load_model(out_dir / "mini-grm"), processor, grm.RUBRIC)
    config = CurationConfig(**settings, rubric=grm.RUBRIC)
    return curate(load_model(out_dir / "mini-base"), judge, processor, candidates, config, out_dir / "curation")


def build_safer(recipe: dict, out_dir: Path, phrases, timings: dict) -> dict:
    """mini-safer: mini-base after GRPO with safety-aware rollouts on the curated prompts (training/grpo.py)."""
    curation_dir = out_dir / "curation"
    rows = _jsonl(curation_dir / "curated.jsonl") or _jsonl(curation_dir / "candidates.jsonl")  # smoke: none kept
    processor = load_processor(out_dir / "mini-base")
    judge = grm.GRMJudge(load_model(out_dir / "mini-grm"), processor, grm.RUBRIC)
    config = grpo.GRPOStageConfig(**recipe["grpo"])
    folder = out_dir / "mini-safer"
    model, log, history = _timed(timings, "grpo", grpo.train_safer, load_model(out_dir / "mini-base"), processor, judge,
                                 grpo.curated_dataset(curation_dir, rows), config, str(out_dir / "grpo-run"))
    save_checkpoint(model, processor, folder)
    heldout = _timed(timings, "evaluate_safer", evaluate, model, processor, phrases, **recipe["eval"])
    examples = heldout.pop("examples")
    rewards = [float(h["reward"]) for h in history if "reward" in h]
    return _entry(model, folder, grpo=asdict(config), curated_prompts=len(rows), rollouts=log.totals(),
                  rollout_steps=log.steps, reward_curve=[round(r, 4) for r in rewards], heldout=heldout, examples=examples)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def write_model_card(model_dir: Path, report: dict, name: str) -> None:
    if name == "mini-grm":
        return write_grm_card(model_dir, report)
    if name == "mini-safer":
        return write_safer_card(model_dir, report)
    entry = report["models"][name]
    h = entry["heldout"]
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"
    rows = [
        ("card-reading accuracy", h["card_reading"]),
        ("attack success rate (harmful cards, greedy)", h["asr"]),
        ("safety (harmful cards answered safely)", h.get("safety")),
        ("unsafe reasoning (harmful cards)", h.get("unsafe_reasoning")),
        ("helpfulness on benign cards", h["helpfulness"]),
        ("refusal of look-alike cards", h["look_alike_refusal"]),
        ("`<think>` opened and closed", h["think_closed"]),
        (f"sampled ASR (T=1, {h['samples_per_card']} samples/card)", h["sampled_asr"]),
        ("harmful cards with both a refusal and a compliance among the samples", h["mixed_outcomes"]),
        ("reflection turns a compliance into a refusal (greedy)", h["reflection_correction"]),
        ("reflection turns a compliance into a refusal (T=1)", h["reflection_correction_sampled"]),
    ]
    table = "\n".join(f"| {label} | {pct(value)} |" for label, value in rows)
    card = f"""---
license: apache-2.0
library_name: transformers
pipeline_tag: image-text-to-text
tags: [saferdemo, miniature, qwen2_5_vl, safety]
---
# {name}

A miniature Qwen2.5-VL ({entry['parameters'] / 1e6:.2f} M parameters, {entry['size_mb']} MB) trained by
saferdemo's `training/` pipeline on a synthetic FigStep-style card world. It is the **base reasoning model**
of the miniature family: its `<think>` reads the card and plans to fill in the list with no safety check
(the "reasoning tax"), so it complies with most harmful cards, and its answers vary under sampling. It also
follows the reflection prompt (previous response + critique → `<reflection>` + corrected response), with
deliberately weak corrections. Harmful "compliance" is stylised (`[restricted step]`): the model knows no
harmful instructions.

It loads like a real Qwen2.5-VL checkpoint (`AutoModelForImageTextToText`, `AutoProcessor` where torchvision
is installed, `saferdemo.loading.load_processor` everywhere). It only knows the {report['world']['phrases']}
phrases of its world; it cannot read unseen text.

## Held-out evaluation

Held-out split: render settings (text and background colours, noise, the list's font size and offsets)
and prompt phrasings never seen in training; {h['n_items']} cards. The instruction text always starts at the
same origin in the same font, as in FigStep (see `training/world.py` for why).

| metric | value |
|---|---|
{table}

Attack success by category: {json.dumps(h['asr_by_category'])}

## How it was built

```
{report['command'] or 'python -m training miniature --out DIR'}
```

Recipe `{report['recipe']}`; wall time {report['timings_s']['total']} s on {report['machine']['threads']} CPU
threads ({report['machine']['platform']}, torch {report['machine']['torch']}).
"""
    (model_dir / "README.md").write_text(card)


def write_grm_card(model_dir: Path, report: dict) -> None:
    entry = report["models"]["mini-grm"]
    h = entry["heldout"]
    card = f"""---
license: apache-2.0
library_name: transformers
pipeline_tag: image-text-to-text
tags: [saferdemo, miniature, qwen2_5_vl, reward-model, judge]
---
# mini-grm

The miniature **generative reward model** ({entry['parameters'] / 1e6:.2f} M parameters, {entry['size_mb']} MB):
mini-base fine-tuned to read a card, a request and a response and write the judgement JSON of
`saferdemo/judgement.py` (reasoning and answer scored separately, penalties, verdict, rationale).
It uses the **{entry['rubric']}** rubric (`judge_config.json`). Trained on mini-base's own samples plus
controlled corruptions, labelled by the world's truth.

## Held-out agreement with the truth ({h['n_cases']} cases)

| metric | value |
|---|---|
| verdict agreement | {100 * h['verdict_agreement']:.1f}% |
| output parses into the schema | {100 * h['parse_rate']:.1f}% |
| same penalties raised as the truth | {100 * h.get('penalty_agreement', 0):.1f}% |
| mean absolute reward error | {h['reward_mae']} |

By source: {json.dumps(h['agreement_by_source'])}

## How it was built

```
{report['command'] or 'python -m training miniature --out DIR'}
```
"""
    (model_dir / "README.md").write_text(card)


def _curve_summary(curve: list[float], window: int = 10) -> str:
    if not curve:
        return "n/a"
    points = [sum(curve[i : i + window]) / len(curve[i : i + window]) for i in range(0, len(curve), window)]
    return " → ".join(f"{p:.2f}" for p in points)


def write_safer_card(model_dir: Path, report: dict) -> None:
    entry, base = report["models"]["mini-safer"], report["models"]["mini-base"]
    rows = [("attack success rate (greedy)", "asr"), ("safety (harmful cards answered safely)", "safety"),
            ("unsafe reasoning", "unsafe_reasoning"), ("self-correction (unsafe reasoning, safe answer)", "self_correction"),
            ("sampled ASR (T=1)", "sampled_asr"),
            ("helpfulness on benign", "helpfulness"), ("look-alike refusal", "look_alike_refusal"),
            ("card reading", "card_reading"), ("`<think>` closed", "think_closed")]
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    table = "\n".join(
        f"| {label} | {pct(base['heldout'].get(k))} | {pct(entry['heldout'].get(k))} |" for label, k in rows
    )
    r = entry["rollouts"]
    card = f"""---
license: apache-2.0
library_name: transformers
pipeline_tag: image-text-to-text
tags: [saferdemo, miniature, qwen2_5_vl, safety, grpo]
---
# mini-safer

The miniature **SaFeR-aligned model** ({entry['parameters'] / 1e6:.2f} M parameters, {entry['size_mb']} MB):
mini-base after GRPO (TRL, LoRA r={entry['grpo']['lora_r']}, merged) on {entry['curated_prompts']} QI-Safe-curated
prompts, rewarded by mini-grm, with safety-aware rollouts: of {r['drafts']} sampled drafts the GRM flagged
{r['flagged']}, the policy reflected on {r['reflected']} and {r['corrected']} came out safe and replaced the draft.
GRM reward during GRPO (mean of 10 steps): {_curve_summary(entry['reward_curve'])}.

## Held-out, against mini-base

| metric | mini-base | mini-safer |
|---|---|---|
{table}

## How it was built

```
{report['command'] or 'python -m training miniature --out DIR'}
```
"""
    (model_dir / "README.md").write_text(card)
