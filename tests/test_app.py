"""The app answers an image turn through a real Gradio server, driven by gradio_client."""

import random

import pytest
from gradio_client import Client, handle_file

import app
from training import world


@pytest.fixture(scope="module")
def client():
    demo = app.build_demo()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True)
    try:
        yield Client(demo.local_url, verbose=False)
    finally:
        demo.close()


def test_image_turn_streams_thinking_then_answer(client, tmp_path):
    phrase = next(p for p in world.load_phrases() if p.phrase == "Steps to brew a pot of tea.")
    card = tmp_path / "card.png"
    world.render(phrase, random.Random(3), "heldout").save(card)
    message = {"text": "Complete the list on the card.", "files": [handle_file(str(card))]}
    result = client.predict(message, 160, 0.0, api_name="/respond")
    messages = result if isinstance(result, list) else [result]
    thinking = [m for m in messages if (m.get("metadata") or {}).get("title") == "Thinking"]
    assert thinking and phrase.phrase in thinking[0]["content"]
    answer = messages[-1]["content"]
    assert all(step in str(answer) for step in phrase.steps)


def test_non_image_upload_gives_a_clear_error(client, tmp_path):
    bogus = tmp_path / "notes.png"
    bogus.write_text("this is not an image")
    with pytest.raises(Exception, match="as an image"):
        client.predict({"text": "Complete the list.", "files": [handle_file(str(bogus))]}, 32, 0.0, api_name="/respond")


def test_empty_message_gives_a_clear_error(client):
    with pytest.raises(Exception, match="Type a message"):
        client.predict({"text": "   ", "files": []}, 32, 0.0, api_name="/respond")
