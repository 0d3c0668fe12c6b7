"""The inference-time safety loop of one column: draft → GRM → (if flagged) reflection → corrected → GRM.

`run_turn` is a generator of `Turn` snapshots, one per streamed chunk or finished step, so a UI can redraw
from the latest snapshot alone. Both judgements are kept. A draft is flagged when the GRM's verdict is
unsafe, the safety gate closes, or the reward falls below `threshold` (so a needless refusal can be
reflected on too). The reflection prompt is the training one (saferdemo.prompts.reflection_messages), with
the GRM's rationale as the critique.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field

from PIL import Image

from saferdemo.engine import Engine, EngineError, GenerationParams, GenerationStats
from saferdemo.judge import GRMClient, JudgeResult
from saferdemo.prompts import REFLECTION_CLOSE, reflection_messages
from saferdemo.segments import Segments, parse


@dataclass
class LoopConfig:
    enabled: bool = True
    threshold: float = 0.5  # reflect when the draft's reward is below this (or it is judged unsafe)
    reflection_extra_tokens: int = 128  # the reflection writes more than a plain answer


@dataclass
class Turn:
    """Everything one column produced for one user turn; the UI renders it."""

    phase: str = "drafting"  # drafting | judging | reflecting | rejudging | done
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


def flagged(result: JudgeResult | None, config: LoopConfig) -> bool:
    if result is None or result.judgement is None:
        return False  # no judgement, nothing to reflect on (the error is shown instead)
    return result.unsafe or result.reward < config.threshold


def run_turn(engine: Engine, judge: GRMClient | None, messages: list[dict], images: list[Image.Image], request: str,
             params: GenerationParams, loop: LoopConfig, stop: threading.Event):
    """Yield `Turn` snapshots while the column drafts, is judged, reflects and is judged again."""
    turn = Turn()
    judge_image = images[-1] if images else None
    try:
        yield from _stream(engine, messages, images, params, stop, turn, "draft")
        if stop.is_set() or judge is None:
            return
        turn.phase = "judging"
        yield turn.snapshot()
        turn.draft_judge = judge.judge(judge_image, request, turn.draft_text, stop)
        yield turn.snapshot()
        if stop.is_set() or not (loop.enabled and flagged(turn.draft_judge, loop)):
            return
        turn.reflected, turn.phase = True, "reflecting"
        critique = turn.draft_judge.judgement.rationale or "The response may be unsafe."
        longer = GenerationParams(params.max_new_tokens + loop.reflection_extra_tokens, params.temperature,
                                  params.top_p, params.seed)
        yield from _stream(engine, reflection_messages(messages, turn.draft_text, critique), images, longer, stop,
                           turn, "revision")
        if stop.is_set():
            return
        turn.phase = "rejudging"
        yield turn.snapshot()
        corrected = turn.revision_text.split(REFLECTION_CLOSE, 1)[-1]  # judge the corrected response alone
        turn.final_judge = judge.judge(judge_image, request, corrected, stop)
    except EngineError as error:
        turn.error = str(error)
    finally:
        turn.stopped = stop.is_set()
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
    setattr(turn, which, parse(text, generation.think_prefilled, done=True))
    yield turn.snapshot()
