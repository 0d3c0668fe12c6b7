"""The chat's events as plain method calls on the shipped models: no server, no browser."""

import os
import shutil
import time
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest

from saferdemo.app.controller import NO_CHANGE, ChatController
from saferdemo.app.models import ModelChoice, load_models, share_cpu_cores
from saferdemo.app.session import Column
from saferdemo.app.state import Conversation, UpdatePacer

EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"
SETTINGS = (0.0, 1.0, 96, 0.5, False, True)  # temperature, top-p, max new tokens, threshold, loops base/aligned


@pytest.fixture(scope="module")
def controller(tmp_path_factory):
    choice = ModelChoice.resolve()
    columns, judge = load_models(choice, "cpu")
    return ChatController(columns, judge, choice.titles(), media_dir=tmp_path_factory.mktemp("media"))


def turn(controller, conv, text, files=()):
    _, pending, conv, *_ = controller.submit({"text": text, "files": list(files)}, conv)
    *_, last = controller.respond(pending, conv, *SETTINGS)
    return last


def test_a_conversation_survives_the_cache_clean_up(controller, tmp_path):
    """Gradio deletes uploads older than an hour; the conversation keeps its decoded images and its own copies."""
    upload = tmp_path / "gradio-cache" / "card.png"
    upload.parent.mkdir()
    shutil.copy(EXAMPLES / "1-fraud.png", upload)
    conv = Conversation()
    turn(controller, conv, "Complete the list on this card.", [str(upload)])
    shutil.rmtree(upload.parent)  # the hourly clean-up
    base, aligned, _, conv, *_ = turn(controller, conv, "And once more, please.")
    assert len(conv.exchanges) == 2 and conv.exchanges[0].images[0].size == (224, 140)
    assert all(Path(path).is_file() for path in conv.exchanges[0].shown)  # what the chat shows still exists
    for chat in (base, aligned):
        assert not any("⚠️" in str(m.content) for m in chat)  # no error message
        assert chat[-1].content  # the second turn was answered


def test_input_mistakes_raise_a_message_and_change_nothing(controller, tmp_path):
    conv = Conversation()
    with pytest.raises(gr.Error, match="Type a message"):
        controller.submit({"text": "  ", "files": []}, conv)
    (tmp_path / "x.png").write_bytes(b"not an image")
    with pytest.raises(gr.Error, match="not a readable image"):
        controller.submit({"text": "hi", "files": [str(tmp_path / "x.png")]}, conv)
    with pytest.raises(gr.Error, match="Nothing to regenerate"):
        controller.regenerate(conv)
    assert conv.exchanges == [] and conv.chats == {"base": [], "aligned": []}


def test_regenerate_reuses_the_decoded_images(controller):
    conv = Conversation()
    turn(controller, conv, "Complete the list on this card.", [str(EXAMPLES / "3-household.png")])
    images = conv.exchanges[0].images
    pending, conv, *_ = controller.regenerate(conv)
    assert pending.images is images and conv.exchanges == []


def test_a_stopped_turn_is_in_the_history_as_far_as_it_got(controller):
    """Every update carries the turn in the history (on ZeroGPU only what was yielded reaches the session)."""
    conv = Conversation()
    _, pending, conv, *_ = controller.submit({"text": "Complete the list.", "files": [str(EXAMPLES / "1-fraud.png")]}, conv)
    stream = controller.respond(pending, conv, *SETTINGS)
    _, _, _, sent, *_ = next(stream)
    assert len(sent.exchanges) == 1 and sent.exchanges[0].text == "Complete the list."
    stream.close()  # Stop
    assert len(conv.exchanges) == 1
    pending, conv, *_ = controller.regenerate(conv)  # redoes the stopped turn, not the one before
    assert pending.text == "Complete the list." and conv.exchanges == []


def test_the_conversation_image_budget(controller):
    conv = Conversation()
    card = str(EXAMPLES / "3-household.png")
    for _ in range(4):
        turn(controller, conv, "Complete the list.", [card] * 4)
    with pytest.raises(gr.Error, match="already holds 16 images; the limit is 16"):
        controller.submit({"text": "One more.", "files": [card]}, conv)


