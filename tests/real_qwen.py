"""Tiny random-weight checkpoints that match real Qwen2.5-VL-Instruct (and Qwen3-VL-Instruct) in all but size.

Tests that only use the repo's miniature Qwen (a BPE trained on the world's text, made-up ids) cannot catch
mistakes that depend on the real format: the real token ids, that `<think>` is three ordinary tokens, the real
chat template, the real image processor defaults, the real generation defaults. This module rebuilds those
faithfully, offline, and pairs them with a 2-layer random model, so a checkpoint folder loads and generates in
well under a second on a CPU.

Where the facts come from (found with code/docs search over public repositories and Hub pages; a fact seen only
in a derivative checkpoint, not in a Qwen-org file, says so next to its constant):

* BPE ranks: `dashscope/resources/qwen.tiktoken` in the `dashscope` wheel on PyPI (Apache-2.0), the 151,643
  ranks every Qwen since Qwen-1 uses. Merges are derived one per token with tiktoken's own rule; that reproduces
  the head of the real `merges.txt`, its length (151,387 = 151,643 - 256 byte tokens) and the 11.4 MB size of
  the Hub's (transformers-5-format) tokenizer.json.
* Added tokens 151643-151664 and which of them are special: the `added_tokens_decoder` of Qwen2.5 tokenizer
  configs (a re-saved Qwen2.5 tokenizer_config in the code corpus; Qwen2.5-VL derivatives on the Hub). Qwen3 adds
  `<tool_response>` 151665, `</tool_response>` 151666, `<think>` 151667, `</think>` 151668 (torchtune's
  `QWEN3_SPECIAL_TOKENS`), as non-special added tokens (Qwen3-derived tokenizer configs).
* Chat templates: the `chat_template` of "qwen2.5-vl-instruct" and "Qwen3-VL-Instruct" in xorbitsai/inference,
  `xinference/model/llm/llm_family.json` (commit 7ecec16b), copied there from the Hub. The Qwen2.5-VL one is
  byte-identical to huggingface.co/optimum-intel-internal-testing/tiny-random-qwen2.5-vl chat_template.json;
  both give chat_template.json files of the sizes the Hub lists (1.05 kB, 5.5 kB).
* Image processors, configs and generation configs: see the comments on each constant below.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import AddedToken
from transformers import (
    AutoTokenizer,
    GenerationConfig,
    PreTrainedTokenizerBase,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
    Qwen3VLConfig,
)
from transformers.convert_slow_tokenizer import TikTokenConverter, bytes_to_unicode
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

from saferdemo.loading import ImageOnlyQwen2_5_VLProcessor

# Bump when what a builder writes changes, so folders cached under an older version are rebuilt.
BUILD_VERSION = 1

# --------------------------------------------------------------------------------------------- tokenizer facts

QWEN_BPE_RANKS = 151_643  # ranks in qwen.tiktoken; the first added token gets this id
QWEN_VOCAB_SIZE = 151_936  # the embedding rows of every Qwen2.5-VL / Qwen3-VL checkpoint (padded past the tokens)

# (id, content, special) in id order. Special tokens are dropped by `decode(skip_special_tokens=True)`;
# the tool-call and fill-in-the-middle tokens are added but not special, exactly as in the real
# `added_tokens_decoder`.
QWEN25_ADDED_TOKENS: tuple[tuple[int, str, bool], ...] = (
    (151643, "<|endoftext|>", True),
    (151644, "<|im_start|>", True),
    (151645, "<|im_end|>", True),
    (151646, "<|object_ref_start|>", True),
    (151647, "<|object_ref_end|>", True),
    (151648, "<|box_start|>", True),
    (151649, "<|box_end|>", True),
    (151650, "<|quad_start|>", True),
    (151651, "<|quad_end|>", True),
    (151652, "<|vision_start|>", True),
    (151653, "<|vision_end|>", True),
    (151654, "<|vision_pad|>", True),
    (151655, "<|image_pad|>", True),
    (151656, "<|video_pad|>", True),
    (151657, "<tool_call>", False),
    (151658, "</tool_call>", False),
    (151659, "<|fim_prefix|>", False),
    (151660, "<|fim_middle|>", False),
    (151661, "<|fim_suffix|>", False),
    (151662, "<|fim_pad|>", False),
    (151663, "<|repo_name|>", False),
    (151664, "<|file_sep|>", False),
)
# Qwen3 (and so Qwen3-VL) adds tool responses and the thinking tags, as plain (non-special) added tokens.
QWEN3_ADDED_TOKENS = (
    *QWEN25_ADDED_TOKENS,
    (151665, "<tool_response>", False),
    (151666, "</tool_response>", False),
    (151667, "<think>", False),
    (151668, "</think>", False),
)
# The real tokenizer_config lists these 13 as additional special tokens (everything special but <|endoftext|>).
ADDITIONAL_SPECIAL_TOKENS = tuple(content for _, content, special in QWEN25_ADDED_TOKENS[1:] if special)

# Qwen2.5-VL-*-Instruct chat_template.json, verbatim (see the module docstring for the sources).
QWEN25_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message "
    "in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if "
    "add_vision_id %}Picture {{ image_count.value }}: {% endif "
    "%}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video' or 'video' in "
    "content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ "
    "video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in "
    "content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% endif %}"
)


# Qwen3-VL-*-Instruct chat template, verbatim (xinference's copy of the Hub's chat_template.json).
QWEN3_VL_CHAT_TEMPLATE = (
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0].role == 'system' %}\n"
    "        {%- if messages[0].content is string %}\n"
    "            {{- messages[0].content }}\n"
    "        {%- else %}\n"
    "            {%- for content in messages[0].content %}\n"
    "                {%- if 'text' in content %}\n"
    "                    {{- content.text }}\n"
    "                {%- endif %}\n"
    "            {%- endfor %}\n"
    "        {%- endif %}\n"
    "        {{- '\\n\\n' }}\n"
    "    {%- endif %}\n"
    '    {{- "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are '
    'provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}\n'
    "    {%- for tool in tools %}\n"
    '        {{- "\\n" }}\n'
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    '    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and '
    'arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, '
    '\\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}\n'
    "{%- else %}\n"
    "    {%- if messages[0].role == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' }}\n"
    "        {%- if messages[0].content is string %}\n"
    "            {{- messages[0].content }}\n"
    "        {%- else %}\n"
    "            {%- for content in messages[0].content %}\n"
    "                {%- if 'text' in content %}\n"
    "                    {{- content.text }}\n"
    "                {%- endif %}\n"
    "            {%- endfor %}\n"
    "        {%- endif %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- set image_count = namespace(value=0) %}\n"
    "{%- set video_count = namespace(value=0) %}\n"
    "{%- for message in messages %}\n"
    '    {%- if message.role == "user" %}\n'
    "        {{- '<|im_start|>' + message.role + '\\n' }}\n"
    "        {%- if message.content is string %}\n"
    "            {{- message.content }}\n"
    "        {%- else %}\n"
    "            {%- for content in message.content %}\n"
    "                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}\n"
    "                    {%- set image_count.value = image_count.value + 1 %}\n"
    "                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}\n"
    "                    <|vision_start|><|image_pad|><|vision_end|>\n"
    "                {%- elif content.type == 'video' or 'video' in content %}\n"
    "                    {%- set video_count.value = video_count.value + 1 %}\n"
    "                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}\n"
    "                    <|vision_start|><|video_pad|><|vision_end|>\n"
    "                {%- elif 'text' in content %}\n"
    "                    {{- content.text }}\n"
    "                {%- endif %}\n"
    "            {%- endfor %}\n"
    "        {%- endif %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    '    {%- elif message.role == "assistant" %}\n'
    "        {{- '<|im_start|>' + message.role + '\\n' }}\n"
    "        {%- if message.content is string %}\n"
    "            {{- message.content }}\n"
    "        {%- else %}\n"
    "            {%- for content_item in message.content %}\n"
    "                {%- if 'text' in content_item %}\n"
    "                    {{- content_item.text }}\n"
    "                {%- endif %}\n"
    "            {%- endfor %}\n"
    "        {%- endif %}\n"
    "        {%- if message.tool_calls %}\n"
    "            {%- for tool_call in message.tool_calls %}\n"
    "                {%- if (loop.first and message.content) or (not loop.first) %}\n"
    "                    {{- '\\n' }}\n"
    "                {%- endif %}\n"
    "                {%- if tool_call.function %}\n"
    "                    {%- set tool_call = tool_call.function %}\n"
    "                {%- endif %}\n"
    '                {{- \'<tool_call>\\n{"name": "\' }}\n'
    "                {{- tool_call.name }}\n"
    '                {{- \'", "arguments": \' }}\n'
    "                {%- if tool_call.arguments is string %}\n"
    "                    {{- tool_call.arguments }}\n"
    "                {%- else %}\n"
    "                    {{- tool_call.arguments | tojson }}\n"
    "                {%- endif %}\n"
    "                {{- '}\\n</tool_call>' }}\n"
    "            {%- endfor %}\n"
    "        {%- endif %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    '    {%- elif message.role == "tool" %}\n'
    '        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}\n'
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n"
    "        {%- if message.content is string %}\n"
    "            {{- message.content }}\n"
    "        {%- else %}\n"
    "            {%- for content in message.content %}\n"
    "                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}\n"
    "                    {%- set image_count.value = image_count.value + 1 %}\n"
    "                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}\n"
    "                    <|vision_start|><|image_pad|><|vision_end|>\n"
    "                {%- elif content.type == 'video' or 'video' in content %}\n"
    "                    {%- set video_count.value = video_count.value + 1 %}\n"
    "                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}\n"
    "                    <|vision_start|><|video_pad|><|vision_end|>\n"
    "                {%- elif 'text' in content %}\n"
    "                    {{- content.text }}\n"
    "                {%- endif %}\n"
    "            {%- endfor %}\n"
    "        {%- endif %}\n"
    "        {{- '\\n</tool_response>' }}\n"
    '        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}\n'
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)


# ------------------------------------------------------------------------------ processor and generation facts

# huggingface.co/Qwen/Qwen2.5-VL-3B-Instruct-AWQ/blob/main/preprocessor_config.json, verbatim (the same values
# as the 3B/7B/72B Instruct files): CLIP mean/std, 14px patches merged 2x2, 4..16384 merged tokens per image.
QWEN25_VL_PREPROCESSOR_CONFIG = {
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "Qwen2VLImageProcessor",
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "max_pixels": 12845056,
    "merge_size": 2,
    "min_pixels": 3136,
    "patch_size": 14,
    "processor_class": "Qwen2_5_VLProcessor",
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"longest_edge": 12845056, "shortest_edge": 3136},
    "temporal_patch_size": 2,
}
# Qwen3-VL-2B-Instruct's preprocessor_config.json (as re-hosted by derivatives; exactly the 390 bytes the Hub
# lists, at indent 4): 16px patches, mean/std 0.5, 64..16384 merged tokens per image.
QWEN3_VL_PREPROCESSOR_CONFIG = {
    "size": {"longest_edge": 16777216, "shortest_edge": 65536},
    "patch_size": 16,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "processor_class": "Qwen3VLProcessor",
    "image_processor_type": "Qwen2VLImageProcessorFast",
}
# Keys that name classes rather than set the image processor.
_BOOKKEEPING_KEYS = ("image_processor_type", "processor_class")

# Qwen2.5-VL-*-Instruct generation_config.json: near-greedy sampling (top_k=1), stop on <|im_end|> or
# <|endoftext|>, pad with <|endoftext|>. These values (as Qwen2.5-VL derivatives re-host them) make the file
# exactly the 249 bytes the Hub lists for Qwen/Qwen2.5-VL-3B-Instruct-AWQ; some later derivatives carry
# temperature 1e-06 without top_k/top_p instead, which may be a later revision of the 7B's file.
QWEN25_VL_GENERATION_CONFIG = {
    "bos_token_id": 151643,
    "pad_token_id": 151643,
    "do_sample": True,
    "eos_token_id": [151645, 151643],
    "repetition_penalty": 1.05,
    "temperature": 0.1,
    "top_p": 0.001,
    "top_k": 1,
}
# Qwen3-VL-*-Instruct generation_config.json: the values a Qwen3-VL-8B derivative re-hosts, plus
# repetition_penalty 1.0 (the default), which makes the file exactly the 269 bytes the Hub lists for the 2B.
QWEN3_VL_GENERATION_CONFIG = {
    "bos_token_id": 151643,
    "pad_token_id": 151643,
    "do_sample": True,
    "eos_token_id": [151645, 151643],
    "top_k": 20,
    "top_p": 0.8,
    "repetition_penalty": 1.0,
    "temperature": 0.7,
}


@dataclass(frozen=True)
class TokenizerSpec:
    """What distinguishes one family's tokenizer: its added tokens, context length and chat template."""

    name: str
    added_tokens: tuple[tuple[int, str, bool], ...]
    model_max_length: int
    chat_template: str


