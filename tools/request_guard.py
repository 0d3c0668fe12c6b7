"""What the OpenAI-compatible server (openai_server.py) accepts, and how a request becomes saferdemo's format.

A `Policy` reads a request and either refuses it (`RequestRefused`: HTTP status and a reason, never a server
path) or turns it into a `ChatRequest`: saferdemo's messages, the images' URLs, generation parameters. The
body is capped (413) and must be JSON (400); a message holds text and `image_url` parts only (any other part
type, e.g. `input_image`, is refused rather than guessed at); images are `data:image/...` URLs unless their host
is on an allow list (remote fetching would let any client make the server read its own files or probe its
network), decoded under the app's image limits; the text is capped (a 1 MB prompt holds the CPU for minutes);
the parameters the server uses are checked, and nothing else in the body reaches `generate` (no
`generation_config`, no `min_tokens`: a field we do not know has no effect).

`SplitReasoning` turns the model's `<think>…</think>answer` text into `reasoning_content` and `content` deltas, as
vLLM's reasoning parser sends them.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from urllib.parse import urlparse

from saferdemo.engines.base import GenerationParams
from saferdemo.images import MAX_FILE_BYTES, InputError, load_image_bytes
from saferdemo.prompts import THINK_CLOSE, THINK_OPEN, assistant_turn


class RequestRefused(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message, self.status = message, status


@dataclass
class ChatRequest:
    messages: list[dict]  # saferdemo's format: {"type": "image"} marks where each image goes
    image_urls: list[str]
    params: GenerationParams
    stream: bool = False
    usage: bool = False  # stream_options.include_usage
    images: list = field(default_factory=list)  # filled by Policy.load_images


@dataclass
class Policy:
    public_id: str  # the name /v1/models shows
    model_path: str  # the served folder (accepted as a model name, never shown)
    max_body_bytes: int = 25 * 2**20  # images travel inline as base64
    max_text_chars: int = 16_000
    max_new_tokens: int = 4096
    default_new_tokens: int = 512
    max_images: int = 8
    max_messages: int = 64
    allowed_image_hosts: set[str] = field(default_factory=set)

    async def read_body(self, chunks) -> dict:
        """The JSON body, read from an async iterator of bytes; stops reading once it is over the cap."""
        body = bytearray()
        async for chunk in chunks:
            body += chunk
            if len(body) > self.max_body_bytes:
                raise RequestRefused(f"the request is over {self.max_body_bytes // 2**20} MB", 413)
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise RequestRefused("the body is not valid JSON") from None

    def chat_request(self, body) -> ChatRequest:
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
            raise RequestRefused("the body must be a JSON object with a non-empty list of messages")
        if body.get("model", self.public_id) not in (self.public_id, self.model_path):
            raise RequestRefused(f"unknown model {_short(body.get('model'))}; this server serves {self.public_id!r}")
        if len(body["messages"]) > self.max_messages:
            raise RequestRefused(f"the conversation has {len(body['messages'])} messages; the limit is {self.max_messages}")
        messages, urls = self._messages(body["messages"])
        options = body.get("stream_options")
        return ChatRequest(messages, urls, self._params(body), stream=_flag(body, "stream"),
                           usage=isinstance(options, dict) and _flag(options, "include_usage"))

    # ---------------------------------------------------------------- parameters

    def _params(self, body: dict) -> GenerationParams:
        if body.get("n", 1) != 1:
            raise RequestRefused("n must be 1 (one choice per request)")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is None:
            max_tokens = self.default_new_tokens
        elif isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= self.max_new_tokens:
            raise RequestRefused(f"max_tokens must be an integer from 1 to {self.max_new_tokens}, got {_short(max_tokens)}")
        temperature = _number(body, "temperature", 0.0, 2.0, default=1.0)  # OpenAI's default
        top_p = _number(body, "top_p", 0.0, 1.0, default=1.0)
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
            raise RequestRefused(f"seed must be a non-negative integer, got {_short(seed)}")
        return GenerationParams(max_new_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed)

    # ---------------------------------------------------------------- messages

    def _messages(self, raw: list) -> tuple[list[dict], list[str]]:
        messages, urls, chars = [], [], 0
        for message in raw:
            if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
                raise RequestRefused("every message must be an object whose role is system, user or assistant")
            parts = _parts(message.get("content"))
            chars += sum(len(part["text"]) for part in parts if part["type"] == "text")
            if chars > self.max_text_chars:
                raise RequestRefused(f"the messages hold over {self.max_text_chars:,} characters of text; "
                                     f"the limit is {self.max_text_chars:,}")
            images = [part for part in parts if part["type"] == "image"]
            if images and message["role"] != "user":
                raise RequestRefused("only user messages may hold images")
            for part in images:
                urls.append(self._image_url(part.pop("url")))
            if len(urls) > self.max_images:
                raise RequestRefused(f"the conversation holds over {self.max_images} images; the limit is {self.max_images}")
            if message["role"] == "assistant":
                messages.append(assistant_turn("".join(part["text"] for part in parts)))
            else:
                messages.append({"role": message["role"], "content": parts})
        return messages, urls

    def _image_url(self, url) -> str:
        if not isinstance(url, str):
            raise RequestRefused("image_url must hold a url")
        if url.startswith("data:image/"):
            return url
        parsed = urlparse(url)
        if parsed.scheme in ("http", "https") and parsed.hostname in self.allowed_image_hosts:
            return url
        raise RequestRefused("images must be data:image/... URLs (remote and local image fetching is off; "
                             "--allow-image-hosts names hosts that may be fetched)")

    # ---------------------------------------------------------------- images

    def load_images(self, urls: list[str]) -> list:
        """Decoded RGB images under the app's limits (size, pixels, aspect ratio); blocking (run it in a thread)."""
        images = []
        for index, url in enumerate(urls, 1):
            data = _data_url_bytes(url) if url.startswith("data:") else self._fetch(url)
            try:
                images.append(load_image_bytes(data, f"image {index}"))
            except InputError as error:
                raise RequestRefused(str(error)) from None
        return images

    def _fetch(self, url: str) -> bytes:
        import httpx

        data = bytearray()
        try:
            with httpx.stream("GET", url, timeout=10, follow_redirects=False) as response:
                if response.status_code != 200:
                    raise RequestRefused(f"the image at {urlparse(url).hostname} answered HTTP {response.status_code}")
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) > MAX_FILE_BYTES:
                        raise RequestRefused(f"the image at {urlparse(url).hostname} is over {MAX_FILE_BYTES // 2**20} MB")
        except httpx.HTTPError as error:
            raise RequestRefused(f"the image at {urlparse(url).hostname} could not be fetched ({type(error).__name__})") from None
        return bytes(data)


