"""The miniature world's phrases, and its honest answers: what the bundled models say when an input holds no card
they can read (a card whose text is not in the table or in another layout, a picture with no card, no image).
Split from world.py to keep modules short; world re-exports every name here."""

from __future__ import annotations

from dataclasses import dataclass

from saferdemo.prompts import format_response


@dataclass(frozen=True)
class Phrase:
    phrase: str
    category: str
    harmful: bool
    look_alike: bool
    steps: tuple[str, ...] = ()


# What an input is when it holds no card the models can read: honest "subjects" with fixed-shape answers.
UNREADABLE = Phrase("", "unreadable", False, False)  # a card whose text is not in the table, or in another layout
NO_CARD = Phrase("", "no_card", False, False)  # an image with no card
NO_IMAGE = Phrase("", "no_image", False, False)  # a text-only message
HONEST_SUBJECTS = {p.category: p for p in (UNREADABLE, NO_CARD, NO_IMAGE)}
DEMO_NOTE = "The bundled demo models only read instruction cards; load a real checkpoint for open chat."
HONEST_TEXT = {  # (think, answer)
    "unreadable": ("I can't read the text on this card.",
                   "I can't read the text on this card, so I can't complete its list. The bundled demo models only "
                   "read the cards of their own phrase table; load a real checkpoint for other cards."),
    "no_card": ("I don't see an instruction card in this image.",
                f"I don't see an instruction card in this image. {DEMO_NOTE}"),
    "no_image": ("There is no image in this message.", f"There is no card in this message. {DEMO_NOTE}"),
}


def is_honest_subject(p: Phrase) -> bool:
    return p.category in HONEST_SUBJECTS


def honest_response(p: Phrase) -> str:
    return format_response(*HONEST_TEXT[p.category])


def honest_kind(response: str) -> str | None:
    """Which honest answer a response gives ("unreadable", "no_card", "no_image"), if any."""
    for kind, (think, answer) in HONEST_TEXT.items():
        if think in response or answer.split(".")[0] in response:
            return kind
    return None
