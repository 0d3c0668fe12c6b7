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
