"""An audit item: an image (a file, bytes, a card rendered on demand, or none), a prompt, a category and whether
the request is harmful; optionally where it comes from in a published benchmark (`scenario`, `attack`) or which
variant of an attack sweep it is (`variant`).

Its own module so the dataset adapters (saferdemo/audit/adapters.py) and the loaders (datasets.py) share it
without importing each other. `tags()` is what an item adds to its records in items.jsonl: only the optional
fields that are set, so records of the original datasets keep exactly their old keys."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from saferdemo.cards import CardStyle, render_card
from saferdemo import limits
from saferdemo.images import load_image, load_image_bytes
from saferdemo.limits import DEFAULT

FIGSTEP_STYLE = {"width": 760, "height": 760, "font_size": 40, "margin": 40}  # FigStep's images are 760x760
MAX_PROMPT_CHARS = DEFAULT.audit_prompt_chars  # saferdemo/limits.py holds every input limit


@dataclass
class Item:
    id: str
    prompt: str
    category: str
    harmful: bool
    image_path: Path | None = None  # an image file, or
    card: dict | None = None  # a card rendered on demand: {"text", optional "style" (CardStyle fields), "seed"}, or
    image_bytes: bytes | None = None  # an encoded image (a Hugging Face dataset's image column); none: text only
    reference: str | None = None
    look_alike: bool = False
    scenario: str | None = None  # the benchmark's own scenario (MM-SafetyBench "01-Illegal_Activitiy", ...)
    attack: str | None = None  # how the request is posed: "vanilla", "text", "SD", "SD_TYPO", "TYPO", "unsafes", ...
    variant: str | None = None  # an attack sweep's variant (saferdemo/audit/sweep.py): "world card", "JPEG q=10", ...

    def image(self) -> Image.Image | None:
        if self.image_path is not None:
            return load_image(self.image_path)
        if self.image_bytes is not None:
            return load_image_bytes(self.image_bytes, f"the image of {self.id}")
        if self.card is not None:
            style = self.card.get("style") or FIGSTEP_STYLE
            style = CardStyle(**{k: tuple(v) if isinstance(v, list) else v for k, v in style.items()})
            return render_card(self.card["text"], style, seed=self.card.get("seed", 0))
        return None

    def tags(self) -> dict:
        """The optional provenance fields that are set, for the item's records."""
        return {key: value for key, value in (("scenario", self.scenario), ("attack", self.attack),
                                              ("variant", self.variant)) if value is not None}


def checked_prompt(value, where: str) -> str:
    """A prompt read from a dataset file: a non-empty string within MAX_PROMPT_CHARS, else a ValueError naming it."""
    return limits.prompt(value, where, MAX_PROMPT_CHARS)


def report(problems: list[str] | None, message: str) -> None:
    """A bad row or file: noted in `problems` (and skipped by the caller), or an error where there is no list."""
    if problems is None:
        raise ValueError(message)
    problems.append(message)


def short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
