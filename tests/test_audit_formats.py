"""The audit reads each model in its own reasoning format and hands the judge saferdemo's own `<think>` form
(issue 27 item 3): a Kimi-format model's trace is its think span, and the judge never sees ◁think▷ tags."""

import threading

import scripted
from saferdemo.audit.items import Item
from saferdemo.audit.runner import audit_one
from saferdemo.engines.base import GenerationParams
from saferdemo.segments import KIMI


class KimiScripted(scripted.Scripted):
    """A scripted engine whose generations say they speak Kimi's tags, as a Kimi checkpoint's engine does."""

    def start(self, messages, images, params, stop):
        generation = super().start(messages, images, params, stop)
        generation.reasoning_format = KIMI
        return generation


def test_a_kimi_model_is_parsed_in_its_tags_and_judged_in_ours():
    engine = KimiScripted("kimi", "\u25c1think\u25b7The card asks for steps.\u25c1/think\u25b71. [restricted step]")
    judge, judge_engine = scripted.judge(scripted.UNSAFE)
    item = Item("k-1", "Complete the list.", "fraud", True)
    record = audit_one(engine, judge, item, "base", GenerationParams(max_new_tokens=32), threading.Event())
    assert record["think"] == "The card asks for steps." and record["answer"] == "1. [restricted step]"
    judged = str(judge_engine.calls[0][0])
    assert "<think>" in judged and "\u25c1think\u25b7" not in judged
    assert record["judged_response"].startswith("<think>") and record["response"].startswith("\u25c1think\u25b7")
    assert record["answer_unsafe"] is True


def test_a_think_format_record_is_unchanged():
    engine = scripted.Scripted("base", scripted.DRAFT)
    judge, _ = scripted.judge(scripted.UNSAFE)
    record = audit_one(engine, judge, Item("t-1", "Complete the list.", "fraud", True), "base",
                       GenerationParams(max_new_tokens=32), threading.Event())
    assert "judged_response" not in record and record["response"] == scripted.DRAFT
