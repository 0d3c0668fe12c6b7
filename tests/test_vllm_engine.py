"""The vLLM engine on the miniature checkpoints. Runs only where vllm and a CUDA GPU exist."""

import threading
import time
from pathlib import Path

import pytest

from saferdemo.app.models import DEFAULTS
from saferdemo.engines.base import EngineError, GenerationParams
from saferdemo.engines.vllm_engine import vllm_unavailable_reason
from saferdemo.images import load_image
from saferdemo.prompts import user_turn
from saferdemo.segments import parse

REASON = vllm_unavailable_reason()
CARD = Path(__file__).resolve().parent.parent / "assets" / "examples" / "1-fraud.png"


def test_unavailable_vllm_is_explained():
    if REASON is None:
        pytest.skip("vLLM is available here")
    from saferdemo.engines.vllm_engine import VLLMEngine

    with pytest.raises(EngineError, match="vLLM"):
        VLLMEngine.from_pretrained(str(DEFAULTS["base"]))


@pytest.mark.skipif(REASON is not None, reason=REASON or "")
def test_vllm_streams_and_stops():
    from saferdemo.engines.vllm_engine import VLLMEngine

    engine = VLLMEngine.from_pretrained(str(DEFAULTS["base"]), "base")
    try:
        generation = engine.start([user_turn("Complete the list on this card, step by step.")], [load_image(CARD)],
                                  GenerationParams(max_new_tokens=128), threading.Event())
        chunks = list(generation)
        segments = parse("".join(chunks), generation.think_prefilled, done=True)
        assert len(chunks) > 3 and "phishing" in segments.think and segments.answer
        stop = threading.Event()
        long = engine.start([user_turn("go", with_image=False)], [], GenerationParams(max_new_tokens=4000, temperature=1.0), stop)
        for index, _ in enumerate(long):
            if index == 3:
                stop.set()
                stopped = time.perf_counter()
        assert time.perf_counter() - stopped < 1.0 and long.stats.finish_reason == "stopped"
    finally:
        engine.shutdown()


def test_engine_arguments_follow_the_checkpoint(real_checkpoint, tmp_path):
    """Read from the checkpoint where vLLM would otherwise refuse to start or fail mid-conversation (no GPU
    needed: the arguments are plain data)."""
    from saferdemo.engines.vllm_engine import engine_args

    mini = engine_args(str(DEFAULTS["base"]), None, None, 0.28, 8, None)
    assert mini["max_model_len"] == 4096  # the miniature models' context; vLLM refuses a longer one
    assert mini["limit_mm_per_prompt"] == {"image": 8, "video": 0} and "mm_processor_kwargs" not in mini
    real = engine_args(str(real_checkpoint), None, None, 0.28, 8, 401408)
    assert real["max_model_len"] == 8192 and real["mm_processor_kwargs"] == {"max_pixels": 401408}
    (tmp_path / "adapter_config.json").write_text('{"r": 128, "base_model_name_or_path": "x"}')
    lora = engine_args(str(real_checkpoint), str(tmp_path), 32768, 0.28, 8, None)
    assert lora["enable_lora"] and lora["max_lora_rank"] == 128 and lora["max_model_len"] == 32768


@pytest.mark.parametrize("rank,wanted", [(1, 1), (2, 8), (8, 8), (12, 16), (64, 64), (100, 128), (300, 320),
                                         (512, 512)])
def test_max_lora_rank_is_rounded_up_to_a_rank_vllm_accepts(tmp_path, rank, wanted):
    """vLLM 0.31's max_lora_rank is a Literal of (1, 8, 16, 32, 64, 128, 256, 320, 512): any other value is
    refused at start, and an adapter above it is refused at load."""
    from saferdemo.engines.vllm_engine import lora_rank

    (tmp_path / "adapter_config.json").write_text(f'{{"r": {rank}, "base_model_name_or_path": "x"}}')
    assert lora_rank(str(tmp_path)) == wanted


def test_a_lora_rank_above_vllms_largest_is_explained(tmp_path):
    from saferdemo.engines.vllm_engine import lora_rank

    (tmp_path / "adapter_config.json").write_text('{"r": 1024, "base_model_name_or_path": "x"}')
    with pytest.raises(EngineError, match="rank 1024 is above 512"):
        lora_rank(str(tmp_path))
