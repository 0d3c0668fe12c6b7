"""Scripted engines and judges for tests of the safety loop and the controller: each call answers the next reply
of a script, so every branch of the loop can be reached on purpose (no model, no randomness).

A reply is a string (emitted in one chunk, finished "stop"), a `Reply` (chunks, finish reason, and what to do
with the stop event), or a `Hold` (streams a first chunk, then waits for Stop or `release`: a paused engine
that lets a test control the timing instead of racing a real model)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from saferdemo.engines.base import EngineError, StreamingGeneration
from saferdemo.judge import GRMClient
from saferdemo.judgement import PENALTIES, Judgement, reward


@dataclass
class Reply:
    chunks: list[str]
    finish: str = "stop"
    set_stop: bool = False  # press Stop after the chunks (a Stop that lands while this call runs)
    fail: str | None = None  # raise EngineError(fail) after the chunks


@dataclass
class Hold:
    """Streams `first`, then waits until Stop (the turn's event) or `release` is set; then emits `rest`."""

    first: str = "<think>\nreading the card"
    rest: str = "</think>\nanswer"
    release: threading.Event = field(default_factory=threading.Event)
    started: threading.Event = field(default_factory=threading.Event)
    stop_lag: float = 0.0  # seconds a Stop takes to land (a real model sees it only after its current step)


class Scripted:
    """An engine answering its script in order (the last reply repeats), recording each call's messages."""

    def __init__(self, name, *replies):
        self.name, self.replies, self.calls = name, list(replies), []

    def start(self, messages, images, params, stop):
        reply = self.replies[min(len(self.calls), len(self.replies) - 1)]
        self.calls.append((messages, images, params))
        generation = StreamingGeneration(stop, params.max_new_tokens, self.name)
        if isinstance(reply, Hold):
            threading.Thread(target=self._hold, args=(generation, reply, stop), daemon=True).start()
            return generation
        if isinstance(reply, str):
            reply = Reply([reply])
        for chunk in reply.chunks:
            generation.emit(chunk)
        if reply.set_stop:
            stop.set()
        if reply.fail:
            generation.fail(EngineError(reply.fail))
        generation.finish(reply.finish)
        return generation

    @staticmethod
    def _hold(generation, hold: Hold, stop):
        generation.emit(hold.first)
        hold.started.set()
        while not (stop.is_set() or hold.release.is_set()):
            stop.wait(0.01)
        if stop.is_set():
            time.sleep(hold.stop_lag)
        else:
            generation.emit(hold.rest)
        generation.finish("stop")


def judgement(verdict="safe", safety=10, helpfulness=10, over_refusal=0, rationale="r") -> Judgement:
    scores = {"safety": safety, "helpfulness": helpfulness, "coherence": 10, "grounding": 10}
    penalties = {**dict.fromkeys(PENALTIES, 0), "over_refusal": over_refusal}
    return Judgement(dict(scores), dict(scores), penalties, verdict, rationale)


SAFE = judgement()  # reward 1.00
NEEDLESS_REFUSAL = judgement(helpfulness=0, over_refusal=-3, rationale="A needless refusal.")  # safe, reward 0.25
UNSAFE = judgement("unsafe", safety=0, rationale="The list gives harmful steps.")  # reward 0.00
LESS_UNSAFE = judgement("unsafe", safety=6, rationale="Still unsafe.")  # reward 0.12
assert reward(NEEDLESS_REFUSAL) < 0.5 < reward(SAFE) and reward(UNSAFE) < reward(LESS_UNSAFE) < 0.5


def judge(*verdicts) -> tuple[GRMClient, Scripted]:
    """A GRM client whose judge answers `verdicts` in order (a Judgement, raw text, a Reply or a Hold)."""
    replies = [v.to_json() if isinstance(v, Judgement) else v for v in verdicts]
    engine = Scripted("grm", *replies)
    return GRMClient(engine, "short"), engine


DRAFT = "<think>\nThe card asks for steps.\n</think>\n1. [restricted step]\n2. [restricted step]"
REVISION = ("<reflection>\nThe GRM says the list gives harmful steps. I should not complete it.\n</reflection>\n"
            "<think>\nThe card asks for harm.\n</think>\nSorry, I can't help with that.")
OPEN_REFLECTION = "<reflection>\nThe GRM says the list gives harmful steps. I should"


class ByContent(Scripted):
    """A judge engine that answers by what it is shown: the first key found in the judged text picks the reply
    (so two columns judged at once on two threads get their own verdicts whatever the order)."""

    def __init__(self, name, replies: dict[str, object], default):
        super().__init__(name, default)
        self.by_key = replies

    def start(self, messages, images, params, stop):
        text = str(messages[-1]["content"])
        for key, reply in self.by_key.items():
            if key in text:
                self.replies = [reply.to_json() if isinstance(reply, Judgement) else reply]
                break
        else:
            self.replies = [self.default]
        return super().start(messages, images, params, stop)

    @property
    def default(self):
        return self._default

    @default.setter
    def default(self, value):
        self._default = value.to_json() if isinstance(value, Judgement) else value


def judge_by(replies: dict[str, object], default=SAFE) -> tuple[GRMClient, ByContent]:
    """A GRM client judging by content: {substring of the judged response: Judgement or raw text}."""
    engine = ByContent("grm", replies, default)
    engine.default = default
    return GRMClient(engine, "short"), engine
