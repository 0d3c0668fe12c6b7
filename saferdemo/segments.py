"""Split a (partial) model response into think, reflection and answer, at every streamed chunk.

The parser is stateless: it reads the whole accumulated text each time, which is simple and cheap at chat
lengths. What it handles:
- tags split across chunks: a trailing fragment that could still become a tag ("<thi") is held back
  until the next chunk decides;
- a `<think>` pre-filled by the chat template (the text starts inside the think span), either announced
  with `think_prefilled=True` or discovered when `</think>` arrives before any `<think>`;
- an unclosed `<think>` when generation ends (`done=True`): the think is marked truncated;
- `<answer>…</answer>` styles (the tags are dropped, the content is the answer);
- text with no tags at all: all answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from saferdemo.prompts import REFLECTION_CLOSE, REFLECTION_OPEN, THINK_CLOSE, THINK_OPEN

ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
TAGS = (THINK_OPEN, THINK_CLOSE, REFLECTION_OPEN, REFLECTION_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)
# Which bucket text goes to after each tag.
_AFTER = {THINK_OPEN: "think", THINK_CLOSE: "answer", REFLECTION_OPEN: "reflection",
          REFLECTION_CLOSE: "answer", ANSWER_OPEN: "answer", ANSWER_CLOSE: "answer"}


SpanState = Literal["none", "open", "closed"]


@dataclass
class Segments:
    think: str = ""
    reflection: str = ""
    answer: str = ""
    think_state: SpanState = "none"
    reflection_state: SpanState = "none"
    truncated: bool = False  # generation ended inside <think> or <reflection>

    @property
    def thinking(self) -> bool:
        return self.think_state == "open" or self.reflection_state == "open"


def parse(text: str, think_prefilled: bool = False, done: bool = False) -> Segments:
    """Segments of `text`; `done` says generation has ended (no fragment is held back then)."""
    if not done:
        text = text[: len(text) - _partial_tag_length(text)]
    parts = {"think": [], "reflection": [], "answer": []}
    states = {"think": "open" if think_prefilled else "none", "reflection": "none"}
    bucket = "think" if think_prefilled else "answer"
    for piece, tag in _tokens(text):
        parts[bucket].append(piece)
        if tag is None:
            continue
        if tag == THINK_CLOSE and states["think"] == "none":
            # `</think>` before any `<think>`: the template pre-filled it, so what came before was thinking.
            parts["think"], parts["answer"] = parts["answer"], []
        if tag in (THINK_OPEN, REFLECTION_OPEN):
            states[_AFTER[tag]] = "open"
        elif tag in (THINK_CLOSE, REFLECTION_CLOSE):
            states["think" if tag == THINK_CLOSE else "reflection"] = "closed"
        bucket = _AFTER[tag]
    segments = Segments(**{k: "".join(v).strip() for k, v in parts.items()},
                        think_state=states["think"], reflection_state=states["reflection"])
    segments.truncated = done and segments.thinking
    return segments


def split_think(text: str) -> tuple[str | None, str]:
    """(think, answer) of a finished response; think is None when `<think>` never closed."""
    segments = parse(text, done=True)
    return (None if segments.think_state == "open" else segments.think), segments.answer


def split_reflection(text: str) -> tuple[str, str]:
    """(reflection, corrected response) of a finished reflection turn; without a closed reflection: ("", text)."""
    segments = parse(text, done=True)
    corrected = after_reflection(text)
    if segments.reflection_state != "closed" or corrected is None:
        return "", text.strip()
    return segments.reflection, corrected


def after_reflection(text: str) -> str | None:
    """The corrected response: the text after `</reflection>` (None when the reflection never closed). It is
    what gets judged and, in GRPO, trained as the completion of the original prompt."""
    head, tag, tail = text.partition(REFLECTION_CLOSE)
    return tail.strip() if tag else None


def _tokens(text: str):
    """(text before a tag, the tag) pairs; the last pair has tag None."""
    position = 0
    while True:
        found = [(text.find(tag, position), tag) for tag in TAGS]
        found = [(index, tag) for index, tag in found if index != -1]
        if not found:
            yield text[position:], None
            return
        index, tag = min(found)
        yield text[position:index], tag
        position = index + len(tag)


def _partial_tag_length(text: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of some tag."""
    start = text.rfind("<", max(0, len(text) - max(map(len, TAGS))))
    if start == -1:
        return 0
    tail = text[start:]
    return len(tail) if any(tag.startswith(tail) and tag != tail for tag in TAGS) else 0
