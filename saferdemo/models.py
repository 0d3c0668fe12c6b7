"""Which models the demo runs, and loading them: CLI flags, else environment variables, else the bundled ones.

    SAFERDEMO_BASE     the base model          (default: assets/models/mini-base)
    SAFERDEMO_ALIGNED  the SaFeR-aligned model (default: assets/models/mini-safer)
    SAFERDEMO_GRM      the judge               (default: assets/models/mini-grm; "none" turns judging off)

Each may be a local folder or a hub id, a full checkpoint or a LoRA adapter (saferdemo/loading.py).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from saferdemo.engine import TransformersEngine
from saferdemo.judge import GRMClient, rubric_of
from saferdemo.session import Column

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "models"
DEFAULTS = {"base": ASSETS / "mini-base", "aligned": ASSETS / "mini-safer", "grm": ASSETS / "mini-grm"}
ENV = {"base": "SAFERDEMO_BASE", "aligned": "SAFERDEMO_ALIGNED", "grm": "SAFERDEMO_GRM"}


@dataclass
class ModelChoice:
    base: str
    aligned: str
    grm: str | None  # None: no judge (no scores, no safety loop)

    @classmethod
    def resolve(cls, base: str | None = None, aligned: str | None = None, grm: str | None = None) -> ModelChoice:
        def pick(role, flag):
            return str(flag or os.environ.get(ENV[role]) or DEFAULTS[role])

        judge = pick("grm", grm)
        return cls(pick("base", base), pick("aligned", aligned), None if judge.lower() == "none" else judge)

    def titles(self) -> dict[str, str]:
        return {"base": _short(self.base), "aligned": _short(self.aligned), "grm": _short(self.grm) if self.grm else "none"}


def _short(path: str) -> str:
    p = Path(path)
    return p.name if p.is_absolute() and p.exists() else path


def load_models(choice: ModelChoice, device: str | None = None, max_pixels: int | None = None):
    """(columns, judge): engines for both columns and the GRM client, all on `device` (default: GPU if any)."""
    columns = {role: Column(role, TransformersEngine.from_pretrained(getattr(choice, role), device, max_pixels, role))
               for role in ("base", "aligned")}
    judge = None
    if choice.grm:
        engine = TransformersEngine.from_pretrained(choice.grm, device, max_pixels, "grm")
        judge = GRMClient(engine, rubric_of(choice.grm))
    return columns, judge


def zero_gpu():
    """On a ZeroGPU Space, `spaces.GPU` sized for one turn (both columns + judge); elsewhere None."""
    if not os.environ.get("SPACES_ZERO_GPU") or importlib.util.find_spec("spaces") is None:
        return None
    import spaces

    return spaces.GPU(duration=int(os.environ.get("SAFERDEMO_GPU_SECONDS", "90")))