def test_zero_gpu_duration_reads_max_new_tokens_by_name(controller):
    """ZeroGPU calls `duration` with the call's own arguments: respond has max new tokens fifth, /compare fourth
    (its fifth is the threshold, which the old code read as max new tokens: 0.5 tokens, 30 s)."""
    from saferdemo.app.models import gpu_duration, gpu_seconds

    respond, compare = gpu_duration(controller.respond), gpu_duration(controller.compare)
    assert respond(None, None, 0.0, 1.0, 192, 0.5, True, True) == 90
    assert respond(None, None, 0.0, 1.0, 1024, 0.5, True, True, -1) == 300
    assert compare({"text": "x"}, 0.0, 1.0, 192, 0.5, True, True) == 90
    assert compare({"text": "x"}, 0.0, 1.0, 640, 0.9, True, True) == 300
    assert compare({"text": "x"}, 0.0, 1.0, 16, 0.5, True, True) == 30
    assert compare({"text": "x"}, temperature=0.0, top_p=1.0, max_new_tokens=384, threshold=0.5, loop_base=True,
                   loop_aligned=True) == 180
    assert gpu_duration(controller.audit)("miniature", 10) == 300  # an audit holds the most
    assert respond("too", "many", 1, 2, 3, 4, 5, 6, 7, 8, 9, 10) == 300  # not a call of respond: the most
    assert gpu_seconds(None) == 300 and gpu_seconds(192) == 90


def test_clear_and_regenerate_during_a_turn_keep_the_history_consistent(controller):
    conv = Conversation()
    card = str(EXAMPLES / "1-fraud.png")
    turn(controller, conv, "First.", [card])
    _, pending, conv, *_ = controller.submit({"text": "Second.", "files": [card]}, conv)
    stream = controller.respond(pending, conv, *SETTINGS)
    next(stream)
    pending, conv, *_ = controller.regenerate(conv)  # while "Second." streams: it is the turn redone
    assert pending.text == "Second." and [e.text for e in conv.exchanges] == ["First."]
    list(stream)  # the old turn ends without writing into the history
    assert [e.text for e in conv.exchanges] == ["First."]
    stream = controller.respond(pending, conv, *SETTINGS)
    next(stream)
    conv, *_ = controller.clear(conv)  # Clear while the regenerated turn streams
    # The old turn's last update changes nothing: Gradio repeats it in its last message, after Clear's.
    assert list(stream) == [NO_CHANGE] and conv.exchanges == [] and conv.chats == {"base": [], "aligned": []}


def test_a_lone_surrogate_is_cleaned_and_the_session_goes_on(controller):
    import json

    conv = Conversation()
    base, aligned, _, conv, *_ = turn(controller, conv, "Hello \ud800 there")
    assert conv.exchanges[0].text == "Hello \ufffd there"
    json.dumps([str(m.content) for m in base + aligned])  # what Gradio sends can be encoded
    turn(controller, conv, "And again.")
    assert len(conv.exchanges) == 2


def test_the_prompt_limit_counts_tokens_not_characters(controller):
    conv = Conversation()
    emoji = "🙂" * 3000  # within the 4,000-character limit, far beyond 1,024 tokens
    with pytest.raises(gr.Error, match=r"The message is [\d,]+ tokens long; the limit is 1,024"):
        controller.submit({"text": emoji, "files": []}, conv)
    assert conv.exchanges == [] and conv.chats == {"base": [], "aligned": []}


def test_stop_ends_every_phase_with_a_stopped_note_and_no_spinner(controller):
    conv = Conversation()
    _, pending, conv, *_ = controller.submit({"text": "Complete the list.", "files": [str(EXAMPLES / "1-fraud.png")]}, conv)
    stream = controller.respond(pending, conv, 0.0, 1.0, 192, 0.5, True, True)
    next(stream)
    controller.stop()  # the Stop button (session "default" without a request)
    *_, (base, aligned, _, conv, _, stop_button) = list(stream)
    for chat in (base, aligned):
        statuses = [(m.metadata or {}).get("status") for m in chat if m.role == "assistant"]
        assert "pending" not in statuses
        assert "Stopped" in chat[-1].content and 'class="sd-stop"' in chat[-1].content and "⏹" not in chat[-1].content
        assert "truncated" not in str([m.metadata for m in chat])
    assert len(conv.exchanges) == 1 and stop_button.interactive is False  # the last update turns Stop off


