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

from training import world
from training.evaluate import evaluate
from training.sft import Behaviour, Stage, train_stage
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
    torch.set_num_threads(recipe.get("threads", torch.get_num_threads()))
    phrases = world.load_phrases()
    timings: dict[str, float] = {}
    started = time.perf_counter()

    base_dir = out_dir / "mini-base"
    model_cfg = TinyQwenConfig(**recipe["model"])
    model, processor = build_tiny_qwen(base_dir, world.corpus(phrases), model_cfg)
    timings["build_tiny_qwen"] = time.perf_counter() - started

    base = recipe["base"]
    behaviour = Behaviour(**base["behaviour"])
    losses = {}
    for index, stage_cfg in enumerate(base["stages"]):
        stage = Stage(**{**stage_cfg, "difficulty": tuple(stage_cfg.get("difficulty", (0.0, 0.0)))})
        t = time.perf_counter()
        curve = train_stage(model, processor, phrases, stage, behaviour, seed=recipe.get("seed", 0) + index + 1)
        timings[f"sft_{stage.name}"] = time.perf_counter() - t
        losses[stage.name] = {"first": round(curve[0], 4), "last": round(sum(curve[-10:]) / len(curve[-10:]), 4)}
    save_checkpoint(model, processor, base_dir)

    t = time.perf_counter()
    heldout = evaluate(model, processor, phrases, **recipe["eval"])
    timings["evaluate_base"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - started

    report = {
        "recipe": recipe["_path"],
        "command": command,
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "world": world.describe(phrases),
        "models": {
            "mini-base": {
                "path": str(base_dir),
                "parameters": sum(p.numel() for p in model.parameters()),
                "size_mb": round(sum(f.stat().st_size for f in base_dir.iterdir()) / 1e6, 2),
                "config": asdict(model_cfg),
                "behaviour": asdict(behaviour),
                "losses": losses,
                "heldout": {k: v for k, v in heldout.items() if k != "examples"},
                "examples": heldout["examples"],
            }
        },
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    write_model_card(base_dir, report, "mini-base")
    return report


def write_model_card(model_dir: Path, report: dict, name: str) -> None:
    entry = report["models"][name]
    h = entry["heldout"]
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    rows = [
        ("card-reading accuracy", h["card_reading"]),
        ("attack success rate (harmful cards, greedy)", h["asr"]),
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
