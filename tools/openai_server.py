"""Serve a local checkpoint over the OpenAI chat-completions API, on machines without torchvision or vLLM.

    python tools/openai_server.py assets/models/mini-base --port 8001

Three routes and no others: `GET /health`, `GET /v1/models` (the folder's name, never its path) and
`POST /v1/chat/completions` (streamed or not). Generation is saferdemo's own batching engine, so concurrent
requests share one batched `generate`; the thinking goes out as `reasoning_content`, as vLLM's reasoning
parser sends it. Every request passes the policy in request_guard.py first (body and text caps, data-URL
images only unless --allow-image-hosts says otherwise, parameters checked with 400s). A client that leaves,
streaming or not, stops its generation at the next token.

Why not `transformers serve` (which this file wrapped until transformers 5.24): its internals change from one
release to the next (5.25 moved models into a spawned process and dropped `ModelManager._load_processor`, which
we had to patch for the image-only processor), and every release adds routes a guard in front of it must know
about (`/v1/responses`, `/v1/completions`, `/load_model`, `/reset`, `generation_config` in the body). This
server uses only public APIs (FastAPI, `generate` through saferdemo's engines) and exposes nothing else.
For production serving use `vllm serve`. Needs fastapi and uvicorn (`pip install -e ".[serve]"`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import threading
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from request_guard import Policy, RequestRefused, SplitReasoning

from saferdemo.engines.base import EngineError, GenerationParams

UNREADABLE = "the request could not be served"


def build_server(engine, policy: Policy):
    """The FastAPI app serving `engine` (anything with saferdemo's `start`) under `policy`."""
    app = FastAPI(title="saferdemo OpenAI-compatible server", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": policy.public_id, "object": "model", "owned_by": "local"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            body = await policy.read_body(request.stream())
            chat = policy.chat_request(body)
            chat.images = await asyncio.to_thread(policy.load_images, chat.image_urls)
        except RequestRefused as refused:
            return JSONResponse(error_body(refused.message), status_code=refused.status)
        stop = threading.Event()
        try:
            generation = await asyncio.to_thread(engine.start, chat.messages, chat.images, chat.params, stop)
        except EngineError as error:
            return JSONResponse(error_body(str(error)), status_code=400)
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        if chat.stream:
            return StreamingResponse(stream_events(generation, stop, completion_id, policy.public_id, chat.usage),
                                     media_type="text/event-stream")
        return await complete(request, generation, stop, completion_id, policy.public_id)

    return app


def error_body(message: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error"}}


def _chunk(completion_id: str, model: str, delta: dict, finish_reason: str | None = None) -> str:
    event = {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
    return f"data: {json.dumps(event)}\n\n"


async def _chunks(generation):
    """The generation's text chunks, read on a worker thread (the engine's queue blocks)."""
    iterator = iter(generation)
    end = object()
    while True:
        chunk = await asyncio.to_thread(next, iterator, end)
        if chunk is end:
            return
        yield chunk


async def stream_events(generation, stop: threading.Event, completion_id: str, model: str, usage: bool):
    """Server-sent events in OpenAI's chunk format. If the client leaves, Starlette cancels this generator, and
    `finally` sets the stop event: the engine ends the row at its next token."""
    splitter = SplitReasoning(prefilled=generation.think_prefilled)
    try:
        yield _chunk(completion_id, model, {"role": "assistant", "content": ""})
        try:
            async for text in _chunks(generation):
                for delta in splitter.feed(text):
                    yield _chunk(completion_id, model, delta)
            for delta in splitter.flush():
                yield _chunk(completion_id, model, delta)
        except EngineError as error:
            yield f"data: {json.dumps(error_body(str(error)))}\n\n"
            return
        reason = "length" if generation.stats.finish_reason == "length" else "stop"
        yield _chunk(completion_id, model, {}, reason)
        if usage:
            event = {"id": completion_id, "object": "chat.completion.chunk", "model": model, "choices": [],
                     "usage": {"completion_tokens": generation.stats.tokens}}
            yield f"data: {json.dumps(event)}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        stop.set()


async def complete(request, generation, stop: threading.Event, completion_id: str, model: str):
    """One JSON answer; the client's disconnect is polled while the engine works, and stops it."""
    async def read_all() -> list[str]:
        return [text async for text in _chunks(generation)]

    task = asyncio.ensure_future(read_all())
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=0.25)
            if not task.done() and await request.is_disconnected():
                stop.set()
        text = "".join(task.result())
    except EngineError as error:
        return JSONResponse(error_body(str(error)), status_code=500)
    finally:
        stop.set()
    splitter = SplitReasoning(prefilled=generation.think_prefilled)
    message = {"role": "assistant", "content": "", "reasoning_content": None}
    for delta in [*splitter.feed(text), *splitter.flush()]:
        for key, value in delta.items():
            message[key] = (message.get(key) or "") + value
    reason = "length" if generation.stats.finish_reason == "length" else "stop"
    return {"id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": reason}],
            "usage": {"completion_tokens": generation.stats.tokens}}


def load_engine(model_dir: str, device: str):
    from saferdemo.engines.batching import BatchingEngine
    from saferdemo.engines.transformers_engine import TransformersEngine

    return BatchingEngine(TransformersEngine.from_pretrained(model_dir, device, name=os.path.basename(model_dir)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a local checkpoint folder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--allow-image-hosts", default="",
                        help="comma-separated hosts whose http(s) image URLs may be fetched (default: none, data: URLs only)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model_dir = os.path.abspath(args.model)
    if not os.path.isdir(model_dir):
        parser.exit(2, f"openai_server: {args.model} is not a checkpoint folder\n")
    hosts = {h.strip() for h in args.allow_image_hosts.split(",") if h.strip()}
    policy = Policy(os.path.basename(model_dir.rstrip("/")), model_dir, allowed_image_hosts=hosts)
    import uvicorn

    app = build_server(load_engine(model_dir, args.device), policy)
    # On SIGTERM, open streams get 2 s to end (their generations stop when they are cancelled), not forever.
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=2)


if __name__ == "__main__":
    main()