def test_end_turns_waits_until_the_stopped_turn_has_sent_its_last_update(controller):
    """Clear's and Regenerate's first step in the UI: it returns only once the turn's last update is out (Gradio
    resumes a generator after sending its update), so nothing of the turn lands after what they draw, and the
    browser has closed the turn's respond event before the next turn's starts (it skipped it: a lost turn)."""
    import threading

    conv = Conversation()
    _, pending, conv, *_ = controller.submit({"text": "Complete the list.", "files": [str(EXAMPLES / "1-fraud.png")]}, conv)
    stream = controller.respond(pending, conv, *SETTINGS)
    next(stream)
    ending = threading.Thread(target=controller.end_turns)  # session "default", as the stream's
    ending.start()
    ending.join(1.0)
    assert ending.is_alive()  # the stopped turn's updates are still to be sent
    *_, (base, *_, stop_button) = list(stream)
    ending.join(10)
    assert not ending.is_alive() and len(controller.stops) == 0
    assert "Stopped" in base[-1].content and stop_button.interactive is False  # its last update: where it stopped


def test_a_send_waits_for_a_stopped_turn_and_is_refused_while_a_turn_answers(controller, monkeypatch):
    """`ready`, a send's step before its echo: the browser skips the next turn's respond event while the last one
    is still open, so a send goes on only once the last turn has sent its last update (a stopped one is waited
    for), and is refused with a note, keeping the text in the box, while a turn still answers or is queued."""
    import dataclasses
    import threading

    message = {"text": "Complete the list.", "files": [str(EXAMPLES / "1-fraud.png")]}
    _, pending, conv, *_ = controller.submit(message, Conversation())
    with pytest.raises(gr.Error, match="still answering"):
        controller.ready(pending)  # submitted, its turn not started yet
    stream = controller.respond(pending, conv, *SETTINGS)
    next(stream)
    with pytest.raises(gr.Error, match="still answering"):
        controller.ready(None)  # answering (its first update empties `pending`)
    controller.stop(pending)
    monkeypatch.setattr(controller, "limits", dataclasses.replace(controller.limits, stop_wait_s=0.05))
    with pytest.raises(gr.Error, match="still ending"):
        controller.ready(pending)  # stopped, its last update not sent yet past the wait: send again later
    monkeypatch.undo()
    outcome = []
    waiting = threading.Thread(target=lambda: outcome.append(controller.ready(pending)))
    waiting.start()
    waiting.join(1.0)
    assert waiting.is_alive()  # the stopped turn's updates are still to be sent
    *_, (base, *_) = list(stream)
    waiting.join(10)
    assert outcome == [None] and "Stopped" in base[-1].content  # its last update went out, then the send goes on
    controller.ready(None)  # nothing live: at once


def test_a_cancelled_audit_stops_and_reports_what_it_did(controller):
    controller.arm_audit()  # the Run button's first step (session "default" without a request)
    lines = []
    for status, table, *_, report in controller.audit("miniature", 10):
        lines.append(status)
        if "2/20 responses" in status:
            controller.cancel_audit()  # the Cancel button
    assert lines[0].startswith("**Audit: 0/20 responses**")  # progress from the start, this run's own
    assert any("1/20 responses" in line for line in lines) and "about" in lines[2] and "left" in lines[2]
    records = (Path(report).parent / "items.jsonl").read_text().splitlines()
    # It ended after the responses in flight when Cancel came, not after all 20: one item at a time means its two
    # answers generating, up to two answers waiting for the judge and two being judged (audit/pool.py).
    assert 2 <= len(records) <= 8
    assert table.startswith(f"**Cancelled after {len(records)} of 20 responses")  # the partial run's summary


def test_cancel_reaches_an_audit_still_waiting_in_the_queue(controller):
    controller.arm_audit()
    controller.cancel_audit()  # pressed before the audit started
    *_, (status, table, *_rest) = controller.audit("miniature", 10)
    assert table.startswith("**Cancelled after 0 of 20 responses")
    *_, (status, table, *_rest) = controller.audit("miniature", 1)  # the next audit is not cancelled by it
    assert table.startswith("| metric") and "2/2 responses" in status


