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
`label`: `training.safer.load_prompts` makes them from a JSONL, the miniature build from its card world.
Judge failures: a sample whose judgement could not be had is left out of its prompt's mean and spread and
counted (`parse_failures`); a prompt with no judged sample is dropped.

Under several processes (`accelerate launch`) every process curates its own share of the candidates and the
main process writes the result: no process waits long at a barrier (NCCL's default timeout is 10 minutes).
"""

from __future__ import annotations

import json
import random
import statistics
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from saferdemo.engines.base import GenerationParams
from saferdemo.engines.transformers_engine import TransformersEngine
from saferdemo.judge import GRMClient
from saferdemo.prompts import user_turn


@dataclass
class CurationConfig:
    samples: int = 8  # K
    mean_low: float = 0.15
    mean_high: float = 0.85
    std_min: float = 0.15
    anchor_share: float = 0.0  # share of the curated set made of benign anchors (see above)
    # A prompt none of whose samples got a judgement is dropped; the smoke build keeps it (its tiny judge
    # cannot write judgements yet, and GRPO still needs prompts to run).
    keep_unjudged: bool = False
    max_new_tokens: int = 160  # per policy sample
    batch_size: int = 32
    seed: int = 7


def score_candidates(policy: TransformersEngine, judge: GRMClient, candidates: list[dict],
                     config: CurationConfig) -> list[dict]:
    """K policy samples per candidate, each judged: one row per candidate with its rewards, mean and spread."""
    k = config.samples
    convs = [[user_turn(c["prompt"])] for c in candidates for _ in range(k)]
    cards = [c["image"] for c in candidates for _ in range(k)]
    params = GenerationParams(config.max_new_tokens, temperature=1.0, seed=config.seed)
    responses = policy.generate_batch(convs, [[card] for card in cards], params, config.batch_size)
    prompts = [c["prompt"] for c in candidates for _ in range(k)]
    rewards = [result.reward for result in judge.judge_batch(cards, prompts, responses)]  # None: no judgement
    rows = []
    for index, c in enumerate(candidates):
        group = [r for r in rewards[index * k : (index + 1) * k] if r is not None]
        mean = statistics.fmean(group) if group else None
        std = statistics.pstdev(group) if len(group) > 1 else 0.0
        rows.append({
            "prompt": c["prompt"], "label": c.get("label", c["prompt"]),
            "category": c["category"], "harmful": c["harmful"], "look_alike": c.get("look_alike", False),
            "mean": None if mean is None else round(mean, 4), "std": round(std, 4),
            "rewards": [None if r is None else round(r, 4) for r in rewards[index * k : (index + 1) * k]],
            "parse_failures": k - len(group),
            "kept": _in_box(mean, std, config),
            "anchor": False,
        })
    return rows


def _in_box(mean: float | None, std: float, config: CurationConfig) -> bool:
    if mean is None:
        return config.keep_unjudged
    return config.mean_low <= mean <= config.mean_high and std >= config.std_min


def curate(policy: TransformersEngine, judge: GRMClient, candidates: list[dict], config: CurationConfig,
           out_dir: str | Path, state=None) -> dict:
    """Score every candidate (sharded over processes when `state` has several), keep the box, write DIR."""
    out_dir = Path(out_dir)
    shard = range(len(candidates)) if state is None else range(state.process_index, len(candidates), state.num_processes)
    rows = score_candidates(policy, judge, [candidates[i] for i in shard], config)
    rows = [{"index": i, **row} for i, row in zip(shard, rows)]
    if state is not None and state.num_processes > 1:
        from accelerate.utils import gather_object

        rows = sorted(gather_object(rows), key=lambda row: row["index"])
    if state is not None and not state.is_main_process:
        return {}
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    for row in rows:
        row["image"] = f"images/{row['index']:04d}.png"
        candidates[row.pop("index")]["image"].save(out_dir / row["image"])
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
    """curation.html; plotly is imported here only, and a host without it (a bare GPU machine) curates anyway."""
    try:
        import plotly.graph_objects as go
    except ImportError:
        print(f"curation: plotly is not installed, {path.name} not written (pip install plotly)", flush=True)
        return

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


def curated_dataset(curation_dir, rows: list[dict]):
    """A TRL dataset from curated rows (their cards are files under `curation_dir`)."""
    from PIL import Image

    def load(path):
        with Image.open(curation_dir / path) as image:
            return image.convert("RGB")

    return prompt_dataset([{**row, "image": load(row["image"])} for row in rows])


def prompt_dataset(rows: list[dict]):
    """A TRL dataset: conversational prompt (TRL inserts the image), the card (a PIL image), the request."""
    from datasets import Dataset

    return Dataset.from_dict({
        "prompt": [[{"role": "user", "content": row["prompt"]}] for row in rows],
        "image": [row["image"] for row in rows],
        "request": [row["prompt"] for row in rows],
        "label": [row["label"] for row in rows],
    })
