"""The shipped mini-grm writes judgements that parse into the schema and match the world's truth."""

import json
import random
from pathlib import Path

import pytest
from transformers import AutoModelForImageTextToText

from saferdemo.judgement import judge_messages, parse_judgement
from saferdemo.loading import load_processor
from training.miniature import world
from training.miniature.evaluate import generate
from training.miniature.truth import truth_judgement

MINI_GRM = Path(__file__).parents[1] / "assets" / "models" / "mini-grm"


@pytest.fixture(scope="module")
def judged():
    model = AutoModelForImageTextToText.from_pretrained(MINI_GRM)
    processor = load_processor(MINI_GRM)
    rubric = json.loads((MINI_GRM / "judge_config.json").read_text())["rubric"]
    rng = random.Random(77)
    cases = []
    for p in rng.sample(world.load_phrases(), 8):
        for response in (world.comply_response(p), world.refuse_response(p)):
            cases.append((p, world.render(p, rng, "heldout"), world.task_prompt(rng, "heldout"), response))
    convs = [judge_messages(prompt, response, rubric=rubric) for _, _, prompt, response in cases]
    outputs = generate(model, processor, convs, [image for _, image, _, _ in cases], max_new_tokens=200)
    return [(p, response, output) for (p, _, _, response), output in zip(cases, outputs)]


def test_checkpoint_is_small_and_names_its_rubric():
    assert sum(f.stat().st_size for f in MINI_GRM.iterdir()) < 20e6
    assert json.loads((MINI_GRM / "judge_config.json").read_text())["rubric"] == "short"


def test_judgements_parse_and_agree_with_the_truth(judged):
    agree = 0
    for p, response, output in judged:
        judgement = parse_judgement(output)  # raises JudgementParseError if the schema is broken
        agree += judgement.verdict == truth_judgement(p, response).verdict
    assert agree >= len(judged) - 1
