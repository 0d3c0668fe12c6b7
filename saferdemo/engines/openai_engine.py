"""An engine that streams from any OpenAI-compatible server: `vllm serve`, `transformers serve`, SGLang, an API.

Chat completions with `stream: true`; images go inline as base64 PNG data URLs. A reader thread turns the
server-sent events into text chunks; setting the stop event closes the HTTP stream, which is how servers
learn to stop generating. Servers that split reasoning into `reasoning_content` (vLLM's and transformers'
reasoning parsers) get it wrapped back into the model's own tags (`<think>…</think>` unless
`SAFERDEMO_REASONING_FORMAT` names another), so the segment parser sees one format.

Before the first byte arrives, connection errors, 429 and 5xx are retried with exponential backoff
(honouring Retry-After); 401/403 and 404 fail at once with a message that says what to check. The API key
is read from an environment variable and never appears in messages or logs.
"""

from __future__ import annotations

import base64
import io
import json
import os
import threading
import time

import httpx
from PIL import Image

from saferdemo.engines.base import EngineError, GenerationParams, StreamingGeneration
from saferdemo.segments import ANY


def data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def to_openai_messages(messages: list[dict], images: list[Image.Image]) -> list[dict]:
    """Our messages mark image places with {"type": "image"}; fill them, in order, with data URLs."""
    remaining = list(images)
    converted = []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            converted.append({"role": message["role"], "content": content})
            continue
        if message["role"] == "assistant":  # plain text is what every server accepts for past answers
            converted.append({"role": "assistant", "content": "".join(p.get("text", "") for p in content)})
            continue
        parts = []
        for part in content:
            if part["type"] == "image":
                if not remaining:
                    raise EngineError("the conversation has more image placeholders than images")
                parts.append({"type": "image_url", "image_url": {"url": data_url(remaining.pop(0))}})
            else:
                parts.append({"type": "text", "text": part["text"]})
        converted.append({"role": message["role"], "content": parts})
    return converted


class OpenAIGeneration(StreamingGeneration):
    def __init__(self, engine: OpenAIEngine, payload: dict, stop: threading.Event, max_new_tokens: int):
        super().__init__(stop, max_new_tokens, engine.name, timeout_s=engine.timeout_s,
                         reasoning_format=engine.reasoning_format)
        self.engine, self.payload = engine, payload
        self.thread = threading.Thread(target=self._read, name=f"generate:{engine.name}", daemon=True)
        self.thread.start()

    def _close(self) -> None:
        self.thread.join(timeout=5)  # on Stop the reader closes the HTTP stream at its next line

    def _read(self) -> None:
        reason = ""
        try:
            response = self.engine.open_stream(self.payload)
            try:
                reason = self._consume(response)
            finally:
                response.close()  # on Stop this is what tells the server to stop generating
        except EngineError as error:
            self.fail(error)
        except httpx.HTTPError as error:
            self.fail(EngineError(f"{self.engine.name}: the connection failed mid-stream ({type(error).__name__})"))
        except Exception as error:  # e.g. a malformed event: reported, never a silent dead thread
            self.fail(EngineError(f"{self.engine.name}: unreadable server stream: {type(error).__name__}: {error}"))
        finally:
            self.finish(reason)

    def _consume(self, response: httpx.Response) -> str:
        """Read server-sent events until [DONE] or Stop; returns the server's finish reason."""
        in_think, reason = False, ""
        # reasoning_content goes back into the model's own tags (a Kimi model reflecting reads ◁think▷ again)
        think_open, think_close = self.reasoning_format.opens[0], self.reasoning_format.closes[0]
        for line in response.iter_lines():
            if self.stop.is_set():
                return reason  # leaving closes the stream: the server sees the disconnect and stops
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            event = json.loads(data)
            if "error" in event:
                raise EngineError(f"{self.engine.name}: the server reported an error: {_message(event['error'])}")
            if event.get("usage"):
                self.stats.tokens = event["usage"].get("completion_tokens", self.stats.tokens)
            for choice in event.get("choices", []):
                delta = choice.get("delta") or {}
                reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                text = ""
                if reasoning:
                    text += ("" if in_think else think_open + "\n") + reasoning
                    in_think = True
                if delta.get("content"):
                    text += ("\n" + think_close + "\n" if in_think else "") + delta["content"]
                    in_think = False
                if text:
                    if not event.get("usage"):
                        self.stats.tokens += 1  # one event per token on the servers we know; usage corrects it
                    self.emit(text)
                if choice.get("finish_reason") in ("stop", "length"):
                    reason = choice["finish_reason"]
        return reason


