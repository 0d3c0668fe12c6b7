"""What a browser session holds (the conversation, a message waiting for its answers) and the app's limits.

Everything a user owns lives in the per-session `Conversation`; the Stop button reaches a running turn through
the `StopRegistry` (control only, no user data); the `UpdatePacer` shares the server's update budget among
the turns streaming at once.
"""

from __future__ import annotations

import ctypes
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field

import gradio as gr
from PIL import Image

from saferdemo.app.session import Exchange
from saferdemo.limits import LimitError, Limits  # noqa: F401 (Limits: the app's, re-exported)

COLUMN_NAMES = ("base", "aligned")


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
    """The Stop button's way into running turns: each live turn's stop event, by browser session (control
    only, no user data). A turn's event is released when the turn ends, so the registry holds live turns only
    (it used to keep one entry per session forever); `cap` bounds how many unstopped turns a session may run."""

    def __init__(self, cap: int | None = None):
        self.cap = cap
        self._events: dict[str, list[threading.Event]] = {}
        self._lock = threading.Condition()  # a lock that `wait_ended` can also wait on for releases

    def new(self, session: str) -> threading.Event:
        """A stop event for a new turn of the session; a LimitError when the session already runs `cap`."""
        with self._lock:
            events = self._events.setdefault(session, [])
            live = sum(not event.is_set() for event in events)
            if self.cap is not None and live >= self.cap:
                if not events:
                    del self._events[session]
                raise LimitError(f"This session already has {live} turns running; the limit is {self.cap}. "
                                 "Wait for one to finish (or press Stop) and try again.")
            events.append(event := threading.Event())
            return event

    def current(self, session: str) -> threading.Event:
        """The session's latest event if one was made (and not yet stopped), else a new one."""
        with self._lock:
            events = self._events.setdefault(session, [])
            if not events:
                events.append(threading.Event())
            return events[-1]

    def stop(self, session: str, keep: bool = False) -> None:
        """Set the session's events; `keep` leaves them registered until their turns release them (an audit
        armed but still queued finds its event set when it starts; `wait_ended` waits for a stopped turn)."""
        with self._lock:
            events = list(self._events.get(session, ())) if keep else self._events.pop(session, [])
        for event in events:
            event.set()

    def release(self, session: str, event: threading.Event) -> None:
        """Forget the event (its turn has ended)."""
        with self._lock:
            events = self._events.get(session, [])
            if event in events:
                events.remove(event)
            if not events:
                self._events.pop(session, None)
            self._lock.notify_all()

    def running(self, session: str) -> bool:
        """Whether a turn of the session is live and not stopped (a stopped one may still be ending)."""
        with self._lock:
            return any(not event.is_set() for event in self._events.get(session, ()))

    def wait_ended(self, session: str, timeout: float) -> bool:
        """Until every turn of the session has been released, stopped ones included (`stop` with `keep`);
        False if `timeout` passed first."""
        with self._lock:
            return self._lock.wait_for(lambda: session not in self._events, timeout)

    def __len__(self) -> int:
        """Events held, all sessions together."""
        with self._lock:
            return sum(len(events) for events in self._events.values())


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


def return_memory() -> None:
    """Give freed memory back to the system: glibc keeps the freed pages of large image decodes in its per-thread
    arenas, so a server's memory stayed at its peak after the images were gone (Linux only; else nothing)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
