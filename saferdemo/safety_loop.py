"""The inference-time safety loop of one column: draft → GRM → (if flagged) reflection → corrected → GRM.

`run_turn` is a generator of `Turn` snapshots, one per streamed chunk or finished step, so a UI can redraw
from the latest snapshot alone; its last snapshot is always phase "done", however the turn ended. Both
judgements are kept. A draft is flagged when the GRM's verdict is unsafe, the safety gate closes, or the
reward falls below `threshold` (so a needless refusal can be reflected on too), and when no judgement could
be had at all (the judge failed or its output did not parse: the turn is unverified, and an unverified draft
is reflected on rather than trusted: the loop fails closed). The reflection prompt is the training one
(saferdemo.prompts.reflection_messages), with the GRM's rationale as the critique.

The loop never makes an answer worse: after the correction is judged, the better-judged of draft and
revision is kept (`better`: judged safe > unverified > judged unsafe, then the higher reward; a tie keeps the
draft), and the turn says which and why (`kept`, `kept_reason`, `outcome`). A reflection that never closes
has no corrected answer: the draft is kept, as training does.
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
from saferdemo.segments import Segments, after_reflection, canonical, generation_format, native, parse

Phase = Literal["drafting", "judging", "reflecting", "rejudging", "done"]
Kept = Literal["draft", "revision"]
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
    flagged: bool = False  # the GRM flagged the draft (whether or not the loop then reflected)
    reflected: bool = False
    revision_text: str = ""
    revision: Segments = field(default_factory=Segments)
    revision_stats: GenerationStats | None = None
    final_judge: JudgeResult | None = None  # the corrected answer's judgement (None: not reflected or not judged)
    kept: Kept = "draft"  # which answer the turn ends with (and the history keeps)
    kept_reason: str = ""  # why, when the loop reflected
    error: str | None = None
    stopped: bool = False
    stopped_in: Phase | None = None  # the phase Stop ended

    @property
    def final(self) -> Segments:
        return self.revision if self.kept == "revision" else self.draft

    @property
    def final_answer(self) -> str:
        """What goes into the history for the next turn: the kept answer only, no thinking or reflection."""
        return self.final.answer

    @property
    def final_judgement(self) -> JudgeResult | None:
        """The judgement of the answer the turn ends with (the draft's unless the revision was kept)."""
        return self.final_judge if self.kept == "revision" else self.draft_judge

    @property
    def outcome(self) -> str | None:
        """How a reflected turn ended: "corrected" (the revision kept and judged safe), "revised" (the revision
        kept, judged better than the draft but not safe), "kept draft"; "stopped" if Stop came first."""
        if not self.reflected or self.phase != "done":
            return None
        if self.kept == "revision":
            return "corrected" if _rank(self.final_judge) == 2 else "revised"
        if self.stopped and self.stopped_in in ("reflecting", "rejudging"):
            return "stopped"
        return "kept draft"

    def snapshot(self) -> Turn:
        return copy.copy(self)

    def ended_by_stop(self) -> Turn:
        """This snapshot as the end of a stopped turn: done, stopped in the phase it had reached."""
        if self.phase == "done":
            return self
        ended = self.snapshot()
        ended.stopped_in, ended.stopped, ended.phase = self.phase, True, "done"
        if ended.reflected and ended.kept == "draft" and not ended.kept_reason:
            ended.kept_reason = "stopped before the correction was judged"
        return ended

    def verdict(self) -> dict:
        """The turn's final verdict, always filled once it is done: the kept answer's judgement ("label":
        safe, unsafe, unverified, or None when nothing judged it), how the loop ended and the one-line strip."""
        result = self.final_judgement
        label = None if result is None else ("unverified" if result.judgement is None else result.judgement.verdict)
        return {"label": label, "reward": None if result is None or result.reward is None else round(result.reward, 4),
                "flagged": self.flagged, "reflected": self.reflected, "outcome": self.outcome, "kept": self.kept,
                "reason": self.kept_reason or None, "stopped": self.stopped, "strip": strip_text(self),
                "tone": (strip_parts(self) or [(None, None)])[-1][1]}  # the strip's colour: safe, unsafe, unknown

    def as_dict(self) -> dict:
        """Everything the turn produced, as JSON-ready data (the CLI's --json, exports)."""
        def segments(seg: Segments) -> dict:
            return {"think": seg.think, "reflection": seg.reflection, "answer": seg.answer, "truncated": seg.truncated}

        return {
            "verdict": self.verdict(),
            "draft": segments(self.draft),
            "draft_judgement": self.draft_judge.as_dict() if self.draft_judge else None,
            "reflected": self.reflected,
            "revision": segments(self.revision) if self.reflected else None,
            "final_judgement": self.final_judge.as_dict() if self.final_judge else None,
            "final_answer": self.final_answer,
            "timings": {"draft": self.draft_stats.as_dict() if self.draft_stats else None,
                        "revision": self.revision_stats.as_dict() if self.revision_stats else None},
            "stopped": self.stopped,
            "stopped_in": self.stopped_in,
            "error": self.error,
        }


def flagged(result: JudgeResult | None, config: LoopConfig) -> bool:
    """Whether a judged draft calls for reflection: unsafe, gated, reward under the threshold, or unverified."""
    if result is None:
        return False  # not judged at all (no judge configured)
    if result.judgement is None:
        return True  # unverified: fail closed (see the module docstring)
    return result.unsafe or result.reward is None or result.reward < config.threshold


def _rank(result: JudgeResult | None) -> int:
    """2: judged safe; 1: unverified (unknown); 0: judged unsafe (known bad)."""
    if result is None or result.judgement is None:
        return 1
    return 0 if result.unsafe else 2


def better(revision: JudgeResult | None, draft: JudgeResult | None) -> bool:
    """Whether the revision is judged better than the draft: a higher rank (safe > unverified > unsafe), or the
    same rank and a higher reward. A tie keeps the draft: a revision must earn its place."""
    key_r, key_d = _rank(revision), _rank(draft)
    if key_r != key_d:
        return key_r > key_d
    reward_r = revision.reward if revision is not None and revision.reward is not None else -1.0
    reward_d = draft.reward if draft is not None and draft.reward is not None else -1.0
    return reward_r > reward_d


def short_verdict(result: JudgeResult | None) -> str:
    """"safe · 0.95", "unsafe · 0.00", "unverified", or "not judged"."""
    if result is None:
        return "not judged"
    if result.judgement is None:
        return "unverified"
    return f"{result.judgement.verdict} · {result.reward:.2f}"


def tone(result: JudgeResult | None) -> str:
    """How a judgement reads at a glance: "safe", "unsafe" (unsafe or gated), or "unknown"."""
    return {2: "safe", 1: "unknown", 0: "unsafe"}[_rank(result)]


def strip_parts(turn: Turn) -> list[tuple[str, str | None]]:
    """The verdict strip as (text, tone) parts joined by " → " (tone: safe, unsafe, unknown or None for a step);
    empty until the turn is done. Every ended turn has one."""
    if turn.phase != "done":
        return []
    if (draft := turn.draft_judge) is None:
        why = "stopped" if turn.stopped else "error" if turn.error else "no GRM"
        return [(f"draft: not judged ({why})", "unknown")]
    if not turn.reflected:
        if turn.flagged and turn.stopped:
            return [(f"draft: {short_verdict(draft)}", tone(draft)), ("flagged", None), ("stopped", None)]
        suffix = " · flagged (safety loop off)" if turn.flagged else ""  # flagged and not reflected: red (issue 25)
        return [(f"GRM: {short_verdict(draft)}{suffix}", "unsafe" if turn.flagged else tone(draft))]
    parts = [(f"draft: {short_verdict(draft)}", tone(draft)), ("reflected", None)]
    outcome = turn.outcome
    if outcome == "corrected":
        return parts + [(f"corrected: {short_verdict(turn.final_judge)}", tone(turn.final_judge))]
    if outcome == "revised":
        return parts + [(f"revised: {short_verdict(turn.final_judge)} (kept: {turn.kept_reason})",
                         tone(turn.final_judge))]
    if outcome == "stopped":
        return parts + [("stopped (kept draft)", tone(draft))]
    return parts + [(f"kept draft ({turn.kept_reason})", tone(draft))]


def strip_text(turn: Turn) -> str | None:
    """The turn's story in one line, e.g. "draft: unsafe · 0.00 → reflected → corrected: safe · 0.95" (None
    until the turn is done)."""
    parts = strip_parts(turn)
    return " → ".join(text for text, _ in parts) if parts else None


def run_turn(engine: Engine, judge: GRMClient | None, messages: list[dict], images: list[Image.Image], request: str,
             params: GenerationParams, loop: LoopConfig, stop: threading.Event):
    """Yield `Turn` snapshots while the column drafts, is judged, reflects and is judged again; the last one is
    always phase "done". `stopped` is set only when Stop cut this column's work short: a column that had
    already finished when the other was stopped ends as it finished."""
    turn = Turn()
    try:
        yield from _loop(turn, engine, judge, messages, images, request, params, loop, stop)
    except EngineError as error:
        turn.error = str(error)
        if turn.reflected and turn.kept == "draft" and not turn.kept_reason:
            turn.kept_reason = "the reflection failed"
    turn.phase = "done"
    yield turn.snapshot()


def _stopped(turn: Turn, stop: threading.Event) -> bool:
    """Whether Stop has come; if so the turn records the phase it ended."""
    if stop.is_set():
        turn.stopped, turn.stopped_in = True, turn.phase
    return turn.stopped


def _loop(turn: Turn, engine, judge, messages, images, request, params, loop: LoopConfig, stop):
    judge_image = images[-1] if images else None  # the newest image in the conversation
    earlier = earlier_turns(messages)
    drafted = yield from _stream(engine, messages, images, params, stop, turn, "draft")
    form, prefilled = generation_format(drafted), drafted.think_prefilled  # the model's reasoning format
    if _stopped(turn, stop) or judge is None:
        return
    turn.phase = "judging"
    yield turn.snapshot()
    # The judge reads saferdemo's own <think> format whatever the model writes (◁think▷, a pre-filled tag, ...).
    result = judge.judge(judge_image, request, canonical(turn.draft_text, form, prefilled), stop, earlier)
    if stop.is_set() and result.judgement is None:  # Stop cut the judge short: that is no verdict
        _stopped(turn, stop)
        return
    turn.draft_judge, turn.flagged = result, flagged(result, loop)
    yield turn.snapshot()
    if not (loop.enabled and turn.flagged):
        return
    if stop.is_set():  # flagged, but Stop came before the reflection began
        turn.stopped, turn.stopped_in = True, "judging"
        return
    turn.reflected, turn.phase = True, "reflecting"
    judgement = result.judgement
    critique = (judgement.rationale or "The response may be unsafe.") if judgement else UNVERIFIED_CRITIQUE
    longer = GenerationParams(params.max_new_tokens + loop.reflection_extra_tokens, params.temperature,
                              params.top_p, params.seed)
    # The model reads its draft back in its own format (a pre-filled opening tag put back).
    yield from _stream(engine, reflection_messages(messages, native(turn.draft_text, form, prefilled), critique),
                       images, longer, stop, turn, "revision")
    if _stopped(turn, stop):
        turn.kept_reason = "stopped before the correction was judged"
        return
    corrected = after_reflection(turn.revision_text)  # judge the corrected response alone
    if corrected is None:  # the reflection never closed: there is no corrected answer (training keeps the draft)
        turn.kept_reason = "the reflection never closed"
        return
    turn.phase = "rejudging"
    yield turn.snapshot()
    revised = judge.judge(judge_image, request, canonical(corrected, form), stop, earlier)
    if stop.is_set() and revised.judgement is None:
        _stopped(turn, stop)
        turn.kept_reason = "stopped before the correction was judged"
        return
    turn.final_judge = revised
    if better(revised, turn.draft_judge):
        turn.kept = "revision"
        turn.kept_reason = ("judged safe" if _rank(revised) == 2 and _rank(turn.draft_judge) < 2 else
                            f"judged better than the draft ({short_verdict(turn.draft_judge)})")
    else:
        turn.kept_reason = f"the revision was judged {'no better' if _same(revised, turn.draft_judge) else 'worse'}: " \
                           f"{short_verdict(revised)}"


def _same(a: JudgeResult | None, b: JudgeResult | None) -> bool:
    return _rank(a) == _rank(b) and (a.reward if a else None) == (b.reward if b else None)


def _stream(engine, messages, images, params, stop, turn: Turn, which: str):
    generation = engine.start(messages, images, params, stop)
    setattr(turn, f"{which}_stats", generation.stats)
    text = ""
    for chunk in generation:
        text += chunk
        setattr(turn, f"{which}_text", text)
        setattr(turn, which, parse(text, generation.think_prefilled, format=generation_format(generation)))
        yield turn.snapshot()
    segments = parse(text, generation.think_prefilled, done=True, format=generation_format(generation))
    segments.truncated = segments.truncated and generation.stats.finish_reason == "length"  # not when stopped
    setattr(turn, which, segments)
    yield turn.snapshot()
    return generation
