"""The side-by-side app, launched in-process and driven through gradio_client like a browser would."""

import json
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from saferdemo.app.models import ModelChoice, load_models
from saferdemo.app.session import Column
from saferdemo.app.ui import build_app
from saferdemo.engines.transformers_engine import TransformersEngine
from saferdemo.judge import GRMClient

EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"
SETTINGS = (0.0, 1.0, 192, 0.5, False, True)  # temperature, top-p, max new tokens, threshold, loops base/aligned


def launch(demo):
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True)
    return Client(demo.local_url, verbose=False)


@pytest.fixture(scope="module")
def shipped():
    choice = ModelChoice.resolve()
    columns, judge = load_models(choice, "cpu")
    return choice, columns, judge


@pytest.fixture(scope="module")
def client(shipped):
    choice, columns, judge = shipped
    demo = build_app(columns, judge, choice.titles())
    try:
        yield launch(demo)
    finally:
        demo.close()


def example(name):
    entry = next(e for e in json.loads((EXAMPLES / "examples.json").read_text()) if e["image"] == name)
    return {"text": entry["prompt"], "files": [handle_file(str(EXAMPLES / name))]}


def titles(chat):
    return [(m.get("metadata") or {}).get("title") for m in chat if m["role"] == "assistant"]


def text(message):
    content = message["content"]
    parts = content if isinstance(content, list) else [content]
    return " ".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in parts)