def _message(error) -> str:
    return error.get("message", str(error)) if isinstance(error, dict) else str(error)


class OpenAIEngine:
    """One model on an OpenAI-compatible server."""

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 60.0,
                 retries: int = 3, name: str | None = None):
        self.base_url, self.model = base_url.rstrip("/"), model
        self.api_key_env, self.timeout_s, self.retries = api_key_env, timeout_s, retries
        self.name = name or model
        from saferdemo.reasoning_formats import override

        self.reasoning_format = override() or ANY  # the server's template is not ours to read: the flag, else all tags
        self.client = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=10.0))

    def _headers(self) -> dict:
        key = os.environ.get(self.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def start(self, messages, images, params: GenerationParams, stop: threading.Event) -> OpenAIGeneration:
        # include_usage: the server's own token count ends the stream; counting events would depend on how the
        # server grouped tokens into events (timing), and an audit's records must not (issue 26).
        payload = {"model": self.model, "messages": to_openai_messages(messages, images), "stream": True,
                   "stream_options": {"include_usage": True},
                   "max_tokens": params.max_new_tokens, "temperature": params.temperature}
        if params.temperature > 0:
            payload["top_p"] = params.top_p
        if params.seed is not None:
            payload["seed"] = params.seed
        return OpenAIGeneration(self, payload, stop, params.max_new_tokens)

    def open_stream(self, payload: dict):
        """A streaming response that has answered 200; retries what is worth retrying, explains the rest."""
        url = f"{self.base_url}/chat/completions"
        for attempt in range(self.retries + 1):
            request = self.client.build_request("POST", url, json=payload, headers=self._headers())
            try:
                response = self.client.send(request, stream=True)
            except httpx.TransportError as error:
                if attempt == self.retries:
                    raise EngineError(f"{self.name}: cannot reach {self.base_url} ({type(error).__name__}). "
                                      "Is the server running?") from error
                time.sleep(0.5 * 2**attempt)
                continue
            if response.status_code == 200:
                return response
            body = _read_error(response)
            if response.status_code in (429, 500, 502, 503, 504) and attempt < self.retries:
                time.sleep(_retry_after(response, 0.5 * 2**attempt))
                continue
            raise EngineError(_explain(self, response.status_code, body))
        raise EngineError(f"{self.name}: no answer after {self.retries + 1} attempts")


def _read_error(response: httpx.Response) -> str:
    try:
        body = response.read().decode(errors="replace")
    finally:
        response.close()
    try:
        detail = json.loads(body)
        return _message(detail.get("error") or detail.get("detail") or detail)
    except (ValueError, AttributeError):
        return body[:300]


def _retry_after(response: httpx.Response, default: float) -> float:
    try:
        return min(30.0, float(response.headers.get("retry-after", default)))
    except ValueError:
        return default


def _explain(engine: OpenAIEngine, status: int, body: str) -> str:
    if status in (401, 403):
        return (f"{engine.name}: the server refused the API key (HTTP {status}). Set ${engine.api_key_env} "
                "to a valid key.")
    if status == 404:
        return f"{engine.name}: not found (HTTP 404) at {engine.base_url}: check the URL and the model name {engine.model!r}."
    return f"{engine.name}: the server answered HTTP {status}: {body}"
