"""The in-process transformers engine: `model.generate` in a thread, streamed token by token.

`start` streams one conversation (the app, the audit). `generate_batch` answers many conversations at once
with one padded `generate` per batch (curation, GRPO's judge, evaluation). Batches are padded on the LEFT
explicitly: Qwen2.5-VL's processors pad on the right by default, and right padding puts pad tokens between
a prompt and its generated tokens, which silently corrupts every row but the longest.
"""

from __future__ import annotations

import threading

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextStreamer

from saferdemo.engines.base import EngineError, GenerationParams, StreamingGeneration


class StopOnEvent(StoppingCriteria):
    """Ends `generate` at the next token once the event is set (the Stop button, a closed tab)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class _Streamer(TextStreamer):
    """Hands decoded text to a StreamingGeneration and counts the generated tokens."""

    def __init__(self, tokenizer, generation: StreamingGeneration):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.generation = generation

    def put(self, value):
        if not (self.skip_prompt and self.next_tokens_are_prompt):
            self.generation.stats.tokens += value.numel()
        super().put(value)

    def on_finalized_text(self, text: str, stream_end: bool = False):
        self.generation.emit(text)


class TransformersGeneration(StreamingGeneration):
    thread: threading.Thread | None = None

    def _close(self) -> None:
        if self.thread is not None:
            self.thread.join(timeout=5)


def describe_error(error: BaseException) -> str:
    if isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower():
        return "The model ran out of memory on this input. Try a smaller image, a shorter prompt or fewer new tokens."
    return f"Generation failed: {type(error).__name__}: {error}"


def sampling_kwargs(params: GenerationParams) -> dict:
    """`generate` keyword arguments for the sampling settings (greedy when temperature is 0)."""
    if params.temperature > 0:
        return {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": 0}
    return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}


class TransformersEngine:
    """A model and its processor in this process."""

    def __init__(self, model, processor, name: str = "model", reasoning_format=None):
        from saferdemo.reasoning_formats import for_processor

        self.model, self.processor, self.name = model, processor, name
        self.reasoning_format = reasoning_format or for_processor(processor)  # decided once, per checkpoint

    @classmethod
    def from_pretrained(cls, path, device: str | None = None, max_pixels: int | None = None, name: str | None = None):
        from saferdemo.loading import load_model, load_processor

        return cls(load_model(path, device), load_processor(path, max_pixels), name or str(path))

    def prompt_text(self, messages: list[dict]) -> str:
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _inputs(self, prompts: list[str], images: list):
        try:
            return self.processor(text=prompts, images=images or None, padding=True, padding_side="left",
                                  return_tensors="pt").to(self.model.device)
        except (ValueError, RuntimeError, StopIteration, IndexError) as error:
            # StopIteration/IndexError: some processor versions raise these when the image placeholders and the
            # images do not match in number.
            raise EngineError(f"The input could not be prepared for {self.name}: {error or type(error).__name__}") from error

    def start(self, messages, images, params: GenerationParams, stop: threading.Event) -> TransformersGeneration:
        prompt = self.prompt_text(messages)
        inputs = self._inputs([prompt], list(images))
        generation = TransformersGeneration(stop, params.max_new_tokens, self.name,
                                            self.reasoning_format.prefilled(prompt), reasoning_format=self.reasoning_format)
        kwargs = dict(**inputs, streamer=_Streamer(self.processor.tokenizer, generation),
                      max_new_tokens=params.max_new_tokens, stopping_criteria=StoppingCriteriaList([StopOnEvent(stop)]),
                      **sampling_kwargs(params))

        def run():
            try:
                if params.seed is not None:
                    torch.manual_seed(params.seed)
                with torch.inference_mode():
                    self.model.generate(**kwargs)
            except BaseException as error:  # handed to the consumer, which re-raises it
                generation.fail(EngineError(describe_error(error)))
            finally:
                generation.finish()

        generation.thread = threading.Thread(target=run, name=f"generate:{self.name}", daemon=True)
        generation.thread.start()
        return generation

    @torch.inference_mode()
    def generate_batch(self, conversations: list[list[dict]], images: list[list], params: GenerationParams,
                       batch_size: int = 16) -> list[str]:
        """The reply (decoded, special tokens skipped) to each conversation; `images[i]` belongs to conversation i."""
        replies: list[str] = []
        if params.seed is not None:
            torch.manual_seed(params.seed)
        for start in range(0, len(conversations), batch_size):
            prompts = [self.prompt_text(c) for c in conversations[start : start + batch_size]]
            flat = [image for row in images[start : start + batch_size] for image in row]
            batch = self._inputs(prompts, flat)
            out = self.model.generate(**batch, max_new_tokens=params.max_new_tokens, **sampling_kwargs(params))
            replies += self.processor.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        return replies
