"""The tiny Qwen2.5-VL builder writes a folder that behaves like a real Qwen2.5-VL checkpoint."""

import json

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoTokenizer

from saferdemo.cards import render_card
from saferdemo.loading import ImageOnlyQwen2_5_VLProcessor, has_torchvision, load_processor
from saferdemo.prompts import user_turn
from training.miniature import truth, world
from training.miniature.tiny_qwen import TinyQwenConfig, build_tiny_qwen

TINY = TinyQwenConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64,
                      vision_hidden_size=32, vision_intermediate_size=64, vision_heads=1, vocab_size=600)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    build_tiny_qwen(path, truth.corpus(world.load_phrases()), TINY)
    return path


def test_loads_with_auto_classes_offline(folder):
    model = AutoModelForImageTextToText.from_pretrained(folder)
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    config = json.loads((folder / "processor_config.json").read_text())
    assert config["processor_class"] == "Qwen2_5_VLProcessor"
    processor = load_processor(folder)
    if not has_torchvision():
        assert isinstance(processor, ImageOnlyQwen2_5_VLProcessor)


def test_chat_template_places_image_tokens_like_qwen2_5_vl(folder):
    processor = load_processor(folder)
    text = processor.apply_chat_template([user_turn("Complete the list.")], add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Complete the list.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    card = render_card("Steps to bake a birthday cake.", world.CANONICAL_STYLE)
    batch = processor(text=[text], images=[card], return_tensors="pt")
    t, h, w = batch["image_grid_thw"][0].tolist()
    image_tokens = (batch["input_ids"] == processor.image_token_id).sum().item()
    assert image_tokens == t * h * w // 4 == 40  # a 224x140 card: 8 x 5 merged patches


def test_tokenizer_keeps_tags_and_qwen_special_tokens(folder):
    tokenizer = AutoTokenizer.from_pretrained(folder)
    for tag in ("<think>", "</think>", "<reflection>", "</reflection>"):
        assert len(tokenizer(tag, add_special_tokens=False)["input_ids"]) == 1
    ids = tokenizer("<think>hi</think><|im_end|>", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "<think>hi</think>"
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.decode(tokenizer("naïve café 🙂")["input_ids"]) == "naïve café 🙂"  # byte-level


def test_generates_with_an_image(folder):
    model = AutoModelForImageTextToText.from_pretrained(folder)
    processor = load_processor(folder)
    text = processor.apply_chat_template([user_turn("Read it.")], add_generation_prompt=True, tokenize=False)
    batch = processor(text=[text], images=[render_card("Steps to clean a window.")], return_tensors="pt")
    out = model.generate(**batch, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > batch["input_ids"].shape[1]
    # Large uploads are scaled down to the processor's max_pixels, capping the image tokens.
    from PIL import Image

    big = processor(text=[text], images=[Image.new("RGB", (3000, 2000), "white")], return_tensors="pt")
    assert big["image_grid_thw"][0].prod().item() * 14 * 14 <= TINY.max_pixels
    assert torch.isfinite(model(**big).logits).all()
