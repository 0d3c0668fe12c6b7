"""Many responses in flight: an audit's (item, model) units answered and judged on worker threads, recorded as
they finish.

Two stages. Up to `answers` units generate at once; each unit is handed to the judge as soon as its own
generation ends, and up to `judgements` judge calls run at once (the judge's own limit), while the freed
generation slot takes the next unit. In process, the requests meet in the batching worker
(`saferdemo/engines/batching.py`), which batches concurrent `start` calls; remote engines get as many parallel
HTTP requests (the OpenAI engine's timeouts and bounded retries on 429 and 5xx apply to each). Answers that
wait for a judge slot are bounded (`judgements` of them): then generation waits too.

Only the calling thread writes records, so the sink never sees two writers, and a unit is recorded whole or
not at all. `stop` starts no new unit and lets those in flight finish and be recorded (the app's Cancel); an
exception in the calling thread (Ctrl-C's KeyboardInterrupt, a bug in a unit) abandons the units in flight:
their generations end at the next token and nothing of theirs is recorded, so the folder resumes.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable

_DONE = object()


def run_units(units: Iterable, answer: Callable, judge: Callable, record: Callable, answers: int = 1,
              judgements: int = 1, stop: threading.Event | None = None, poll_s: float = 0.2) -> int:
    """`answer(unit, abort)` then `judge(answered, abort)` for every unit, `answers` and `judgements` at once on
    worker threads; `record(judged)` in this thread as each unit finishes, in completion order. Returns how
    many were recorded. Each unit has its own `abort` event (one generation that gives up sets only its own);
    all are set when the run is abandoned."""
    pending, lock = deque(units), threading.Lock()
    answers = max(1, min(int(answers), len(pending) or 1))
    judgements = max(1, int(judgements))
    handoff: queue.Queue = queue.Queue(maxsize=judgements)
    results: queue.Queue = queue.Queue()
    abandoned, in_flight = threading.Event(), set()
    stop = stop or threading.Event()
    answering = [answers]  # answer workers still running; the last one tells the judges there is no more

    def next_unit():
        with lock:
            if stop.is_set() or abandoned.is_set() or not pending:
                return _DONE
            own = threading.Event()
            in_flight.add(own)
            return pending.popleft(), own

    def hand(item) -> None:
        while not abandoned.is_set():
            with contextlib.suppress(queue.Full):
                return handoff.put(item, timeout=poll_s)

    def answer_worker():
        try:
            while (unit := next_unit()) is not _DONE:
                value, own = unit
                try:
                    hand((answer(value, own), own))
                except BaseException as error:  # noqa: BLE001 (raised again in the calling thread)
                    results.put((False, error))
                    return
        finally:
            with lock:
                answering[0] -= 1
                last = answering[0] == 0
            if last:
                for _ in range(judgements):
                    hand(_DONE)

    def judge_worker():
        try:
            while not abandoned.is_set():
                with contextlib.suppress(queue.Empty):
                    item = handoff.get(timeout=poll_s)
                    if item is _DONE:
                        return
                    value, own = item
                    try:
                        results.put((True, judge(value, own)))
                    except BaseException as error:  # noqa: BLE001
                        results.put((False, error))
                        return
                    finally:
                        with lock:
                            in_flight.discard(own)
        finally:
            results.put(_DONE)

    workers = [threading.Thread(target=answer_worker, name=f"audit-answer-{i}", daemon=True) for i in range(answers)]
    workers += [threading.Thread(target=judge_worker, name=f"audit-judge-{i}", daemon=True) for i in range(judgements)]
    for thread in workers:
        thread.start()
    live, recorded = judgements, 0
    try:
        while live:
            with contextlib.suppress(queue.Empty):  # a timeout, so that Ctrl-C is seen while waiting
                item = results.get(timeout=poll_s)
                if item is _DONE:
                    live -= 1
                    continue
                ok, value = item
                if not ok:
                    raise value
                record(value)
                recorded += 1
    except BaseException:
        with lock:  # the units in flight end at their next token; nothing of theirs is recorded
            abandoned.set()
            for own in in_flight:
                own.set()
        raise
    return recorded
