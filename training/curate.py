"""Stage: QI-Safe curation. Keep the prompts on which the policy is *unstable*.

For every candidate prompt (a training card and a phrasing) the policy answers K times at temperature 1
and the GRM scores each answer. GRPO learns only from reward differences within a group, so a prompt the
policy always gets right (high mean, no spread) or always gets wrong in the same way teaches nothing.
SaFeR-VLM's QI-Safe keeps the "moderate quality, high instability" box: mean reward inside
[mean_low, mean_high] and standard deviation at least std_min. Written to DIR: `curated.jsonl` (kept
prompts, with their card images under `images/`), `candidates.jsonl` (all of them), `stats.json` and
`curation.html` (a plotly scatter of mean against spread with the box drawn).

Benign anchors: the box rarely holds a benign prompt (the policy answers those well every time), so
GRPO on the box alone never sees the over-refusal penalty and drifts into refusing benign look-alikes
(measured on the miniature world: 12% to 70% look-alike refusal). `anchor_share` tops the set up with
benign prompts from outside the box, look-alikes first; they are marked `"anchor": true`.

Candidates are dicts with `image` (PIL), `prompt`, `harmful`, `category`, optional `look_alike` and
`label`: `world_candidates` makes them from the card world, `training.safer.load_prompts` from a JSONL.
"""

from __future__ import annotations

import json
import random
import statistics
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from saferdemo.judgement import reward
from saferdemo.prompts import user_turn
from training import world
from training.evaluate import generate
from training.grm import GRMJudge


@dataclass
class CurationConfig:
    samples: int = 8  # K
    mean_low: float = 0.15
    mean_high: float = 0.85
    std_min: float = 0.15
    anchor_share: float = 0.0  # share of the curated set made of benign anchors (see above)
    rubric: str = "short"
    max_new_tokens: int = 160  # per policy sample
    batch_size: int = 32
    seed: int = 7


def world_candidates(phrases, prompts_per_phrase: int, seed: int) -> list[dict]:
    """Training-style cards of the miniature world, each with a task prompt."""
    rng = random.Random(seed)
    return [
        {"image": world.render(p, rng, "train"), "prompt": world.task_prompt(rng, "train"), "label": p.phrase,
         "category": p.category, "harmful": p.harmful, "look_alike": p.look_alike}
        for p in phrases
        for _ in range(prompts_per_phrase)
    ]


def curate(policy, judge: GRMJudge, processor, candidates: list[dict], config: CurationConfig, out_dir: str | Path) -> dict:
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    k = config.samples
    convs = [[user_turn(c["prompt"])] for c in candidates for _ in range(k)]
    cards = [c["image"] for c in candidates for _ in range(k)]
    responses = generate(policy, processor, convs, cards, config.max_new_tokens, config.batch_size, sample=True,
                         desc="policy samples")
    prompts = [c["prompt"] for c in candidates for _ in range(k)]
    judgements = judge(cards, prompts, responses)
    rewards = [None if j is None else reward(j) for j in judgements]  # None: the judge's output did not parse

    rows = []
    for index, c in enumerate(candidates):
        image_path = f"images/{index:04d}.png"
        c["image"].save(out_dir / image_path)
        group = [r for r in rewards[index * k : (index + 1) * k] if r is not None]
        mean = statistics.fmean(group) if group else None
        std = statistics.pstdev(group) if len(group) > 1 else 0.0
        keep = mean is not None and config.mean_low <= mean <= config.mean_high and std >= config.std_min
        rows.append({
            "image": image_path, "prompt": c["prompt"], "label": c.get("label", c["prompt"]),
            "category": c["category"], "harmful": c["harmful"], "look_alike": c.get("look_alike", False),
            "mean": None if mean is None else round(mean, 4), "std": round(std, 4),
            "rewards": [None if r is None else round(r, 4) for r in rewards[index * k : (index + 1) * k]],
            "parse_failures": k - len(group), "kept": keep, "anchor": False,
        })
    _add_anchors(rows, config)
    _write_jsonl(out_dir / "candidates.jsonl", rows)
    _write_jsonl(out_dir / "curated.jsonl", [r for r in rows if r["kept"] or r["anchor"]])
    stats = _stats(rows, config)
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    _plot(rows, config, out_dir / "curation.html")
    return stats


def _add_anchors(rows: list[dict], config: CurationConfig) -> None:
    """Mark benign prompts outside the box as anchors until they are `anchor_share` of the curated set."""
    kept = sum(r["kept"] for r in rows)
    if not config.anchor_share or not kept:
        return
    wanted = round(config.anchor_share * kept / (1 - config.anchor_share))
    pool = [r for r in rows if not r["harmful"] and not r["kept"]]
    random.Random(config.seed).shuffle(pool)
    pool.sort(key=lambda r: not r["look_alike"])  # look-alikes first: they are where over-refusal starts
    for row in pool[:wanted]:
        row["anchor"] = True


def _stats(rows: list[dict], config: CurationConfig) -> dict:
    kept = [r for r in rows if r["kept"]]
    return {
        "config": asdict(config),
        "candidates": len(rows),
        "kept": len(kept),
        "kept_harmful": sum(r["harmful"] for r in kept),
        "anchors": sum(r["anchor"] for r in rows),
        "kept_by_category": dict(sorted(Counter(r["category"] for r in kept).items())),
        "parse_failures": sum(r["parse_failures"] for r in rows),
        "mean_reward_all": _mean(r["mean"] for r in rows if r["mean"] is not None),
        "mean_std_kept": _mean(r["std"] for r in kept),
    }


def _status(row: dict) -> str:
    return "kept" if row["kept"] else "anchor" if row["anchor"] else "dropped"


def _mean(values) -> float | None:
    values = list(values)
    return round(statistics.fmean(values), 4) if values else None


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def _plot(rows: list[dict], config: CurationConfig, path: Path) -> None:
    import plotly.graph_objects as go

    fig = go.Figure()
    for label, harmful in (("harmful", True), ("benign", False)):
        subset = [r for r in rows if r["harmful"] == harmful and r["mean"] is not None]
        fig.add_trace(go.Scatter(
            x=[r["mean"] for r in subset], y=[r["std"] for r in subset], mode="markers", name=label,
            text=[f"{r['label']}<br>{_status(r)}" for r in subset],
            marker={"symbol": [{"kept": "circle", "anchor": "diamond"}.get(_status(r), "x") for r in subset]},
        ))
    fig.add_shape(type="rect", x0=config.mean_low, x1=config.mean_high, y0=config.std_min, y1=0.5,
                  line={"dash": "dash"}, fillcolor="rgba(0,128,0,0.08)")
    fig.update_layout(title="QI-Safe curation: GRM reward per prompt (K samples)",
                      xaxis_title="mean reward", yaxis_title="reward standard deviation")
    fig.write_html(path, include_plotlyjs=True)
