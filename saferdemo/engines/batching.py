"""Many users, one model: a worker per model runs the requests of all live turns as batched `generate` calls.

`start` prepares a request's inputs in the caller's thread (a bad image fails that request alone) and queues
it; one worker thread runs what has gathered (up to `max_batch` rows) as one left-padded batch with images.
Rows keep their own temperature and top-p (`RowSampling`); only seeded requests batch apart (their random
stream). Each row streams to its own consumer and finishes as soon as IT is done, while its batch-mates go on.

Requests join a running batch at a step boundary (continuous batching by recomputation): the worker ends the
running `generate` at the next step and starts a new one over the old rows' prompts plus their tokens so far,
and the newcomers (about one prefill). A batch takes joiners only once it has run as long as its own prefill
took (at most half of the time goes to re-prefills); this is how a turn's two judge calls meet in one batch.
Seeded groups never take joiners (a restart would change the random stream). (transformers' `generate_batch`
takes token ids only: no images, checked in 5.24.)

A failure of a whole batch (out of memory) is retried row by row, each row continuing from its own tokens,
so the error reaches only the rows that fail on their own. Clients take turns (`CLIENT`, set per column thread
by the app: its session): a batch fills round-robin across clients, and a full batch hands rows of its heaviest
client back to the queue for a waiting client with fewer (they keep their tokens and continue later).
"""

from __future__ import annotations

import atexit
import threading
import time
from collections import deque
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from saferdemo.engines.base import EngineError, GenerationParams, StreamingGeneration
from saferdemo.engines.fair_share import fairer, hand_back, round_robin
from saferdemo.engines.sampling import batch_sampling_kwargs
from saferdemo.engines.transformers_engine import TransformersEngine, describe_error


CLIENT: ContextVar[str | None] = ContextVar("saferdemo_client", default=None)  # whose request (the app's session)


class BatchedGeneration(StreamingGeneration):
    """One row of a batch, seen by its consumer like any other generation."""

    done = False  # set by the worker when this row needs no more tokens


@dataclass(eq=False)  # compared by identity (its inputs are tensors)
class Request:
    inputs: dict  # this request's processor outputs, one row (input ids, mask, its images' pixels)
    params: GenerationParams
    generation: BatchedGeneration
    tokens: list[int] = field(default_factory=list)  # generated so far (a restarted batch continues from them)
    shown: int = 0  # characters of the decoded tokens already streamed
    client: str | None = None  # whose request (CLIENT): clients take turns for a batch's rows

    @property
    def group(self) -> tuple:
        """Requests that can share one `generate` call: every unseeded request (each row samples with its own
        settings); a seeded one only with the same seed and settings, whose random stream it must reproduce."""
        p = self.params
        return ("unseeded",) if p.seed is None else (p.temperature > 0, p.temperature, p.top_p, p.seed)

    @property
    def joinable(self) -> bool:
        return self.params.seed is None