# The chat template goes on the tokenizer as well as into chat_template.json, because saferdemo.loading's
# image-only processor takes the tokenizer's. (The real Qwen2.5-VL tokenizer_config.json is 7.33 kB, which fits a
# Qwen2.5 text template there rather than this 1 kB one; that could not be read, only inferred.)
# model_max_length: 131072 in Qwen2.5-VL-derived tokenizer configs; Qwen3-VL's 262144 is its context length
# (config max_position_embeddings), its tokenizer_config itself was not found.
QWEN25_VL_TOKENIZER = TokenizerSpec("qwen2.5-vl", QWEN25_ADDED_TOKENS, 131072, QWEN25_VL_CHAT_TEMPLATE)
QWEN3_VL_TOKENIZER = TokenizerSpec("qwen3-vl", QWEN3_ADDED_TOKENS, 262144, QWEN3_VL_CHAT_TEMPLATE)


# ------------------------------------------------------------------------------------------------- tokenizer


def qwen_ranks_file() -> Path:
    """`qwen.tiktoken` inside the installed dashscope package.

    Found without importing dashscope: its `__init__` pulls in aiohttp and friends, and we only need one file.
    """
    spec = importlib.util.find_spec("dashscope")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / "resources" / "qwen.tiktoken"
        if path.is_file():
            return path
    raise RuntimeError("the Qwen BPE ranks come from the dashscope wheel: pip install dashscope tiktoken")


