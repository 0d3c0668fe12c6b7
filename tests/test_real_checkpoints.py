"""The GPU path's code on a checkpoint in the REAL Qwen2.5-VL formats (tokenizer, template, processor defaults,
right padding, 128k positions), tiny and random: what the miniature family cannot show."""

import json
import threading

import pytest
from PIL import Image

from saferdemo.engines.base import GenerationParams
from saferdemo.engines.transformers_engine import TransformersEngine
from saferdemo.judge import GRMClient
from saferdemo.loading import load_model, load_processor
from saferdemo.prompts import user_turn


@pytest.fixture(scope="module")
def engine(real_checkpoint):
    return TransformersEngine(load_model(real_checkpoint, "cpu"), load_processor(real_checkpoint), "real-format")


def cards():
    return [Image.new("RGB", (224, 224), (250, 250, 250)), Image.new("RGB", (448, 224), (30, 60, 90))]


def test_the_real_processor_pads_on_the_right(engine):
    assert engine.processor.tokenizer.padding_side == "right"  # as shipped: batches must ask for left padding


def test_batched_generation_equals_one_by_one(engine):
    """Right padding would put pads between a prompt and its tokens and change every row but the longest."""
    conversations = [[user_turn("Hi")], [user_turn("Please complete the numbered list on this card, step by step.")]]
    images = [[card] for card in cards()]
    params = GenerationParams(max_new_tokens=8)
    batched = engine.generate_batch(conversations, images, params, batch_size=2)
    alone = [engine.generate_batch([c], [i], params, batch_size=1)[0] for c, i in zip(conversations, images)]
    assert batched == alone and all(batched)


def test_streaming_and_stop_on_the_real_format(engine):
    stop = threading.Event()
    generation = engine.start([user_turn("Describe this.")], cards()[:1], GenerationParams(max_new_tokens=4000), stop)
    for count, _ in enumerate(generation):
        if count == 5:
            stop.set()
    assert generation.stats.finish_reason == "stopped" and generation.stats.tokens < 100


def test_judge_client_batches_on_the_real_format(engine):
    """A random model writes no judgement: every result says so, none raises."""
    judge = GRMClient(engine, "full", max_new_tokens=8)
    results = judge.judge_batch(cards(), ["Complete the list."] * 2, ["<think>x</think>y", "z"])
    assert [r.judgement for r in results] == [None, None] and all(r.error for r in results)


def test_loading_merges_a_lora_adapter(real_checkpoint, tmp_path, engine):
    from peft import LoraConfig, get_peft_model

    from training.grpo import VISION_TOWER

    model = load_model(real_checkpoint, "cpu")
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=targets, exclude_modules=VISION_TOWER,
                                                  init_lora_weights=False))
    wrapped = [name for name, _ in peft_model.named_modules() if name.endswith("lora_A")]
    assert wrapped and not any("visual" in name for name in wrapped)  # the vision tower's MLPs stay plain
    peft_model.save_pretrained(tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(real_checkpoint)
    merged = load_model(tmp_path / "adapter", "cpu")
    assert merged.config.model_type == "qwen2_5_vl" and not hasattr(merged, "peft_config")
    assert load_processor(tmp_path / "adapter").tokenizer.padding_side == "right"  # the base's processor


def test_an_image_count_mismatch_is_a_message(engine):
    """Processors raise ValueError (5.23+) or a bare StopIteration (5.17-5.22) here: both become a message."""
    from saferdemo.engines.base import EngineError

    two_placeholders = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "?"}]}]
    with pytest.raises(EngineError, match="could not be prepared"):
        engine.start(two_placeholders, cards()[:1], GenerationParams(max_new_tokens=4), threading.Event())
