"""The tiny real-format checkpoints behave like real Qwen2.5-VL-Instruct (and Qwen3-VL-Instruct) checkpoints.

Every expected value below is a fact about the real models, not about the builder: token ids other tokenizers
report for the real Qwen tokenizer, the real chat format, Qwen2.5-VL's patch arithmetic, the real configs.
"""

import hashlib
import json
import unicodedata
from pathlib import Path

import pytest
import torch
from PIL import Image
from real_qwen import (
    QWEN3_ADDED_TOKENS,
    QWEN3_VL_CHAT_TEMPLATE,
    QWEN25_ADDED_TOKENS,
    QWEN25_VL_CHAT_TEMPLATE,
    QWEN25_VL_GENERATION_CONFIG,
    QWEN25_VL_PREPROCESSOR_CONFIG,
    build_qwen25_vl_processor,
    qwen_bpe,
    qwen_tiktoken_encoding,
    real_format_checkpoint,
)
from transformers import Qwen2VLImageProcessorPil

from saferdemo.loading import ImageOnlyQwen2_5_VLProcessor, load_model, load_processor

# Encodings of the real Qwen2/2.5/3 tokenizer, as other projects pin them (found with the code search tool).
REAL_ENCODINGS = {
    "Hello world": [9707, 1879],
    "Hello, my name is Ryan.": [9707, 11, 847, 829, 374, 13646, 13],
    "Hello, world! 123": [9707, 11, 1879, 0, 220, 16, 17, 18],  # digits split one by one
    "1+1=": [16, 10, 16, 28],
    "<think>": [13708, 766, 29],  # "<th", "ink", ">": not a token in Qwen2.5
    "</think>": [522, 26865, 29],
    "<tool_response>": [27, 14172, 9655, 29],
}
# The first lines of Qwen2.5's merges.txt (after "#version: 0.2").
REAL_MERGES_HEAD = [
    "Ġ Ġ", "ĠĠ ĠĠ", "i n", "Ġ t", "ĠĠĠĠ ĠĠĠĠ", "e r", "ĠĠ Ġ", "o n", "Ġ a", "r e", "a t", "s t",
    "e n", "o r", "Ġt h", "Ċ Ċ", "Ġ c", "l e", "Ġ s", "i t", "a n", "a r", "a l", "Ġth e",
]  # fmt: skip
TAGS = ("<think>", "</think>", "<reflection>", "</reflection>")
IMAGE_PAD = 151655


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("real-qwen")


@pytest.fixture(scope="session")
def checkpoint(real_cache) -> Path:
    return real_format_checkpoint(real_cache)


@pytest.fixture(scope="module")
def processor(checkpoint):
    return load_processor(checkpoint)


@pytest.fixture(scope="module")
def tokenizer(processor):
    return processor.tokenizer  # what load_processor got from AutoTokenizer.from_pretrained(checkpoint)


def image_turn(text: str) -> dict:
    return {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}


def image_tokens(processor, width: int, height: int) -> tuple[int, list[int]]:
    text = processor.apply_chat_template([image_turn("Describe.")], add_generation_prompt=True, tokenize=False)
    batch = processor(text=[text], images=[Image.new("RGB", (width, height), "gray")], return_tensors="pt")
    return int((batch["input_ids"] == IMAGE_PAD).sum()), batch["image_grid_thw"][0].tolist()


# ------------------------------------------------------------------------------------------------- tokenizer


def test_tokenizer_is_qwen2s_fast_tokenizer(tokenizer):
    assert type(tokenizer).__name__ == "Qwen2Tokenizer" and tokenizer.is_fast
    assert len(tokenizer) == 151665  # 151,643 ranks + 22 added tokens


@pytest.mark.parametrize("text", REAL_ENCODINGS)
def test_encodes_like_the_real_tokenizer(tokenizer, text):
    assert tokenizer(text)["input_ids"] == REAL_ENCODINGS[text]  # and adds no BOS/EOS


def test_merges_are_the_real_merges(tokenizer):
    _, merges = qwen_bpe()  # what the checkpoint's tokenizer.json was written from (memoised)
    assert len(merges) == 151643 - 256  # one per multi-byte token
    assert [" ".join(merge) for merge in merges[: len(REAL_MERGES_HEAD)]] == REAL_MERGES_HEAD
    assert tokenizer.convert_ids_to_tokens([9707, 1879]) == ["Hello", "Ġworld"]


