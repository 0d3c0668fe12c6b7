"""tools/request_guard.py without a server: what a request becomes, what is refused, and the reasoning split."""

import asyncio
import base64
import io
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from request_guard import Policy, RequestRefused, SplitReasoning  # noqa: E402

POLICY = Policy("mini-base", "/srv/models/mini-base")


def png_url(size=(32, 24)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_a_request_becomes_saferdemo_messages_images_and_params():
    body = {"model": "mini-base", "max_tokens": 64, "temperature": 0, "seed": 3, "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": [{"type": "image_url", "image_url": {"url": png_url()}},
                                                      {"type": "text", "text": "Complete the list."}]},
                         {"role": "assistant", "content": "<think>\nx\n</think>\nDone."},
                         {"role": "user", "content": "And now?"}]}
    chat = POLICY.chat_request(body)
    assert [m["role"] for m in chat.messages] == ["system", "user", "assistant", "user"]
    assert chat.messages[1]["content"] == [{"type": "image"}, {"type": "text", "text": "Complete the list."}]
    assert chat.messages[2]["content"] == [{"type": "text", "text": "<think>\nx\n</think>\nDone."}]
    assert (chat.params.max_new_tokens, chat.params.temperature, chat.params.seed) == (64, 0.0, 3)
    assert chat.stream and chat.usage and len(chat.image_urls) == 1
    image, = POLICY.load_images(chat.image_urls)
    assert image.size == (32, 24) and image.mode == "RGB"


@pytest.mark.parametrize("body, status, message", [
    ({"messages": []}, 400, "non-empty list of messages"),
    ({"messages": [{"role": "tool", "content": "x"}]}, 400, "role is system, user or assistant"),
    ({"model": "/etc", "messages": [{"role": "user", "content": "x"}]}, 400, "unknown model '/etc'"),
    ({"max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}, 400, "max_tokens must be an integer"),
    ({"max_completion_tokens": 10**9, "messages": [{"role": "user", "content": "x"}]}, 400, "from 1 to 4096"),
    ({"top_p": True, "messages": [{"role": "user", "content": "x"}]}, 400, "top_p must be a number"),
    ({"seed": -1, "messages": [{"role": "user", "content": "x"}]}, 400, "seed must be a non-negative"),
    ({"n": 4, "messages": [{"role": "user", "content": "x"}]}, 400, "n must be 1"),
    ({"stream": "yes", "messages": [{"role": "user", "content": "x"}]}, 400, "stream must be true or false"),
    ({"messages": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, 400, "'input_image'"),
    ({"messages": [{"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}]},
     400, "only user messages may hold images"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://127.0.0.1/x.png"}}]}]},
     400, "fetching is off"),
    ({"messages": [{"role": "user", "content": "x" * 16_001}]}, 400, "the limit is 16,000"),
    ({"messages": [{"role": "user", "content": "x"}] * 65}, 400, "the limit is 64"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}] * 9}]},
     400, "the limit is 8"),
])
def test_refused_requests_say_why_and_never_show_the_path(body, status, message):
    with pytest.raises(RequestRefused) as refused:
        POLICY.chat_request(body)
    assert refused.value.status == status and message in refused.value.message
    assert "/srv/models" not in refused.value.message


def test_the_served_path_is_accepted_as_a_model_name_and_unknown_fields_are_inert():
    chat = POLICY.chat_request({"model": "/srv/models/mini-base", "generation_config": '{"max_new_tokens": 100000}',
                                "min_tokens": 10**6, "messages": [{"role": "user", "content": "x"}]})
    assert chat.params.max_new_tokens == POLICY.default_new_tokens and chat.params.temperature == 1.0


@pytest.mark.parametrize("url, message", [
    ("data:image/png;base64,%%%", "invalid base64"),
    ("data:image/png,rawbytes", "must be base64"),
    ("data:image/png;base64," + base64.b64encode(b"not an image").decode(), "not a readable image"),
])
def test_unreadable_images_are_refused_with_the_reason(url, message):
    with pytest.raises(RequestRefused, match=message):
        POLICY.load_images([url])


def test_a_huge_decoded_image_is_refused_before_it_is_decoded():
    buffer = io.BytesIO()
    Image.new("1", (13000, 13000)).save(buffer, format="PNG")  # 169 MP in a few hundred KB
    with pytest.raises(RequestRefused, match="megapixels"):
        POLICY.load_images(["data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()])


def test_the_body_cap_stops_reading():
    read = []

    async def chunks():
        for _ in range(100):
            read.append(1)
            yield b" " * 2**20

    with pytest.raises(RequestRefused) as refused:
        asyncio.run(Policy("m", "/m", max_body_bytes=3 * 2**20).read_body(chunks()))
    assert refused.value.status == 413 and len(read) == 4


def _split(text: str, cuts: list[int], prefilled=False) -> dict:
    splitter, out = SplitReasoning(prefilled), {"reasoning_content": "", "content": ""}
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    for delta in [d for piece in pieces for d in splitter.feed(piece)] + splitter.flush():
        (key, value), = delta.items()
        assert value  # no empty deltas
        out[key] += value
    return out


@settings(max_examples=300, deadline=None)
@given(think=st.text(alphabet="ab <>/\n", max_size=30).filter(lambda t: "</think>" not in t),
       answer=st.text(alphabet="ab <>/\n", max_size=30), data=st.data())
def test_reasoning_split_is_the_same_under_any_chunking(think, answer, data):
    text = f"<think>\n{think}\n</think>\n{answer}"
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=12)))
    assert _split(text, cuts) == {"reasoning_content": think.strip(), "content": answer.lstrip()}


@pytest.mark.parametrize("text, prefilled, expected", [
    ("plain answer", False, {"reasoning_content": "", "content": "plain answer"}),
    ("x\n</think>\nanswer", True, {"reasoning_content": "x", "content": "answer"}),
    ("<think>\nnever closed", False, {"reasoning_content": "never closed", "content": ""}),
    ("<thi", False, {"reasoning_content": "", "content": "<thi"}),  # a cut-off tag is text after all
    ("  <think>a</think>b", False, {"reasoning_content": "a", "content": "b"}),
])
def test_reasoning_split_edges(text, prefilled, expected):
    assert _split(text, [1, 3], prefilled) == expected
