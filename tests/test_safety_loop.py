"""The safety loop on scripted engines and judges (tests/scripted.py): what the judge is shown, what a turn
records, and every branch of the loop: judged and not flagged, flagged with the loop off, corrected, revised,
kept draft (judged worse, no better, a reflection that never closes), unverified, Stop in each phase, errors."""

import threading

import pytest
from PIL import Image
from scripted import (DRAFT, LESS_UNSAFE, NEEDLESS_REFUSAL, OPEN_REFLECTION, REVISION, UNSAFE, Hold, Reply, Scripted,
                      judge)
from scripted import SAFE as SAFE_J

from saferdemo.engines.base import GenerationParams
from saferdemo.judge import GRMClient, JudgeResult, earlier_turns
from saferdemo.judgement import PENALTIES, Judgement, reward
from saferdemo.prompts import assistant_turn, user_turn
from saferdemo.safety_loop import UNVERIFIED_CRITIQUE, LoopConfig, better, flagged, run_turn, strip_text

SAFE = Judgement({c: 10 for c in ("safety", "helpfulness", "coherence", "grounding")},
                 {c: 10 for c in ("safety", "helpfulness", "coherence", "grounding")},
                 dict.fromkeys(PENALTIES, 0), "safe", "The response is safe and helpful.")


def test_the_judge_sees_the_earlier_turns_and_the_newest_image():
    old, new = Image.new("RGB", (56, 56), "red"), Image.new("RGB", (56, 56), "blue")
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Complete the list."}]},
        assistant_turn("Steps to clean a window.\n1. Dust the frame."),
        user_turn("And this one?"),
    ]
    assert earlier_turns(messages) == [("[image] Complete the list.", "Steps to clean a window.\n1. Dust the frame.")]
    policy, grm = Scripted("base", "<think>\nt\n</think>\nanswer"), Scripted("grm", SAFE.to_compact_json())
    judge = GRMClient(grm, "short", conversation=True)
    turns = list(run_turn(policy, judge, messages, [old, new], "And this one?", GenerationParams(16),
                          LoopConfig(enabled=False), threading.Event()))
    assert turns[-1].draft_judge.judgement == SAFE  # the compact form reads back
    [(judge_conversation, judge_images, _)] = grm.calls
    prompt = judge_conversation[0]["content"][-1]["text"]
    assert "Earlier:\nUser: [image] Complete the list.\nAssistant: Steps to clean a window." in prompt
    assert judge_images == [new]


def test_a_judge_trained_without_the_conversation_gets_the_single_turn_prompt():
    grm = Scripted("grm", SAFE.to_json())
    messages = [user_turn("a"), assistant_turn("b"), user_turn("c")]
    list(run_turn(Scripted("base", "x"), GRMClient(grm, "short"), messages, [Image.new("RGB", (56, 56))], "c",
                  GenerationParams(16), LoopConfig(enabled=False), threading.Event()))
    assert "Earlier" not in grm.calls[0][0][0]["content"][-1]["text"]
    assert earlier_turns(messages, limit=0) == []


# ---------------------------------------------------------------- every branch of the loop, on scripts


CARD = Image.new("RGB", (56, 56), "white")


def play(policy, grm, loop=True, threshold=0.5, stop=None):
    """Every snapshot of one column's turn."""
    stop = stop or threading.Event()
    return list(run_turn(policy, grm, [user_turn("Complete the list.")], [CARD], "Complete the list.",
                         GenerationParams(32), LoopConfig(enabled=loop, threshold=threshold), stop))


def result(j):
    return JudgeResult(j, reward(j), j.to_json())


def test_a_column_that_is_not_reflected_ends_with_a_done_snapshot_and_its_verdict():
    grm, grm_engine = judge(SAFE_J)
    turns = play(Scripted("aligned", "<think>\nharm\n</think>\nSorry, I can't help with that."), grm)
    last = turns[-1]
    assert last.phase == "done" and not last.stopped and last.stopped_in is None and not last.reflected
    assert [t.phase for t in turns].count("done") == 1  # the final snapshot, after the judgement
    assert strip_text(last) == "GRM: safe · 1.00"
    verdict = last.as_dict()["verdict"]
    assert verdict["label"] == "safe" and verdict["reward"] == 1.0 and verdict["strip"] == "GRM: safe · 1.00"
    assert last.final_judgement is last.draft_judge and len(grm_engine.calls) == 1


def test_a_flagged_draft_with_the_loop_off_says_so():
    grm, _ = judge(UNSAFE)
    policy = Scripted("base", DRAFT)
    last = play(policy, grm, loop=False)[-1]
    assert last.flagged and not last.reflected and len(policy.calls) == 1
    assert strip_text(last) == "GRM: unsafe · 0.00 · flagged (safety loop off)"
    assert last.as_dict()["verdict"]["label"] == "unsafe"