def test_matches_tiktoken_on_varied_text(tokenizer):
    reference = qwen_tiktoken_encoding()
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")[:6000]
    samples = [readme, "naïve café 🙂 — 你好世界, Привет!\n\n\t  x = f(1234567)  \r\n", "  leading and  trailing  "]
    for text in samples:
        text = unicodedata.normalize("NFC", text)  # Qwen2's tokenizer NFC-normalises; tiktoken does not
        ids = tokenizer(text)["input_ids"]
        assert ids == reference.encode_ordinary(text)
        assert tokenizer.decode(ids) == text


@pytest.mark.parametrize(("token_id", "content", "special"), QWEN25_ADDED_TOKENS)
def test_added_tokens_sit_at_their_real_ids(tokenizer, token_id, content, special):
    assert tokenizer.convert_tokens_to_ids(content) == token_id
    assert tokenizer(content)["input_ids"] == [token_id]
    # Only the special ones vanish on skip_special_tokens (tool-call and FIM tokens are kept, as in the real one).
    assert tokenizer.decode([token_id], skip_special_tokens=True) == ("" if special else content)


def test_special_tokens_and_lengths_as_real(tokenizer):
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", 151645)
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<|endoftext|>", 151643)
    assert tokenizer.bos_token is None and tokenizer.unk_token is None
    assert tokenizer.padding_side == "right" and tokenizer.model_max_length == 131072


@pytest.mark.parametrize("tag", TAGS)
def test_reasoning_tags_are_plain_multi_token_text(tokenizer, tag):
    ids = tokenizer(tag)["input_ids"]
    assert len(ids) > 1 and max(ids) < 151643  # ordinary BPE pieces, no added token
    text = f"{tag}Is this safe?{tag}"
    ids = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


# --------------------------------------------------------------------------------------------- chat template


def test_chat_template_renders_the_real_format(processor, tokenizer):
    messages = [image_turn("Is this safe?")]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Is this safe?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == text


def test_chat_template_keeps_a_given_system_prompt_and_history(tokenizer):
    messages = [
        {"role": "system", "content": "Be careful."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "<think>ok</think>Hello"},
    ]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == (
        "<|im_start|>system\nBe careful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n<think>ok</think>Hello<|im_end|>\n"
    )


def test_templates_are_still_the_verbatim_copies():
    # sha256 of the templates as copied from xinference's llm_family.json: an edit here is a departure from real.
    digests = [
        hashlib.sha256(template.encode()).hexdigest()[:16]
        for template in (QWEN25_VL_CHAT_TEMPLATE, QWEN3_VL_CHAT_TEMPLATE)
    ]
    assert digests == ["a0bc6f6fc7a29a80", "3636d0f0bd6bef02"]


def test_checkpoint_ships_the_template_where_autoprocessor_reads_it(checkpoint, tokenizer):
    assert json.loads((checkpoint / "chat_template.json").read_text())["chat_template"] == tokenizer.chat_template


# ------------------------------------------------------------------------------------------------- processor


def test_preprocessor_config_is_the_real_one(checkpoint, processor):
    assert json.loads((checkpoint / "preprocessor_config.json").read_text()) == QWEN25_VL_PREPROCESSOR_CONFIG
    images = processor.image_processor
    assert (images.patch_size, images.merge_size, images.temporal_patch_size) == (14, 2, 2)
    assert (images.size["shortest_edge"], images.size["longest_edge"]) == (3136, 12845056)
    assert list(images.image_mean) == [0.48145466, 0.4578275, 0.40821073]
    assert list(images.image_std) == [0.26862954, 0.26130258, 0.27577711]


@pytest.mark.parametrize(
    ("width", "height", "tokens"),
    [
        (224, 224, 64),  # 16 x 16 patches of 14 px, merged 2 x 2: (224 / 28)^2
        (448, 224, 128),  # 32 x 16 patches
        (20, 20, 4),  # below min_pixels (56 x 56): upscaled to the 4-token minimum
    ],
)
def test_image_token_count_follows_qwen25_vl(processor, width, height, tokens):
    count, (t, h, w) = image_tokens(processor, width, height)
    assert count == tokens == t * h * w // 4  # one token per 2 x 2 block of patches


