"""What a browser session holds (the conversation, a message waiting for its answers) and the app's limits.

Everything a user owns lives in the per-session `Conversation`; the Stop button reaches a running turn through
the `StopRegistry` (control only, no user data); the `UpdatePacer` shares the server's update budget among
the turns streaming at once.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field

import gradio as gr
from PIL import Image

from saferdemo.app.session import Exchange

COLUMN_NAMES = ("base", "aligned")


@dataclass
class Limits:
    prompt_chars: int = 4000
    # Tokens, not characters, are what fill a context: 4,000 emoji are ~16,000 tokens. Counted with each local
    # column's own tokenizer.
    prompt_tokens: int = 1024
    images_per_turn: int = 4
    # Every earlier image goes to the models again each turn; vLLM is started with this as its per-prompt limit.
    images_per_conversation: int = 16
    # Pixels a conversation keeps of each upload, decoded once (more than the processors use, unless a
    # checkpoint's max_pixels is larger): 8 images stay under 50 MB however large the files were.
    kept_pixels: int = 2_000_000
    turns: int = 20
    audit_items: int = 100  # the Audit tab's largest audit (the CLI has no limit)
    upload_mb: int = 20  # per file (Gradio refuses larger uploads); decoded pixels: saferdemo.images
    queue_size: int = 32  # waiting turns across all users; beyond it Gradio answers "queue is full"
    concurrency: int = 2  # turns generating at once (each runs two columns and the judge)
    # ... when the columns batch (engines/batching.py): the turns' rows share each generate step, so more
    # turns at once raise throughput instead of contending for the cores.
    batched_concurrency: int = 8
    ui_updates_per_s: float = 20.0  # a streaming turn's redraws are throttled to this rate...
    # ...and all live turns' together to this one. Every update is Python work in the server's event loop
    # (diff, JSON, SSE) under the GIL the model workers need at each step: at 8 users x 20/s the event loop
    # held 37% of the server's GIL time (py-spy), and 8-user turns took 1.16x as long as at 5/s each
    # (server_load rounds, interleaved, n = 4).
    server_updates_per_s: float = 40.0
    # A pending state (thinking open, the GRM judging, a reflection) stays on screen at least this long: the
    # bundled models draft and judge in a fraction of a second, and the story of a turn would flash past.
    min_pending_s: float = 0.4


@dataclass
class Conversation:
    """Per-session state: the finished exchanges (with decoded images) and every GRM judgement for the chart."""

    exchanges: list[Exchange] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    # What each chat shows, kept on the server: the browser's copy is never read back.
    chats: dict[str, list] = field(default_factory=lambda: {name: [] for name in COLUMN_NAMES})
    # Bumped by Clear and Regenerate: a turn still streaming from before must not write into what follows.
    epoch: int = 0


@dataclass
class Pending:
    """A submitted message waiting for its answers: text, decoded images, and the shown copies."""

    text: str
    images: list[Image.Image]
    shown: list[str]
    epoch: int = 0  # the conversation's epoch when submitted: after a Clear, the message is not answered
    stopped: bool = False  # Stop came before its turn started (it waited in the queue): it ends at once


class StopRegistry:
    """The Stop button's way into a running turn: one event per browser session (control only, no user data)."""

    def __init__(self):
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def new(self, session: str) -> threading.Event:
        with self._lock:
            self._events[session] = event = threading.Event()
            return event

    def current(self, session: str) -> threading.Event:
        """The session's event if one was made (and not yet stopped), else a new one."""
        with self._lock:
            event = self._events.get(session)
            if event is None:
                self._events[session] = event = threading.Event()
            return event

    def stop(self, session: str, keep: bool = False) -> None:
        """Set the session's event; `keep` leaves it registered (an audit armed but still queued finds it set
        when it starts)."""
        with self._lock:
            event = self._events.get(session) if keep else self._events.pop(session, None)
        if event is not None:
            event.set()

    def release(self, session: str, event: threading.Event) -> None:
        """Forget the session's event if it is still `event` (its run has ended)."""
        with self._lock:
            if self._events.get(session) is event:
                del self._events[session]


class UpdatePacer:
    """How often a streaming turn may send an update: at most `per_turn` a second, and all live turns of the
    server together at most `total` a second (eight users get 5 a second each, one user 20)."""

    def __init__(self, per_turn: float, total: float):
        self.per_turn, self.total = per_turn, total
        self.live = 0
        self._lock = threading.Lock()

    @contextmanager
    def turn(self):
        """Counts a turn as live while it streams (ended however it ends: done, Stop, a closed tab)."""
        with self._lock:
            self.live += 1
        try:
            yield self
        finally:
            with self._lock:
                self.live -= 1

    def interval(self) -> float:
        """Seconds between two updates of one turn, now."""
        return max(1 / self.per_turn, max(1, self.live) / self.total)


def clean_text(text: str) -> str:
    """Text that can be encoded: a lone surrogate ("\\ud800", which no UTF-8 can hold) becomes U+FFFD. Left in,
    it would break every later update of the session, which is serialised as JSON."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def session_of(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "default"
