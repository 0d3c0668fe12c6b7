"""One streaming interface over generation backends; this module holds the in-process transformers one.

An engine turns (messages, images, parameters, stop event) into a `Generation`: iterate it for text
chunks as they are produced; afterwards it holds the timings (time to first token, tokens/s) and why it
finished. Setting the stop event ends generation at the next token. An exception in the generation thread
(out of memory, a bad input) is re-raised to whoever iterates, as an `EngineError` with a clear message:
never a silent hang.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import torch
from PIL import Image
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from saferdemo.prompts import THINK_OPEN

# How long the consumer waits for the next chunk before deciding the generation thread is stuck.
CHUNK_TIMEOUT_S = 300.0


class EngineError(RuntimeError):
    """Generation failed; the message is meant for the user."""


@dataclass
class GenerationParams:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None


@dataclass
class GenerationStats:
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    finished_at: float | None = None
    tokens: int = 0
    finish_reason: str = ""  # stop | length | stopped | error

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started

    @property
    def seconds(self) -> float:
        return (self.finished_at or time.perf_counter()) - self.started

    @property
    def tokens_per_s(self) -> float | None:
        if self.first_token_at is None or self.tokens < 2:
            return None
        return (self.tokens - 1) / max(1e-6, (self.finished_at or time.perf_counter()) - self.first_token_at)

    def as_dict(self) -> dict:
        rnd = lambda v: None if v is None else round(v, 3)  # noqa: E731
        return {"ttft_s": rnd(self.ttft_s), "seconds": rnd(self.seconds), "tokens": self.tokens,
                "tokens_per_s": rnd(self.tokens_per_s), "finish_reason": self.finish_reason}


class Generation(Protocol):
    stats: GenerationStats
    think_prefilled: bool

    def __iter__(self) -> Iterator[str]: ...


class Engine(Protocol):
    name: str

    def start(self, messages: list[dict], images: list[Image.Image], params: GenerationParams,
              stop: threading.Event) -> Generation: ...


def collect(generation: Generation) -> str:
    return "".join(generation)


class StopOnEvent(StoppingCriteria):
    """Ends `generate` at the next token once the event is set (the Stop button, a closed tab)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class CountingStreamer(TextIteratorStreamer):
    """TextIteratorStreamer that also counts generated tokens and times the first one."""

    def __init__(self, tokenizer, stats: GenerationStats, **kwargs):
        super().__init__(tokenizer, **kwargs)
        self.stats = stats

    def put(self, value):
        if not (self.skip_prompt and self.next_tokens_are_prompt):
            self.stats.tokens += value.numel()
            if self.stats.first_token_at is None:
                self.stats.first_token_at = time.perf_counter()
        super().put(value)


class TransformersGeneration:
    def __init__(self, streamer: CountingStreamer, thread: threading.Thread, stop: threading.Event,
                 max_new_tokens: int, think_prefilled: bool):
        self.streamer, self.thread, self.stop = streamer, thread, stop
        self.stats = streamer.stats
        self.max_new_tokens, self.think_prefilled = max_new_tokens, think_prefilled
        self.error: BaseException | None = None

    def __iter__(self) -> Iterator[str]:
        completed = False
        try:
            for chunk in self.streamer:
                if chunk:
                    yield chunk
            completed = True
        except queue.Empty as error:  # nothing for CHUNK_TIMEOUT_S: the generation thread is stuck
            raise EngineError(f"generation produced nothing for {CHUNK_TIMEOUT_S:.0f} s and was stopped") from error
        finally:
            if not completed:  # the consumer left (Stop, a closed tab) or gave up: stop generating
                self.stop.set()
            self.thread.join(timeout=5)
        self.stats.finished_at = time.perf_counter()
        if self.error is not None:
            self.stats.finish_reason = "error"
            raise EngineError(describe_error(self.error)) from self.error
        if self.stop.is_set():
            self.stats.finish_reason = "stopped"
        else:
            self.stats.finish_reason = "length" if self.stats.tokens >= self.max_new_tokens else "stop"


def describe_error(error: BaseException) -> str:
    if isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower():
        return "The model ran out of memory on this input. Try a smaller image, a shorter prompt or fewer new tokens."
    return f"Generation failed: {type(error).__name__}: {error}"


class TransformersEngine:
    """`model.generate` in a thread, streamed through `TextIteratorStreamer`."""

    def __init__(self, model, processor, name: str = "model"):
        self.model, self.processor, self.name = model, processor, name

    @classmethod
    def from_pretrained(cls, path, device: str | None = None, max_pixels: int | None = None, name: str | None = None):
        from saferdemo.loading import load_model, load_processor

        return cls(load_model(path, device), load_processor(path, max_pixels), name or str(path))

    def prompt_text(self, messages: list[dict]) -> str:
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def start(self, messages, images, params: GenerationParams, stop: threading.Event) -> TransformersGeneration:
        prompt = self.prompt_text(messages)
        try:
            inputs = self.processor(text=[prompt], images=list(images) or None, return_tensors="pt").to(self.model.device)
        except (ValueError, RuntimeError) as error:
            raise EngineError(f"The input could not be prepared for {self.name}: {error}") from error
        stats = GenerationStats()
        streamer = CountingStreamer(self.processor.tokenizer, stats, skip_prompt=True, skip_special_tokens=True,
                                    timeout=CHUNK_TIMEOUT_S)
        kwargs = dict(**inputs, streamer=streamer, max_new_tokens=params.max_new_tokens,
                      stopping_criteria=StoppingCriteriaList([StopOnEvent(stop)]))
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        generation = TransformersGeneration(streamer, None, stop, params.max_new_tokens,
                                            prompt.rstrip().endswith(THINK_OPEN))

        def run():
            try:
                if params.seed is not None:
                    torch.manual_seed(params.seed)
                with torch.inference_mode():
                    self.model.generate(**kwargs)
            except BaseException as error:  # handed to the consumer, which re-raises it
                generation.error = error
                streamer.end()

        generation.thread = threading.Thread(target=run, name=f"generate:{self.name}", daemon=True)
        generation.thread.start()
        return generation