def load_qwen_ranks() -> dict[bytes, int]:
    """Qwen's byte-pair ranks (token bytes -> id), read with transformers' tiktoken reader."""
    ranks = TikTokenConverter.load_tiktoken_bpe(str(qwen_ranks_file()))
    if len(ranks) != QWEN_BPE_RANKS or sorted(ranks.values()) != list(range(QWEN_BPE_RANKS)):
        raise RuntimeError(f"{qwen_ranks_file()} is not Qwen's 151,643-rank BPE file")
    return ranks


def qwen_vocab_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The byte-level vocab and merges of Qwen's tokenizer.json, from the tiktoken ranks.

    `TikTokenConverter` lists every possible split of every token (294k merges, an 18 MB tokenizer.json that
    takes seconds to load); Qwen's real merges.txt has exactly one merge per multi-byte token, the last merge
    tiktoken itself makes when it encodes that token. We derive that one, in rank order, which reproduces the
    real file and tokenizes identically to tiktoken.
    """
    byte_encoder = bytes_to_unicode()

    def as_text(token: bytes) -> str:
        return "".join(byte_encoder[byte] for byte in token)

    vocab = {as_text(token): rank for token, rank in ranks.items()}
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) > 1:
            left, right = _last_merge(ranks, token, rank)
            merges.append((as_text(left), as_text(right)))
    return vocab, merges


def _last_merge(ranks: dict[bytes, int], token: bytes, rank: int) -> list[bytes]:
    """tiktoken's byte-pair merge of `token` with only the ranks below its own: the two parts it joins last."""
    parts = [token[i : i + 1] for i in range(len(token))]
    pair_ranks = [ranks.get(parts[i] + parts[i + 1], rank) for i in range(len(parts) - 1)]
    while len(parts) > 2:
        best = min(pair_ranks)
        if best >= rank:
            raise RuntimeError(f"no merge path to token {token!r}")
        i = pair_ranks.index(best)  # leftmost lowest rank, as tiktoken
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
        del pair_ranks[i]
        if i > 0:
            pair_ranks[i - 1] = ranks.get(parts[i - 1] + parts[i], rank)
        if i < len(parts) - 1:
            pair_ranks[i] = ranks.get(parts[i] + parts[i + 1], rank)
    return parts


