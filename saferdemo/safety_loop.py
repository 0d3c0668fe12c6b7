"""The inference-time safety loop of one column: draft → GRM → (if flagged) reflection → corrected → GRM.

`run_turn` is a generator of `Turn` snapshots, one per streamed chunk or finished step, so a UI can redraw
from the latest snapshot alone. Both judgements are kept. A draft is flagged when the GRM's verdict is
unsafe, the safety gate closes, or the reward falls below `threshold` (so a needless refusal can be
reflected on too), and when no judgement could be had at all (the judge failed or its output did not parse:
the turn is unverified, and an unverified draft is reflected on rather than trusted: the loop fails closed).
The reflection prompt is the training one (saferdemo.prompts.reflection_messages), with
the GRM's rationale as the critique.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from typing import Literal

from PIL import Image

from saferdemo.engines.base import Engine, EngineError, GenerationParams, GenerationStats
from saferdemo.judge import GRMClient, JudgeResult, earlier_turns
from saferdemo.prompts import reflection_messages
from saferdemo.segments import Segments, after_reflection, parse

Phase = Literal["drafting", "judging", "reflecting", "rejudging", "done"]
UNVERIFIED_CRITIQUE = "The response could not be verified as safe. Check it for harmful content."


@dataclass
class LoopConfig:
    enabled: bool = True
    threshold: float = 0.5  # reflect when the draft's reward is below this (or it is judged unsafe)
    reflection_extra_tokens: int = 128  # the reflection writes more than a plain answer


@dataclass
class Turn:
    """Everything one column produced for one user turn; the UI renders it."""

    phase: Phase = "drafting"
    draft_text: str = ""
    draft: Segments = field(default_factory=Segments)
    draft_stats: GenerationStats | None = None
    draft_judge: JudgeResult | None = None
    reflected: bool = False
    revision_text: str = ""
    revision: Segments = field(default_factory=Segments)
    revision_stats: GenerationStats | None = None
    final_judge: JudgeResult | None = None
    error: str | None = None
    stopped: bool = False
    stopped_in: Phase | None = None  # the phase Stop ended

    @property
    def final(self) -> Segments:
        return self.revision if self.reflected else self.draft

    @property
    def final_answer(self) -> str:
        """What goes into the history for the next turn: the answer only, no thinking or reflection."""
        return self.final.answer

    @property
    def final_judgement(self) -> JudgeResult | None:
        return self.final_judge if self.reflected else self.draft_judge

    def snapshot(self) -> Turn:
        return copy.copy(self)

    def ended_by_stop(self) -> Turn:
        """This snapshot as the end of a stopped turn: done, stopped in the phase it had reached."""
        if self.phase == "done":
            return self
        ended = self.snapshot()
        ended.stopped_in, ended.stopped, ended.phase = self.phase, True, "done"
        return ended

    def as_dict(self) -> dict:
        """Everything the turn produced, as JSON-ready data (the CLI's --json, exports)."""
        def segments(seg: Segments) -> dict:
            return {"think": seg.think, "reflection": seg.reflection, "answer": seg.answer, "truncated": seg.truncated}

        return {
            "draft": segments(self.draft),
            "draft_judgement": self.draft_judge.as_dict() if self.draft_judge else None,
            "reflected": self.reflected,
            "revision": segments(self.revision) if self.reflected else None,
            "final_judgement": self.final_judge.as_dict() if self.final_judge else None,
            "final_answer": self.final_answer,
            "timings": {"draft": self.draft_stats.as_dict() if self.draft_stats else None,
                        "revision": self.revision_stats.as_dict() if self.revision_stats else None},
            "stopped": self.stopped,
            "error": self.error,
        }


def flagged(result: JudgeResult | None, config: LoopConfig) -> bool:
    if result is None:
        return False  # not judged at all (no judge configured)
    if result.judgement is None:
        return True  # unverified: fail closed (see the module docstring)
    return result.unsafe or result.reward < config.threshold


def run_turn(engine: Engine, judge: GRMClient | None, messages: list[dict], images: list[Image.Image], request: str,
             params: GenerationParams, loop: LoopConfig, stop: threading.Event):
    """Yield `Turn` snapshots while the column drafts, is judged, reflects and is judged again."""
    turn = Turn()
    judge_image = images[-1] if images else None  # the newest image in the conversation
    earlier = earlier_turns(messages)
    try:
        yield from _stream(engine, messages, images, params, stop, turn, "draft")
        if stop.is_set() or judge is None:
            return
        turn.phase = "judging"
        yield turn.snapshot()
        turn.draft_judge = judge.judge(judge_image, request, turn.draft_text, stop, earlier)
        yield turn.snapshot()
        if stop.is_set() or not (loop.enabled and flagged(turn.draft_judge, loop)):
            return
        turn.reflected, turn.phase = True, "reflecting"
        judgement = turn.draft_judge.judgement
        critique = (judgement.rationale or "The response may be unsafe.") if judgement else UNVERIFIED_CRITIQUE
        longer = GenerationParams(params.max_new_tokens + loop.reflection_extra_tokens, params.temperature,
                                  params.top_p, params.seed)
        yield from _stream(engine, reflection_messages(messages, turn.draft_text, critique), images, longer, stop,
                           turn, "revision")
        if stop.is_set():
            return
        turn.phase = "rejudging"
        yield turn.snapshot()
        corrected = after_reflection(turn.revision_text)  # judge the corrected response alone
        corrected = turn.revision_text if corrected is None else corrected
        turn.final_judge = judge.judge(judge_image, request, corrected, stop, earlier)
    except EngineError as error:
        turn.error = str(error)
    finally:
        turn.stopped = stop.is_set()
        if turn.stopped and turn.phase != "done":
            turn.stopped_in = turn.phase
        turn.phase = "done"
    yield turn.snapshot()


def _stream(engine, messages, images, params, stop, turn: Turn, which: str):
    generation = engine.start(messages, images, params, stop)
    setattr(turn, f"{which}_stats", generation.stats)
    text = ""
    for chunk in generation:
        text += chunk
        setattr(turn, f"{which}_text", text)
        setattr(turn, which, parse(text, generation.think_prefilled))
        yield turn.snapshot()
    segments = parse(text, generation.think_prefilled, done=True)
    segments.truncated = segments.truncated and generation.stats.finish_reason == "length"  # not when stopped
    setattr(turn, which, segments)
    yield turn.snapshot()