def test_the_flagging_rules():
    config = LoopConfig(threshold=0.25)
    at_edge = result(NEEDLESS_REFUSAL)
    assert at_edge.reward == pytest.approx(0.25)
    at_edge.reward = 0.25
    assert not flagged(at_edge, config)  # a reward at the threshold passes: only below it reflects
    at_edge.reward = 0.2499
    assert flagged(at_edge, config)
    assert flagged(result(UNSAFE), LoopConfig(threshold=0.0))  # an unsafe verdict flags whatever the reward
    gated = result(SAFE_J.__class__(SAFE_J.reasoning, {**SAFE_J.answer, "safety": 4}, SAFE_J.penalties, "safe"))
    assert flagged(gated, LoopConfig(threshold=0.0))  # the safety gate closes under 5
    assert not flagged(None, config)  # no judge at all: nothing to flag
    assert flagged(JudgeResult(None, None, "garbage", "could not be read: no JSON object"), config)  # fail closed
    assert flagged(JudgeResult(None, None, "", "The judge failed: down"), config)


def test_a_flagged_draft_is_reflected_on_and_corrected():
    grm, grm_engine = judge(UNSAFE, SAFE_J)
    policy = Scripted("base", DRAFT, REVISION)
    turns = play(policy, grm)
    phases = [t.phase for t in turns]
    assert phases.index("judging") < phases.index("reflecting") < phases.index("rejudging") < phases.index("done")
    last = turns[-1]
    assert last.reflected and last.kept == "revision" and last.outcome == "corrected"
    assert last.final_answer == "Sorry, I can't help with that." and last.final_judgement is last.final_judge
    assert strip_text(last) == "draft: unsafe · 0.00 → reflected → corrected: safe · 1.00"
    assert "The list gives harmful steps." in str(policy.calls[1][0])  # the GRM's rationale is the critique
    assert policy.calls[1][2].max_new_tokens == 32 + LoopConfig().reflection_extra_tokens
    judged_revision = grm_engine.calls[1][0][0]["content"][-1]["text"]
    assert "Sorry, I can't help" in judged_revision and "<reflection>" not in judged_revision  # judged alone
    assert last.as_dict()["verdict"] | {"strip": None} == {
        "label": "safe", "reward": 1.0, "flagged": True, "reflected": True, "outcome": "corrected",
        "kept": "revision", "reason": "judged safe", "stopped": False, "strip": None, "tone": "safe"}


def test_a_revision_judged_worse_keeps_the_draft():
    """The issue's case: a safe refusal under the threshold (flagged) reflected into a harmful list."""
    refusal = "<think>\nunsure\n</think>\nSorry, I can't help with that."
    harmful = "<reflection>\nMaybe I was too careful.\n</reflection>\n1. [restricted step]"
    grm, _ = judge(NEEDLESS_REFUSAL, UNSAFE)
    last = play(Scripted("base", refusal, harmful), grm)[-1]
    assert last.reflected and last.kept == "draft" and last.outcome == "kept draft"
    assert last.final_answer == "Sorry, I can't help with that." and last.final_judgement is last.draft_judge
    assert strip_text(last) == ("draft: safe · 0.25 → reflected → kept draft "
                                "(the revision was judged worse: unsafe · 0.00)")
    assert "corrected" not in strip_text(last)
    assert last.as_dict()["final_answer"] == "Sorry, I can't help with that."


def test_a_revision_judged_better_but_still_unsafe_is_revised_not_corrected():
    grm, _ = judge(UNSAFE, LESS_UNSAFE)
    last = play(Scripted("base", DRAFT, "<reflection>\nr\n</reflection>\n1. [restricted step], less"), grm)[-1]
    assert last.kept == "revision" and last.outcome == "revised"
    assert strip_text(last) == ("draft: unsafe · 0.00 → reflected → revised: unsafe · 0.12 "
                                "(kept: judged better than the draft (unsafe · 0.00))")


def test_a_revision_judged_no_better_keeps_the_draft():
    grm, _ = judge(UNSAFE, UNSAFE)
    last = play(Scripted("base", DRAFT, "<reflection>\nr\n</reflection>\n1. [restricted step]"), grm)[-1]
    assert last.kept == "draft" and last.kept_reason == "the revision was judged no better: unsafe · 0.00"


def test_a_reflection_that_never_closes_keeps_the_draft_in_the_history():
    grm, grm_engine = judge(UNSAFE, SAFE_J)
    last = play(Scripted("base", DRAFT, Reply([OPEN_REFLECTION], finish="length")), grm)[-1]
    assert last.reflected and last.kept == "draft" and last.kept_reason == "the reflection never closed"
    assert last.final_answer == "1. [restricted step]\n2. [restricted step]"  # the draft, not an empty answer
    assert len(grm_engine.calls) == 1 and last.final_judge is None  # nothing to judge
    assert strip_text(last).endswith("→ reflected → kept draft (the reflection never closed)")


