"""Load a Qwen2.5-VL-style checkpoint and its processor. Everything in the project loads through here.

A checkpoint is a local folder or a hub id, either full weights or a PEFT LoRA adapter (its
`adapter_config.json` names the base, which is loaded and merged). The device defaults to the GPU in
bfloat16 when there is one, else the CPU in float32. `trust_remote_code` stays off unless asked for.
`max_pixels` caps how many pixels an image may keep after resizing, so a large upload cannot exhaust memory.

Qwen2.5-VL's processor includes a video processor that needs torchvision. Where torchvision is missing
(CPU-only machines: PyPI has no CPU build of it), `AutoProcessor` cannot load the folder, so we build the
same processor without its video part: images and text work exactly as with the full processor.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer, Qwen2VLImageProcessorPil
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor


class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL's processor minus the video processor (which imports torchvision).

    `checkpoint_class` is the processor class the checkpoint itself names (Qwen3VLProcessor for a Qwen3-VL):
    `save_processor` writes it, so a saved folder loads with its own class where torchvision exists."""

    checkpoint_class = "Qwen2_5_VLProcessor"

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


def has_torchvision() -> bool:
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:  # a wheel built for another torch is installed but fails to import
        import torchvision  # noqa: F401
    except Exception:
        return False
    return True


class ModelLoadError(RuntimeError):
    """A checkpoint could not be loaded; the message says which and why."""


def pick_device(device: str | None = None) -> str:
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(device: str) -> torch.dtype:
    return torch.bfloat16 if str(device).startswith("cuda") else torch.float32


def adapter_base(path: str | Path) -> str | None:
    """The base model a local LoRA adapter folder was trained on, or None for a full checkpoint."""
    config = Path(path) / "adapter_config.json"
    if not config.is_file():
        return None
    try:
        base = json.loads(config.read_text())["base_model_name_or_path"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelLoadError(f"cannot read {config}: it must be JSON naming base_model_name_or_path "
                             f"({type(error).__name__})") from error
    if not isinstance(base, str) or not base:
        raise ModelLoadError(f"{config} names no base model (base_model_name_or_path)")
    return base


def load_processor(path: str | Path, max_pixels: int | None = None, trust_remote_code: bool = False):
    """The checkpoint's processor: `AutoProcessor` with torchvision, the image-only processor without."""
    base = adapter_base(path)
    if base and not (Path(path) / "tokenizer_config.json").is_file():
        path = base  # an adapter saved without its processor: use the base's
    kwargs = {"max_pixels": max_pixels} if max_pixels else {}
    try:
        if has_torchvision():
            return AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(path, **kwargs)
    except Exception as error:  # a corrupt file fails in many ways (OSError, JSON, the tokenizers library)
        raise ModelLoadError(f"cannot load the processor of {path}: {_first_line(error)}") from error
    processor = ImageOnlyQwen2_5_VLProcessor(image_processor, tokenizer, chat_template=processor_chat_template(path, tokenizer))
    processor.checkpoint_class = checkpoint_processor_class(path) or processor.checkpoint_class
    return processor


def checkpoint_processor_class(path: str | Path) -> str | None:
    """The processor class a checkpoint names (processor_config, preprocessor_config or tokenizer_config)."""
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        if Path(path).is_dir():
            file = Path(path) / name
        else:  # a hub id: its cached files only (HF_HUB_OFFLINE=1 at run time)
            try:
                from transformers.utils import cached_file

                file = cached_file(str(path), name)
            except (OSError, ValueError):
                continue
        if file is None or not Path(file).is_file():
            continue
        found = json.loads(Path(file).read_text()).get("processor_class")
        if found:
            return found
    return None


def processor_chat_template(path: str | Path, tokenizer) -> str | None:
    """The processor's own chat template, as AutoProcessor would pick it: real Qwen2.5-VL folders keep the
    vision template in chat_template.json (or .jinja), which may differ from the tokenizer's text template."""
    folder = Path(path)
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text()
    if (folder / "chat_template.json").is_file():
        return json.loads((folder / "chat_template.json").read_text()).get("chat_template")
    return tokenizer.chat_template


def load_model(path: str | Path, device: str | None = None, dtype: torch.dtype | None = None,
               trust_remote_code: bool = False):
    """Weights on `device` (default: GPU if any) in eval mode; a LoRA adapter is merged into its base."""
    device = pick_device(device)
    kwargs = {"dtype": dtype or pick_dtype(device), "trust_remote_code": trust_remote_code}
    base = adapter_base(path)
    try:
        model = AutoModelForImageTextToText.from_pretrained(base or path, **kwargs)
        if base:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
    except Exception as error:  # truncated or garbage weights raise safetensors' own error type, among others
        raise ModelLoadError(f"cannot load the model {path}: {_first_line(error)}") from error
    return model.to(device).eval()


def save_processor(processor, folder: str | Path) -> None:
    """Save a processor so that `AutoProcessor` loads it where torchvision exists, as the checkpoint's own
    class: a folder saved from the image-only processor would otherwise name a class only saferdemo knows (and
    a Qwen3-VL run must not come back as Qwen2.5-VL's processor)."""
    folder = Path(folder)
    processor.save_pretrained(folder)
    name_to_write = getattr(processor, "checkpoint_class", None) or type(processor).__name__
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        path = folder / name
        if path.exists():
            config = json.loads(path.read_text())
            config.pop("checkpoint_class", None)
            if "processor_class" in config or name != "preprocessor_config.json":
                config["processor_class"] = name_to_write
            path.write_text(json.dumps(config, indent=2) + "\n")


def _first_line(error: Exception) -> str:
    line = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {line}" if line else type(error).__name__
