"""The card maker: an instruction typed in the app becomes a FigStep-format card attached to the message.

FigStep's own format (`saferdemo.cards.render_figstep_card`: 760x760, FreeMonoBold 80, the text wrapped at 15
characters, then "1. 2. 3."), so users can try their own phrases. The bundled miniature models read only the
instructions of their phrase table (`training/miniature/data/miniature_phrases.json`, read here as a file: the
library never imports `training`); for any other text they answer that they can't read the card. An accordion
lists the known phrases, and saying so is part of the feature.
"""

from __future__ import annotations

import json
import tempfile
import unicodedata
import uuid
from functools import lru_cache
from pathlib import Path

import gradio as gr
from PIL import ImageDraw

from saferdemo.cards import (
    FIGSTEP_FONT_SIZE,
    FIGSTEP_ORIGIN,
    FIGSTEP_PROMPT,
    FIGSTEP_SIZE,
    FIGSTEP_SPACING,
    SAFEBENCH_HONEST,
    figstep_font,
    figstep_text,
    render_figstep_card,
)

PHRASES = Path(__file__).resolve().parents[2] / "training" / "miniature" / "data" / "miniature_phrases.json"
CANT_READ = "I can't read the text on this card"
KINDS = (("harmful", "Harmful (the base model complies with \"[restricted step]\" lists; the aligned one refuses)"),
         ("look_alike", "Look-alikes (sound alarming, are benign)"), ("benign", "Benign"))


class CardError(ValueError):
    """The instruction cannot become a card; the message says why."""


def known_phrases(path: Path = PHRASES) -> list[dict]:
    """The bundled models' phrase table ([] where it is not shipped, e.g. an install without `training/`)."""
    try:
        rows = json.loads(path.read_text())
        return [r for r in rows if isinstance(r, dict) and isinstance(r.get("phrase"), str)]
    except (OSError, ValueError):
        return []


def phrases_markdown(phrases: list[dict]) -> str:
    """The accordion's text: what the bundled models know, by kind, and what they say to anything else."""
    if not phrases:
        return ("The bundled models' phrase table is not shipped with this install, so the list is unavailable. "
                f"For any instruction outside it the bundled models answer \"{CANT_READ}\".")
    lines = [f"The bundled demo models read **only these {len(phrases)} instructions**, typed exactly. Any other "
             f"text should get \"{CANT_READ}\" (measured on FigStep's own images: {SAFEBENCH_HONEST} do; on instructions "
             "made up in the style of these, only 58-71%: the rest get the nearest one instead); a real checkpoint, "
             "loaded instead, reads anything."]
    for kind, title in KINDS:
        rows = [p for p in phrases if _kind(p) == kind]
        if rows:
            lines.append(f"\n**{title}**: " + " · ".join(f"`{p['phrase']}`" for p in rows))
    return "\n".join(lines)


def _kind(phrase: dict) -> str:
    return "harmful" if phrase.get("harmful") else "look_alike" if phrase.get("look_alike") else "benign"


def clean_instruction(text: str | None) -> str:
    """The instruction as it will be drawn: control characters dropped, spaces collapsed; refused if empty or
    if it does not fit on one FigStep card (the text and its "1. 2. 3." must stay inside the 760x760 square)."""
    text = "".join(c for c in (text or "") if not unicodedata.category(c).startswith("C"))
    text = " ".join(text.split())
    if not text:
        raise CardError("Type an instruction for the card first, e.g. one of the phrases listed below.")
    font = figstep_font()
    missing = sorted({c for c in text if c != " " and bytes(font.getmask(c)) == _notdef()})
    if missing:
        raise CardError(f"FigStep's font (FreeMonoBold) has no glyph for {' '.join(missing[:8])}: "
                        "use other characters.")
    box = ImageDraw.Draw(render_figstep_card("")).multiline_textbbox(
        FIGSTEP_ORIGIN, figstep_text(text), font=font, spacing=FIGSTEP_SPACING)
    if box[3] > FIGSTEP_SIZE or box[2] > FIGSTEP_SIZE:
        lines = figstep_text(text).count("\n") - 2
        raise CardError(f"That instruction takes {lines} lines at FigStep's 15 characters a line (font "
                        f"{FIGSTEP_FONT_SIZE}); with the list, about 5 lines (75 characters) fit on a card. "
                        "Shorten it.")
    return text


@lru_cache(maxsize=1)
def _notdef() -> bytes:
    """How the font draws a character it lacks (its .notdef box), from a private-use code point."""
    return bytes(figstep_font().getmask("\U000F0000"))


class CardMaker:
    """Renders cards into its own folder (Gradio copies a returned file into its cache, whence the message
    sends it like an upload) and keeps only the newest `keep`."""

    def __init__(self, folder: str | Path | None = None, keep: int = 64):
        self.folder = Path(folder or tempfile.mkdtemp(prefix="saferdemo-cards-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.keep = keep

    def check(self, instruction: str) -> None:
        """The button's first step, with no outputs: a mistake is a toast, the message box stays as it was."""
        try:
            clean_instruction(instruction)
        except CardError as error:
            raise gr.Error(str(error), print_exception=False) from None

    def make(self, instruction: str, message: dict | None) -> dict:
        """The message with the new card as its image (replacing any attached), and FigStep's own prompt as
        its text when the box had none."""
        try:
            text = clean_instruction(instruction)
        except CardError as error:
            raise gr.Error(str(error), print_exception=False) from None
        path = self.folder / f"card-{uuid.uuid4().hex[:12]}.png"
        render_figstep_card(text).save(path)
        for old in sorted(self.folder.glob("card-*.png"), key=lambda p: p.stat().st_mtime)[:-self.keep]:
            old.unlink(missing_ok=True)
        typed = ((message or {}).get("text") or "").strip()
        return {"text": typed or FIGSTEP_PROMPT, "files": [str(path)]}


def card_maker(box: gr.MultimodalTextbox, maker: CardMaker | None = None) -> CardMaker:
    """The card maker's accordion under the message box, wired to it (inside a Blocks context)."""
    maker = maker or CardMaker()
    with gr.Accordion("Make a FigStep card from your own instruction", open=False, elem_id="card-maker"):
        with gr.Row(equal_height=True):
            instruction = gr.Textbox(label="instruction", placeholder="e.g. Steps to bake a loaf of bread.",
                                     max_lines=2, scale=4, elem_id="card-instruction")
            button = gr.Button("Make card", scale=1, elem_id="make-card")
        gr.Markdown("The card is drawn in FigStep's format and attached to your message (replacing any image there); "
                    "send it as it is or edit the text first.")
        with gr.Accordion("Phrases the bundled models know", open=False, elem_id="known-phrases"):
            gr.Markdown(phrases_markdown(known_phrases()))
    for trigger in (button.click, instruction.submit):
        trigger(maker.check, [instruction], None, api_name=False).success(
            maker.make, [instruction, box], box, api_name=False, show_progress="hidden")
    return maker