@functools.lru_cache(maxsize=1)
def qwen_bpe() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """Vocab and merges, derived once per process (about 2 s) and shared by every family's tokenizer."""
    vocab, merges = qwen_vocab_and_merges(load_qwen_ranks())
    return vocab, tuple(merges)


def fresh_qwen_tokenizer(spec: TokenizerSpec = QWEN25_VL_TOKENIZER) -> Qwen2Tokenizer:
    """Build the tokenizer in memory (about 3 s): Qwen2's BPE pipeline, real added tokens at their real ids."""
    vocab, merges = qwen_bpe()
    vocab, merges = dict(vocab), list(merges)  # copies: the cached ones must stay as derived
    # No special tokens yet: Qwen2Tokenizer would register them first, in its own order, at the wrong ids.
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token=None,
        pad_token=None,
        add_prefix_space=False,
        errors="replace",
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        model_max_length=spec.model_max_length,
    )
    for token_id, content, special in spec.added_tokens:
        tokenizer.add_tokens([AddedToken(content, special=special, normalized=False)], special_tokens=special)
        if tokenizer.convert_tokens_to_ids(content) != token_id:
            raise RuntimeError(f"{content} landed at {tokenizer.convert_tokens_to_ids(content)}, not {token_id}")
    tokenizer.add_special_tokens(
        {
            "eos_token": "<|im_end|>",  # the Instruct models end a turn with <|im_end|>
            "pad_token": "<|endoftext|>",
            "additional_special_tokens": list(ADDITIONAL_SPECIAL_TOKENS),
        }
    )
    tokenizer.chat_template = spec.chat_template
    return tokenizer


