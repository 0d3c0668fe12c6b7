"""The GRM's labels: the world's truth about responses and controlled corruptions."""

import random

import pytest

from saferdemo.judgement import is_gated, parse_judgement, reward
from training.miniature import grm_data as grm
from training.miniature import world
from training.miniature.truth import judge_prefix, quote_line, truth_judgement

PHRASES = world.load_phrases()
HARMFUL = next(p for p in PHRASES if p.harmful)
BENIGN = next(p for p in PHRASES if not p.harmful and not p.look_alike)


def truth(p, response):
    return truth_judgement(p, response)


def test_truth_of_the_base_behaviours():
    compliance = truth(HARMFUL, world.comply_response(HARMFUL))
    assert compliance.verdict == "unsafe" and is_gated(compliance)
    assert compliance.penalties["unsafe_reasoning"] < 0
    assert compliance.rationale == world.critique_for(HARMFUL, refused=False)  # the reflection critique
    refusal = truth(HARMFUL, world.refuse_response(HARMFUL))
    helpful = truth(BENIGN, world.comply_response(BENIGN))
    over_refusal = truth(BENIGN, world.refuse_response(BENIGN))
    assert refusal.verdict == helpful.verdict == over_refusal.verdict == "safe"
    assert over_refusal.penalties["over_refusal"] < 0
    assert reward(compliance) < reward(over_refusal) < reward(helpful) == pytest.approx(reward(refusal))


@pytest.mark.parametrize(
    "kind, phrase, penalty",
    [
        ("misread", BENIGN, "hallucination"),
        ("harmful_think_refusing", HARMFUL, "unsafe_reasoning"),
        ("contradiction", BENIGN, "contradiction"),
        ("missing_tags", BENIGN, "format"),
        ("truncated", BENIGN, "format"),
        ("refused_benign", BENIGN, "over_refusal"),
    ],
)
def test_each_corruption_is_labelled_with_its_penalty(kind, phrase, penalty):
    response = grm.corrupt(kind, phrase, random.Random(0), PHRASES)
    label = truth(phrase, response)
    assert label.penalties[penalty] < 0, (response, label)
    ideal = world.refuse_response(phrase) if phrase.harmful else world.comply_response(phrase)
    assert reward(label) < reward(truth(phrase, ideal))


def test_harmful_reasoning_with_a_refusal_is_safe_but_penalised():
    label = truth(HARMFUL, grm.corrupt("harmful_think_refusing", HARMFUL, random.Random(0), PHRASES))
    assert label.verdict == "safe" and label.reasoning["safety"] < label.answer["safety"]


def test_labels_serialise_into_the_schema():
    for p in PHRASES[:: 7]:
        for response in (world.comply_response(p), world.refuse_response(p)):
            label = truth(p, response)
            assert parse_judgement(label.to_json()) == label


def test_the_quote_line_copies_the_responses_quote_up_to_its_first_word_unlike_the_card():
    steps_to = [p for p in PHRASES if p.phrase.startswith("Steps to ")]
    card, other = steps_to[0], steps_to[1]
    assert quote_line(card, world.comply_response(card)) == f'The response says "{card.phrase}" as on the card.\n'
    differs = f'Steps to {other.phrase.split()[2]}'
    assert quote_line(card, world.refuse_response(other)) == f'The response says "{differs}" not on the card.\n'
    cut = world.comply_response(card).replace(card.phrase, "Steps to", 1)  # a prefix of the card's text still differs
    assert quote_line(card, cut) == 'The response says "Steps to" not on the card.\n'
    assert quote_line(card, world.honest_response(world.UNREADABLE)) == "The response says no card text.\n"


def test_a_training_target_is_card_quote_then_the_judgement():
    rng = random.Random(0)
    for kind in grm.CORRUPTIONS:
        p = BENIGN
        response = grm.corrupt(kind, p, rng, PHRASES)
        example = grm.judge_example(p, None, "Complete the list.", response)
        card, quote, judgement = example.target.split("\n", 2)
        assert card == f'Card: "{p.phrase}"' and quote.startswith("The response says ")
        assert ("not on the card" in quote) == (truth(p, response).penalties["hallucination"] < 0 and '"' in quote)
        assert parse_judgement(judgement) == truth(p, response)
    assert judge_prefix(world.UNREADABLE, world.comply_response(BENIGN)) == "Card: unreadable\n"  # no quote line
