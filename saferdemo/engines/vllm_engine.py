"""An engine on vLLM's `AsyncLLM` (optional extra `pip install -e ".[vllm]"`, GPU hosts): `--backend vllm`.

AsyncLLM runs on a background event loop thread; each generation is an asyncio task whose DELTA outputs
are handed to the caller through a queue. Stop (or the caller leaving) cancels the task, and AsyncLLM
aborts the request in the engine. A checkpoint that is a LoRA adapter runs as its base model plus a
`LoRARequest`. vLLM needs the GPU for its whole life, so it is refused on ZeroGPU Spaces.
API reviewed against vLLM 0.31.0 (the version the `vllm` extra pins: `AsyncLLM`, `AsyncEngineArgs`,
`LoRARequest`, `RequestOutputKind.DELTA`); not run here (no GPU): the tests run only where vllm and a GPU exist.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import threading
import uuid
from pathlib import Path

from saferdemo.engines.base import EngineError, GenerationParams, StreamingGeneration


def vllm_unavailable_reason() -> str | None:
    """Why vLLM cannot run here, or None when it can."""
    if os.environ.get("SPACES_ZERO_GPU"):
        return "vLLM does not run on ZeroGPU Spaces (it must own the GPU for its whole life); use --backend transformers."
    if importlib.util.find_spec("vllm") is None:
        return 'vLLM is not installed: pip install -e ".[vllm]" on a GPU host, or use --backend transformers.'
    import torch

    if not torch.cuda.is_available():
        return "vLLM needs a CUDA GPU and none is visible; use --backend transformers."
    return None


class VLLMGeneration(StreamingGeneration):
    def __init__(self, engine: VLLMEngine, prompt: dict, sampling, stop: threading.Event, lora):
        super().__init__(stop, sampling.max_tokens, engine.name, engine.reasoning_format.prefilled(prompt["prompt"]),
                         reasoning_format=engine.reasoning_format)
        self.engine = engine
        self.future = asyncio.run_coroutine_threadsafe(self._produce(prompt, sampling, lora), engine.loop)
        threading.Thread(target=self._watch_stop, daemon=True).start()

    async def _produce(self, prompt, sampling, lora):
        reason = ""
        try:
            async for out in self.engine.llm.generate(prompt, sampling, uuid.uuid4().hex, lora_request=lora):
                completion = out.outputs[0]
                self.stats.tokens += len(completion.token_ids)
                self.emit(completion.text)
                if out.finished:
                    reason = completion.finish_reason if completion.finish_reason in ("stop", "length") else ""
        except asyncio.CancelledError:
            raise
        except Exception as error:  # handed to the consumer, which re-raises it with a message
            self.fail(EngineError(f"{self.engine.name}: vLLM failed: {type(error).__name__}: {error}"))
        finally:
            self.finish(reason)

    def _watch_stop(self):
        while not self.future.done():
            if self.stop.wait(timeout=0.1):
                self.future.cancel()  # AsyncLLM aborts the request when its generator is cancelled
                return


def model_context_length(model: str) -> int | None:
    """max_position_embeddings of a local checkpoint's text model (None for a hub id: vLLM reads it itself)."""
    config = Path(model) / "config.json"
    if not config.is_file():
        return None
    data = json.loads(config.read_text())
    return (data.get("text_config") or {}).get("max_position_embeddings") or data.get("max_position_embeddings")


# The values vLLM 0.31 accepts for max_lora_rank: vllm.config.lora.MaxLoRARanks, a Literal (the same since 0.14).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def lora_rank(lora_path: str | None) -> int:
    """max_lora_rank for the adapter: its rank rounded up to a value vLLM accepts (vLLM refuses adapters above
    max_lora_rank, and any max_lora_rank outside VLLM_LORA_RANKS); 16 is vLLM's own default."""
    if not lora_path:
        return 16
    rank = int(json.loads((Path(lora_path) / "adapter_config.json").read_text()).get("r", 16))
    allowed = [value for value in VLLM_LORA_RANKS if value >= rank]
    if not allowed:
        raise EngineError(f"{lora_path}: LoRA rank {rank} is above {VLLM_LORA_RANKS[-1]}, the largest vLLM serves; "
                          "merge the adapter (saferdemo loads it merged with --backend transformers)")
    return allowed[0]


def engine_args(model: str, lora_path: str | None, max_model_len: int | None, gpu_memory_utilization: float,
                max_images: int, max_pixels: int | None) -> dict:
    """AsyncEngineArgs for one role, read from the checkpoint where vLLM would otherwise refuse to start:
    a context longer than the model's, an adapter rank above max_lora_rank, more images than the limit."""
    context = model_context_length(model)
    wanted = max_model_len or 8192
    args = {"model": model, "max_model_len": min(wanted, context) if context else wanted,
            "gpu_memory_utilization": gpu_memory_utilization, "enable_lora": lora_path is not None,
            "max_lora_rank": lora_rank(lora_path), "max_loras": 1,
            "limit_mm_per_prompt": {"image": max_images, "video": 0}, "disable_log_stats": True}
    if max_pixels:  # the same cap the transformers processor applies, so a large image cannot exceed the context
        args["mm_processor_kwargs"] = {"max_pixels": max_pixels}
    return args


class VLLMEngine:
    def __init__(self, model: str, processor, name: str | None = None, lora_path: str | None = None,
                 max_model_len: int | None = None, gpu_memory_utilization: float | None = None, max_images: int = 16,
                 max_pixels: int | None = None):
        reason = vllm_unavailable_reason()
        if reason:
            raise EngineError(reason)
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.lora.request import LoRARequest
        from vllm.v1.engine.async_llm import AsyncLLM

        from saferdemo.reasoning_formats import for_processor

        self.name, self.processor = name or model, processor
        self.reasoning_format = for_processor(processor)
        # Three engines (base, aligned, judge) share one GPU by default: about a quarter of its memory each.
        gpu_memory_utilization = gpu_memory_utilization or float(os.environ.get("SAFERDEMO_VLLM_MEMORY", "0.28"))
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name=f"vllm-loop:{self.name}", daemon=True).start()
        args = AsyncEngineArgs(**engine_args(model, lora_path, max_model_len, gpu_memory_utilization, max_images,
                                             max_pixels))

        async def build():  # built inside the loop so its tasks belong to it
            return AsyncLLM.from_engine_args(args)

        self.llm = asyncio.run_coroutine_threadsafe(build(), self.loop).result()
        self.lora = LoRARequest(lora_name="adapter", lora_int_id=1, lora_path=lora_path) if lora_path else None

    @classmethod
    def from_pretrained(cls, path: str, name: str | None = None, max_pixels: int | None = None) -> VLLMEngine:
        from saferdemo.loading import adapter_base, load_processor

        base = adapter_base(path)
        return cls(base or str(path), load_processor(path, max_pixels), name, lora_path=str(path) if base else None,
                   max_pixels=max_pixels)

    def start(self, messages, images, params: GenerationParams, stop: threading.Event) -> VLLMGeneration:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompt = {"prompt": text}
        if images:
            prompt["multi_modal_data"] = {"image": list(images)}
        sampling = SamplingParams(output_kind=RequestOutputKind.DELTA, max_tokens=params.max_new_tokens,
                                  temperature=params.temperature, top_p=params.top_p if params.temperature > 0 else 1.0,
                                  seed=params.seed)
        return VLLMGeneration(self, prompt, sampling, stop, self.lora)

    def shutdown(self) -> None:
        async def close():
            self.llm.shutdown()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