class _Rows(BaseStreamer, StoppingCriteria):
    """One `generate` call: streams each row's new tokens to its consumer, tells `generate` which rows are
    finished, and ends the call early (all rows, none finished) when waiting requests should join."""

    def __init__(self, tokenizer, requests: list[Request], eos_ids: set[int], should_join=None):
        self.tokenizer, self.requests, self.eos_ids = tokenizer, requests, eos_ids
        self.should_join = should_join  # () -> bool, asked at each step once the batch has run long enough
        self.prompt_seen, self.joining = False, False
        self.started, self.first_step_at = time.perf_counter(), None

    def put(self, value):
        if not self.prompt_seen:  # generate passes the prompt first
            self.prompt_seen = True
            return
        self.first_step_at = self.first_step_at or time.perf_counter()
        for row, token in enumerate(value.reshape(-1).tolist()):
            request = self.requests[row]
            if request.generation.done:
                continue
            if token in self.eos_ids:
                _finish(self.tokenizer, request)
                continue
            request.tokens.append(token)
            request.generation.stats.tokens += 1
            self._emit(request)
            if len(request.tokens) >= request.params.max_new_tokens:
                _finish(self.tokenizer, request)

    def end(self):
        """Rows are finished by the worker after `generate` returns: rows ended early for joiners go on."""

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        for request in self.requests:
            if request.generation.stop.is_set():
                _finish(self.tokenizer, request)
        done = [r.generation.done for r in self.requests]
        if not all(done) and self._join_now():
            self.joining = True
            done = [True] * len(done)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    def _join_now(self) -> bool:
        if self.should_join is None or self.first_step_at is None:
            return False
        prefill_s = self.first_step_at - self.started
        return time.perf_counter() - self.first_step_at >= prefill_s and self.should_join()

    def _emit(self, request: Request) -> None:
        text = self.tokenizer.decode(request.tokens, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
            return
        request.generation.emit(text[request.shown:])
        request.shown = len(text)

    def unfinished(self) -> list[Request]:
        return [r for r in self.requests if not r.generation.done]


def _finish(tokenizer, request: Request) -> None:
    generation = request.generation
    if not generation.done:
        generation.done = True
        generation.emit(tokenizer.decode(request.tokens, skip_special_tokens=True)[request.shown:])
        generation.finish()


class BatchingEngine:
    """A TransformersEngine whose `start` requests are batched across all callers by one worker thread."""

    def __init__(self, engine: TransformersEngine, max_batch: int = 16, gather_s: float = 0.01):
        self.engine, self.name = engine, engine.name
        self.model, self.processor = engine.model, engine.processor
        self.reasoning_format = engine.reasoning_format
        self.max_batch, self.gather_s = max_batch, gather_s
        self._waiting: deque[Request] = deque()
        self._arrived = threading.Condition()
        self.batches: list[int] = []  # the size of every generate call (for tests and benchmarks)
        self.joins = 0  # generate calls ended early so that waiting requests could join
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
        inputs = self.engine._inputs([prompt], list(images))  # a bad input fails here, for this request alone
        generation = BatchedGeneration(stop, params.max_new_tokens, self.name, self.reasoning_format.prefilled(prompt),
                                       reasoning_format=self.reasoning_format)
        with self._arrived:
            self._waiting.append(Request(dict(inputs), params, generation, client=CLIENT.get()))
            self._arrived.notify()
        return generation

    # ---------------------------------------------------------------- the worker

    def _work(self) -> None:
        running: list[Request] = []  # rows of a batch that ended early for joiners
        while True:
            with self._arrived:
                while not self._waiting and not running:
                    self._arrived.wait()
            self._idle.clear()
            batch = running
            try:
                if not running:
                    time.sleep(self.gather_s)  # let the other requests of the same moment arrive
                running = self._make_room(running)
                batch = running + self._take(running[0].group if running else None, self.max_batch - len(running),
                                             running)
                running = self._run(batch) if batch else []
            except Exception as error:  # a bug here must reach these rows' users, never end the worker
                self._fail(batch, EngineError(f"Generation failed: {type(error).__name__}: {error}"))
                running = []
            finally:
                self._idle.set()

    def _take(self, group: tuple | None, room: int, running: list[Request] = ()) -> list[Request]:
        """Waiting requests of `group` (default: the oldest one's), at most `room`, clients taking turns."""
        candidates = []
        with self._arrived:
            for request in list(self._waiting):
                if request.generation.stop.is_set():  # stopped while waiting
                    self._waiting.remove(request)
                    _finish(self.processor.tokenizer, request)
                    continue
                group = request.group if group is None else group
                if request.group == group:
                    candidates.append(request)
            taken = round_robin(candidates, running, room)
            for request in taken:
                self._waiting.remove(request)
        return taken

    def _make_room(self, running: list[Request]) -> list[Request]:
        """A full batch hands its heaviest client's newest rows back to the queue (they keep their tokens)."""
        with self._arrived:
            for request in [r for r in self._waiting if r.joinable and not r.generation.stop.is_set()]:
                if len(running) < self.max_batch or not running or not running[0].joinable:
                    break
                if fairer(running, request):
                    row = hand_back(running)
                    running = [r for r in running if r is not row]
                    self._waiting.append(row)
        return running

    def _should_join(self, batch: list[Request]) -> bool:
        """Whether to end this batch's generate now: the oldest waiting request can join (a seeded one is not
        passed over: the batch drains and it goes next), or a full batch would be fairer with it."""
        with self._arrived:
            head = self._waiting[0] if self._waiting else None
            if head is None or head.group != batch[0].group or head.generation.stop.is_set():
                return False
            live = [r for r in batch if not r.generation.done]
            return len(live) < self.max_batch or any(fairer(live, r) for r in self._waiting if r.joinable)

    def _run(self, batch: list[Request], joinable: bool = True) -> list[Request]:
        """One generate call over `batch`; returns the rows that ended early for joiners."""
        self.batches.append(len(batch))
        joinable = joinable and batch[0].joinable
        rows = _Rows(self.processor.tokenizer, batch, self._eos_ids(),
                     (lambda: self._should_join(batch)) if joinable else None)
        params = batch[0].params
        try:
            if params.seed is not None:
                torch.manual_seed(params.seed)
            with torch.inference_mode():
                self.model.generate(**self._batch_inputs(batch), streamer=rows,
                                    stopping_criteria=StoppingCriteriaList([rows]),
                                    max_new_tokens=max(r.params.max_new_tokens - len(r.tokens) for r in batch),
                                    **batch_sampling_kwargs([r.params for r in batch]))
        except Exception as error:
            self._failed(rows.unfinished(), error)
            return []
        if rows.joining:
            self.joins += 1
            return rows.unfinished()
        for request in rows.unfinished():  # generate ended them (its own end of sequence or length)
            _finish(self.processor.tokenizer, request)
        return []

    def _batch_inputs(self, batch: list[Request]) -> dict:
        """The rows' prompts plus their tokens so far, padded on the left; their images' tensors concatenated.

        A per-token tensor (input ids, attention mask, token types) is one with the prompt's length: its
        continuation is the new tokens in input ids, 1 in the mask and 0 (text) in the others."""
        per_token: dict[str, list] = {}
        stacked: dict[str, list] = {}
        for i, r in enumerate(batch):
            ids = r.inputs["input_ids"]
            new = torch.tensor(r.tokens, dtype=ids.dtype, device=ids.device)
            for key, value in r.inputs.items():
                if torch.is_tensor(value) and value.shape == ids.shape:
                    tail = new if key == "input_ids" else torch.full_like(new, int(key == "attention_mask"))
                    per_token.setdefault(key, [None] * len(batch))[i] = torch.cat([value[0], tail.to(value.dtype)])
                elif torch.is_tensor(value):  # an image's pixels and grid: rows' images in order
                    stacked.setdefault(key, []).append(value)
        lengths = [r.inputs["input_ids"].shape[-1] + len(r.tokens) for r in batch]
        device = batch[0].inputs["input_ids"].device
        pad = self.processor.tokenizer.pad_token_id
        pad = self.processor.tokenizer.eos_token_id if pad is None else pad
        out = {}
        for key, rows in per_token.items():
            fill = pad if key == "input_ids" else 0
            rows = [torch.zeros(n, dtype=torch.long, device=device) if row is None else row for row, n in zip(rows, lengths)]
            out[key] = torch.stack([torch.cat([row.new_full((max(lengths) - len(row),), fill), row]) for row in rows])
        return out | {key: torch.cat(values) for key, values in stacked.items()}

    def _failed(self, unfinished: list[Request], error: Exception) -> None:
        if len(unfinished) > 1:  # find the rows that fail on their own; each continues alone from its tokens
            for request in unfinished:
                self._run([request], joinable=False)
            return
        self._fail(unfinished, error if isinstance(error, EngineError) else EngineError(describe_error(error)))

    def _fail(self, requests: list[Request], error: EngineError) -> None:
        for request in requests:
            if not request.generation.done:
                request.generation.fail(error)
                _finish(self.processor.tokenizer, request)

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        return set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
