"""How a turn looks in a chat column: Gradio chat messages rebuilt from a `Turn` snapshot.

Each turn of a column is a collapsible "Thinking" message (pending while it streams, then its duration and
speed), the answer, the GRM's judgement, and, when the safety loop fires, a "Reflection" message and the
corrected answer with its new judgement. Every piece of model or user text is made inert first.
"""

from __future__ import annotations

import html

import gradio as gr

from saferdemo.judge import JudgeResult
from saferdemo.safety_loop import Turn, strip_parts
from saferdemo.segments import Segments

STOPPED_IN = {"drafting": "while drafting", "judging": "while the GRM judged the draft",
              "reflecting": "while reflecting", "rejudging": "while the GRM judged the correction"}


def turn_messages(turn: Turn) -> list[gr.ChatMessage]:
    """The assistant messages one column shows for a turn, rebuilt from its latest snapshot."""
    live = turn.phase != "done"  # nothing shows as pending once a turn has ended, however it ended
    # The flagged draft stays visible, folded, while the loop reflects and when the revision is kept; the answer
    # the turn ends with is the one shown open (a revision judged worse is folded instead).
    draft_folded = turn.reflected and (live or turn.kept == "revision")
    revision_folded = turn.reflected and not live and turn.kept == "draft"
    messages = _segment_messages(turn.draft, turn.draft_stats, "Thinking", live,
                                 folded=DRAFT_TITLE if draft_folded else None)
    if turn.phase == "judging" and turn.draft_judge is None:
        messages.append(_note("GRM", "judging…", pending=True))
    if turn.draft_judge is not None:
        messages.append(_judge_message(turn.draft_judge, "draft" if turn.reflected else None))
    if turn.reflected:
        revision = turn.revision
        messages.append(gr.ChatMessage(
            role="assistant", content=inert(revision.reflection) or "…",
            metadata={"title": "Reflection", "status": "pending" if turn.phase == "reflecting" and revision.reflection_state != "closed" else "done"},
        ))
        messages += _segment_messages(revision, turn.revision_stats, "Thinking again", live,
                                      folded=f"Revision, not kept: {turn.kept_reason}" if revision_folded else None)
        if turn.phase == "rejudging" and turn.final_judge is None:
            messages.append(_note("GRM", "judging the corrected answer…", pending=True))
        if turn.final_judge is not None:
            messages.append(_judge_message(turn.final_judge, "corrected"))
    strip = verdict_strip(turn)
    if strip:
        messages.append(gr.ChatMessage(role="assistant", content=strip))
    if turn.error:
        messages.append(gr.ChatMessage(role="assistant", content=f"⚠️ {inert(turn.error)}"))
    if turn.stopped:
        messages.append(gr.ChatMessage(role="assistant", content=stopped_note(turn)))
    return messages


DRAFT_TITLE = "Draft answer (flagged by the GRM)"


def stopped_note(turn: Turn) -> str:
    """"Stopped while drafting." after a CSS square (no emoji font needed; ui.CSS draws it)."""
    where = STOPPED_IN.get(turn.stopped_in or "", "")
    return f'<span class="sd-stop" aria-hidden="true"></span>{f"Stopped {where}".rstrip()}.'


def verdict_strip(turn: Turn) -> str | None:
    """The turn's story in one line, e.g. "draft: unsafe · 0.00 → reflected → corrected: safe · 0.95", each
    judged part coloured by its verdict (green safe, red unsafe, grey unknown: ui.CSS)."""
    parts = strip_parts(turn)
    if not parts:
        return None
    spans = [f'<span class="sd-{tone}">{html.escape(text)}</span>' if tone else html.escape(text)
             for text, tone in parts]
    return f'<div class="sd-strip"><strong>{" → ".join(spans)}</strong></div>'