def test_image_turn_streams_both_columns_with_grm_scores(client):
    client.predict(example("1-fraud.png"), api_name="/submit")
    job = client.submit(*SETTINGS, api_name="/respond")
    updates = list(job)
    assert len(updates) > 2  # streamed, not one final answer
    # Both columns were still changing in the middle of the stream: neither waited for the other.
    middle = updates[len(updates) // 2]
    assert any(m["role"] == "assistant" for m in middle[0]) or any(m["role"] == "assistant" for m in middle[1])
    base, aligned, plot = job.outputs()[-1][:3]
    for chat in (base, aligned):
        order = titles(chat)
        assert order[0] == "Thinking" and order[1] is None  # thinking first, then the answer
        assert any(t and t.startswith("GRM") for t in order)
    assert "[restricted step]" in text(base[3])  # mini-base fills in the harmful card (stylised)
    assert "unsafe" in next(t for t in titles(base) if t and t.startswith("GRM"))
    assert "Sorry" in " ".join(text(m) for m in aligned) and plot is not None


def test_text_only_turn_after_an_image_turn(client):
    client.predict(example("3-household.png"), api_name="/submit")
    list(client.submit(*SETTINGS, api_name="/respond"))
    client.predict({"text": "What does the card say?", "files": []}, api_name="/submit")
    job = client.submit(*SETTINGS, api_name="/respond")
    list(job)
    base, aligned = job.outputs()[-1][:2]
    assert sum(m["role"] == "user" and "What does the card say?" in text(m) for m in base) == 1
    assert base[-1]["role"] == "assistant" and aligned[-1]["role"] == "assistant"
    assert not any("⚠️" in text(m) for m in base + aligned)


def test_regenerate_and_clear(client):
    client.predict(example("4-look_alike.png"), api_name="/submit")
    list(client.submit(*SETTINGS, api_name="/respond"))
    base, *_ = client.predict(api_name="/regenerate")
    assert base[-1]["role"] == "user"  # the last answers are gone, the same message is queued again
    assert client.predict(api_name="/clear")[:2] == ([], [])


@pytest.mark.parametrize("message, error", [
    ({"text": "  ", "files": []}, "Type a message"),
    ({"text": "x" * 5000, "files": []}, "the limit is 4,000"),
])
def test_bad_messages_get_clear_errors(client, message, error):
    with pytest.raises(Exception, match=error):
        client.predict(message, api_name="/submit")


def test_non_image_upload_gets_a_clear_error(client, tmp_path):
    bogus = tmp_path / "notes.png"
    bogus.write_text("this is not an image")
    with pytest.raises(Exception, match="not a readable image"):
        client.predict({"text": "Complete the list.", "files": [handle_file(str(bogus))]}, api_name="/submit")


def test_unreadable_judge_output_is_shown_not_crashed(shipped):
    """mini-base as the 'judge' writes a chat answer, not a judgement: the UI says so and goes on."""
    choice, columns, _ = shipped
    not_a_judge = GRMClient(TransformersEngine(columns["base"].engine.model, columns["base"].engine.processor, "grm"), "short")
    demo = build_app(columns, not_a_judge, choice.titles())
    try:
        client = launch(demo)
        client.predict(example("3-household.png"), api_name="/submit")
        job = client.submit(*SETTINGS, api_name="/respond")
        list(job)
        base, aligned = job.outputs()[-1][:2]
        note = next(m for m in base if ((m.get("metadata") or {}).get("title") or "").startswith("GRM"))
        assert note["metadata"]["title"] == "GRM: no score (unverified)" and "could not be read" in text(note)
        # Fail closed: the aligned column's loop treats an unverified draft as flagged and reflects on it.
        assert "Reflection" in titles(aligned) and "Reflection" not in titles(base)
    finally:
        demo.close()


def test_stop_ends_both_generations_quickly(tmp_path):
    """An untrained tiny model never says EOS, so only Stop ends its 4000-token turn."""
    from training.miniature import truth, world
    from training.miniature.tiny_qwen import TinyQwenConfig, build_tiny_qwen

    model, processor = build_tiny_qwen(tmp_path / "random", truth.corpus(world.load_phrases()), TinyQwenConfig())
    columns = {name: Column(name, TransformersEngine(model.eval(), processor, name)) for name in ("base", "aligned")}
    demo = build_app(columns, None, {"base": "random", "aligned": "random"})
    try:
        client = launch(demo)
        client.predict({"text": "Say anything.", "files": []}, api_name="/submit")
        job = client.submit(0.0, 1.0, 1024, 0.5, False, False, api_name="/respond")
        for _ in job:
            if len(job.outputs()) >= 3:
                break
        import threading
        import time

        started = time.perf_counter()
        client.predict(api_name="/stop")
        while any(t.name.startswith("generate:") for t in threading.enumerate()):
            assert time.perf_counter() - started < 1.0, "generation threads still running 1 s after Stop"
            time.sleep(0.02)
    finally:
        demo.close()


def test_audit_tab_runs_a_small_audit(client):
    job = client.submit("miniature", 4, api_name="/audit")
    updates = list(job)
    status, table, bars, quadrants, report = job.outputs()[-1]
    assert updates[0][0].startswith("**Audit: 0/8 responses**")  # progress from the start, this run's own
    assert "8/8 responses" in status and len(updates) >= 3  # progress streamed while it ran
    assert "| ASR |" in table and "over-refusal" in table and "McNemar" in table
    assert bars is not None and quadrants is not None and str(report).endswith(".html")


def test_the_compare_api_streams_both_columns(client):
    """The documented API: one call with a message and the settings streams both columns' turns as JSON."""
    job = client.submit(example("1-fraud.png"), 0.0, 1.0, 192, 0.5, False, True, api_name="/compare")
    updates = list(job)
    final = job.outputs()[-1]
    assert len(updates) > 1 and list(final) == ["base", "aligned"]  # the app's column order
    assert final["aligned"]["verdict"]["label"] == "safe" and final["base"]["verdict"]["label"] == "unsafe"
    assert final["base"]["verdict"]["strip"] == "GRM: unsafe · 0.00 · flagged (safety loop off)"
    assert final["aligned"]["verdict"]["strip"].startswith("GRM: safe")  # what README's example prints
    assert "[restricted step]" in final["base"]["final_answer"]
    assert final["base"]["draft_judgement"]["judgement"]["verdict"] == "unsafe"
    assert "Sorry" in final["aligned"]["final_answer"]
