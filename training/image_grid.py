"""Images resized once, before GRPO, to exactly the size the trainer's processor would give them.

The trainer's processor caps images at the recipe's `max_pixels`, and TRL expands each prompt's image
placeholder to that many image tokens. TRL's colocated vLLM is built without that cap (TRL 1.16
`VLLMGeneration`: `LLM(model=..., max_model_len=...)`, no `mm_processor_kwargs`) and re-processes the raw image
at the checkpoint's own `max_pixels`, and a vLLM server does the same: a 760x760 FigStep card (577,600 px)
becomes more image tokens there than in the prompt ids (huggingface/trl#6401: an M-RoPE crash or a silently
corrupted prompt). Qwen's `smart_resize` is idempotent: an image already at its output size (both sides
multiples of patch_size * merge_size, pixels within [min_pixels, max_pixels]) is left as it is. So an image
resized here once gives the same grid to the trainer, to colocated vLLM and to a vLLM server, whatever cap each
of them applies (as long as it is at least the recipe's).
"""

from __future__ import annotations

import sys


def qwen_smart_resize():
    """transformers' own `smart_resize` of the Qwen2-VL image processor (Qwen2.5-VL and Qwen3-VL use it too).

    Not exported at the top level: it lives in the module of `Qwen2VLImageProcessorPil` (transformers 5.17
    through 5.25 at least; tests/test_image_grid.py fails if a release moves it). Read from that class's own
    module, so a renamed module does not break us."""
    from transformers import Qwen2VLImageProcessorPil

    return sys.modules[Qwen2VLImageProcessorPil.__module__].smart_resize


def processor_size(width: int, height: int, processor) -> tuple[int, int]:
    """(width, height) the processor resizes a `width` x `height` image to, at its own min/max pixels."""
    image_processor = getattr(processor, "image_processor", processor)
    size = image_processor.size
    size = size if isinstance(size, dict) else size.to_dict() if hasattr(size, "to_dict") else dict(size)
    factor = image_processor.patch_size * image_processor.merge_size
    new_height, new_width = qwen_smart_resize()(height, width, factor=factor, min_pixels=size["shortest_edge"],
                                               max_pixels=size["longest_edge"])
    return new_width, new_height


def resize_for_processor(image, processor):
    """`image` (PIL) at the size the processor would give it, resampled as the processor resamples."""
    from PIL import Image

    target = processor_size(image.width, image.height, processor)
    if target == image.size:
        return image
    image_processor = getattr(processor, "image_processor", processor)
    resample = getattr(image_processor, "resample", None)
    return image.resize(target, Image.Resampling(int(resample)) if resample is not None else Image.Resampling.BICUBIC)


def resize_dataset_images(dataset, processor, column: str = "image"):
    """The GRPO dataset with every image in `column` resized for the processor (see the module docstring)."""
    return dataset.map(lambda row: {column: resize_for_processor(row[column], processor)})
