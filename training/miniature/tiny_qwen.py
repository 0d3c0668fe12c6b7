"""Build a tiny, untrained Qwen2.5-VL: real architecture and processor classes, miniature dimensions.

The tokenizer is a byte-level BPE trained here on the world's text, with Qwen's special tokens and
Qwen2.5-VL's chat template, so the folder behaves like a real Qwen2.5-VL checkpoint in every API
(`AutoProcessor`, `AutoModelForImageTextToText`, `apply_chat_template`, `generate`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import AddedToken, Regex, Tokenizer, normalizers, pre_tokenizers, trainers
from tokenizers.models import BPE
from transformers import (
    GenerationConfig,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Tokenizer,
    Qwen2VLImageProcessorPil,
)
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

from saferdemo.loading import ImageOnlyQwen2_5_VLProcessor, save_processor
from saferdemo.prompts import REFLECTION_CLOSE, REFLECTION_OPEN, THINK_CLOSE, THINK_OPEN

# Qwen2.5-VL's special tokens, in its order; `<|endoftext|>` pads, `<|im_end|>` ends a turn.
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]  # fmt: skip
# Tags are ordinary added tokens (as in Qwen3) so they survive `skip_special_tokens=True`.
TAG_TOKENS = [THINK_OPEN, THINK_CLOSE, REFLECTION_OPEN, REFLECTION_CLOSE]

# Qwen2.5-VL-Instruct's chat template, verbatim.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass
class TinyQwenConfig:
    vocab_size: int = 2048
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    vision_hidden_size: int = 64
    vision_depth: int = 2
    vision_heads: int = 2
    vision_intermediate_size: int = 128
    min_pixels: int = 28 * 28 * 4
    # 238² (not 224²): every square image of at least ~238 px, a FigStep card at 0.5-1.0x included, resizes to the
    # same 224x224 grid (64 image tokens); at exactly 224² float rounding sends some sizes to 196x196.
    max_pixels: int = 238 * 238
    seed: int = 0


def train_tokenizer(corpus: Iterable[str], vocab_size: int) -> Qwen2Tokenizer:
    """Byte-level BPE with Qwen2's normaliser and pre-tokeniser, wrapped in Qwen2's tokenizer class."""
    bpe = Tokenizer(BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer)
    tokenizer = Qwen2Tokenizer(
        vocab=bpe.get_vocab(),
        merges=_merges(bpe),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",  # generation pads on the left, as for Qwen2.5-VL
        model_max_length=4096,
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    tokenizer.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in TAG_TOKENS])
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _merges(bpe: Tokenizer) -> list[tuple[str, str]]:
    merges = json.loads(bpe.to_str())["model"]["merges"]
    return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]


def build_processor(tokenizer: Qwen2Tokenizer, cfg: TinyQwenConfig) -> ImageOnlyQwen2_5_VLProcessor:
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": cfg.min_pixels, "longest_edge": cfg.max_pixels}
    )
    return ImageOnlyQwen2_5_VLProcessor(image_processor, tokenizer, chat_template=CHAT_TEMPLATE)


def model_config(tokenizer: Qwen2Tokenizer, cfg: TinyQwenConfig) -> Qwen2_5_VLConfig:
    head_dim = cfg.hidden_size // cfg.num_heads
    # M-RoPE splits each head's rotary half into (time, height, width) sections, Qwen's 1:1.5:1.5 ratio.
    t = head_dim // 2 // 4
    mrope_section = [t, (head_dim // 2 - t) // 2, head_dim // 2 - t - (head_dim // 2 - t) // 2]
    ids = tokenizer.convert_tokens_to_ids
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": cfg.hidden_size,
            "intermediate_size": cfg.intermediate_size,
            "num_hidden_layers": cfg.num_layers,
            "num_attention_heads": cfg.num_heads,
            "num_key_value_heads": cfg.num_kv_heads,
            "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope_section},
            "tie_word_embeddings": True,
            "bos_token_id": None,
            "eos_token_id": ids("<|im_end|>"),
            "pad_token_id": ids("<|endoftext|>"),
        },
        vision_config={
            "depth": cfg.vision_depth,
            "hidden_size": cfg.vision_hidden_size,
            "intermediate_size": cfg.vision_intermediate_size,
            "num_heads": cfg.vision_heads,
            "out_hidden_size": cfg.hidden_size,
            "fullatt_block_indexes": [cfg.vision_depth - 1],
            "window_size": 112,
        },
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=True,
    )


def build_tiny_qwen(out_dir: str | Path, corpus: Iterable[str], cfg: TinyQwenConfig):
    """Write an untrained tiny Qwen2.5-VL (model + processor) to `out_dir`; return (model, processor)."""
    tokenizer = train_tokenizer(corpus, cfg.vocab_size)
    processor = build_processor(tokenizer, cfg)
    torch.manual_seed(cfg.seed)
    model = Qwen2_5_VLForConditionalGeneration(model_config(tokenizer, cfg))
    ids = tokenizer.convert_tokens_to_ids
    model.generation_config = GenerationConfig(
        eos_token_id=[ids("<|im_end|>"), ids("<|endoftext|>")],
        pad_token_id=ids("<|endoftext|>"),
        do_sample=True,
        temperature=1.0,
        top_p=1.0,
    )
    save_checkpoint(model, processor, out_dir)
    return model, processor


def save_checkpoint(model, processor, out_dir: str | Path) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    save_processor(processor, out_dir)
