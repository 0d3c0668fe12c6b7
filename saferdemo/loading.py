"""Load a Qwen2.5-VL-style checkpoint and its processor. Everything in the project loads through here.

Qwen2.5-VL's processor includes a video processor that needs torchvision. Where torchvision is missing
(CPU-only machines: PyPI has no CPU build of it), `AutoProcessor` cannot load the folder, so we build the
same processor without its video part: images and text work exactly as with the full processor.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer, Qwen2VLImageProcessorPil
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor


class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL's processor minus the video processor (which imports torchvision)."""

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


def load_processor(path: str | Path, **kwargs):
    """The checkpoint's processor: `AutoProcessor` with torchvision, the image-only processor without."""
    if has_torchvision():
        return AutoProcessor.from_pretrained(path, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(path)
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(path, **kwargs)
    return ImageOnlyQwen2_5_VLProcessor(image_processor, tokenizer, chat_template=tokenizer.chat_template)


def load_model(path: str | Path, **kwargs):
    return AutoModelForImageTextToText.from_pretrained(path, **kwargs)