def test_bad_audit_input_gets_a_clear_message(controller):
    with pytest.raises(gr.Error, match="whole number from 1 to 100"):
        next(controller.audit("miniature", None))
    with pytest.raises(gr.Error, match="no-such-dataset"):
        next(controller.audit("no-such-dataset", 3))
    for at_once in (0, 9, 2.5, None):
        with pytest.raises(gr.Error, match="Items at once must be a whole number from 1 to 8"):
            next(controller.audit("miniature", 3, at_once))


def test_each_pending_stage_stays_on_screen_long_enough_to_see(controller):
    """The bundled models draft and judge in a blink; thinking, judging and reflecting still show as pending."""
    conv = Conversation()
    _, pending, conv, *_ = controller.submit({"text": "Complete the list.", "files": [str(EXAMPLES / "1-fraud.png")]}, conv)
    seen: dict[tuple[str, str], list[float]] = {}  # (column, pending title) -> [first seen, first gone]
    for base, aligned, *_ in controller.respond(pending, conv, 0.0, 1.0, 96, 0.5, True, True):
        now = time.perf_counter()
        for name, chat in (("base", base), ("aligned", aligned)):
            showing = {m.metadata["title"] for m in chat if (m.metadata or {}).get("status") == "pending"}
            for title in showing:
                seen.setdefault((name, title), [now, None])
            for key, span in seen.items():
                if key[0] == name and key[1] not in showing and span[1] is None:
                    span[1] = now
    titles = {title for _, title in seen}
    assert {"Thinking", "GRM", "Reflection"} <= titles  # the base column reflects on its flagged draft
    for key, (first, gone) in seen.items():
        assert gone is not None and gone - first >= controller.limits.min_pending_s - 0.02, key


def test_live_turns_share_the_servers_update_budget():
    pacer = UpdatePacer(per_turn=20, total=40)
    assert pacer.interval() == pytest.approx(1 / 20)  # nobody streaming yet: a turn's own cap
    with pacer.turn(), pacer.turn():
        assert pacer.interval() == pytest.approx(1 / 20)  # two turns fit in the budget at 20/s each
        with ExitStack() as more:
            for _ in range(6):
                more.enter_context(pacer.turn())
            assert pacer.interval() == pytest.approx(8 / 40)  # eight: 5/s each
    with pytest.raises(RuntimeError), pacer.turn():
        raise RuntimeError("a turn that fails still leaves")
    assert pacer.live == 0


def test_a_streaming_turn_counts_as_live_until_it_ends_or_is_closed(controller):
    card = {"text": "Complete the list on this card, step by step.", "files": [str(EXAMPLES / "1-fraud.png")]}
    updates = controller.compare(card, *SETTINGS)
    next(updates)
    assert controller.pacer.live == 1
    updates.close()  # a closed tab: Gradio closes the generator
    assert controller.pacer.live == 0
    *_, last = controller.compare(card, *SETTINGS)
    assert controller.pacer.live == 0 and set(last) == {"base", "aligned"}


def test_models_on_the_cpu_split_its_cores(monkeypatch):
    import torch

    def on(device):
        return Column("x", SimpleNamespace(model=SimpleNamespace(device=torch.device(device))))

    threads = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        torch.set_num_threads(4)
        assert share_cpu_cores({"base": on("cpu"), "aligned": on("meta")}, None) is None  # one model on the CPU
        assert share_cpu_cores({"base": on("cpu"), "aligned": on("cpu")}, SimpleNamespace(engine=on("cpu").engine)) == 1
        torch.set_num_threads(4)
        monkeypatch.setenv("OMP_NUM_THREADS", "4")  # the operator's choice stands
        assert share_cpu_cores({"base": on("cpu"), "aligned": on("cpu")}, None) is None
        assert torch.get_num_threads() == 4
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert share_cpu_cores({"base": on("cpu"), "aligned": on("cpu")}, None) == 2
    finally:
        torch.set_num_threads(threads)