def test_max_pixels_still_caps_images_with_the_real_config(checkpoint, tokenizer):
    # The real preprocessor_config carries both `max_pixels` and `size`; load_processor's override must win.
    images = Qwen2VLImageProcessorPil.from_pretrained(checkpoint, max_pixels=224 * 224)  # as load_processor does
    capped = ImageOnlyQwen2_5_VLProcessor(images, tokenizer, chat_template=tokenizer.chat_template)
    assert image_tokens(capped, 1024, 1024)[0] == 64


def test_in_memory_processor_matches_the_loaded_one(processor, tokenizer):
    built = build_qwen25_vl_processor(tokenizer)
    assert image_tokens(built, 448, 224) == image_tokens(processor, 448, 224)
    assert built.chat_template == processor.chat_template


def test_processor_pads_on_the_right(processor):
    batch = processor(text=["Hi", "Hello there, how are you?"], padding=True, return_tensors="pt")
    short_ids, short_mask = batch["input_ids"][0], batch["attention_mask"][0]
    assert short_mask.tolist()[0] == 1 and short_mask.tolist()[-1] == 0
    assert short_ids[short_mask == 0].eq(151643).all()  # padded with <|endoftext|>


# ----------------------------------------------------------------------------------------------------- model


def test_config_keeps_the_real_ids_and_rope(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    text, vision = config["text_config"], config["vision_config"]
    ids = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    assert [config[key] for key in ids] == [151655, 151656, 151652, 151653]
    assert (text["vocab_size"], text["bos_token_id"], text["eos_token_id"]) == (151936, 151643, 151645)
    assert text["max_position_embeddings"] == 128000 and text["rope_parameters"]["rope_theta"] == 1e6
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    assert text["rope_parameters"]["mrope_section"] == [head_dim // 8, 3 * head_dim // 16, 3 * head_dim // 16]
    assert config["tie_word_embeddings"] and config["dtype"] == "bfloat16"
    assert vision["out_hidden_size"] == text["hidden_size"] and vision["patch_size"] == 14


def test_generation_config_is_the_real_one(checkpoint):
    config = json.loads((checkpoint / "generation_config.json").read_text())
    assert {key: config[key] for key in QWEN25_VL_GENERATION_CONFIG} == QWEN25_VL_GENERATION_CONFIG


def test_loads_with_saferdemo_and_generates_from_an_image(checkpoint, processor):
    model = load_model(checkpoint, device="cpu")
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration" and model.dtype == torch.float32
    text = processor.apply_chat_template([image_turn("Is this safe?")], add_generation_prompt=True, tokenize=False)
    batch = processor(text=[text], images=[Image.new("RGB", (224, 224), "red")], return_tensors="pt")
    output = model.generate(**batch, max_new_tokens=4)
    new = output[0, batch["input_ids"].shape[1] :]
    assert 1 <= len(new) <= 4 and int(new.max()) < 151936
    assert model.generation_config.eos_token_id == [151645, 151643]


# -------------------------------------------------------------------------------------------------- Qwen3-VL


def test_qwen3_vl_checkpoint_loads_templates_and_generates(real_cache):
    folder = real_format_checkpoint(real_cache, "qwen3-vl")
    processor = load_processor(folder)
    tokenizer = processor.tokenizer
    for token_id, content, _ in QWEN3_ADDED_TOKENS[-4:]:
        assert tokenizer(content)["input_ids"] == [token_id]  # <think> is one (non-special) token in Qwen3
    assert tokenizer.decode([151667, 9707, 151668, 151645], skip_special_tokens=True) == "<think>Hello</think>"
    text = processor.apply_chat_template([image_turn("Is this safe?")], add_generation_prompt=True, tokenize=False)
    assert text == (  # Qwen3-VL adds no default system prompt
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Is this safe?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert image_tokens(processor, 256, 256)[0] == 64  # 16 px patches merged 2 x 2: (256 / 32)^2
    model = load_model(folder, device="cpu")
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    batch = processor(text=[text], images=[Image.new("RGB", (256, 256), "red")], return_tensors="pt")
    assert model.generate(**batch, max_new_tokens=2).shape[1] <= batch["input_ids"].shape[1] + 2
