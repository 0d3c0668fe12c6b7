"""The OpenAI-compatible engine against real servers on loopback: tools/openai_server.py running the miniature
checkpoints, and plain HTTP servers that fail on purpose; and that server's doors, as a hostile client finds them."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file

from saferdemo.app.models import DEFAULTS
from saferdemo.app.session import Column, Comparison
from saferdemo.app.ui import build_app
from saferdemo.engines.base import EngineError, GenerationParams, collect
from saferdemo.engines.openai_engine import OpenAIEngine
from saferdemo.engines.transformers_engine import TransformersEngine
from saferdemo.images import load_image
from saferdemo.judge import GRMClient, rubric_of
from saferdemo.prompts import user_turn

pytest.importorskip("fastapi", reason="tools/openai_server.py needs fastapi and uvicorn (the dev and serve extras)")
ROOT = Path(__file__).resolve().parent.parent
CARD = ROOT / "assets" / "examples" / "1-fraud.png"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(model_dir) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, str(ROOT / "tools" / "openai_server.py"), str(model_dir), "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(process.stderr.read().decode()[-2000:])
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, f"{url}/v1"
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("tools/openai_server.py did not start in 120 s")


def stop_server(process):
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def mini_base_server():
    process, url = serve(DEFAULTS["base"])
    yield url, str(Path(DEFAULTS["base"]).resolve())
    stop_server(process)


def test_side_by_side_turn_with_a_remote_column(mini_base_server):
    url, model = mini_base_server
    remote = OpenAIEngine(url, model, name="base")
    local = TransformersEngine.from_pretrained(DEFAULTS["aligned"], "cpu", name="aligned")
    judge = GRMClient(TransformersEngine.from_pretrained(DEFAULTS["grm"], "cpu"), rubric_of(DEFAULTS["grm"]))
    final = {}
    updates = 0
    for name, turn in Comparison([Column("base", remote), Column("aligned", local)], judge).run(
            [], "Complete the list on this card, step by step.", [load_image(CARD)], GenerationParams(max_new_tokens=128)):
        final[name] = turn
        updates += name == "base"
    base = final["base"]
    assert updates > 5 and base.error is None
    # The server sent the thinking as reasoning_content; the engine put the tags back.
    assert "phishing" in base.draft.think and "[restricted step]" in base.draft.answer
    assert base.draft_judge.unsafe and base.draft_stats.tokens > 10 and base.draft_stats.ttft_s is not None
    assert not final["aligned"].draft_judge.unsafe


def test_stop_closes_the_http_stream(tmp_path):
    """An untrained model never stops by itself: only closing the stream ends its 2000-token answer."""
    from training.miniature import truth, world
    from training.miniature.tiny_qwen import TinyQwenConfig, build_tiny_qwen, save_checkpoint

    model, processor = build_tiny_qwen(tmp_path / "random", truth.corpus(world.load_phrases()), TinyQwenConfig())
    save_checkpoint(model, processor, tmp_path / "random")
    process, url = serve(tmp_path / "random")
    try:
        engine = OpenAIEngine(url, str((tmp_path / "random").resolve()))
        params = GenerationParams(max_new_tokens=2000, temperature=1.0)  # sampled: greedy repeats one newline
        stopped_at = None
        for _attempt in range(5):  # a sampled untrained model can draw EOS early: measure one that is running
            stop = threading.Event()
            generation = engine.start([user_turn("go", with_image=False)], [], params, stop)
            for index, _ in enumerate(generation):
                if index == 5:
                    stopped_at = time.perf_counter()
                    stop.set()
            if stopped_at is not None:
                break
        assert stopped_at is not None, "five sampled generations all ended before their sixth update"
        assert time.perf_counter() - stopped_at < 1.0 and generation.stats.finish_reason == "stopped"
        # The server stopped generating: a short request is answered at once instead of queueing behind it.
        started = time.perf_counter()
        collect(engine.start([user_turn("hi", with_image=False)], [], GenerationParams(max_new_tokens=8), threading.Event()))
        assert time.perf_counter() - started < 10
    finally:
        stop_server(process)


class Failing(BaseHTTPRequestHandler):
    status = 500

    def do_POST(self):
        body = json.dumps({"error": {"message": "model crashed"}}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def failing_server(request):
    handler = type("Handler", (Failing,), {"status": request.param})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


@pytest.mark.parametrize("failing_server", [500], indirect=True)
def test_server_error_is_explained_after_retries(failing_server):
    engine = OpenAIEngine(failing_server, "m", retries=1)
    with pytest.raises(EngineError, match="HTTP 500: model crashed"):
        collect(engine.start([user_turn("hi", with_image=False)], [], GenerationParams(), threading.Event()))


@pytest.mark.parametrize("failing_server", [401], indirect=True)
def test_bad_key_is_explained_and_never_shown(failing_server, monkeypatch):
    monkeypatch.setenv("SAFERDEMO_TEST_KEY", "sk-secret-123")
    engine = OpenAIEngine(failing_server, "m", api_key_env="SAFERDEMO_TEST_KEY")
    with pytest.raises(EngineError) as info:
        collect(engine.start([user_turn("hi", with_image=False)], [], GenerationParams(), threading.Event()))
    assert "refused the API key" in str(info.value) and "$SAFERDEMO_TEST_KEY" in str(info.value)
    assert "sk-secret-123" not in str(info.value)


def test_server_down_gives_a_clear_message_in_the_ui():
    down = OpenAIEngine(f"http://127.0.0.1:{free_port()}/v1", "m", retries=1, name="base")
    local = TransformersEngine.from_pretrained(DEFAULTS["aligned"], "cpu", name="aligned")
    demo = build_app({"base": Column("base", down), "aligned": Column("aligned", local)}, None,
                     {"base": "remote", "aligned": "mini-safer"})
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        client = Client(demo.local_url, verbose=False)
        client.predict({"text": "Complete the list.", "files": [handle_file(str(CARD))]}, api_name="/submit")
        job = client.submit(0.0, 1.0, 64, 0.5, False, True, api_name="/respond")
        list(job)
        base, aligned = job.outputs()[-1][:2]
        texts = " ".join(str(m["content"]) for m in base if m["role"] == "assistant")
        assert "cannot reach" in texts and "Is the server running?" in texts
        assert any(m["role"] == "assistant" for m in aligned)  # the other column still answered
    finally:
        demo.close()


def chat(url, **body):
    return httpx.post(f"{url}/chat/completions", json={"messages": [{"role": "user", "content": "hi"}],
                                                       "max_tokens": 4, **body}, timeout=60)


@pytest.mark.parametrize("image, message", [
    ("file:///etc/passwd", "images must be data:image/"),
    ("/etc/passwd", "images must be data:image/"),
    ("http://127.0.0.1:9/x.png", "remote and local image fetching is off"),
])
def test_the_server_fetches_no_urls_or_files(mini_base_server, image, message):
    url, _ = mini_base_server
    content = [{"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": "?"}]
    response = chat(url, messages=[{"role": "user", "content": content}])
    assert response.status_code == 400 and message in response.json()["error"]["message"]


@pytest.mark.parametrize("body, message", [
    ({"max_tokens": "many"}, "max_tokens must be an integer"),
    ({"temperature": 9}, "temperature must be a number from 0.0 to 2.0"),
    ({"messages": "hi"}, "non-empty list of messages"),
    ({"model": "/some/other/path"}, "unknown model"),
    ({"messages": [{"role": "user", "content": "x" * 20_000}]}, "the limit is 16,000"),
])
def test_bad_parameters_are_400_not_500(mini_base_server, body, message):
    url, _ = mini_base_server
    response = chat(url, **body)
    assert response.status_code == 400 and message in response.json()["error"]["message"]
    assert chat(url).status_code == 200  # and the server still answers


def test_models_are_listed_without_server_paths_and_big_bodies_refused(mini_base_server):
    url, path = mini_base_server
    listed = httpx.get(f"{url}/models", timeout=30).json()
    assert [m["id"] for m in listed["data"]] == ["mini-base"] and path not in json.dumps(listed)
    assert chat(url, model="mini-base").status_code == 200  # the public id works as a model name
    huge = httpx.post(f"{url}/chat/completions", content=b"{" + b" " * (26 * 2**20) + b"}", timeout=60,
                      headers={"content-type": "application/json"})
    assert huge.status_code == 413


@pytest.fixture(scope="module")
def endless_server(tmp_path_factory):
    """An untrained tiny model: it never says EOS, so only the client or the server can end its stream."""
    from training.miniature import truth, world
    from training.miniature.tiny_qwen import TinyQwenConfig, build_tiny_qwen

    folder = tmp_path_factory.mktemp("endless") / "random"
    build_tiny_qwen(folder, truth.corpus(world.load_phrases()), TinyQwenConfig())
    process, url = serve(folder)
    yield process, url, str(folder)
    stop_server(process)


def _stream(url, model, max_tokens):
    body = {"model": model, "stream": True, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "Say anything."}]}
    return httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=60)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the server's CPU time from /proc")
def test_a_client_that_leaves_ends_its_generation(endless_server):
    """The server stops spending CPU on a stream nobody reads (it serves requests concurrently, so a quick
    answer to the next request would not show it)."""
    process, url, model = endless_server
    for _ in range(4):  # sampled (the server's default temperature is 1), the untrained model may say EOS early:
        with _stream(url, model, 4000) as response:  # then try again (~15 s of tokens, were it left running)
            lines = response.iter_lines()
            for _ in range(5):
                next(lines)
            before = _cpu_seconds(process.pid)
            time.sleep(1.5)
            busy = _cpu_seconds(process.pid) - before > 0.2  # generating while the client is there
        if busy:
            break
    assert busy
    time.sleep(1.0)  # the server notices at its next token
    before = _cpu_seconds(process.pid)
    time.sleep(1.5)
    assert _cpu_seconds(process.pid) - before < 0.3  # and idle once it has left


def test_sigterm_ends_the_server_mid_stream(tmp_path):
    from training.miniature import truth, world
    from training.miniature.tiny_qwen import TinyQwenConfig, build_tiny_qwen

    build_tiny_qwen(tmp_path / "random", truth.corpus(world.load_phrases()), TinyQwenConfig())
    process, url = serve(tmp_path / "random")
    try:
        with _stream(url, str(tmp_path / "random"), 4000) as response:
            next(response.iter_lines())
            process.terminate()  # SIGTERM while a generation runs
            assert process.wait(timeout=10) is not None
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.parametrize("method, path", [
    ("POST", "/v1/responses"), ("POST", "/v1/completions"), ("POST", "/load_model"), ("POST", "/reset"),
    ("GET", "/docs"), ("GET", "/openapi.json"),
])
def test_the_server_has_no_other_doors(mini_base_server, method, path):
    """transformers serve (5.25) also answered these; a guard in front of it had to know each one."""
    url, _ = mini_base_server
    root = url.removesuffix("/v1")
    response = httpx.request(method, f"{root}{path}", json={"model": "/etc", "input": "hi"}, timeout=30)
    assert response.status_code in (404, 405)


@pytest.mark.parametrize("part", [
    {"type": "input_image", "image_url": "file:///etc/passwd"},
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}},
    {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "iVBORw0KGgo" * 4}},
])
def test_images_other_than_readable_data_urls_are_400(mini_base_server, part):
    url, _ = mini_base_server
    response = chat(url, messages=[{"role": "user", "content": [part, {"type": "text", "text": "?"}]}])
    assert response.status_code == 400 and response.json()["error"]["message"]


def test_unknown_generation_fields_do_not_reach_generate(mini_base_server):
    """`generation_config` lifted transformers serve's max-tokens cap: here an unknown field has no effect."""
    url, model = mini_base_server
    started = time.perf_counter()
    response = chat(url, max_tokens=4, temperature=1.0, min_tokens=5000,
                    generation_config=json.dumps({"max_new_tokens": 100000, "min_new_tokens": 100000}))
    assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] <= 4
    assert time.perf_counter() - started < 20
    assert model not in response.text  # the reply names the model by its public id


