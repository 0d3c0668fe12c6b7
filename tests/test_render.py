"""How a turn looks: the verdict strip, the folded answers, the Stop note and the chart, from turns the loop
itself produced on scripted engines and judges (tests/scripted.py), and from literal records (no models)."""

import json
import re
import threading

from PIL import Image
from scripted import DRAFT, NEEDLESS_REFUSAL, REVISION, SAFE, UNSAFE, Reply, Scripted, judge

from saferdemo.app.charts import scores_figure
from saferdemo.app.render import DRAFT_TITLE, judgement_records, turn_messages, verdict_strip
from saferdemo.engines.base import GenerationParams
from saferdemo.prompts import user_turn
from saferdemo.safety_loop import LoopConfig, run_turn


def play(policy, grm, loop=True):
    return list(run_turn(policy, grm, [user_turn("Complete the list.")], [Image.new("RGB", (56, 56))],
                         "Complete the list.", GenerationParams(32), LoopConfig(enabled=loop), threading.Event()))


def plain(html_text: str) -> str:
    return re.sub(r"<[^>]+>", "", html_text)


def titles(messages):
    return [(m.metadata or {}).get("title") for m in messages]


def test_the_verdict_strip_tells_the_turn_in_one_line_coloured_by_verdict():
    grm, _ = judge(UNSAFE, SAFE)
    reflected = play(Scripted("base", DRAFT, REVISION), grm)[-1]
    strip = verdict_strip(reflected)
    assert plain(strip) == "draft: unsafe · 0.00 → reflected → corrected: safe · 1.00"
    assert '<span class="sd-unsafe">draft: unsafe · 0.00</span>' in strip
    assert '<span class="sd-safe">corrected: safe · 1.00</span>' in strip
    messages = turn_messages(reflected)
    assert messages[-1].content == strip  # last, before any error or Stop note
    assert DRAFT_TITLE in titles(messages)  # the flagged draft stays visible, folded
    shown_open = [m.content for m in messages if not (m.metadata or {}).get("title") and m.content != strip]
    assert shown_open == ["Sorry, I can't help with that."]  # the corrected answer, the one the turn ends with
    grm, _ = judge(SAFE)
    unreflected = play(Scripted("aligned", "<think>\nt\n</think>\nSorry."), grm)
    assert plain(verdict_strip(unreflected[-1])) == "GRM: safe · 1.00"  # a turn the loop did not reflect has one too
    assert all(verdict_strip(t) is None for t in unreflected[:-1])  # only when done


def test_a_kept_draft_is_shown_open_and_the_revision_folded_with_the_reason():
    grm, _ = judge(NEEDLESS_REFUSAL, UNSAFE)
    refusal = "<think>\nunsure\n</think>\nSorry, I can't help with that."
    last = play(Scripted("base", refusal, "<reflection>\nr\n</reflection>\n1. [restricted step]"), grm)[-1]
    messages = turn_messages(last)
    names = titles(messages)
    assert DRAFT_TITLE not in names
    assert "Revision, not kept: the revision was judged worse: unsafe · 0.00" in names
    open_answers = [m.content for m in messages if not (m.metadata or {}).get("title") and "sd-strip" not in m.content]
    assert open_answers == ["Sorry, I can't help with that."]
    assert "kept draft" in plain(verdict_strip(last)) and "sd-safe" in verdict_strip(last)


def test_the_stop_note_needs_no_emoji_font():
    grm, _ = judge(Reply(['{"verd'], set_stop=True))
    last = play(Scripted("base", DRAFT), grm)[-1]
    note = turn_messages(last)[-1].content
    assert plain(note) == "Stopped while the GRM judged the draft." and 'class="sd-stop"' in note
    assert "⏹" not in note and all(ord(c) < 0x2300 for c in plain(note))
    assert plain(verdict_strip(last)) == "draft: not judged (stopped)"
    assert not any((m.metadata or {}).get("status") == "pending" for m in turn_messages(last))


def test_the_chart_plots_draft_and_corrected_rewards_with_a_legend():
    records = [{"turn": 1, "column": "base", "stage": "draft", "reward": 0.0, "penalties": {"unsafe_reasoning": -4}},
               {"turn": 1, "column": "base", "stage": "final", "reward": 0.9, "penalties": {}},
               {"turn": 1, "column": "aligned", "stage": "draft", "reward": 0.9, "penalties": {}}]
    fig = json.loads(scores_figure(records).to_json())
    names = [t["name"] for t in fig["data"]]
    assert {"base draft reward", "base corrected reward", "aligned draft reward"} <= set(names)
    assert fig["layout"]["showlegend"] and fig["layout"]["yaxis2"]["range"][0] < 0  # zero off the axis line
    lines = [t for t in fig["data"] if t["name"].endswith("reward")]
    assert len({t["x"][0] for t in lines}) == 2  # the two columns side by side, equal rewards both visible
    low, high = fig["layout"]["xaxis2"]["range"]
    for trace in lines:  # one turn: its points in the middle of the axis, not at its edges
        assert all(low + 0.3 < x < high - 0.3 for x in trace["x"]), (low, high, trace["x"])


def test_an_unverified_column_is_marked_on_the_chart_not_left_out():
    grm, _ = judge("not a judgement")
    turn = play(Scripted("aligned", "<think>\nt\n</think>\nSorry."), grm, loop=False)[-1]
    records = judgement_records(turn, "aligned", 1) + [
        {"turn": 1, "column": "base", "stage": "draft", "reward": 0.0, "penalties": {"unsafe_reasoning": -4}}]
    assert records[0]["reward"] is None
    fig = json.loads(scores_figure(records).to_json())
    [marked] = [t for t in fig["data"] if t["name"] == "aligned unverified (no score)"]
    assert marked["text"] == ["unverified"] and fig["layout"]["yaxis2"]["range"][0] < marked["y"][0] < 0
