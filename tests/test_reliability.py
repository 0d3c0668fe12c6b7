"""Bad input, limits, faults, isolation and load, through a real in-process server and gradio_client.

Every bad input asserts the message the user sees, then that the server still answers the next request."""

import json
import logging
import random
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from PIL import Image

from saferdemo.app.models import ModelChoice, load_models
from saferdemo.app.session import Column
from saferdemo.app.ui import Limits, build_app, launch
from saferdemo.engines.transformers_engine import TransformersEngine
from training.miniature import truth, world

EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"
SETTINGS = (0.0, 1.0, 160, 0.5, False, True)
CARD_PROMPT = "Complete the list on this card, step by step."


@pytest.fixture(scope="module")
def shipped():
    choice = ModelChoice.resolve()
    columns, judge = load_models(choice, "cpu")
    return choice, columns, judge


def start(columns, judge, titles, limits=None, batched=False):
    demo = build_app(columns, judge, titles, limits)
    launch(demo, titles, port=None, limits=limits, block=False, batched=batched)
    return demo, Client(demo.local_url, verbose=False)


@pytest.fixture(scope="module")
def app(shipped):
    choice, columns, judge = shipped
    demo, client = start(columns, judge, choice.titles())
    yield demo, client
    demo.close()


def turn(client, text=CARD_PROMPT, files=(), settings=SETTINGS):
    client.predict({"text": text, "files": [handle_file(str(f)) for f in files]}, api_name="/submit")
    job = client.submit(*settings, api_name="/respond")
    list(job)
    return job.outputs()[-1]


def message_text(message) -> str:
    content = message["content"]
    parts = content if isinstance(content, list) else [content]
    return " ".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in parts)


def last_turn(chat) -> list:
    last_user = max(i for i, m in enumerate(chat) if m["role"] == "user")
    return chat[last_user + 1 :]


def assistant_text(chat) -> str:
    return " ".join(str(m["content"]) for m in chat if m["role"] == "assistant")


def still_serving(demo, client):
    assert httpx.get(demo.local_url + "health").json()["status"] == "ok"
    base, aligned = turn(client, text="What does the card say?", settings=(0.0, 1.0, 32, 0.5, False, False))[:2]
    assert base[-1]["role"] == aligned[-1]["role"] == "assistant"
    assert "⚠️" not in assistant_text(last_turn(base) + last_turn(aligned))


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def image_file(tmp_path, name, image: Image.Image, **save):
    image.save(tmp_path / name, **save)
    return tmp_path / name


@pytest.mark.parametrize("make, message", [
    (lambda d: write(d / "corrupt.png", b"\x89PNG\r\n\x1a\n" + bytes(200)), "not a readable image"),
    (lambda d: write(d / "notes.png", b"just text, renamed"), "not a readable image"),
    (lambda d: image_file(d, "huge.png", Image.new("1", (20000, 20000))), "400 megapixels; the limit is 40"),
])
def test_bad_images_are_refused_clearly(app, tmp_path, make, message):
    demo, client = app
    with pytest.raises(Exception, match=message):
        client.predict({"text": CARD_PROMPT, "files": [handle_file(str(make(tmp_path)))]}, api_name="/submit")
    still_serving(demo, client)