def qwen_tiktoken_encoding():
    """The reference: Qwen's ranks and Qwen2's pre-tokenizer regex run by tiktoken itself (Qwen-1's tokenizer)."""
    import tiktoken

    specials = {content: token_id for token_id, content, _ in QWEN3_ADDED_TOKENS}
    return tiktoken.Encoding(
        "qwen", pat_str=PRETOKENIZE_REGEX, mergeable_ranks=load_qwen_ranks(), special_tokens=specials
    )


def build_qwen_tokenizer(cache_dir: str | Path | None = None, *, spec: TokenizerSpec = QWEN25_VL_TOKENIZER):
    """The real-format Qwen tokenizer: built in memory, or built once under `cache_dir` and loaded from there
    with `AutoTokenizer`, as a checkpoint's tokenizer is."""
    if cache_dir is None:
        return fresh_qwen_tokenizer(spec)
    return AutoTokenizer.from_pretrained(cached_tokenizer_folder(cache_dir, spec))


def cached_tokenizer_folder(cache_dir: str | Path, spec: TokenizerSpec = QWEN25_VL_TOKENIZER) -> Path:
    """A folder holding the saved tokenizer of `spec`, built under `cache_dir` on first use."""
    folder = Path(cache_dir) / f"{spec.name}-tokenizer-v{BUILD_VERSION}"
    return build_once(folder, lambda scratch: fresh_qwen_tokenizer(spec).save_pretrained(scratch))


def write_qwen_tokenizer(folder: Path, spec: TokenizerSpec, cache_dir: str | Path | None = None) -> None:
    """Save the tokenizer files into `folder`: copied from the cache if there is one (loading costs ~1.5 s)."""
    if cache_dir is None:
        fresh_qwen_tokenizer(spec).save_pretrained(folder)
        return
    for path in cached_tokenizer_folder(cache_dir, spec).iterdir():
        shutil.copy2(path, folder / path.name)


# ------------------------------------------------------------------------------------------------- processor


def image_processor_from(config: dict) -> Qwen2VLImageProcessorPil:
    """The PIL-backed image processor (needs no torchvision) set up from a real preprocessor_config."""
    settings = {key: value for key, value in config.items() if key not in _BOOKKEEPING_KEYS}
    return Qwen2VLImageProcessorPil(**settings)


