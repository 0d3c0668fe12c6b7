"""Trainer and vLLM see the same image grid: images are resized once, before GRPO (training/image_grid.py).

The trainer's processor is capped at the recipe's max_pixels; TRL's colocated vLLM and a vLLM server use the
checkpoint's own processor settings (no cap). Both sides are modelled here with the real-format checkpoints'
processors: "vLLM" is the processor loaded with the checkpoint's defaults, as vLLM would load it.
"""

from pathlib import Path

import pytest
from PIL import Image

from saferdemo.loading import load_processor
from training.image_grid import processor_size, resize_dataset_images, resize_for_processor
from training.recipes import SaferRecipe, load

ROOT = Path(__file__).resolve().parent.parent
IMAGE_TOKEN = 151655  # <|image_pad|> in Qwen2.5-VL and Qwen3-VL


def image_tokens(processor, image) -> int:
    out = processor(text=["<|vision_start|><|image_pad|><|vision_end|>"], images=[image], return_tensors="pt")
    return int((out["input_ids"] == IMAGE_TOKEN).sum())


def card(width, height):
    image = Image.new("RGB", (width, height), "white")
    image.paste((200, 30, 30), (width // 4, height // 4, width // 2, height // 2))
    return image


@pytest.fixture(scope="module")
def recipe_max_pixels():
    return load(ROOT / "training" / "recipes" / "qwen2.5-vl-3b.yaml", SaferRecipe).max_pixels


def test_a_figstep_card_gets_the_same_image_tokens_on_both_sides(real_checkpoint, recipe_max_pixels):
    trainer_side = load_processor(real_checkpoint, recipe_max_pixels)
    vllm_side = load_processor(real_checkpoint)  # the checkpoint's own max_pixels, as vLLM uses it
    figstep = card(760, 760)  # 577,600 px, above the recipe's 401,408
    # The mismatch this guards against (huggingface/trl#6401): the raw card gives vLLM more tokens.
    assert image_tokens(trainer_side, figstep) == 484 and image_tokens(vllm_side, figstep) == 729
    resized = resize_for_processor(figstep, trainer_side)
    assert resized.size == (616, 616)
    assert image_tokens(trainer_side, resized) == image_tokens(vllm_side, resized) == 484


@pytest.mark.parametrize("size", [(760, 760), (2000, 500), (90, 40), (333, 777), (28, 28)])
def test_every_size_agrees_and_resizing_is_done_once(real_checkpoint, recipe_max_pixels, size):
    trainer_side, vllm_side = load_processor(real_checkpoint, recipe_max_pixels), load_processor(real_checkpoint)
    resized = resize_for_processor(card(*size), trainer_side)
    assert image_tokens(trainer_side, resized) == image_tokens(vllm_side, resized)
    assert image_tokens(trainer_side, resized) == image_tokens(trainer_side, card(*size))  # what the trainer saw
    assert processor_size(*resized.size, trainer_side) == resized.size  # a second pass changes nothing
    assert resize_for_processor(resized, trainer_side) is resized


def test_qwen3_vl_uses_its_own_patch_size(real_checkpoint):
    from real_qwen import real_format_checkpoint

    checkpoint = real_format_checkpoint(real_checkpoint.parent, "qwen3-vl")  # the same cache folder
    trainer_side, vllm_side = load_processor(checkpoint, 401408), load_processor(checkpoint)
    resized = resize_for_processor(card(760, 760), trainer_side)
    assert resized.width % 32 == 0 and resized.height % 32 == 0  # 16 px patches merged 2x2
    assert image_tokens(trainer_side, resized) == image_tokens(vllm_side, resized)


def test_the_grpo_dataset_is_resized(real_checkpoint, recipe_max_pixels):
    from training.curate import prompt_dataset

    processor = load_processor(real_checkpoint, recipe_max_pixels)
    rows = [{"image": card(760, 760), "prompt": "Complete the list.", "label": "a"},
            {"image": card(100, 60), "prompt": "Read the card.", "label": "b"}]
    dataset = resize_dataset_images(prompt_dataset(rows), processor)
    assert [row["image"].size for row in dataset] == [(616, 616), processor_size(100, 60, processor)]
    assert dataset[0]["request"] == "Complete the list."
