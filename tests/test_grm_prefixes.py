"""mini-grm's reasoning-prefix examples (training/miniature/grm_prefixes.py): exactly the turning-point instrument's
input, labelled by the rule in truth.unsafe_by_sentence, at their share of the GRM's batches. No model runs: a
stand-in engine answers every judge prompt with the truth label, as a perfectly trained mini-grm would."""

import random
from types import SimpleNamespace

import pytest
from PIL import Image

from saferdemo.judge import GRMClient
from saferdemo.judgement import RewardConfig
from saferdemo.segments import split_reflection, split_think
from saferdemo.turning_point import grm_prefix_judge, locate, sentences
from training.miniature import grm_data, world
from training.miniature import grm_prefixes as gp
from training.miniature.truth import judge_prefix, truth_judgement, unsafe_by_sentence

PHRASES = world.load_phrases()
HARMFUL = [p for p in PHRASES if p.harmful]
BENIGN = [p for p in PHRASES if not p.harmful]
IMAGE = Image.new("RGB", (56, 56), "white")
REQUEST = "Complete the list on the card."
EARLIER = [("[image] Fill in the three empty steps.", "Sorry, I can't help with that.")]


def think(response: str) -> str:
    return split_think(response)[0]


def response_of(conversation: list[dict]) -> str:
    return conversation[0]["content"][-1]["text"].rpartition("\n\nResponse:\n")[2]


class TruthEngine:
    """A perfect mini-grm for card `p`: writes the truth label of every response it is asked about, and keeps
    the judge prompts it was given."""

    def __init__(self, p):
        self.p, self.conversations = p, []

    def generate_batch(self, conversations, images, params, batch_size=16):
        self.conversations += conversations
        return [judge_prefix(self.p, response_of(c)) + truth_judgement(self.p, response_of(c)).to_compact_json()
                for c in conversations]


def instrument(p, trace: str):
    """The turning point the instrument finds on `trace` with a perfect judge, and the judge prompts it sent."""
    engine = TruthEngine(p)
    client = GRMClient(engine, grm_data.RUBRIC, conversation=True)
    return locate(trace, grm_prefix_judge(client, IMAGE, REQUEST, EARLIER)), engine.conversations


@pytest.mark.parametrize("kind", list(gp.TRACES))
def test_prefix_examples_are_exactly_what_the_instrument_sends(kind, monkeypatch):
    monkeypatch.setattr(gp, "TRACES", {kind: gp.TRACES[kind]})
    for p in (HARMFUL[0], HARMFUL[-1], BENIGN[0]):
        samples = [world.comply_response(p)]
        _, trace = gp.draw_trace(p, random.Random(0), samples)
        point, sent = instrument(p, trace)
        assert len(sent) == len(point.sentences) == len(sentences(trace)) >= 3
        for i, conversation in enumerate(sent):  # `<think>\nPREFIX\n</think>\n`, the prefix ending at sentence i
            assert response_of(conversation) == f"<think>\n{trace[: point.sentences[i].end]}\n</think>\n"
        rng = random.Random(1)
        trained = [gp.prefix_example_response(p, rng, samples) for _ in range(40)]
        trained = [r for r in trained if trace.startswith(think(r))]  # `steps` may add a retraction or not
        assert trained
        for response in trained:
            example = grm_data.judge_example(p, IMAGE, REQUEST, response, EARLIER, "judge_prefix")
            assert example.messages in sent and split_think(response)[1] == ""


def test_the_worlds_compliance_turns_at_its_plan_and_refusals_never_do():
    for p in HARMFUL:
        point, _ = instrument(p, think(world.comply_response(p)))
        assert point.sentences[point.first_unsafe].text == world.PLANS_TO_COMPLY  # read, restate: safe; plan: unsafe
        assert point.first_unsafe == 2 and point.recovered_at is None
        assert point.judged == {0: False, 1: False, 2: True}
        for refusal in (world.refuse_response(p), split_reflection(world.reflection_response(p, False, True))[1]):
            point, _ = instrument(p, think(refusal))
            assert point.first_unsafe is None and not any(point.judged.values())
        kept = split_reflection(world.reflection_response(p, False, False))[1]  # a reflection that keeps complying
        assert instrument(p, think(kept))[0].first_unsafe == 2
    for p in BENIGN:  # a benign card's reasoning is never unsafe, over-refusals included
        for response in (world.comply_response(p), world.refuse_response(p)):
            point, _ = instrument(p, think(response))
            assert point.first_unsafe is None and len(point.judged) == len(point.sentences)


def test_a_plan_retracted_before_its_steps_recovers_but_written_steps_stay_unsafe():
    for p in HARMFUL[::5]:
        recovers = gp.TRACES["recovers"][1](p, random.Random(0), None)
        point, _ = instrument(p, recovers)
        assert (point.first_unsafe, point.recovered_at) == (2, len(point.sentences) - 1)
        assert point.sentences[point.recovered_at].text == "I should not help."
        steps = gp.steps_think(p) + " " + recovers.split(world.PLANS_TO_COMPLY)[1].strip()
        point, _ = instrument(p, steps)
        assert point.first_unsafe == 2 and point.recovered_at is None
        assert all(point.judged[i] for i in range(2, len(point.sentences)))


def test_prefix_labels_agree_with_the_whole_response_and_the_gate():
    gate = RewardConfig().gate_threshold
    for p in [*HARMFUL[::4], *BENIGN[::4]]:
        for response in (world.comply_response(p), world.refuse_response(p)):
            trace = think(response)
            states = unsafe_by_sentence(p, trace)
            whole = truth_judgement(p, response)
            assert states[-1] == (whole.penalties["unsafe_reasoning"] < 0)
            for s, unsafe in zip(sentences(trace), states):
                label = truth_judgement(p, f"<think>\n{trace[: s.end]}\n</think>\n")
                assert label.verdict == "safe" and (label.reasoning["safety"] < gate) == unsafe
                assert label.penalties["contradiction"] == 0  # an empty answer contradicts nothing


class Images:
    """A stand-in sft.ImagePool: the batches only need some image of each kind."""

    no_card = [IMAGE]

    def figstep_card(self, p, rng, difficulty):
        return IMAGE

    def unreadable(self, rng, difficulty):
        return IMAGE


def test_prefixes_take_their_share_of_the_grm_batches():
    samples = {p.phrase: [world.comply_response(p), world.refuse_response(p)] for p in PHRASES}
    batches = grm_data.grm_batches(PHRASES, samples, 0.4, Images())
    examples = batches(random.Random(0), SimpleNamespace(batch_size=500), 1.0)
    prefixes = [e for e in examples if e.kind == "judge_prefix"]
    assert gp.PREFIX_RATE == 0.12 and 0.08 <= len(prefixes) / len(examples) <= 0.16
    assert {e.phrase.harmful for e in prefixes} == {True, False}
    for e in prefixes:
        response = response_of(e.messages)
        assert response.startswith("<think>\n") and response.endswith("\n</think>\n")
        assert e.target.startswith(judge_prefix(e.phrase))
    assert any('"unsafe_reasoning": -3' in e.target for e in prefixes)
    others = [response_of(e.messages) for e in examples if e.kind == "judge"]
    assert not any(r.endswith("\n</think>\n") and split_think(r)[1] == "" for r in others if r.startswith("<think>"))
    none = grm_data.grm_batches(PHRASES, samples, 0.4, Images(), prefix_rate=0.0)
    assert all(e.kind == "judge" for e in none(random.Random(0), SimpleNamespace(batch_size=50), 1.0))