def _parts(content) -> list[dict]:
    """A message's content as saferdemo parts: {"type": "text", "text"} and {"type": "image", "url"}."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise RequestRefused("message content must be text or a list of parts")
    parts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            parts.append({"type": "image", "url": image.get("url") if isinstance(image, dict) else image})
        else:
            raise RequestRefused(f"unsupported content part {_short(kind)}: this server takes text and image_url parts")
    return parts


def _data_url_bytes(url: str) -> bytes:
    header, _, payload = url.partition(",")
    if not header.endswith(";base64") or len(payload) > MAX_FILE_BYTES * 4 // 3 + 4:
        raise RequestRefused("an image data URL must be base64 (data:image/...;base64,...) and at most "
                             f"{MAX_FILE_BYTES // 2**20} MB")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise RequestRefused("an image data URL holds invalid base64") from None


def _flag(body: dict, key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise RequestRefused(f"{key} must be true or false, got {_short(value)}")
    return value


def _number(body: dict, key: str, low: float, high: float, default: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise RequestRefused(f"{key} must be a number from {low} to {high}, got {_short(value)}")
    return float(value)


def _short(value) -> str:
    """A client's value, quoted and cut short (an error message never echoes a megabyte back)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class SplitReasoning:
    """Splits streamed `<think>reasoning</think>answer` text into `reasoning_content` and `content` deltas.

    Tags may arrive cut across chunks, so a tail that could be the start of a tag is held until the next chunk.
    Whitespace next to the tags is dropped (clients put their own newlines back). `prefilled`: the chat template
    already opened `<think>`, so the text starts inside the reasoning."""

    def __init__(self, prefilled: bool = False):
        self.mode = "think" if prefilled else "start"
        self.buffer, self.section_start = "", True

    def feed(self, text: str) -> list[dict]:
        self.buffer += text
        deltas: list[dict] = []
        while self._step(deltas):
            pass
        return deltas

    def flush(self) -> list[dict]:
        key = "reasoning_content" if self.mode == "think" else "content"
        text, self.buffer = self.buffer, ""
        if self.mode == "think":
            text = text.rstrip()
        return self._emit(key, text)

    def _step(self, deltas: list) -> bool:
        """Handles what the buffer allows; True when the mode changed and the rest needs another look."""
        if self.mode == "start":
            stripped = self.buffer.lstrip()
            if stripped.startswith(THINK_OPEN):
                self.buffer, self.mode, self.section_start = stripped[len(THINK_OPEN):], "think", True
                return True
            if not stripped or THINK_OPEN.startswith(stripped):
                return False  # maybe the start of the tag: wait
            self.mode = "answer"
            return True
        if self.mode == "think":
            end = self.buffer.find(THINK_CLOSE)
            if end >= 0:
                deltas += self._emit("reasoning_content", self.buffer[:end].rstrip())
                self.buffer, self.mode, self.section_start = self.buffer[end + len(THINK_CLOSE):], "answer", True
                return True
            held = _partial_tag(self.buffer, THINK_CLOSE)
            body = self.buffer[:len(self.buffer) - held]
            ready = body.rstrip()  # trailing whitespace may be the newline before the closing tag
            deltas += self._emit("reasoning_content", ready)
            self.buffer = self.buffer[len(ready):]
            return False
        deltas += self._emit("content", self.buffer)
        self.buffer = ""
        return False

    def _emit(self, key: str, text: str) -> list[dict]:
        if self.section_start:
            text = text.lstrip()
        if not text:
            return []
        self.section_start = False
        return [{key: text}]


def _partial_tag(text: str, tag: str) -> int:
    """How many characters at the end of `text` could be the beginning of `tag`."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0
