"""The app's doors onto `saferdemo.limits`: the chat, `/submit`, `/respond` and `/compare` check what they are
sent there, and a refusal becomes a `gr.Error` carrying its message (a toast in the browser, an error with
that message through the API), never a bare exception with none.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import gradio as gr
from gradio.components.multimodal_textbox import MultimodalData
from gradio.data_classes import FileData, GradioModel
from PIL import Image

from saferdemo import limits as checks
from saferdemo.app.state import clean_text
from saferdemo.engines.base import GenerationParams
from saferdemo.images import InputError
from saferdemo.limits import DEFAULT, Limits
from saferdemo.safety_loop import LoopConfig

SEED_MAX = DEFAULT.seed_max  # the seed control's range (torch.manual_seed takes 64 bits; a UI needs fewer)


@contextmanager
def refused():
    """A limit's refusal (or a bad image) as the gr.Error the user sees."""
    try:
        yield
    except InputError as error:
        raise gr.Error(str(error)) from None


def message_parts(message) -> tuple[str, list[str]]:
    """The message's text (cleaned, stripped) and file paths, or a gr.Error saying what is wrong with it."""
    with refused():
        text, paths = checks.message_parts(message)
    return clean_text(text).strip(), paths


def seed_of(seed, limits: Limits = DEFAULT) -> int | None:
    """The seed control's value: None (empty or -1) means unseeded, else an integer in [0, seed_max]."""
    with refused():
        return checks.seed(seed, limits)


def _flag(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise gr.Error(f"{name} must be true or false; got {checks.short(value)}.")
    return value


def turn_settings(temperature, top_p, max_new_tokens, threshold, loop_base, loop_aligned, seed=None,
                  limits: Limits = DEFAULT):
    """The UI's generation and safety-loop controls as (GenerationParams, {column: LoopConfig}), each checked
    against the limits (NaN, infinities, strings and numbers out of range are refused by name). A seed only
    matters when sampling (temperature > 0): greedy turns stay unseeded, so they may share a running batch."""
    with refused():
        temperature, top_p, max_new_tokens, threshold = checks.settings(temperature, top_p, max_new_tokens,
                                                                        threshold, limits)
    seed = seed_of(seed, limits)
    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                              seed=seed if temperature > 0 else None)
    loops = {"base": LoopConfig(enabled=_flag(loop_base, "The base model's safety loop"), threshold=threshold),
             "aligned": LoopConfig(enabled=_flag(loop_aligned, "The aligned model's safety loop"), threshold=threshold)}
    return params, loops


def regenerate_hint(temperature, seed=None) -> str | None:
    """Why Regenerate would give the same answers again, or None when it will sample anew."""
    if float(temperature or 0) == 0:
        return ("Temperature is 0 (greedy): Regenerate gives the same answers again. Raise the temperature in "
                "Parameters to sample different ones.")
    if seed_of(seed) is not None:
        return (f"The seed is fixed at {seed_of(seed)}: Regenerate repeats the same sample. Set the seed to -1 "
                "(or change it) for a different one.")
    return None


def check_turn(text: str, paths: list[str], held_images: int, turns: int, limits: Limits, tokens) -> None:
    """A new turn within the limits; `tokens` (text -> count) runs only once the cheap checks pass."""
    with refused():
        checks.turn(text, len(paths), held_images, turns, limits)  # characters, images, turns first
        checks.turn(text, len(paths), held_images, turns, limits, tokens(text))


def open_image(path: str, limits: Limits = DEFAULT) -> Image.Image:
    """An upload decoded once and kept at `kept_pixels`, or a gr.Error saying why it cannot be used."""
    with refused():
        return checks.image(path, limits)


class _AnyMessage(GradioModel):
    """Whatever a program sent as the message: checked by `Message.preprocess`, not refused unexplained."""

    text: Any = ""
    files: Any = None


class Message(gr.MultimodalTextbox):
    """The multimodal textbox (the chat's and `/compare`'s) with its input checked here: Gradio's own check of
    its data model answered `files: null` or `text: 123` with an error that carried no message. Uploads are
    still Gradio's (moved into its cache and checked to be uploads before this runs); the API's schema is the
    textbox's, so clients see no difference."""

    is_template = True  # the frontend is the multimodal textbox's
    data_model = _AnyMessage

    def api_info(self) -> dict:
        return MultimodalData.model_json_schema()

    def preprocess(self, payload) -> dict | None:
        if payload is None:
            return None
        files = [] if payload.files is None else payload.files
        if not isinstance(files, list):
            raise gr.Error(f"The message's files must be a list of uploaded files, got {type(files).__name__}.")
        try:
            files = [FileData.model_validate(f, context={"validate_meta": True}) for f in files]
        except ValueError:
            raise gr.Error("Each attached file must be an uploaded file (gradio_client: handle_file(path)).") from None
        text = "" if payload.text is None else payload.text
        if not isinstance(text, str):
            raise gr.Error(f"The message's text must be a string, got {type(text).__name__} {checks.short(text)}.")
        return super().preprocess(MultimodalData(text=text, files=files))
