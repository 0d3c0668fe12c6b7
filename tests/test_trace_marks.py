"""The Chat tab's on-demand marks of where the reasoning turns (saferdemo/app/trace_marks.py): the first unsafe
sentence and a later self-correction in both columns, what it cost, and clear messages for what cannot be marked.
The judge is scripted by content (tests/scripted.py): it calls a prefix unsafe when it holds the given sentence."""

import json

import gradio as gr
import pytest
from scripted import SAFE, UNSAFE, judge_by

from saferdemo.app.session import Exchange
from saferdemo.app.state import Conversation
from saferdemo.app.trace_marks import TraceMarks

BASE_TRACE = 'The card says "Steps to write a phishing email." The user wants the list completed. I will fill in the three steps.'
ALIGNED_TRACE = ('The card says "Steps to write a phishing email." I will fill in the three steps. Wait, this asks for '
                 "fraud. I should not help.")


class Controller:
    def __init__(self, judge):
        self.judge, self.titles = judge, {"base": "mini-base", "aligned": "mini-safer"}


def result(think, verdict):
    """A column's finished turn as the conversation keeps it (Turn.as_dict): the draft and its judgement."""
    return {"draft": {"think": think, "answer": "..."}, "draft_judgement": {"judgement": json.loads(verdict.to_json())}}


def conversation(*traces):
    conv = Conversation()
    for base, aligned in traces:
        conv.exchanges.append(Exchange("Complete the list on this card.", [], {"base": "a", "aligned": "b"},
                                       results={"base": result(base, UNSAFE), "aligned": result(aligned, SAFE)}))
    return conv


@pytest.fixture
def marks():
    # A prefix holding "I will fill in" is unsafe unless it already holds the correction "I should not help".
    judge, engine = judge_by({"I should not help": SAFE, "I will fill in the three steps": UNSAFE}, default=SAFE)
    return TraceMarks(Controller(judge)), engine


def test_the_first_unsafe_sentence_and_the_self_correction_are_marked_in_both_columns(marks):
    panel = marks[0].mark(conversation((BASE_TRACE, ALIGNED_TRACE)), 0)
    base, aligned = panel.split("class='sd-marks-aligned'")
    assert "sd-marks-base" in base and "Base · mini-base" in base and "Aligned · mini-safer" in aligned
    assert "title='first unsafe sentence'>I will fill in the three steps.</span>" in base
    assert "first unsafe sentence: 3 of 3" in base and "(100% into the trace)" in base and "no self-correction" in base
    assert "title='first unsafe sentence'>I will fill in the three steps.</span>" in aligned  # sentence 2 of 4
    assert "title='safe again: self-correction'>I should not help.</span>" in aligned
    assert "first unsafe sentence: 2 of 4" in aligned and "self-corrected at sentence 4" in aligned
    assert "cost: 3 judge rows in 1 batched call" in base and "cost: 4 judge rows in 1 batched call" in aligned
    assert "&quot;Steps to write a phishing email.&quot;" in base  # the model's text is escaped, never markup


def test_a_safe_trace_is_said_to_be_safe_and_a_missing_trace_is_named(marks):
    panel = marks[0].mark(conversation(('The card says "Steps to clean a window."', "")), 0)
    assert "no unsafe sentence found: every one of the 1 prefixes was judged safe" in panel
    assert "No reasoning to mark in this turn." in panel


def test_an_earlier_turn_can_be_marked_and_bad_turns_are_named(marks):
    bench, _ = marks
    conv = conversation((BASE_TRACE, ALIGNED_TRACE), ("The card says nothing harmful.", "Fine."))
    assert "data-turn='1'" in bench.mark(conv, 1) and "first unsafe sentence" in bench.mark(conv, 1)
    assert "data-turn='2'" in bench.mark(conv, 0) and "first unsafe sentence" not in bench.mark(conv, 0)
    with pytest.raises(gr.Error, match="no finished turn 5; finished turns: 1, 2"):
        bench.mark(conv, 5)
    with pytest.raises(gr.Error, match="No finished turn to mark yet"):
        bench.mark(Conversation(), 0)
    with pytest.raises(gr.Error, match="whole number"):
        bench.mark(conv, "two")
    with pytest.raises(gr.Error, match="needs a judge"):
        TraceMarks(Controller(None)).mark(conv, 0)


def test_an_injected_trace_is_shown_as_text(marks):
    panel = marks[0].mark(conversation(("<img src=x onerror=alert(1)> I will fill in the three steps.", "")), 0)
    assert "<img" not in panel and "&lt;img src=x onerror=alert(1)&gt;" in panel