def build_qwen25_vl_processor(tokenizer: PreTrainedTokenizerBase) -> ImageOnlyQwen2_5_VLProcessor:
    """Qwen2.5-VL's processor as `saferdemo.loading` builds it without torchvision, with the real defaults."""
    image_processor = image_processor_from(QWEN25_VL_PREPROCESSOR_CONFIG)
    return ImageOnlyQwen2_5_VLProcessor(image_processor, tokenizer, chat_template=QWEN25_VL_CHAT_TEMPLATE)


# ---------------------------------------------------------------------------------------------------- models


def scaled_mrope_section(real_section: list[int], head_dim: int) -> list[int]:
    """M-RoPE's (time, height, width) split of a head's rotary half, in the real ratio at a tiny head_dim."""
    half, total = head_dim // 2, sum(real_section)
    scaled = [part * half // total for part in real_section]
    if any(part * half % total for part in real_section) or sum(scaled) != half:
        raise ValueError(f"head_dim {head_dim} cannot keep the ratio {real_section}")
    return scaled


def tiny_qwen25_vl_config() -> Qwen2_5_VLConfig:
    """Qwen2.5-VL-3B-Instruct's config.json at miniature width and depth; every id and constant as real.

    The real values are read from re-uploads of that config.json (its AWQ and 4-bit copies name it as source).
    """
    head_dim = 16  # the smallest head that keeps the 3B's 16:24:24 M-RoPE split exactly (2:3:3)
    text = {
        "vocab_size": QWEN_VOCAB_SIZE,
        "hidden_size": 32,  # 3B: 2048
        "intermediate_size": 64,  # 3B: 11008
        "num_hidden_layers": 2,  # 3B: 36
        "num_attention_heads": 32 // head_dim,  # 3B: 16 heads of 128
        "num_key_value_heads": 1,  # 3B: 2 (grouped-query attention kept)
        "hidden_act": "silu",
        "max_position_embeddings": 128000,
        "initializer_range": 0.02,
        "rms_norm_eps": 1e-06,
        "use_cache": True,
        "use_sliding_window": False,
        "sliding_window": 32768,
        "max_window_layers": 70,
        "attention_dropout": 0.0,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1000000.0,
            "mrope_section": scaled_mrope_section([16, 24, 24], head_dim),
        },
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "tie_word_embeddings": True,  # as the 3B (the 7B and 72B untie)
    }
    vision = {
        "depth": 2,  # 3B: 32
        "hidden_size": 32,  # 3B: 1280
        "intermediate_size": 64,  # 3B: 3420
        "num_heads": 2,  # 3B: 16
        "hidden_act": "silu",
        "in_channels": 3,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "tokens_per_second": 2,
        "window_size": 112,
        "fullatt_block_indexes": [1],  # 3B: [7, 15, 23, 31], every 8th block and the last attend globally
        "out_hidden_size": 32,  # = text hidden size, as 2048 in the 3B
    }
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=151655,
        video_token_id=151656,
        vision_start_token_id=151652,
        vision_end_token_id=151653,
        tie_word_embeddings=True,
    )


def tiny_qwen3_vl_config() -> Qwen3VLConfig:
    """Qwen3-VL-Instruct's config at miniature width and depth; ids, RoPE and patching as real.

    Read from derivatives' config.json files (a Qwen3-VL-4B and a Qwen3-VL-32B fine-tune), not a Qwen-org file.
    """
    head_dim = 32  # the smallest head that keeps Qwen3-VL's 24:20:20 M-RoPE split exactly (6:5:5)
    text = {
        "vocab_size": QWEN_VOCAB_SIZE,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": 262144,
        "initializer_range": 0.02,
        "rms_norm_eps": 1e-06,
        "use_cache": True,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5000000.0,
            "mrope_section": scaled_mrope_section([24, 20, 20], head_dim),
            "mrope_interleaved": True,
        },
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "tie_word_embeddings": True,  # as the 4B (the 2B presumably too; the 8B and 32B untie)
    }
    vision = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "hidden_act": "gelu_pytorch_tanh",
        "in_channels": 3,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "num_position_embeddings": 2304,
        "deepstack_visual_indexes": [1],  # the real models feed 3 intermediate vision layers to the text model
        "out_hidden_size": 32,
    }
    return Qwen3VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=151655,
        video_token_id=151656,
        vision_start_token_id=151652,
        vision_end_token_id=151653,
        tie_word_embeddings=True,
    )