def test_odd_image_kinds_are_answered(app, tmp_path):
    _, client = app
    card = Image.open(EXAMPLES / "3-household.png").convert("RGB")
    frames = [card, card.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    odd = [
        image_file(tmp_path, "anim.gif", frames[0], save_all=True, append_images=frames[1:], duration=80),
        image_file(tmp_path, "grey16.png", Image.fromarray(np.asarray(card.convert("L"), dtype=np.uint16) * 257)),
        image_file(tmp_path, "cmyk.jpg", card.convert("CMYK")),
        image_file(tmp_path, "transparent.png", card.convert("RGBA")),
    ]
    for path in odd:
        base = turn(client, files=[path])[0]
        assert "⚠️" not in assistant_text(base), path.name
        assert "window" in assistant_text(base).lower(), path.name  # still read as the same card


@pytest.mark.parametrize("text, message", [("", "Type a message"), ("y" * 100_000, "100,000 characters")],
                         ids=["empty", "100k-characters"])
def test_bad_messages(app, text, message):
    demo, client = app
    with pytest.raises(Exception, match=message):
        client.predict({"text": text, "files": []}, api_name="/submit")
    still_serving(demo, client)


def test_one_bad_input_does_not_break_the_session(app, tmp_path):
    """Issue 14, through the server in one session: after a card turn, an extreme aspect ratio is refused, and
    every later turn of the same session (text-only ones too, and Clear) works. (A lone surrogate, which no
    client library here can even send, is in the browser tests.)"""
    demo, client = app
    client.predict(api_name="/clear")
    assert "⚠️" not in assistant_text(last_turn(turn(client, files=[EXAMPLES / "3-household.png"])[0]))
    strip = image_file(tmp_path, "strip.png", Image.new("RGB", (10000, 10), "white"))
    with pytest.raises(Exception, match="less elongated than 200:1"):
        client.predict({"text": CARD_PROMPT, "files": [handle_file(str(strip))]}, api_name="/submit")
    base = turn(client, text="And once more, please.")[0]  # text-only, with the card turn in the history
    assert "⚠️" not in assistant_text(last_turn(base)) and last_turn(base)
    client.predict(api_name="/clear")
    still_serving(demo, client)


def test_injected_html_and_markdown_images_are_inert(app):
    _, client = app
    attack = '<script>window.__xss = 1</script><img src=x onerror="window.__xss=2"> ![t](http://127.0.0.1:9/t.png)'
    base = turn(client, text=attack)[0]
    shown = next(message_text(m) for m in reversed(base) if m["role"] == "user")
    assert "<script>" not in shown and "&lt;script&gt;" in shown and "<img" not in shown
    assert "![t]" not in shown and "!\\[t]" in shown


def test_missing_checkpoint_at_start_up():
    result = subprocess.run([sys.executable, "-m", "saferdemo.cli", "serve", "--base", "/nonexistent/model"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "cannot load the model /nonexistent/model" in result.stderr


def test_out_of_memory_is_a_message_and_the_app_keeps_serving(shipped):
    choice, columns, judge = shipped
    fragile = TransformersEngine.from_pretrained(choice.base, "cpu", name="base")

    def out_of_memory(*args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    hook = fragile.model.register_forward_hook(out_of_memory)
    demo, client = start({"base": Column("base", fragile), "aligned": columns["aligned"]}, judge, choice.titles())
    try:
        base, aligned = turn(client, files=[EXAMPLES / "1-fraud.png"])[:2]
        assert "ran out of memory" in assistant_text(base)
        assert "Sorry" in assistant_text(aligned)  # the other column answered
        hook.remove()
        still_serving(demo, client)
    finally:
        demo.close()


@pytest.fixture(scope="module")
def random_columns(tmp_path_factory):
    """Untrained models never say EOS: their turns last until Stop (or max tokens)."""
    from training.miniature.tiny_qwen import TinyQwenConfig, build_tiny_qwen

    model, processor = build_tiny_qwen(tmp_path_factory.mktemp("random"), truth.corpus(world.load_phrases()), TinyQwenConfig())
    return {name: Column(name, TransformersEngine(model.eval(), processor, name)) for name in ("base", "aligned")}


def generation_threads():
    return [t for t in threading.enumerate() if t.name.startswith("generate:")]


def test_closing_the_tab_mid_stream_stops_generation(random_columns):
    demo, client = start(random_columns, None, {"base": "random", "aligned": "random"})
    try:
        client.predict({"text": "go", "files": []}, api_name="/submit")
        job = client.submit(0.0, 1.0, 1024, 0.5, False, False, api_name="/respond")
        while not generation_threads():
            time.sleep(0.05)
        time.sleep(0.3)
        job.cancel()  # what Gradio sees when a tab closes: the stream's consumer is gone
        client.close()
        deadline = time.time() + 5
        while generation_threads() and time.time() < deadline:
            time.sleep(0.05)
        assert not generation_threads()
    finally:
        demo.close()


def test_limits_turns_and_uploads(shipped, tmp_path):
    choice, columns, judge = shipped
    demo, client = start(columns, judge, choice.titles(), Limits(turns=1, upload_mb=1))
    try:
        turn(client, text="What does the card say?", files=[EXAMPLES / "3-household.png"])
        with pytest.raises(Exception, match="reached 1 turns"):
            client.predict({"text": "again", "files": []}, api_name="/submit")
        noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (900, 900, 3), dtype=np.uint8))
        big = image_file(tmp_path, "big.png", noise)  # ~2.4 MB of incompressible pixels
        fresh = Client(demo.local_url, verbose=False)
        with pytest.raises(Exception, match="(?i)size|large|limit"):
            fresh.predict({"text": CARD_PROMPT, "files": [handle_file(str(big))]}, api_name="/submit")
        assert httpx.get(demo.local_url + "health").status_code == 200
    finally:
        demo.close()


def test_queue_limit_gives_a_clear_message(random_columns):
    demo, _ = start(random_columns, None, {"base": "random", "aligned": "random"}, Limits(queue_size=1, concurrency=1))
    try:
        clients = [Client(demo.local_url, verbose=False) for _ in range(4)]
        for c in clients:
            c.predict({"text": "go", "files": []}, api_name="/submit")
        jobs = [c.submit(0.0, 1.0, 64, 0.5, False, False, api_name="/respond") for c in clients]
        errors = []
        for job in jobs:
            try:
                job.result(timeout=120)
            except Exception as error:
                errors.append(str(error))
        assert any("queue is full" in e.lower() for e in errors), errors
    finally:
        demo.close()


def test_eight_users_at_once_each_get_their_own_answers(shipped, tmp_path, caplog):
    """Batching on (the default): eight sessions' turns share batches, each with its own card and its own
    max new tokens and loop settings, and nobody gets another's answer."""
    choice, columns, judge = shipped
    phrases = [p for p in world.load_phrases() if not p.harmful and not p.look_alike][:8]
    rng = random.Random(5)
    cards = [image_file(tmp_path, f"{i}.png", world.render(p, rng, "heldout")) for i, p in enumerate(phrases)]
    demo, _ = start(columns, judge, choice.titles(), batched=True)
    before = len(columns["base"].engine.batches)
    # Gradio's queue no longer wakes every millisecond (ui._calm_queue_polling): if an upgrade renames the
    # attribute, this says so instead of the server silently spending a tenth of a core on polling.
    assert demo._queue.sleep_when_free == pytest.approx(0.01)

    def user(index):
        client = Client(demo.local_url, verbose=False)
        settings = (0.0, 1.0, 144 + 8 * index, 0.5, index % 2 == 0, True)
        base, aligned = turn(client, files=[cards[index]], settings=settings)[:2]
        return assistant_text(base), assistant_text(aligned)

    try:
        with caplog.at_level(logging.INFO, logger="saferdemo.turn"), ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(user, range(8)))
        assert max(columns["base"].engine.batches[before:]) >= 3  # they really shared generate calls
        for phrase, (base, aligned) in zip(phrases, answers):
            assert phrase.steps[0] in base and phrase.steps[0] in aligned  # its own card, nobody else's
            others = [p for p in phrases if p is not phrase]
            assert not any(p.steps[0] in base for p in others)
        logs = [json.loads(r.getMessage()) for r in caplog.records if r.name == "saferdemo.turn"]
        assert len(logs) == 16 and {entry["column"] for entry in logs} == {"base", "aligned"}
        assert len({entry["session"] for entry in logs}) == 8
        for entry in logs:
            assert entry["draft"]["tokens"] > 0 and entry["draft_verdict"] in ("safe", "unsafe")
            assert CARD_PROMPT not in json.dumps(entry) and "png" not in json.dumps(entry)
    finally:
        demo.close()


def test_a_busy_port_is_a_one_line_message():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "saferdemo.cli", "serve", "--port", str(port), "--grm", "none"],
                                capture_output=True, text=True, timeout=180)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"saferdemo: cannot serve on 127.0.0.1:{port}" in result.stderr