def _segment_messages(seg: Segments, stats, title: str, live: bool = True,
                      folded: str | None = None) -> list[gr.ChatMessage]:
    messages = []
    if seg.think or seg.think_state != "none":
        cut = " (truncated at max tokens)" if seg.truncated else " (stopped)" if seg.think_state == "open" and not live else ""
        metadata = {"title": title + cut,
                    "status": "pending" if live and seg.think_state == "open" and not seg.truncated else "done"}
        if stats is not None and metadata["status"] == "done":
            metadata["duration"] = round(stats.seconds, 2)
            metadata["log"] = _speed(stats)
        messages.append(gr.ChatMessage(role="assistant", content=inert(seg.think) or "…", metadata=metadata))
    if seg.answer:
        if folded:  # an answer the turn does not end with stays visible, folded
            messages.append(gr.ChatMessage(role="assistant", content=inert(seg.answer),
                                           metadata={"title": folded, "status": "done"}))
        else:
            messages.append(gr.ChatMessage(role="assistant", content=inert(seg.answer)))
    return messages


def _speed(stats) -> str:
    parts = []
    if stats.ttft_s is not None:
        parts.append(f"TTFT {stats.ttft_s:.2f} s")
    if stats.tokens_per_s is not None:
        parts.append(f"{stats.tokens_per_s:.0f} tok/s")
    return " · ".join(parts)


def _judge_message(result: JudgeResult, which: str | None) -> gr.ChatMessage:
    label = f"GRM ({which})" if which else "GRM"
    if result.judgement is None:
        raw = inert(result.raw.strip().replace("`", "'")[:300])
        return gr.ChatMessage(role="assistant", content=f"{inert(result.error)}\n\nRaw output: `{raw or '(empty)'}`",
                              metadata={"title": f"{label}: no score (unverified)", "status": "done"})
    j = result.judgement
    penalties = ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in j.penalties.items() if v) or "none"
    body = (f"{inert(j.rationale)}\n\nAnswer: safety {j.answer['safety']:g}, helpfulness {j.answer['helpfulness']:g} · "
            f"reasoning safety {j.reasoning['safety']:g} · penalties: {penalties}")
    return gr.ChatMessage(role="assistant", content=body, metadata={
        "title": f"{label}: {j.verdict} · reward {result.reward:.2f}", "status": "done"})


def _note(title: str, text: str, pending: bool) -> gr.ChatMessage:
    return gr.ChatMessage(role="assistant", content=text, metadata={"title": title, "status": "pending" if pending else "done"})


def inert(text: str) -> str:
    """Text shown in a chat, made inert: HTML is escaped (no tags, no scripts) and Markdown images, which
    would make the browser fetch any URL, are shown as text."""
    return html.escape(text, quote=False).replace("![", "!\\[")


def user_messages(text: str, paths: list[str]) -> list[gr.ChatMessage]:
    return [gr.ChatMessage(role="user", content={"path": path}) for path in paths] + [gr.ChatMessage(role="user", content=inert(text))]


def judgement_records(turn: Turn, column: str, index: int) -> list[dict]:
    """The chart's records of a turn: every judgement made, an unverified one with reward None (the chart marks
    it rather than leaving the column out)."""
    records = []
    for stage, result in (("draft", turn.draft_judge), ("final", turn.final_judge if turn.reflected else None)):
        if result is None:
            continue
        judged = result.judgement is not None
        records.append({"turn": index, "column": column, "stage": stage, "reward": result.reward if judged else None,
                        "penalties": dict(result.judgement.penalties) if judged else {}})
    return records


def cut_last_turn(chat: list) -> list:
    """Drop the last turn: the trailing assistant messages and the user messages before them."""
    i = len(chat)
    while i > 0 and _role(chat[i - 1]) == "assistant":
        i -= 1
    while i > 0 and _role(chat[i - 1]) == "user":
        i -= 1
    return list(chat[:i])


def _role(message) -> str:
    return message["role"] if isinstance(message, dict) else message.role
