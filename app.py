"""Chat with a bundled miniature model about an image, watching its `<think>` trace stream.

`python app.py [--model PATH]` serves on http://127.0.0.1:7860. The side-by-side base vs SaFeR-aligned
comparison with GRM scores builds on this (issue 4).
"""

from __future__ import annotations

import argparse
import os
import threading
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr
from PIL import Image, UnidentifiedImageError
from transformers import TextIteratorStreamer

from saferdemo.loading import load_model, load_processor
from saferdemo.prompts import THINK_CLOSE, THINK_OPEN, user_turn

DEFAULT_MODEL = Path(__file__).parent / "assets" / "models" / "mini-base"
MAX_PROMPT_CHARS = 4000


def build_demo(model_path: str | Path = DEFAULT_MODEL) -> gr.Blocks:
    model, processor = load_model(model_path), load_processor(model_path)

    def respond(message: dict, history: list, max_new_tokens: int, temperature: float):
        text = (message.get("text") or "").strip()
        if not text:
            raise gr.Error("Type a message (and attach a card image if you like).")
        if len(text) > MAX_PROMPT_CHARS:
            raise gr.Error(f"The message is {len(text)} characters; the limit is {MAX_PROMPT_CHARS}.")
        images = [_open_image(path) for path in message.get("files", [])][:1]
        conversation = [user_turn(text, with_image=bool(images))]
        prompt = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        inputs = processor(text=[prompt], images=images or None, return_tensors="pt").to(model.device)
        streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = dict(**inputs, streamer=streamer, max_new_tokens=max_new_tokens, do_sample=temperature > 0)
        if temperature > 0:
            kwargs["temperature"] = temperature
        threading.Thread(target=model.generate, kwargs=kwargs, daemon=True).start()
        reply = ""
        for chunk in streamer:
            reply += chunk
            yield _as_messages(reply)

    return gr.ChatInterface(
        respond,
        multimodal=True,
        textbox=gr.MultimodalTextbox(file_types=["image"], placeholder="Ask about a card image…"),
        additional_inputs=[
            gr.Slider(16, 512, value=160, step=16, label="max new tokens"),
            gr.Slider(0.0, 1.5, value=1.0, step=0.1, label="temperature (0 = greedy)"),
        ],
        title="saferdemo",
        description=f"Model: `{model_path}`. Its reasoning appears in a collapsible *Thinking* message.",
    )


def _open_image(path: str) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        raise gr.Error(f"Could not read {Path(path).name} as an image: {error}") from error


def _as_messages(reply: str) -> list[gr.ChatMessage]:
    """Split the streamed reply into a Thinking message and the answer."""
    body = reply.lstrip()
    if not body.startswith(THINK_OPEN):
        return [gr.ChatMessage(role="assistant", content=reply)]
    think, closed, answer = body[len(THINK_OPEN) :].partition(THINK_CLOSE)
    status = "done" if closed else "pending"
    messages = [gr.ChatMessage(role="assistant", content=think.strip(), metadata={"title": "Thinking", "status": status})]
    if answer.strip():
        messages.append(gr.ChatMessage(role="assistant", content=answer.strip()))
    return messages


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=os.environ.get("SAFERDEMO_BASE", str(DEFAULT_MODEL)))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args()
    build_demo(args.model).launch(server_name=args.host, server_port=args.port)
