"""Typed recipes: every section of a YAML recipe is a dataclass, and a key nobody reads is an error.

TRL's `TrlParser` fills flat dataclasses from a YAML file; our recipes have sections (curation, grpo, reward,
...), so `parse` does the same for nested dataclasses: each key must be a field of its section, values are
checked against the field's type, and a mistake names its place (`grpo.lr: expected a number, got 'fast'`).
Both recipes share the method's three sections, `SaferConfig`: the miniature build and `python -m training
safer` run the very same curation → GRPO code with them (training/safer.py).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from saferdemo.judgement import RewardConfig
from training.curate import CurationConfig
from training.grpo import GRPOStageConfig


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the key."""


@dataclass
class SaferConfig:
    """The method: QI-Safe curation, GRPO with safety-aware rollouts, and how a judgement becomes a reward."""

    curation: CurationConfig = field(default_factory=CurationConfig)
    grpo: GRPOStageConfig = field(default_factory=GRPOStageConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)


@dataclass
class JudgeConfig:
    """Which judge scores the policy: a GRM checkpoint or an instruction model with the full rubric."""

    model: str
    rubric: str | None = None  # None: the checkpoint's judge_config.json says, else "full"
    max_new_tokens: int = 512
    batch_size: int = 16


@dataclass
class SaferRecipe:
    """`python -m training safer`: SaFeR training of any Qwen2.5-VL-style checkpoint on a prompt pool."""

    policy: str
    judge: JudgeConfig
    prompts: str  # JSONL in the audit's format (saferdemo.audit.datasets)
    seed: int = 0
    max_pixels: int | None = None
    curation: CurationConfig = field(default_factory=CurationConfig)
    grpo: GRPOStageConfig = field(default_factory=GRPOStageConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)

    @property
    def method(self) -> SaferConfig:
        return SaferConfig(self.curation, self.grpo, self.reward)


def load(path: str | Path, cls):
    """Read a YAML recipe into `cls`, or raise RecipeError naming the file and the key."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise RecipeError(f"{path}: cannot read the recipe: {error}") from error
    return parse_section(cls, data or {}, str(path))


def parse_section(cls, data, where: str):
    """`data` (from YAML) as an instance of the dataclass `cls`, checked key by key."""
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: expected a mapping of settings, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise RecipeError(f"{where}: unknown setting(s) {', '.join(unknown)}; expected one of {', '.join(known)}")
    missing = [name for name, f in known.items() if name not in data and _required(f)]
    if missing:
        raise RecipeError(f"{where}: missing {', '.join(missing)}")
    return cls(**{name: _value(hints[name], value, f"{where}.{name}") for name, value in data.items()})


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _value(hint, value, where: str):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _value(inner, value, where)
    if dataclasses.is_dataclass(hint):
        return parse_section(hint, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{where}: expected a list, got {value!r}")
        items = [_value(args[0] if args else typing.Any, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {value!r}")
        return {k: _value(args[1], v, f"{where}.{k}") for k, v in value.items()} if args else dict(value)
    return _scalar(hint, value, where)


def _scalar(hint, value, where: str):
    if hint is typing.Any:
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (str, bool) and isinstance(value, hint):
        return value
    names = {float: "a number", int: "an integer", str: "text", bool: "true or false"}
    raise RecipeError(f"{where}: expected {names.get(hint, hint)}, got {value!r}")
