"""An audit's progress for a UI: a line with the responses done, the rate and the time left, at this run's pace."""

from __future__ import annotations

import queue
import threading
import time


class Progress:
    """`run` runs the audit on a thread and yields a line after every response, with the rate and the time left
    estimated from this run's own pace (never an earlier run's). Afterwards `summary` holds the audit's summary,
    or `error` what went wrong."""

    def __init__(self, total: int):
        self.total, self.done = total, 0
        self.started = time.perf_counter()
        self.summary: dict | None = None
        self.error: str | None = None
        self._first: tuple[float, int] | None = None  # (time, done) at the first report of this run

    def line(self) -> str:
        elapsed = time.perf_counter() - self.started
        text = f"**Audit: {self.done}/{self.total} responses** · {_clock(elapsed)} elapsed"
        if self._first is not None and self.done > self._first[1]:
            since, done_then = self._first
            rate = (self.done - done_then) / max(1e-9, time.perf_counter() - since)
            text += f" · {rate:.2f} responses/s"
            if self.done < self.total:
                text += f" · about {_clock((self.total - self.done) / rate)} left"
        elif self.done == 0:
            text += " · starting (loading the items, then the first response)"
        return text

    def with_cancel_note(self, table: str) -> str:
        """`table` (the finished run's numbers), headed by what a Cancel left out when the run was stopped."""
        if not self.summary or not self.summary["stopped"]:
            return table
        return (f"**Cancelled after {self.done} of {self.total} responses: the numbers cover the responses made "
                "before.**\n\n" + table)

    def run(self, audit):
        """`audit(report)` runs the audit, calling `report(done, total)`; yields a progress line per report."""
        updates: queue.Queue = queue.Queue()

        def report(done: int, total: int) -> None:
            updates.put((done, total))

        def work():
            try:
                self.summary = audit(report)
            except Exception as error:  # noqa: BLE001 (shown to the user, not swallowed)
                self.error = f"{type(error).__name__}: {error}"
            finally:
                updates.put(None)

        thread = threading.Thread(target=work, name="audit", daemon=True)
        thread.start()
        while (update := updates.get()) is not None:
            self.done, self.total = update
            if self._first is None:
                self._first = (self.started, 0) if self.done == 1 else (time.perf_counter(), self.done)
            yield self.line()
        thread.join()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


CONCURRENCY_MAX = 8  # the Audit tab's most items in flight (the app's users share the models; the CLI has no cap)


def concurrency_of(value) -> int:
    """The Audit tab's "items at once" as a whole number from 1 to CONCURRENCY_MAX; ValueError (its message for the
    user) otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not number.is_integer() or not 1 <= number <= CONCURRENCY_MAX:
        raise ValueError(f"Items at once must be a whole number from 1 to {CONCURRENCY_MAX}.")
    return int(number)