@pytest.mark.parametrize("explicit", [None, "ACTIVE"])
def test_openmp_workers_sleep_between_ops_unless_the_operator_says(explicit):
    """Issue 25 item 9: spinning OpenMP workers took a shared CPU's free core from the app's threads. OpenMP
    (libgomp) prints the policy it actually read with OMP_DISPLAY_ENV."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | {"OMP_DISPLAY_ENV": "TRUE"}
    if explicit:
        env["OMP_WAIT_POLICY"] = explicit
    run = subprocess.run([sys.executable, "-c", "import saferdemo, torch; torch.ones(8).sum()"], env=env,
                         capture_output=True, text=True, timeout=120)
    if "OMP_WAIT_POLICY" not in run.stderr + run.stdout:
        pytest.skip("this torch's OpenMP runtime does not display its settings")
    assert f"OMP_WAIT_POLICY = '{explicit or 'PASSIVE'}'" in run.stderr + run.stdout

# ---------------------------------------------------------------- on scripted engines (tests/scripted.py)

def scripted_controller(tmp_path, base, aligned, grm):
    from saferdemo.app.state import Limits

    columns = {"base": Column("base", base), "aligned": Column("aligned", aligned)}
    return ChatController(columns, grm, {"base": "b", "aligned": "a", "grm": "g"}, Limits(min_pending_s=0),
                          media_dir=tmp_path)


def test_stop_ends_the_running_column_and_the_finished_one_keeps_its_verdict(tmp_path):
    from scripted import SAFE, Hold, Scripted, judge

    hold = Hold()
    grm, _ = judge(SAFE)
    controller = scripted_controller(tmp_path, Scripted("base", hold), Scripted("aligned", "<think>\nt\n</think>\nSorry."),
                                     grm)
    conv = Conversation()
    _, pending, conv, *_ = controller.submit({"text": "Complete the list.", "files": []}, conv)
    stream = controller.respond(pending, conv, *SETTINGS)
    for base, aligned, *_ in stream:  # until the aligned column has finished, its strip drawn
        if aligned and "sd-strip" in str(aligned[-1].content):
            break
    assert hold.started.is_set() and not hold.release.is_set()  # the base column is still drafting, paused
    controller.stop()
    *_, (base, aligned, _, conv, _, stop_button) = list(stream)
    assert "Stopped while drafting" in base[-1].content and "draft: not judged (stopped)" in base[-2].content
    assert "GRM: safe · 1.00" in aligned[-1].content and not any("Stopped" in str(m.content) for m in aligned)
    results = conv.exchanges[0].results
    assert list(results) == ["base", "aligned"]  # the app's column order
    assert results["aligned"]["stopped"] is False and results["aligned"]["verdict"]["label"] == "safe"
    assert results["base"]["stopped"] is True and results["base"]["stopped_in"] == "drafting"
    assert stop_button.interactive is False


def test_every_turn_ends_with_its_strip_in_both_columns(tmp_path):
    from scripted import DRAFT, REVISION, UNSAFE, Scripted, judge_by

    grm, _ = judge_by({"[restricted step]": UNSAFE})  # base: flagged, then corrected; aligned: safe
    controller = scripted_controller(tmp_path, Scripted("base", DRAFT, REVISION), Scripted("aligned", "Sorry."), grm)
    conv = Conversation()
    _, pending, conv, *_ = controller.submit({"text": "Complete the list.", "files": []}, conv)
    *_, (base, aligned, plot, conv, *_) = controller.respond(pending, conv, 0.0, 1.0, 32, 0.5, True, True)
    strips = {name: chat[-1].content for name, chat in (("base", base), ("aligned", aligned))}
    assert all("sd-strip" in strip for strip in strips.values())
    assert "corrected: safe · 1.00" in strips["base"] and "GRM: safe · 1.00" in strips["aligned"]
    assert conv.exchanges[0].answers == {"base": "Sorry, I can't help with that.", "aligned": "Sorry."}
    assert plot is not None


def test_the_seed_is_recorded_and_used_only_when_sampling(tmp_path):
    from scripted import SAFE, Scripted, judge

    base, aligned = Scripted("base", "a"), Scripted("aligned", "b")
    grm, _ = judge(SAFE)
    controller = scripted_controller(tmp_path, base, aligned, grm)
    conv = Conversation()
    for temperature, seed, recorded in ((0.7, 1234, 1234), (0.0, 1234, None), (0.7, -1, None)):
        _, pending, conv, *_ = controller.submit({"text": "Hi.", "files": []}, conv)
        list(controller.respond(pending, conv, temperature, 1.0, 32, 0.5, True, True, seed))
        assert conv.exchanges[-1].settings["params"]["seed"] == recorded
        assert base.calls[-1][2].seed == recorded
    from saferdemo.app.controller import seed_of

    assert seed_of(None) is None and seed_of(-1) is None and seed_of(7.0) == 7
    for bad in (-2, 1.5, 2**40, "x"):
        with pytest.raises(gr.Error, match="The seed must be a whole number"):
            seed_of(bad)


def test_regenerate_at_temperature_zero_or_a_fixed_seed_gets_a_hint(tmp_path, monkeypatch):
    from scripted import SAFE, Scripted, judge

    notes = []
    monkeypatch.setattr(gr, "Info", lambda message, **kw: notes.append(message))
    grm, _ = judge(SAFE)
    controller = scripted_controller(tmp_path, Scripted("base", "a"), Scripted("aligned", "b"), grm)
    conv = Conversation()
    _, pending, conv, *_ = controller.submit({"text": "Hi.", "files": []}, conv)
    list(controller.respond(pending, conv, *SETTINGS))
    controller.check_regenerate(conv, 0.0, -1)
    assert len(notes) == 1 and "Temperature is 0" in notes[0]
    controller.check_regenerate(conv, 0.8, 42)
    assert len(notes) == 2 and "seed is fixed at 42" in notes[1]
    controller.check_regenerate(conv, 0.8, -1)
    assert len(notes) == 2  # sampling anew: nothing to say


def test_an_empty_message_gets_a_friendly_note_not_an_error_toast(tmp_path, monkeypatch):
    from scripted import SAFE, Scripted, judge

    notes = []
    monkeypatch.setattr(gr, "Info", lambda message, **kw: notes.append((message, kw)))
    grm, _ = judge(SAFE)
    controller = scripted_controller(tmp_path, Scripted("base", "a"), Scripted("aligned", "b"), grm)
    with pytest.raises(gr.Error) as raised:
        controller.check({"text": "   ", "files": []}, Conversation())
    assert raised.value.visible is False  # only ends the event chain: no red toast
    assert "Type a message" in notes[0][0] and notes[0][1]["title"] == "Nothing to send yet"
    with pytest.raises(gr.Error) as raised:
        controller.check({"text": "", "files": [str(EXAMPLES / "1-fraud.png")]}, Conversation())
    assert raised.value.visible is False and "Add a few words" in notes[1][0]
    with pytest.raises(gr.Error, match="the limit is 4,000") as raised:  # a real mistake is still an error
        controller.check({"text": "x" * 5000, "files": []}, Conversation())
    assert raised.value.visible is not False


def test_compare_gives_the_columns_in_the_apps_order_with_a_final_verdict(tmp_path):
    from scripted import DRAFT, REVISION, SAFE, UNSAFE, Scripted, judge, judge_by

    grm, _ = judge(SAFE)
    controller = scripted_controller(tmp_path, Scripted("base", "Sorry."), Scripted("aligned", "Sorry."), grm)
    *_, last = controller.compare({"text": "Complete the list.", "files": []}, 0.0, 1.0, 32, 0.5, False, True)
    assert list(last) == ["base", "aligned"]
    for column in last.values():  # not reflected: final_judgement is None, the verdict is always there
        assert column["final_judgement"] is None and column["verdict"]["label"] == "safe"
        assert column["verdict"]["strip"] == "GRM: safe · 1.00"
    grm, _ = judge_by({"[restricted step]": UNSAFE})
    controller = scripted_controller(tmp_path, Scripted("base", DRAFT, REVISION), Scripted("aligned", DRAFT, REVISION),
                                     grm)
    *_, last = controller.compare({"text": "Complete the list.", "files": []}, 0.0, 1.0, 32, 0.5, True, False)
    assert last["base"]["verdict"]["outcome"] == "corrected"
    assert last["aligned"]["verdict"]["strip"] == "GRM: unsafe · 0.00 · flagged (safety loop off)"
