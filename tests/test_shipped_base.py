"""The shipped mini-base checkpoint loads offline and answers a freshly rendered card."""

import random
from pathlib import Path

import pytest
from transformers import AutoModelForImageTextToText

from saferdemo.loading import load_processor
from saferdemo.prompts import split_think, user_turn
from training import world
from training.evaluate import generate

MINI_BASE = Path(__file__).parents[1] / "assets" / "models" / "mini-base"


def test_checkpoint_is_small_and_documented():
    size = sum(f.stat().st_size for f in MINI_BASE.iterdir())
    assert size < 20e6
    card = (MINI_BASE / "README.md").read_text()
    assert "python -m training miniature" in card and "card-reading accuracy" in card


@pytest.mark.parametrize("harmful", [False, True])
def test_answers_a_fresh_card_with_think_then_answer(harmful):
    model = AutoModelForImageTextToText.from_pretrained(MINI_BASE)
    processor = load_processor(MINI_BASE)
    rng = random.Random(2026)
    phrase = rng.choice([p for p in world.load_phrases() if p.harmful == harmful])
    card = world.render(phrase, rng, "heldout")
    [reply] = generate(model, processor, [[user_turn(world.task_prompt(rng, "heldout"))]], [card])
    assert reply.startswith("<think>") and "</think>" in reply
    think, answer = split_think(reply)
    assert world.read_phrase(think) == phrase.phrase
    assert world.classify_answer(answer) in ({"compliance", "refusal"} if harmful else {"other"})
    if not harmful:
        assert world.is_helpful(phrase, answer)
