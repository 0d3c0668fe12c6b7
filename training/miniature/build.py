"""The miniature build: a tiny Qwen2.5-VL family trained on the card world, `python -m training miniature`.

Stages, each driven by the typed recipe (recipes/miniature.yaml): build the tiny model and SFT it into
mini-base (sft.py), fine-tune mini-base into the judge mini-grm (grm_data.py), then the SaFeR stages through
`training.safer.curate_and_train`, the same function GPU users run, which makes mini-safer. Every model is
evaluated on the held-out split; checkpoints, model cards and `report.json` land in the output folder.

The build is resumable per stage: each finished model is recorded in `<out>/build-state.json` (with a hash of the
recipe), and a rerun with the same recipe and output folder skips the models already built there; the file is
removed when the family is complete.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import Qwen2VLImageProcessorPil

from saferdemo.engines.transformers_engine import TransformersEngine
from saferdemo.judge import GRMClient
from saferdemo.judgement import RewardConfig
from saferdemo.loading import load_model, load_processor
from training.curate import CurationConfig
from training.grpo import GRPOStageConfig
from training.miniature import grm_data, truth, world
from training.miniature.evaluate_formats import evaluate_all
from training.miniature.model_cards import write_model_card
from training.miniature.sft import Behaviour, ImagePool, Stage, base_batches, train_stage
from training.miniature.tiny_qwen import TinyQwenConfig, build_tiny_qwen, save_checkpoint
from training.recipes import SaferConfig
from training.safer import curate_and_train

JUDGE_MAX_NEW_TOKENS, JUDGE_BATCH = 200, 32  # a compact mini-grm judgement is ~55 tokens (the full form ~140)


@dataclass
class EvalConfig:
    """Held-out evaluation settings (evaluate_formats.evaluate_all)."""

    per_phrase: int = 3
    samples: int = 8
    seed: int = 1234
    batch_size: int = 32
    max_new_tokens: int = 160
    figstep_per_phrase: int = 2  # FigStep-format cards (evaluate_formats.figstep_stats)
    honesty_per_probe: int = 24  # inputs per honesty probe, plus SafeBench-Tiny's 50 images (evaluate_formats.honesty_stats)
    multi_turn: int = 96  # conversations (evaluate_formats.multiturn_stats)


@dataclass
class PoolConfig:
    """The pre-rendered training images (sft.ImagePool)."""

    per_phrase: int = 8
    other: int = 500
    no_card: int = 200


@dataclass
class BaseConfig:
    behaviour: Behaviour = field(default_factory=Behaviour)
    stages: list[Stage] = field(default_factory=list)
    pool: PoolConfig = field(default_factory=PoolConfig)
    # A mini-base checkpoint to continue from instead of a fresh tiny Qwen2.5-VL ("" = from scratch). Its
    # tokenizer is kept; its processor gets this recipe's pixel budget.
    init_from: str = ""


@dataclass
class GRMEvalConfig:
    per_phrase: int = 2
    seed: int = 4321
    batch_size: int = 16
    max_new_tokens: int = 200


@dataclass
class GRMBuildConfig:
    samples_per_phrase: int = 8  # mini-base samples per phrase (T=1) to judge
    corruption_rate: float = 0.4  # share of training responses that are controlled corruptions
    prefix_rate: float = 0.12  # share of reasoning prefixes judged as the turning-point instrument sends them
    stages: list[Stage] = field(default_factory=list)
    eval: GRMEvalConfig = field(default_factory=GRMEvalConfig)
    # A mini-grm checkpoint to continue from instead of mini-base ("" = from mini-base): a judge that already
    # reads cards and writes judgements learns a new output line in a few hundred steps (issue 23's quote line).
    init_from: str = ""


@dataclass
class MiniatureRecipe:
    seed: int = 0
    model: TinyQwenConfig = field(default_factory=TinyQwenConfig)
    base: BaseConfig = field(default_factory=BaseConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    grm: GRMBuildConfig = field(default_factory=GRMBuildConfig)  # the judge this build trains
    candidates_per_phrase: int = 2  # training cards per phrase offered to curation
    unreadable_candidates: int = 0  # cards of text outside the table offered to curation too (world.candidates)
    curation: CurationConfig = field(default_factory=CurationConfig)
    grpo: GRPOStageConfig = field(default_factory=GRPOStageConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)


def run(recipe: MiniatureRecipe, out_dir: str | Path, recipe_path: str = "", command: str = "",
        only: str | None = None) -> dict:
    """Build the family into `out_dir`; `only="grm"` rebuilds just mini-grm from the mini-base already there and
    updates its entry in the existing report (the report lists such partial rebuilds)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.seed)
    phrases = world.load_phrases()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if only == "grm":
        return _rebuild_grm(recipe, out_dir, phrases, timings, command)
    if only is not None:
        raise ValueError(f"only the grm stage can be rebuilt alone, not {only!r}")
    state = _State(out_dir, recipe)
    pool = _timed(timings, "render_pool", ImagePool, phrases, recipe.seed, **asdict(recipe.base.pool))
    models = {}
    for name, build in (("mini-base", lambda: build_base(recipe, out_dir / "mini-base", phrases, timings, pool)),
                        ("mini-grm", lambda: build_grm(recipe, out_dir / "mini-grm", out_dir / "mini-base", phrases,
                                                       timings, pool))):
        models[name] = state.done(name) or state.record(name, build(), timings)
    models["mini-safer"], curation = build_safer(recipe, out_dir, phrases, timings)
    timings.update({k: v for k, v in state.timings.items() if k not in timings})
    timings["total"] = time.perf_counter() - started
    report = {
        "recipe": relative(Path(recipe_path)) if recipe_path else "",
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
    state.finish()
    return report


class _State:
    """Which models of this recipe are already built in `out_dir` (a long build can span sessions)."""

    def __init__(self, out_dir: Path, recipe):
        self.path = out_dir / "build-state.json"
        self.hash = hashlib.sha256(json.dumps(asdict(recipe), sort_keys=True, default=str).encode()).hexdigest()[:16]
        saved = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.entries = saved.get("entries", {}) if saved.get("recipe") == self.hash else {}
        self.timings = saved.get("timings", {}) if self.entries else {}
        self.out_dir = out_dir

    def done(self, name: str) -> dict | None:
        entry = self.entries.get(name)
        if entry and (self.out_dir / name).is_dir():
            print(f"{name}: already built for this recipe in {self.out_dir}, kept (delete {self.path} to rebuild)")
            return entry
        return None

    def record(self, name: str, entry: dict, timings: dict) -> dict:
        self.entries[name] = entry
        self.timings.update(timings)
        self.path.write_text(json.dumps({"recipe": self.hash, "entries": self.entries, "timings": self.timings}) + "\n")
        return entry

    def finish(self) -> None:
        self.path.unlink(missing_ok=True)


def _rebuild_grm(recipe: MiniatureRecipe, out_dir: Path, phrases, timings: dict, command: str) -> dict:
    report_path = out_dir / "report.json"
    if not report_path.is_file() or not (out_dir / "mini-base").is_dir():
        raise FileNotFoundError(f"{out_dir} has no built family (report.json and mini-base) to rebuild mini-grm in")
    report = json.loads(report_path.read_text())
    started = time.perf_counter()
    pool = _timed(timings, "render_pool", ImagePool, phrases, recipe.seed, **asdict(recipe.base.pool))
    report["models"]["mini-grm"] = build_grm(recipe, out_dir / "mini-grm", out_dir / "mini-base", phrases, timings, pool)
    timings["grm_rebuild_total"] = time.perf_counter() - started
    report["timings_s"].update({k: round(v, 1) for k, v in timings.items()})
    report.setdefault("partial_rebuilds", []).append({"stage": "grm", "command": command,
                                                      "seconds": round(timings["grm_rebuild_total"], 1)})
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    write_model_card(out_dir / "mini-grm", report, "mini-grm")
    return report


def relative(path: Path) -> str:
    """The path relative to the working directory when inside it, so reports don't leak machine paths."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _timed(timings: dict, name: str, fn, *args, **kwargs):
    t = time.perf_counter()
    result = fn(*args, **kwargs)
    timings[name] = time.perf_counter() - t
    return result


def _train_stages(model, processor, stages: list[Stage], batches, seed: int, prefix: str, timings: dict) -> dict:
    losses = {}
    for index, stage in enumerate(stages):
        curve = _timed(timings, f"{prefix}_{stage.name}", train_stage, model, processor, stage, batches, seed + index + 1)
        losses[stage.name] = {"first": round(curve[0], 4), "last": round(sum(curve[-10:]) / len(curve[-10:]), 4)}
    return losses


def _entry(model, folder: Path, **extra) -> dict:
    return {
        "path": relative(folder),
        "parameters": sum(p.numel() for p in model.parameters()),
        "size_mb": round(sum(f.stat().st_size for f in folder.iterdir()) / 1e6, 2),
        **extra,
    }


def build_base(recipe: MiniatureRecipe, folder: Path, phrases, timings: dict, pool: ImagePool | None = None) -> dict:
    """mini-base: a tiny Qwen2.5-VL built from scratch and SFT'd into the base reasoning model."""
    if recipe.base.init_from:
        model, processor = load_model(recipe.base.init_from), load_processor(recipe.base.init_from)
        processor.image_processor = Qwen2VLImageProcessorPil(
            size={"shortest_edge": recipe.model.min_pixels, "longest_edge": recipe.model.max_pixels})
    else:
        model, processor = _timed(timings, "build_tiny_qwen", build_tiny_qwen, folder, truth.corpus(phrases), recipe.model)
    batches = base_batches(phrases, recipe.base.behaviour, pool)
    losses = _train_stages(model, processor, recipe.base.stages, batches, recipe.seed, "sft", timings)
    save_checkpoint(model, processor, folder)
    heldout = _timed(timings, "evaluate_base", evaluate_all, model, processor, phrases, **asdict(recipe.eval))
    examples = heldout.pop("examples")
    return _entry(model, folder, config=asdict(recipe.model), behaviour=asdict(recipe.base.behaviour), losses=losses,
                  heldout=heldout, examples=examples)


def build_grm(recipe: MiniatureRecipe, folder: Path, base_folder: Path, phrases, timings: dict,
              pool: ImagePool | None = None) -> dict:
    """mini-grm: mini-base (or the judge `grm.init_from`) fine-tuned to write judgements (grm_data.py)."""
    cfg = recipe.grm
    policy, processor = load_model(base_folder), load_processor(base_folder)
    samples = _timed(timings, "grm_sample_policy", grm_data.sample_policy_responses, policy, processor, phrases,
                     cfg.samples_per_phrase, "train", recipe.seed)
    model = load_model(cfg.init_from or base_folder)
    batches = grm_data.grm_batches(phrases, samples, cfg.corruption_rate, pool, cfg.prefix_rate)
    losses = _train_stages(model, processor, cfg.stages, batches, recipe.seed + 100, "grm", timings)
    save_checkpoint(model, processor, folder)
    # output: mini-grm writes what the image shows, then the compact form (Judgement.to_compact_json); it was
    # trained on prompts with up to three earlier turns of the conversation.
    config = {"rubric": grm_data.RUBRIC, "schema": "saferdemo.judgement", "conversation": True, "output": "compact"}
    (folder / "judge_config.json").write_text(json.dumps(config, indent=2) + "\n")
    judge = miniature_judge(model, processor, recipe.reward)
    heldout = _timed(timings, "evaluate_grm", grm_data.evaluate_grm, judge, policy, processor, phrases,
                     **asdict(cfg.eval))
    return _entry(model, folder, rubric=grm_data.RUBRIC, losses=losses, heldout=heldout)


def miniature_judge(model, processor, reward: RewardConfig | None = None) -> GRMClient:
    """mini-grm as a judge client, with the rubric it was trained on."""
    return GRMClient(TransformersEngine(model, processor, "mini-grm"), grm_data.RUBRIC, JUDGE_MAX_NEW_TOKENS,
                     reward, JUDGE_BATCH, conversation=True)


def build_safer(recipe: MiniatureRecipe, out_dir: Path, phrases, timings: dict) -> tuple[dict, dict]:
    """mini-safer: the SaFeR stages (training/safer.py) on training cards, mini-base as the policy."""
    judge = miniature_judge(load_model(out_dir / "mini-grm"), load_processor(out_dir / "mini-grm"), recipe.reward)
    candidates = world.candidates(phrases, recipe.candidates_per_phrase, recipe.curation.seed,
                                  recipe.unreadable_candidates)
    method = SaferConfig(recipe.curation, recipe.grpo, recipe.reward)
    folder = out_dir / "mini-safer"
    result = _timed(timings, "safer", curate_and_train, out_dir / "mini-base", judge, candidates, method, out_dir, folder)
    model, processor = load_model(folder), load_processor(folder)
    heldout = _timed(timings, "evaluate_safer", evaluate_all, model, processor, phrases, **asdict(recipe.eval))
    examples = heldout.pop("examples")
    entry = _entry(model, folder, grpo=asdict(recipe.grpo), curated_prompts=result["curated_prompts"],
                   rollouts=result["rollouts"], rollout_steps=result["rollout_steps"],
                   reward_curve=result["reward_curve"], heldout=heldout, examples=examples)
    return entry, result["curation"]
