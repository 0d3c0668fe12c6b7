"""Many users, one model: a worker per model runs the requests of all live turns as batched `generate` calls.

Every column of every user used to run its own batch-1 `generate` in its own thread: more users added GIL
contention and no throughput. `BatchingEngine` wraps a `TransformersEngine`: `start` checks the request's
inputs in the caller's thread (a bad image fails that request alone) and queues it; one worker thread takes
what has gathered (up to `max_batch`), groups it by sampling settings (temperature, top-p and seed apply to a
whole `generate` call), and runs each group as one left-padded batch with images. Each row streams to its own
consumer as tokens arrive and finishes as soon as IT is done (end of sequence, its own max new tokens, its
Stop), while its batch-mates go on. Requests that arrive while a batch runs join the next one.
(transformers' continuous batching, `generate_batch`, takes token ids only: no images, checked in 5.24.)

A failure of a whole batch (out of memory) is retried row by row for the rows that had produced nothing yet,
so it reaches only the rows that fail on their own.
"""

from __future__ import annotations

import atexit
import threading
import time
from collections import deque
from dataclasses import dataclass

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from saferdemo.engines.base import EngineError, GenerationParams, StreamingGeneration
from saferdemo.engines.transformers_engine import TransformersEngine, describe_error, sampling_kwargs
from saferdemo.prompts import THINK_OPEN


class BatchedGeneration(StreamingGeneration):
    """One row of a batch, seen by its consumer like any other generation."""

    done = False  # set by the worker when this row needs no more tokens


@dataclass
class Request:
    prompt: str
    images: list
    params: GenerationParams
    generation: BatchedGeneration

    @property
    def group(self) -> tuple:
        """Requests that can share one `generate` call: same sampling settings and seed."""
        p = self.params
        return (p.temperature > 0, p.temperature, p.top_p, p.seed)


class _Rows(BaseStreamer, StoppingCriteria):
    """Streams each row's new tokens to its consumer, and tells `generate` which rows are finished."""

    def __init__(self, tokenizer, requests: list[Request], eos_ids: set[int]):
        self.tokenizer, self.requests, self.eos_ids = tokenizer, requests, eos_ids
        self.tokens: list[list[int]] = [[] for _ in requests]
        self.shown = [0] * len(requests)
        self.prompt_seen = False

    def put(self, value):
        if not self.prompt_seen:  # generate passes the prompt first
            self.prompt_seen = True
            return
        for row, token in enumerate(value.reshape(-1).tolist()):
            request = self.requests[row]
            generation = request.generation
            if generation.done:
                continue
            if token in self.eos_ids:
                self._finish(row)
                continue
            self.tokens[row].append(token)
            generation.stats.tokens += 1
            self._emit(row)
            if len(self.tokens[row]) >= request.params.max_new_tokens:
                self._finish(row)

    def end(self):
        for row in range(len(self.requests)):
            self._finish(row)

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        for row, request in enumerate(self.requests):
            if request.generation.stop.is_set():
                self._finish(row)
        return torch.tensor([r.generation.done for r in self.requests], dtype=torch.bool, device=input_ids.device)

    def _emit(self, row: int) -> None:
        text = self.tokenizer.decode(self.tokens[row], skip_special_tokens=True)
        if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
            return
        self.requests[row].generation.emit(text[self.shown[row]:])
        self.shown[row] = len(text)

    def _finish(self, row: int) -> None:
        generation = self.requests[row].generation
        if not generation.done:
            generation.done = True
            generation.emit(self.tokenizer.decode(self.tokens[row], skip_special_tokens=True)[self.shown[row]:])
            generation.finish()


class BatchingEngine:
    """A TransformersEngine whose `start` requests are batched across all callers by one worker thread."""

    def __init__(self, engine: TransformersEngine, max_batch: int = 16, gather_s: float = 0.01):
        self.engine, self.name = engine, engine.name
        self.model, self.processor = engine.model, engine.processor
        self.max_batch, self.gather_s = max_batch, gather_s
        self._waiting: deque[Request] = deque()
        self._arrived = threading.Condition()
        self.batches: list[int] = []  # the size of every batch run (for tests and benchmarks)
        # A row is handed back at its own end, so the caller may finish while `generate` takes its last step
        # for the batch: at exit, wait for that step (a daemon thread frozen inside torch aborts the process).
        self._idle = threading.Event()
        self._idle.set()
        atexit.register(self._idle.wait, 30)
        threading.Thread(target=self._work, name=f"batching:{self.name}", daemon=True).start()

    def prompt_text(self, messages: list[dict]) -> str:
        return self.engine.prompt_text(messages)

    def generate_batch(self, conversations, images, params, batch_size: int = 16) -> list[str]:
        return self.engine.generate_batch(conversations, images, params, batch_size)

    def start(self, messages, images, params: GenerationParams, stop: threading.Event) -> BatchedGeneration:
        prompt = self.prompt_text(messages)
        self.engine._inputs([prompt], list(images))  # a bad input fails here, for this request alone
        generation = BatchedGeneration(stop, params.max_new_tokens, self.name, prompt.rstrip().endswith(THINK_OPEN))
        with self._arrived:
            self._waiting.append(Request(prompt, list(images), params, generation))
            self._arrived.notify()
        return generation

    # ---------------------------------------------------------------- the worker

    def _work(self) -> None:
        while True:
            with self._arrived:
                while not self._waiting:
                    self._arrived.wait()
            self._idle.clear()
            try:
                time.sleep(self.gather_s)  # let the other requests of the same moment arrive
                for batch in self._take():
                    self._run(batch)
            finally:
                self._idle.set()

    def _take(self) -> list[list[Request]]:
        """What has gathered, as batches of one sampling group each (at most max_batch rows)."""
        with self._arrived:
            taken = [self._waiting.popleft() for _ in range(min(self.max_batch, len(self._waiting)))]
        groups: dict[tuple, list[Request]] = {}
        for request in taken:
            if request.generation.stop.is_set():  # stopped while waiting
                request.generation.done = True
                request.generation.finish()
                continue
            groups.setdefault(request.group, []).append(request)
        return list(groups.values())

    def _run(self, batch: list[Request]) -> None:
        self.batches.append(len(batch))
        rows = _Rows(self.processor.tokenizer, batch, self._eos_ids())
        params = batch[0].params
        try:
            inputs = self.engine._inputs([r.prompt for r in batch], [i for r in batch for i in r.images])
            if params.seed is not None:
                torch.manual_seed(params.seed)
            with torch.inference_mode():
                self.model.generate(**inputs, streamer=rows, stopping_criteria=StoppingCriteriaList([rows]),
                                    max_new_tokens=max(r.params.max_new_tokens for r in batch),
                                    **sampling_kwargs(params))
        except Exception as error:
            self._failed(batch, rows, error)
        finally:
            rows.end()

    def _failed(self, batch: list[Request], rows: _Rows, error: Exception) -> None:
        fresh = [r for row, r in enumerate(batch) if not rows.tokens[row] and not r.generation.done]
        if len(batch) > 1 and fresh:  # find the row that fails on its own; the others run again alone
            for request in fresh:
                request.generation.done = True  # this batch's streamer lets go of it
            for request in fresh:
                request.generation.done = False
                self._run([request])
            batch = [r for r in batch if r not in fresh]
        message = error.args[0] if isinstance(error, EngineError) else describe_error(error)
        for request in batch:
            if not request.generation.done:
                request.generation.fail(EngineError(message))

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        return set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
