"""Split a (partial) model response into think, reflection and answer, at every streamed chunk.

The one parser of responses, for every reasoning format: a format (`ReasoningFormat`, a small set of tags) is
its parameter, never a parallel parser. The formats known (`FORMATS`):
- `think`: `<think>…</think>` then the answer (saferdemo's own models, Qwen3-VL thinking, where the chat
  template may pre-fill the opening tag);
- `think-answer`: `<think>…</think><answer>…</answer>` (R1 style, GLM-4.1V-Thinking);
- `kimi`: `◁think▷…◁/think▷` then the answer (Kimi-VL-Thinking);
- `any` (what a caller that knows no format gets): the tags of all of them.
An OpenAI-compatible server's separate `reasoning_content` is wrapped back into the model's format by
`saferdemo.engines.openai_engine`. Which format a checkpoint speaks is decided once, when its engine is made
(`saferdemo.reasoning_formats`); its generations carry it (`generation_format`).

The parser is stateless: it reads the whole accumulated text each time, which is simple and cheap at chat
lengths. What it handles:
- tags split across chunks: a trailing fragment that could still become a tag ("<thi", "◁/th") is held back
  until the next chunk decides;
- an opening tag pre-filled by the chat template (the text starts inside the think span), either announced
  with `think_prefilled=True` or discovered when a closing tag arrives before any opening one;
- an unclosed think when generation ends (`done=True`): the think is marked truncated;
- `<answer>…</answer>` in any format (the tags are dropped, the content is the answer);
- text with no tags at all: all answer.
`canonical` rewrites a response into saferdemo's own `<think>` format (what the judge reads, whatever the
model), `native` writes parsed segments back in a model's own tags (what it reads when it reflects).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from saferdemo.prompts import REFLECTION_CLOSE, REFLECTION_OPEN, THINK_CLOSE, THINK_OPEN

ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
KIMI_OPEN, KIMI_CLOSE = "\u25c1think\u25b7", "\u25c1/think\u25b7"  # ◁think▷ ◁/think▷


@dataclass(frozen=True)
class ReasoningFormat:
    """The tags a model family writes its reasoning in. `opens`/`closes`: the think span's tags (the first of
    each is the one written back); `answer_tags`: whether the model wraps its answer in `<answer>` tags."""

    name: str
    opens: tuple[str, ...]
    closes: tuple[str, ...]
    answer_tags: bool = False

    @property
    def tags(self) -> tuple[str, ...]:
        return (*self.opens, *self.closes, REFLECTION_OPEN, REFLECTION_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)

    def prefilled(self, prompt: str) -> bool:
        """Whether a generation prompt ends inside the think span (the chat template wrote the opening tag)."""
        return prompt.rstrip().endswith(self.opens)


THINK = ReasoningFormat("think", (THINK_OPEN,), (THINK_CLOSE,))
THINK_ANSWER = ReasoningFormat("think-answer", (THINK_OPEN,), (THINK_CLOSE,), answer_tags=True)
KIMI = ReasoningFormat("kimi", (KIMI_OPEN,), (KIMI_CLOSE,))
ANY = ReasoningFormat("any", (THINK_OPEN, KIMI_OPEN), (THINK_CLOSE, KIMI_CLOSE))
FORMATS = {f.name: f for f in (THINK, THINK_ANSWER, KIMI, ANY)}


def get_format(name: str) -> ReasoningFormat:
    """The format called `name`; an unknown name is a ValueError listing the known ones."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown reasoning format {name!r}; choose from {', '.join(FORMATS)}") from None


def generation_format(generation) -> ReasoningFormat:
    """The format a generation's engine speaks (`any` for an engine that does not say)."""
    return getattr(generation, "reasoning_format", None) or ANY


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


def parse(text: str, think_prefilled: bool = False, done: bool = False,
          format: ReasoningFormat = ANY) -> Segments:
    """Segments of `text` in `format`; `done` says generation has ended (no fragment is held back then)."""
    tags = format.tags
    if not done:
        text = text[: len(text) - _partial_tag_length(text, tags)]
    parts = {"think": [], "reflection": [], "answer": []}
    states = {"think": "open" if think_prefilled else "none", "reflection": "none"}
    bucket = "think" if think_prefilled else "answer"
    for piece, tag in _tokens(text, tags):
        parts[bucket].append(piece)
        if tag is None:
            continue
        if tag in format.closes and states["think"] == "none":
            # A closing tag before any opening one: the template pre-filled it, so what came before was thinking.
            parts["think"], parts["answer"] = parts["answer"], []
        if tag in format.opens:
            states["think"], bucket = "open", "think"
        elif tag in format.closes:
            states["think"], bucket = "closed", "answer"
        elif tag == REFLECTION_OPEN:
            states["reflection"], bucket = "open", "reflection"
        elif tag == REFLECTION_CLOSE:
            states["reflection"], bucket = "closed", "answer"
        else:  # <answer>, </answer>
            bucket = "answer"
    segments = Segments(**{k: "".join(v).strip() for k, v in parts.items()},
                        think_state=states["think"], reflection_state=states["reflection"])
    segments.truncated = done and segments.thinking
    return segments


def split_think(text: str, format: ReasoningFormat = ANY) -> tuple[str | None, str]:
    """(think, answer) of a finished response; think is None when the think span never closed."""
    segments = parse(text, done=True, format=format)
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


def canonical(text: str, format: ReasoningFormat = ANY, think_prefilled: bool = False) -> str:
    """A finished response in saferdemo's own format (`<think>…</think>` then the answer), for the judge: its
    rubric and mini-grm's training speak this format. A response already in it comes back unchanged."""
    if format in (THINK, ANY) and not think_prefilled and not any(t in text for t in (KIMI_OPEN, KIMI_CLOSE)):
        return text
    segments = parse(text, think_prefilled, done=True, format=format)
    if segments.think_state == "none" and not segments.reflection:
        return segments.answer
    reflection = f"{REFLECTION_OPEN}\n{segments.reflection}\n{REFLECTION_CLOSE}\n" if segments.reflection else ""
    close = "" if segments.think_state == "open" else f"\n{THINK_CLOSE}\n"
    return f"{reflection}{THINK_OPEN}\n{segments.think}{close}{segments.answer}"


def native(text: str, format: ReasoningFormat, think_prefilled: bool = False) -> str:
    """A finished response as the model itself would have written it in full: the pre-filled opening tag put
    back, so a model reading its previous response (reflection) sees its own complete format."""
    if think_prefilled and not text.lstrip().startswith(format.opens):
        return f"{format.opens[0]}\n{text.lstrip()}"
    return text


def _tokens(text: str, tags: tuple[str, ...]):
    """(text before a tag, the tag) pairs; the last pair has tag None."""
    position = 0
    while True:
        found = [(text.find(tag, position), tag) for tag in tags]
        found = [(index, tag) for index, tag in found if index != -1]
        if not found:
            yield text[position:], None
            return
        index, tag = min(found)
        yield text[position:index], tag
        position = index + len(tag)


def _partial_tag_length(text: str, tags: tuple[str, ...]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of some tag."""
    for length in range(min(len(text), max(map(len, tags)) - 1), 0, -1):
        tail = text[-length:]
        if any(tag.startswith(tail) for tag in tags if tag != tail):
            return length
    return 0
