"""Which reasoning format a checkpoint speaks, decided once when its engine is made.

Read from the checkpoint itself, in this order:
1. `SAFERDEMO_REASONING_FORMAT` (the app; `saferdemo … --reasoning-format` sets it): `auto` (the default) or a
   name in `saferdemo.segments.FORMATS`;
2. Kimi's `◁think▷` in the chat template or in a token of the vocabulary: `kimi`;
3. `<answer>` in the chat template or as a token (R1 style, GLM-4.1V-Thinking): `think-answer`;
4. `<think>` in the chat template or as a token (Qwen3-VL thinking, saferdemo's own models): `think`;
5. no evidence: `any`, which reads every known format's tags (a tag split into several tokens leaves no trace
   in the vocabulary, and a template need not mention it, so no evidence is not evidence of `<think>`).

Nothing here depends on a tag being one token: the vocabulary is searched for tokens that contain a tag, and the
template's text for the tag. Whether the template pre-fills the opening tag is read per prompt (the engines ask
`ReasoningFormat.prefilled` of each generation prompt), because a template can decide it per request.
`tags_survive_decoding` checks the one property the engines do rely on: that decoding with
`skip_special_tokens=True` (how every engine here decodes) keeps the tags.
"""

from __future__ import annotations

import os
import warnings

from saferdemo.segments import ANSWER_OPEN, ANY, FORMATS, KIMI, KIMI_CLOSE, KIMI_OPEN, THINK, THINK_ANSWER, ReasoningFormat
from saferdemo.prompts import THINK_OPEN

ENV = "SAFERDEMO_REASONING_FORMAT"
CHOICES = ("auto", *FORMATS)


class ReasoningFormatError(ValueError):
    """An unknown format name (the message lists the known ones)."""


def override(value: str | None = None) -> ReasoningFormat | None:
    """The format asked for by `value` (default: the environment variable); None for `auto` or unset."""
    name = (os.environ.get(ENV, "") if value is None else value).strip().lower()
    if name in ("", "auto"):
        return None
    if name not in FORMATS:
        raise ReasoningFormatError(f"{ENV}={name!r} is not a reasoning format; choose from {', '.join(CHOICES)}")
    return FORMATS[name]


def detect(tokenizer=None, chat_template: str | dict | None = None) -> ReasoningFormat:
    """The format a checkpoint's chat template and vocabulary point to (see the module docstring)."""
    template = chat_template if chat_template is not None else getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # named templates ({"default": ..., "tool_use": ...})
        template = "\n".join(str(t) for t in template.values())
    template = template or ""
    tokens = _vocabulary(tokenizer)

    def mentions(tag: str) -> bool:
        return tag in template or any(tag in token for token in tokens)

    if mentions(KIMI_OPEN) or mentions(KIMI_CLOSE):
        return KIMI
    if mentions(ANSWER_OPEN):
        return THINK_ANSWER
    if mentions(THINK_OPEN):
        return THINK
    return ANY


def for_processor(processor, chat_template: str | None = None) -> ReasoningFormat:
    """The format of a loaded checkpoint: the override if any, else `detect` on its tokenizer and template."""
    chosen = override()
    if chosen is not None:
        return chosen
    tokenizer = getattr(processor, "tokenizer", processor)
    template = chat_template if chat_template is not None else getattr(processor, "chat_template", None)
    found = detect(tokenizer, template)
    if not tags_survive_decoding(tokenizer, found):
        warnings.warn(f"the {found.name} reasoning tags are special tokens of this tokenizer: decoding with "
                      "skip_special_tokens drops them, so the reasoning will show as part of the answer", stacklevel=2)
    return found


def tags_survive_decoding(tokenizer, format: ReasoningFormat) -> bool:
    """Whether `tag` comes back from encode + decode(skip_special_tokens=True) for each of the format's tags."""
    if tokenizer is None or not hasattr(tokenizer, "encode"):
        return True
    for tag in (*format.opens, *format.closes):
        try:
            ids = tokenizer.encode(tag, add_special_tokens=False)
            if tag not in tokenizer.decode(ids, skip_special_tokens=True):
                return False
        except Exception:  # a tokenizer that cannot encode the tag (no byte fallback): it cannot emit it either
            continue
    return True


def _vocabulary(tokenizer) -> list[str]:
    if tokenizer is None:
        return []
    try:
        vocab = list(tokenizer.get_vocab())
    except Exception:
        vocab = []
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    return vocab + [str(getattr(token, "content", token)) for token in added.values()]