def test_stopping_one_user_leaves_the_other_users_batch_mate_streaming(shipped):
    """Two sessions' turns in one batch; one presses Stop: its turn ends stopped, the other's is whole."""
    choice, columns, judge = shipped
    demo, _ = start(columns, judge, choice.titles(), batched=True)
    before = len(columns["base"].engine.batches)
    try:
        stopper, other = Client(demo.local_url, verbose=False), Client(demo.local_url, verbose=False)
        for client, card in ((stopper, "2-malware.png"), (other, "3-household.png")):
            client.predict({"text": CARD_PROMPT, "files": [handle_file(str(EXAMPLES / card))]}, api_name="/submit")
        settings = (0.0, 1.0, 192, 0.5, False, False)
        stopped_job, other_job = stopper.submit(*settings, api_name="/respond"), other.submit(*settings, api_name="/respond")
        for update in stopped_job:
            if update and assistant_text(update[0]):  # it is streaming
                stopper.predict(api_name="/stop")
                break
        list(stopped_job)
        list(other_job)
        stopped_base, other_base = assistant_text(stopped_job.outputs()[-1][0]), assistant_text(other_job.outputs()[-1][0])
        assert "Stopped" in stopped_base and "Stopped" not in other_base
        household = next(p for p in world.load_phrases() if p.phrase == "Steps to clean a window.")
        assert household.steps[-1] in other_base  # the other user's answer ran to its end
        assert max(columns["base"].engine.batches[before:]) >= 2  # the two drafts shared a generate call
    finally:
        demo.close()
