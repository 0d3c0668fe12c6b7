"""Which models the demo runs, and loading them: CLI flags, else environment variables, else the bundled ones.

    SAFERDEMO_BASE     the base model          (default: assets/models/mini-base)
    SAFERDEMO_ALIGNED  the SaFeR-aligned model (default: assets/models/mini-safer)
    SAFERDEMO_GRM      the judge               (default: assets/models/mini-grm; "none" turns judging off)

Each may be a local folder or a hub id, a full checkpoint or a LoRA adapter (saferdemo/loading.py), run
in-process by transformers (default) or vLLM (`backend="vllm"`). A role given a URL
(SAFERDEMO_BASE_URL, SAFERDEMO_ALIGNED_URL, SAFERDEMO_GRM_URL or the matching flags) is instead the model
of that name on an OpenAI-compatible server; its API key comes from $OPENAI_API_KEY (or `api_key_env`).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path

from saferdemo.app.session import Column
from saferdemo.engines.batching import BatchingEngine
from saferdemo.engines.transformers_engine import TransformersEngine
from saferdemo.judge import GRMClient, rubric_of, sees_conversation

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "models"
DEFAULTS = {"base": ASSETS / "mini-base", "aligned": ASSETS / "mini-safer", "grm": ASSETS / "mini-grm"}
ENV = {"base": "SAFERDEMO_BASE", "aligned": "SAFERDEMO_ALIGNED", "grm": "SAFERDEMO_GRM"}
ROLES = ("base", "aligned", "grm")


@dataclass
class ModelChoice:
    base: str
    aligned: str
    grm: str | None  # None: no judge (no scores, no safety loop)
    urls: dict[str, str | None] = field(default_factory=dict)  # role -> OpenAI-compatible base URL
    backend: str = "transformers"  # transformers | vllm, for the roles that run in this process
    api_key_env: str = "OPENAI_API_KEY"
    # transformers: one worker per model batches all users' requests (engines/batching.py). Off on ZeroGPU,
    # where the GPU exists only inside each @spaces.GPU call, never in a worker thread.
    batching: bool = True

    @classmethod
    def resolve(cls, base: str | None = None, aligned: str | None = None, grm: str | None = None,
                urls: dict[str, str | None] | None = None, backend: str = "transformers",
                api_key_env: str = "OPENAI_API_KEY", batching: bool = True) -> ModelChoice:
        def pick(role, flag):
            return str(flag or os.environ.get(ENV[role]) or DEFAULTS[role])

        urls = {role: (urls or {}).get(role) or os.environ.get(f"{ENV[role]}_URL") for role in ROLES}
        judge = pick("grm", grm)
        return cls(pick("base", base), pick("aligned", aligned), None if judge.lower() == "none" else judge, urls,
                   backend, api_key_env, batching and not os.environ.get("SPACES_ZERO_GPU"))

    def titles(self) -> dict[str, str]:
        return {"base": _short(self.base), "aligned": _short(self.aligned), "grm": _short(self.grm) if self.grm else "none"}


def _short(path: str) -> str:
    p = Path(path)
    return p.name if p.is_absolute() and p.exists() else path


def load_engine(choice: ModelChoice, role: str, device: str | None = None, max_pixels: int | None = None):
    """The engine for one role: remote when it has a URL, else vLLM or transformers in this process."""
    model = getattr(choice, role)
    if choice.urls.get(role):
        from saferdemo.engines.openai_engine import OpenAIEngine

        return OpenAIEngine(choice.urls[role], model, choice.api_key_env, name=role)
    if choice.backend == "vllm":
        from saferdemo.engines.vllm_engine import VLLMEngine

        return VLLMEngine.from_pretrained(model, role, max_pixels)
    engine = TransformersEngine.from_pretrained(model, device, max_pixels, role)
    return BatchingEngine(engine) if choice.batching else engine


def load_models(choice: ModelChoice, device: str | None = None, max_pixels: int | None = None):
    """(columns, judge): engines for both columns and the GRM client (default device: GPU if any)."""
    columns = {role: Column(role, load_engine(choice, role, device, max_pixels)) for role in ("base", "aligned")}
    judge = None
    if choice.grm:
        remote = bool(choice.urls.get("grm"))
        rubric = "full" if remote else rubric_of(choice.grm)
        judge = GRMClient(load_engine(choice, "grm", device, max_pixels), rubric,
                          conversation=remote or sees_conversation(choice.grm))
    return columns, judge


def share_cpu_cores(columns: dict[str, Column], judge: GRMClient | None) -> int | None:
    """Split the CPU's cores among the models that run in this process on it; returns the threads each op may
    use now (None: left as it was).

    The models' workers run at the same time, and every torch op on the CPU starts as many threads as there
    are cores: three workers on two cores then wait for each other's threads. Measured on 2 cores with the
    bundled models through the server (n = 4): one thread each made one user's turn 1.13x and eight users'
    turns 1.10x faster. An explicit OMP_NUM_THREADS, a GPU or a single local model leaves it alone."""
    import torch

    engines = [column.engine for column in columns.values()] + ([judge.engine] if judge else [])
    on_cpu = [e for e in engines if getattr(getattr(e, "model", None), "device", None) == torch.device("cpu")]
    if os.environ.get("OMP_NUM_THREADS") or len(on_cpu) < 2:
        return None
    torch.set_num_threads(max(1, torch.get_num_threads() // len(on_cpu)))
    return torch.get_num_threads()


def zero_gpu():
    """On a ZeroGPU Space, a decorator that runs a function under `spaces.GPU`, held for as long as that call
    needs (`gpu_duration`); elsewhere None."""
    if not os.environ.get("SPACES_ZERO_GPU") or importlib.util.find_spec("spaces") is None:
        return None
    import spaces

    def decorate(fn):
        return spaces.GPU(duration=gpu_duration(fn))(fn)

    return decorate


def gpu_seconds(max_new_tokens: float | None = None) -> int:
    """How long to hold the GPU: SAFERDEMO_GPU_SECONDS (default 90) for a turn of 192 new tokens, scaled by the
    turn's max new tokens, between 30 and 300 s; a call with no max new tokens (an audit) gets the most."""
    base = int(os.environ.get("SAFERDEMO_GPU_SECONDS", "90"))
    if max_new_tokens is None:
        return 300
    return int(min(300, max(30, base * float(max_new_tokens) / 192)))


def gpu_duration(fn):
    """ZeroGPU's `duration` for `fn`: it is called with the arguments of the call about to run, and reads
    max new tokens by parameter name (respond has it fifth, /compare fourth), never by position."""
    signature = inspect.signature(fn)

    def duration(*args, **kwargs) -> int:
        try:
            value = signature.bind_partial(*args, **kwargs).arguments.get("max_new_tokens")
        except TypeError:  # not a call of fn: hold the most
            value = None
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
        return gpu_seconds(float(value) if number else None)

    return duration