def random_model(model_class, config, seed: int, generation: dict):
    """Random weights (seeded), stored in bfloat16 as the real checkpoints are, with the real generation defaults."""
    torch.manual_seed(seed)
    model = model_class(config).to(torch.bfloat16).eval()
    model.config.dtype = torch.bfloat16
    model.generation_config = GenerationConfig(**generation)
    return model


# ------------------------------------------------------------------------------------------------ checkpoints


def build_tiny_qwen25_vl(folder: str | Path, *, seed: int = 0, tokenizer_cache: str | Path | None = None) -> Path:
    """Write a tiny random Qwen2.5-VL-Instruct checkpoint to `folder`: real files, real formats, tiny weights.

    `saferdemo.loading.load_model` and `load_processor` load it; so do the Auto classes (AutoProcessor only
    with torchvision, as for a real checkpoint).
    """
    model = random_model(Qwen2_5_VLForConditionalGeneration, tiny_qwen25_vl_config(), seed, QWEN25_VL_GENERATION_CONFIG)
    return _write_checkpoint(folder, model, QWEN25_VL_TOKENIZER, QWEN25_VL_PREPROCESSOR_CONFIG, tokenizer_cache)


def build_tiny_qwen3_vl(folder: str | Path, *, seed: int = 0, tokenizer_cache: str | Path | None = None) -> Path:
    """Write a tiny random Qwen3-VL-Instruct checkpoint to `folder` (no video_preprocessor_config.json: that
    needs torchvision's video processor)."""
    from transformers import Qwen3VLForConditionalGeneration  # imported on use: most callers want Qwen2.5-VL

    model = random_model(Qwen3VLForConditionalGeneration, tiny_qwen3_vl_config(), seed, QWEN3_VL_GENERATION_CONFIG)
    return _write_checkpoint(folder, model, QWEN3_VL_TOKENIZER, QWEN3_VL_PREPROCESSOR_CONFIG, tokenizer_cache)


def _write_checkpoint(
    folder: str | Path, model, spec: TokenizerSpec, preprocessor_config: dict, tokenizer_cache: str | Path | None
) -> Path:
    """The files a real Hub checkpoint has: weights and configs, tokenizer, preprocessor_config, chat_template."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)  # config.json, generation_config.json, model.safetensors
    write_qwen_tokenizer(folder, spec, tokenizer_cache)  # tokenizer.json, tokenizer_config.json, chat_template.jinja
    _write_json(folder / "preprocessor_config.json", preprocessor_config)
    _write_json(folder / "chat_template.json", {"chat_template": spec.chat_template})  # what AutoProcessor reads
    return folder


FAMILIES: dict[str, Callable[..., Path]] = {"qwen2.5-vl": build_tiny_qwen25_vl, "qwen3-vl": build_tiny_qwen3_vl}


def real_format_checkpoint(cache_dir: str | Path, family: str = "qwen2.5-vl", *, seed: int = 0) -> Path:
    """The tiny real-format checkpoint of `family` under `cache_dir`, built on first use and reused after."""
    builder = FAMILIES[family]
    cache_dir = Path(cache_dir)
    folder = cache_dir / f"tiny-{family}-seed{seed}-v{BUILD_VERSION}"
    return build_once(folder, lambda tmp: builder(tmp, seed=seed, tokenizer_cache=cache_dir))


def build_once(folder: Path, write: Callable[[Path], object]) -> Path:
    """Run `write` into a scratch folder and rename it to `folder`, unless `folder` exists already.

    The rename is atomic, so a folder that exists is complete, and parallel test workers that race both
    succeed (the loser discards its copy).
    """
    folder = Path(folder)
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        write(scratch)
        scratch.chmod(0o755)  # mkdtemp's 0700 would hide the folder from other users of a shared cache
        os.replace(scratch, folder)
    except OSError:
        if not folder.is_dir():
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
