"""What the OpenAI-compatible server accepts, checked before transformers serve sees a request.

An ASGI middleware on POST /v1/chat/completions: the body is capped (413), must be JSON (400), images must be
`data:image/...` URLs unless their host is on an allow list (remote fetching would let any client make the
server read its own files or probe its network), the text is capped (a 1 MB prompt would hold the CPU for
minutes), generation parameters are checked (400 with the reason, not a 500), and the model is named by its
public id, never by a server path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from urllib.parse import urlparse


@dataclass
class Policy:
    public_id: str  # the name /v1/models shows
    model_path: str  # the served folder (never shown)
    max_body_bytes: int = 25 * 2**20  # images travel inline as base64
    max_text_chars: int = 16_000
    max_new_tokens: int = 4096
    allowed_image_hosts: set[str] = field(default_factory=set)

    def check(self, body) -> str | None:
        """Why the request is refused, or None; fixes the model name up in place."""
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
            return "the body must be a JSON object with a non-empty list of messages"
        if body.get("model", self.public_id) not in (self.public_id, self.model_path):
            return f"unknown model {body.get('model')!r}; this server serves {self.public_id!r}"
        body["model"] = self.model_path
        return self._parameters(body) or self._messages(body["messages"])

    def _parameters(self, body: dict) -> str | None:
        for key in ("max_tokens", "max_completion_tokens"):
            value = body.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not 1 <= value <= self.max_new_tokens):
                return f"{key} must be an integer from 1 to {self.max_new_tokens}, got {value!r}"
        for key, low, high in (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0)):
            value = body.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not low <= value <= high):
                return f"{key} must be a number from {low} to {high}, got {value!r}"
        return None

    def _messages(self, messages: list) -> str | None:
        chars = 0
        for message in messages:
            if not isinstance(message, dict):
                return "every message must be an object"
            parts = message.get("content")
            parts = [{"type": "text", "text": parts}] if isinstance(parts, str) else parts or []
            for part in parts if isinstance(parts, list) else [None]:
                if not isinstance(part, dict):
                    return "message content must be text or a list of parts"
                chars += len(part.get("text") or "")
                if part.get("type") == "image_url":
                    problem = self._image(part.get("image_url"))
                    if problem:
                        return problem
        if chars > self.max_text_chars:
            return f"the messages hold {chars:,} characters of text; the limit is {self.max_text_chars:,}"
        return None

    def _image(self, image) -> str | None:
        url = image.get("url") if isinstance(image, dict) else image
        if not isinstance(url, str):
            return "image_url must hold a url"
        if url.startswith("data:image/"):
            return None
        parsed = urlparse(url)
        if parsed.scheme in ("http", "https") and parsed.hostname in self.allowed_image_hosts:
            return None
        return ("images must be data:image/... URLs (remote and local image fetching is off; "
                "--allow-image-hosts names hosts that may be fetched)")


class RequestGuard:
    """ASGI middleware applying a Policy to POST /v1/chat/completions."""

    def __init__(self, app, policy: Policy):
        self.app, self.policy = app, policy

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == "/v1/models":
            listing = {"object": "list", "data": [{"id": self.policy.public_id, "object": "model", "owned_by": "local"}]}
            return await _reply(send, 200, listing)  # the stock listing names the served folder by its path
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/v1/chat/completions":
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.policy.max_body_bytes:
                return await _reply(send, 413, f"the request is over {self.policy.max_body_bytes // 2**20} MB")
        try:
            payload = json.loads(body)
        except ValueError:
            return await _reply(send, 400, "the body is not valid JSON")
        problem = self.policy.check(payload)
        if problem:
            return await _reply(send, 400, problem)
        checked, delivered = json.dumps(payload).encode(), False

        async def replay():
            nonlocal delivered
            if delivered:
                return await receive()  # after the body: disconnects reach the server as usual
            delivered = True
            return {"type": "http.request", "body": checked, "more_body": False}

        await self.app(scope, replay, send)


async def _reply(send, status: int, message) -> None:
    """A JSON response: `message` itself when it is data, else an OpenAI-style error holding it."""
    error = {"error": {"message": message, "type": "invalid_request_error", "code": status}}
    body = json.dumps(message if isinstance(message, dict) else error).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
