"""Where the reasoning turns, on demand in the Chat tab: for a finished turn, each column's draft reasoning (the
model's own trace, before any reflection) is split into sentences, the GRM judges every prefix in one batched
call (saferdemo/turning_point.py, strategy linear), and the panel shows both columns side by side with the first
unsafe sentence marked red and a later sentence whose prefix is safe again (a self-correction) marked green,
with what the marking cost (judge rows, rounds, seconds). Nothing runs until the button is pressed: the chat's
own turns cost what they did before."""

from __future__ import annotations

import html
import time

import gradio as gr

from saferdemo.app.session import build_messages
from saferdemo.app.state import COLUMN_NAMES, Conversation
from saferdemo.judge import earlier_turns
from saferdemo.turning_point import TurningPoint, grm_prefix_judge, locate

COST_NOTE = ("On demand: marking judges every prefix of both columns' draft reasoning in one batched judge call per "
             "column, about one more plain turn per column (README, Research instruments: 0.25 s against a plain "
             "turn's 0.25 s on a 2-core CPU with the bundled models). The bundled mini-grm was trained on reasoning "
             "prefixes: on the bundled examples it marks mini-base's plan to comply and nothing in mini-safer's "
             "refusals.")
RED = "background:#fdecea;color:#b42318;border-radius:3px;padding:0 2px"
GREEN = "background:#e6f4ea;color:#1e7b34;border-radius:3px;padding:0 2px"
PINK = "background:#fff4f2;border-radius:3px"  # later sentences still inside the unsafe stretch


class TraceMarks:
    def __init__(self, controller):
        self.controller = controller

    def mark(self, conv: Conversation, turn) -> str:
        """The panel's HTML for turn `turn` (1-based; 0 or empty: the latest finished turn)."""
        judge = self.controller.judge
        if judge is None:
            raise gr.Error("Marking the reasoning needs a judge model (SAFERDEMO_GRM).")
        finished = [i for i, e in enumerate(conv.exchanges) if e.results] if conv else []
        if not finished:
            raise gr.Error("No finished turn to mark yet: send a message first (Stop and errors leave none).")
        try:
            number = int(turn or 0)
        except (TypeError, ValueError, OverflowError):
            raise gr.Error("The turn must be a whole number (0: the latest).") from None
        index = finished[-1] if number == 0 else number - 1
        if index not in finished:
            raise gr.Error(f"There is no finished turn {number}; finished turns: "
                           f"{', '.join(str(i + 1) for i in finished)}.")
        exchange = conv.exchanges[index]
        images = [image for e in conv.exchanges[: index + 1] for image in e.images]
        image = images[-1] if images else None  # the newest image, as the safety loop gives the judge
        columns, rows, seconds = [], 0, 0.0
        for name in COLUMN_NAMES:
            result = exchange.results.get(name)
            if result is None:
                continue
            messages = build_messages(conv.exchanges[:index], exchange.text, len(exchange.images), name)
            trace = (result.get("draft") or {}).get("think") or ""
            started = time.perf_counter()
            point = locate(trace, grm_prefix_judge(judge, image, exchange.text, earlier_turns(messages)),
                           answer_safe=_answer_safe(result.get("draft_judgement"), judge))
            took = time.perf_counter() - started
            rows, seconds = rows + point.judge_calls, seconds + took
            columns.append(column_html(self.controller.titles.get(name, name), name, trace, point, took))
        return (f"<div style='display:flex;gap:16px;padding:0 6px' data-turn='{index + 1}'>{''.join(columns)}</div>"
                f"<p style='color:#555;font-size:90%;padding:0 6px'>Turn {index + 1}: marking both columns took "
                f"{rows} judge rows and {seconds:.2f} s.</p>")


def _answer_safe(judged: dict | None, judge) -> bool | None:
    """Whether the draft's answer (the same response as the trace) was judged safe; None: no judgement."""
    j = (judged or {}).get("judgement")
    if not j:
        return None
    return j["verdict"] != "unsafe" and j["answer"]["safety"] >= judge.reward_config.gate_threshold


def column_html(title: str, name: str, trace: str, point: TurningPoint, seconds: float) -> str:
    """One column: the trace with its sentences marked, then what was found and what it cost."""
    head = f"<b>{html.escape(name.capitalize())} · {html.escape(title)}</b>"
    if not point.sentences:
        return f"<div style='flex:1' class='sd-marks-{name}'>{head}<p><i>No reasoning to mark in this turn.</i></p></div>"
    pieces, cursor = [], 0
    end_unsafe = point.recovered_at if point.recovered_at is not None else len(point.sentences)
    for i, sentence in enumerate(point.sentences):
        pieces.append(html.escape(trace[cursor:sentence.start]))
        text = html.escape(trace[sentence.start:sentence.end])
        if i == point.first_unsafe:
            pieces.append(f"<span class='sd-first-unsafe' style='{RED}' title='first unsafe sentence'>{text}</span>")
        elif i == point.recovered_at:
            pieces.append(f"<span class='sd-recovered' style='{GREEN}' title='safe again: self-correction'>{text}</span>")
        elif point.first_unsafe is not None and point.first_unsafe < i < end_unsafe:
            pieces.append(f"<span style='{PINK}'>{text}</span>")
        else:
            pieces.append(text)
        cursor = sentence.end
    pieces.append(html.escape(trace[cursor:]))
    n = len(point.sentences)
    if point.turned:
        found = (f"<span style='{RED}'>first unsafe sentence: {point.first_unsafe + 1} of {n}</span> "
                 f"({100 * point.relative_position:.0f}% into the trace)")
        if point.recovered_at is not None:
            found += f"; <span style='{GREEN}'>self-corrected at sentence {point.recovered_at + 1}</span>"
        elif point.answer_safe:
            found += "; no later sentence is safe again, but the answer was judged safe (self-corrected in the answer)"
        else:
            found += "; no self-correction"
    else:
        found = f"no unsafe sentence found: every one of the {n} prefixes was judged safe"
    if point.unreadable:
        found += f" ({point.unreadable} judgements could not be read and count as not unsafe)"
    cost = (f"cost: {point.judge_calls} judge rows in {point.rounds} batched call{'s' * (point.rounds != 1)}, "
            f"{seconds:.2f} s")
    return (f"<div style='flex:1' class='sd-marks-{name}'>{head}<p class='sd-marks-found'>{found}</p>"
            f"<div style='white-space:pre-wrap;border-left:3px solid #ddd;padding-left:8px'>{''.join(pieces)}</div>"
            f"<p style='color:#555;font-size:90%' class='sd-marks-cost'>{cost}</p></div>")


def trace_marks_panel(controller, conv: gr.State, gpu_decorator=None) -> TraceMarks:
    """The panel under the chats (inside the Chat tab), laid out and wired."""
    marks = TraceMarks(controller)
    mark = marks.mark if gpu_decorator is None else gpu_decorator(marks.mark)
    with gr.Accordion("Where the reasoning turns (on demand)", open=False, elem_id="trace-marks-box"):
        gr.Markdown(COST_NOTE)
        with gr.Row():
            turn = gr.Number(value=0, minimum=0, precision=0, label="turn (0: the latest)", elem_id="trace-turn")
            button = gr.Button("Mark the reasoning", elem_id="mark-reasoning")
        panel = gr.HTML(elem_id="trace-marks")
    button.click(mark, [conv, turn], panel, api_name=False, show_progress="minimal")
    return marks