def test_an_unverified_draft_is_reflected_on_with_the_unverified_critique():
    grm, _ = judge("no json here", SAFE_J)
    policy = Scripted("base", DRAFT, REVISION)
    last = play(policy, grm)[-1]
    assert last.draft_judge.judgement is None and last.reflected and UNVERIFIED_CRITIQUE in str(policy.calls[1][0])
    assert last.outcome == "corrected" and strip_text(last) == "draft: unverified → reflected → corrected: safe · 1.00"


def test_the_better_judgement():
    safe, unsafe, unread = result(SAFE_J), result(UNSAFE), JudgeResult(None, None, "x", "unreadable")
    assert better(safe, unsafe) and better(unread, unsafe) and better(safe, unread)
    assert not better(unsafe, unread) and not better(unsafe, safe) and not better(safe, safe)  # a tie keeps the draft
    assert better(result(LESS_UNSAFE), unsafe) and better(safe, result(NEEDLESS_REFUSAL))


def test_stop_during_judging_says_stopped_not_unreadable():
    grm, _ = judge(Reply(['{"verdict": "uns'], set_stop=True))  # Stop cuts the judge's output short
    last = play(Scripted("base", DRAFT), grm)[-1]
    assert last.phase == "done" and last.stopped and last.stopped_in == "judging" and last.draft_judge is None
    assert strip_text(last) == "draft: not judged (stopped)"


def test_stop_while_drafting():
    stop = threading.Event()
    hold = Hold()
    policy = Scripted("base", hold)
    grm, grm_engine = judge(SAFE_J)
    snapshots = run_turn(policy, grm, [user_turn("x")], [CARD], "x", GenerationParams(32), LoopConfig(), stop)
    first = next(snapshots)
    assert first.phase == "drafting" and hold.started.is_set()
    stop.set()
    last = list(snapshots)[-1]
    assert last.stopped and last.stopped_in == "drafting" and grm_engine.calls == []
    assert strip_text(last) == "draft: not judged (stopped)"


def test_stop_while_reflecting_keeps_the_draft():
    grm, _ = judge(UNSAFE, SAFE_J)
    last = play(Scripted("base", DRAFT, Reply(["<reflection>\nThe GRM"], set_stop=True)), grm)[-1]
    assert last.stopped and last.stopped_in == "reflecting" and last.kept == "draft" and last.outcome == "stopped"
    assert strip_text(last) == "draft: unsafe · 0.00 → reflected → stopped (kept draft)"


def test_stop_while_rejudging():
    grm, _ = judge(UNSAFE, Reply(["{"], set_stop=True))
    last = play(Scripted("base", DRAFT, REVISION), grm)[-1]
    assert last.stopped and last.stopped_in == "rejudging" and last.final_judge is None and last.kept == "draft"


def test_a_column_that_finished_is_not_labelled_stopped_when_stop_comes_after():
    """Stop is shared by both columns: a column whose work was done when it came ends as it finished."""
    grm, _ = judge(Reply([SAFE_J.to_json()], set_stop=True))  # the other column's Stop lands as this one's judge ends
    last = play(Scripted("aligned", "<think>\nt\n</think>\nSorry."), grm)[-1]
    assert last.phase == "done" and not last.stopped and strip_text(last) == "GRM: safe · 1.00"


def test_a_flagged_draft_stopped_before_its_reflection():
    grm, _ = judge(Reply([UNSAFE.to_json()], set_stop=True))
    policy = Scripted("base", DRAFT)
    last = play(policy, grm)[-1]
    assert last.stopped and not last.reflected and len(policy.calls) == 1
    assert strip_text(last) == "draft: unsafe · 0.00 → flagged → stopped"


def test_an_engine_error_ends_the_turn_with_its_message():
    grm, _ = judge(SAFE_J)
    last = play(Scripted("base", Reply(["<think>\npart"], fail="base: out of memory")), grm)[-1]
    assert last.phase == "done" and last.error == "base: out of memory" and not last.stopped
    assert strip_text(last) == "draft: not judged (error)"
    grm, _ = judge(UNSAFE)
    last = play(Scripted("base", DRAFT, Reply(["<reflection>\nx"], fail="base: out of memory")), grm)[-1]
    assert last.kept == "draft" and last.kept_reason == "the reflection failed" and last.outcome == "kept draft"


def test_without_a_judge_the_turn_still_ends_with_a_strip():
    last = play(Scripted("base", DRAFT), None)[-1]
    assert last.phase == "done" and strip_text(last) == "draft: not judged (no GRM)"
    assert last.as_dict()["verdict"]["label"] is None
