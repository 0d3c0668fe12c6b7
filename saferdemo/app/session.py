"""A side-by-side comparison: both columns run their safety loop at the same time, one thread each.

`Comparison.run` yields `(column name, Turn)` events in the order they happen, so neither column waits
for the other. Closing the generator (the user pressed Stop or left) sets the stop event, which ends both
generations at their next token.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field

from PIL import Image

from saferdemo.engines.base import Engine, GenerationParams
from saferdemo.engines.batching import CLIENT
from saferdemo.judge import GRMClient
from saferdemo.prompts import assistant_turn, user_turn
from saferdemo.safety_loop import LoopConfig, Turn, run_turn


@dataclass
class Column:
    name: str
    engine: Engine
    loop: LoopConfig = field(default_factory=LoopConfig)


@dataclass
class Exchange:
    """One past user turn: its text, its decoded images, each column's final answer, and what the chat shows."""

    text: str
    images: list[Image.Image]
    answers: dict[str, str] = field(default_factory=dict)
    shown: list[str] = field(default_factory=list)  # the app's copies of the uploads, for display only
    # For export and replay: the settings the turn ran with and each column's whole turn (Turn.as_dict()).
    settings: dict = field(default_factory=dict)
    results: dict[str, dict] = field(default_factory=dict)


def build_messages(history: list[Exchange], text: str, n_images: int, column: str) -> list[dict]:
    """The chat for one column: past turns keep their images and only the final answers (thinking and
    reflection are dropped), then the new user turn."""
    messages = []
    for exchange in history:
        messages.append(_user(exchange.text, len(exchange.images)))
        messages.append(assistant_turn(exchange.answers.get(column, "")))
    messages.append(_user(text, n_images))
    return messages


def _user(text: str, n_images: int) -> dict:
    message = user_turn(text, with_image=False)
    message["content"][:0] = [{"type": "image"}] * n_images
    return message


COLUMN_ORDER = ("base", "aligned")  # the app's: base left, aligned right


def in_column_order(turns: dict[str, Turn]) -> dict[str, dict]:
    """Each column's turn as JSON, in the app's order (base, then aligned), other names after."""
    names = [n for n in COLUMN_ORDER if n in turns] + sorted(n for n in turns if n not in COLUMN_ORDER)
    return {name: turns[name].as_dict() for name in names}


class Comparison:
    def __init__(self, columns: list[Column], judge: GRMClient | None):
        self.columns, self.judge = columns, judge

    def run(self, history: list[Exchange], text: str, images: list[Image.Image], params: GenerationParams,
            stop: threading.Event | None = None, loops: dict[str, LoopConfig] | None = None, client: str | None = None):
        """`loops` overrides a column's loop settings for this turn only (the UI's per-session controls);
        `client` (the session) is whose requests these are, for the batching engines' turns (batching.CLIENT)."""
        stop = stop or threading.Event()
        loops = loops or {}
        all_images = [image for exchange in history for image in exchange.images] + list(images)
        events: queue.Queue = queue.Queue()
        done = object()

        def worker(column: Column):
            CLIENT.set(client)  # this thread's requests (draft, judge, reflection) are this client's
            messages = build_messages(history, text, len(images), column.name)
            try:
                loop = loops.get(column.name, column.loop)
                for turn in run_turn(column.engine, self.judge, messages, all_images, text, params, loop, stop):
                    events.put((column.name, turn))
            except Exception as error:  # a bug must reach the UI as a message, not kill the thread silently
                events.put((column.name, Turn(phase="done", error=f"{type(error).__name__}: {error}")))
            finally:
                events.put((column.name, done))

        threads = [threading.Thread(target=worker, args=(c,), name=f"column:{c.name}", daemon=True) for c in self.columns]
        for thread in threads:
            thread.start()
        running = len(threads)
        try:
            while running:
                name, item = events.get()
                if item is done:
                    running -= 1
                else:
                    yield name, item
        finally:
            if running:  # the consumer left early (Stop, a closed tab): end both generations
                stop.set()
                for thread in threads:
                    thread.join(timeout=2)