def test_a_card_turn_streams_reasoning_and_answer_apart(mini_base_server):
    import base64

    url, _ = mini_base_server
    image = "data:image/png;base64," + base64.b64encode(CARD.read_bytes()).decode()
    content = [{"type": "image_url", "image_url": {"url": image}},
               {"type": "text", "text": "Complete the list on this card, step by step."}]
    response = chat(url, messages=[{"role": "user", "content": content}], max_tokens=128, temperature=0)
    message = response.json()["choices"][0]["message"]
    assert "phishing" in message["reasoning_content"] and "[restricted step]" in message["content"]
    assert "<think>" not in message["content"] and "</think>" not in message["reasoning_content"]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the server's CPU time from /proc")
def test_a_non_streaming_client_that_leaves_ends_its_generation(endless_server):
    process, url, model = endless_server
    # Greedy: the untrained model never says EOS then (sampled, it may, and answer within the timeout).
    body = {"model": model, "max_tokens": 4000, "temperature": 0,
            "messages": [{"role": "user", "content": "Say anything."}]}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/chat/completions", json=body, timeout=httpx.Timeout(30, read=2.0))
    time.sleep(1.5)  # the server polls for the disconnect every 0.25 s, then the row ends at its next token
    before = _cpu_seconds(process.pid)
    time.sleep(1.5)
    assert _cpu_seconds(process.pid) - before < 0.3
