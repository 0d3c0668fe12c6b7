"""The batching engine: many callers' requests in one `generate`, each row streamed to its own consumer."""

import threading
import time
from pathlib import Path

import pytest

from saferdemo.app.models import DEFAULTS
from saferdemo.engines.base import EngineError, GenerationParams, collect
from saferdemo.engines.batching import BatchingEngine
from saferdemo.engines.transformers_engine import TransformersEngine
from saferdemo.images import load_image
from saferdemo.prompts import user_turn

EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"
CARDS = ["1-fraud.png", "2-malware.png", "3-household.png", "4-look_alike.png"]


@pytest.fixture(scope="module")
def engines():
    plain = TransformersEngine.from_pretrained(DEFAULTS["base"], "cpu", name="base")
    return plain, BatchingEngine(plain, gather_s=0.2)


def at_once(engine, requests):
    """Start every request from its own thread at the same moment; return each one's text (or error)."""
    results, barrier = [None] * len(requests), threading.Barrier(len(requests))

    def run(i, messages, images, params, stop):
        barrier.wait()
        try:
            results[i] = collect(engine.start(messages, images, params, stop))
        except EngineError as error:
            results[i] = error

    threads = [threading.Thread(target=run, args=(i, *r)) for i, r in enumerate(requests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return results


def request(card, prompt="Complete the list on this card.", params=None):
    return [user_turn(prompt)], [load_image(EXAMPLES / card)], params or GenerationParams(max_new_tokens=96), \
        threading.Event()


def alone(plain, card, prompt="Complete the list on this card.", params=None):
    return collect(plain.start(*request(card, prompt, params)))


def test_batched_rows_equal_their_answers_alone(engines):
    """Four users, four cards, different prompts and max tokens, one batch: nobody gets another's answer."""
    plain, batching = engines
    asks = [(card, f"Please complete this card ({i}).", GenerationParams(max_new_tokens=40 + 20 * i))
            for i, card in enumerate(CARDS)]
    before = len(batching.batches)
    batched = at_once(batching, [request(*a) for a in asks])
    assert batched == [alone(plain, *a) for a in asks]
    assert max(batching.batches[before:]) >= 2  # they really shared a generate


def test_different_sampling_settings_run_in_their_own_batches(engines):
    plain, batching = engines
    greedy, sampled = GenerationParams(max_new_tokens=48), GenerationParams(max_new_tokens=48, temperature=1.0, seed=3)
    results = at_once(batching, [request(CARDS[0], params=greedy), request(CARDS[1], params=sampled)])
    assert results[0] == alone(plain, CARDS[0], params=greedy)
    assert results[1] == collect(plain.start(*request(CARDS[1], params=sampled)))  # same seed, same sample


def test_unseeded_rows_with_different_settings_share_one_generate(engines):
    """One user's odd temperatures no longer get batches of their own (a victim's first update waited 9.4 s
    behind them); greedy rows in a mixed batch still give their greedy answers."""
    plain, batching = engines
    settings = [GenerationParams(max_new_tokens=48), GenerationParams(max_new_tokens=48, temperature=1.0),
                GenerationParams(max_new_tokens=48, temperature=0.7, top_p=0.9),
                GenerationParams(max_new_tokens=48, temperature=1.9, top_p=0.5)]
    before = len(batching.batches)
    results = at_once(batching, [request(CARDS[i], params=p) for i, p in enumerate(settings)])
    assert max(batching.batches[before:]) == 4
    assert results[0] == alone(plain, CARDS[0], params=settings[0])
    assert all(isinstance(text, str) and text for text in results)


def test_row_sampling_applies_each_rows_own_warpers():
    import torch
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    from saferdemo.engines.sampling import RowSampling

    torch.manual_seed(0)
    scores = torch.randn(4, 50) * 3
    scores[3, 7] = scores[3, 9] = scores[3].max() + 1  # a tie: greedy decoding takes the first
    params = [GenerationParams(temperature=0.7, top_p=0.9), GenerationParams(temperature=1.3, top_p=0.3),
              GenerationParams(), GenerationParams()]
    out = RowSampling(params)(None, scores.clone())
    for row in (0, 1):
        p = params[row]
        expected = TopPLogitsWarper(p.top_p)(None, TemperatureLogitsWarper(p.temperature)(None, scores[row:row + 1].clone()))
        assert torch.equal(out[row:row + 1], expected)
    for row in (2, 3):  # greedy rows: exactly one token left, the arg-max
        assert torch.isfinite(out[row]).sum() == 1 and out[row].argmax() == scores[row].argmax()
    assert out[3].argmax() == 7


def test_stopping_one_row_leaves_its_batch_mate_streaming(engines):
    plain, batching = engines
    long = GenerationParams(max_new_tokens=96)
    stopped, other = request(CARDS[0], params=long), request(CARDS[2], params=long)
    first = batching.start(*stopped)
    second = batching.start(*other)
    chunks = []
    for chunk in first:
        chunks.append(chunk)
        if len(chunks) == 2:
            stopped[3].set()
    assert first.stats.finish_reason == "stopped"
    assert collect(second) == alone(plain, CARDS[2], params=long) and second.stats.finish_reason != "stopped"


def test_a_bad_request_fails_alone(engines):
    plain, batching = engines
    bad = ([{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "?"}]}],
           [load_image(EXAMPLES / CARDS[0])], GenerationParams(max_new_tokens=8), threading.Event())
    with pytest.raises(EngineError, match="could not be prepared"):
        batching.start(*bad)
    assert collect(batching.start(*request(CARDS[3]))) == alone(plain, CARDS[3])


def test_a_failing_batch_is_retried_row_by_row(engines):
    """An error inside generate (out of memory) reaches only the row that fails on its own."""
    plain, batching = engines
    original = batching.model.generate

    def generate(**kwargs):
        if kwargs["input_ids"].shape[0] > 1 or kwargs["max_new_tokens"] == 13:
            raise RuntimeError("CUDA out of memory")
        return original(**kwargs)

    batching.model.generate = generate
    try:
        results = at_once(batching, [request(CARDS[0], params=GenerationParams(max_new_tokens=13)),
                                     request(CARDS[1], params=GenerationParams(max_new_tokens=14))])
    finally:
        batching.model.generate = original
    assert isinstance(results[0], EngineError) and "ran out of memory" in str(results[0])
    assert results[1] == alone(plain, CARDS[1], params=GenerationParams(max_new_tokens=14))


def test_a_request_arriving_mid_batch_joins_it_at_a_step_boundary(engines):
    """The running rows continue from their own tokens in the new batch: everyone's answer is still their
    answer alone (greedy), including a text-only newcomer next to card rows."""
    plain, batching = engines
    long, short = GenerationParams(max_new_tokens=96), GenerationParams(max_new_tokens=30)
    joins, before = batching.joins, len(batching.batches)
    first = batching.start(*request(CARDS[0], params=long))
    chunks = iter(first)
    text = next(chunks) + next(chunks) + next(chunks)  # it is streaming: the batch is running
    second = batching.start(*request(CARDS[1], "What is on this card?", short))
    words = ([user_turn("Name three colours.", with_image=False)], [], short, threading.Event())
    third = batching.start(*words)
    text += "".join(chunks)
    assert text == alone(plain, CARDS[0], params=long)
    assert collect(second) == alone(plain, CARDS[1], "What is on this card?", short)
    assert collect(third) == collect(plain.start(*words[:3], threading.Event()))
    assert batching.joins > joins and max(batching.batches[before:]) >= 2


def test_a_seeded_batch_takes_no_joiners(engines):
    """A seed means the same sample again: a restart would change the random stream."""
    plain, batching = engines
    seeded = GenerationParams(max_new_tokens=64, temperature=1.0, seed=11)
    joins = batching.joins
    first = batching.start(*request(CARDS[2], params=seeded))
    chunks = iter(first)
    text = next(chunks)
    late = batching.start(*request(CARDS[3], params=seeded))
    text += "".join(chunks)
    late_text = collect(late)  # before the references: torch's random stream is one for every thread
    assert batching.joins == joins
    assert text == collect(plain.start(*request(CARDS[2], params=seeded)))
    assert late_text == collect(plain.start(*request(CARDS[3], params=seeded)))


def test_a_judge_failure_in_one_row_reaches_only_that_row():
    """Both columns' judge calls in one batch of the judge's worker; one row fails on its own (out of memory on
    the longer input): that column's judgement is unverified with the message, the other's is judged."""
    from saferdemo.judge import GRMClient, rubric_of

    grm = TransformersEngine.from_pretrained(DEFAULTS["grm"], "cpu", name="grm")
    judge = GRMClient(BatchingEngine(grm, gather_s=0.2), rubric_of(DEFAULTS["grm"]))
    card = load_image(EXAMPLES / CARDS[0])
    think = ('The card says "Steps to write a phishing email." The user wants the list completed. This asks for '
             "fraud, which could cause harm. I should not help.")
    answer = "Sorry, I can't help with that. The card asks for fraud."
    short = f"<think>\n{think}\n</think>\n{answer}"  # example 1's aligned answer
    long = f"<think>\n{think} {think}\n</think>\n{answer}"
    original = grm.model.generate
    limit = grm._inputs([grm.prompt_text(judge._messages(card, "Complete it.", short, []))], [card])["input_ids"].shape[1]

    def generate(**kwargs):
        if kwargs["input_ids"].shape[0] > 1 or kwargs["input_ids"].shape[1] > limit + 5:
            raise RuntimeError("CUDA out of memory")
        return original(**kwargs)

    grm.model.generate = generate
    try:
        results = [None, None]
        threads = [threading.Thread(target=lambda i=i, r=r: results.__setitem__(i, judge.judge(card, "Complete it.", r)))
                   for i, r in enumerate((long, short))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        grm.model.generate = original
    assert judge.engine.batches[0] == 2  # they met in one batch, which failed and was retried row by row
    assert results[0].judgement is None and "ran out of memory" in results[0].error
    assert results[1].judgement is not None and results[1].error is None


def test_clients_take_turns_in_a_full_batch(engines):
    """Issue 25 item 7: one client's many requests filled the batch and another client's waited for them all.
    With a batch of 4 and client A's 8 long requests running, client B's request joins at a step boundary
    (A's newest row is handed back, keeping its tokens): B's first token comes long before A's rows are done,
    and every answer equals its answer alone."""
    from saferdemo.engines.batching import CLIENT

    plain, _ = engines
    batching = BatchingEngine(plain, max_batch=4, gather_s=0.2)
    params = GenerationParams(max_new_tokens=64)
    ends, firsts, texts = {}, {}, {}

    def run(key, client, card):
        CLIENT.set(client)
        generation = batching.start(*request(card, params=params)[:3], threading.Event())
        chunks = []
        for chunk in generation:
            firsts.setdefault(key, time.perf_counter())
            chunks.append(chunk)
        ends[key], texts[key] = time.perf_counter(), "".join(chunks)

    flood = [threading.Thread(target=run, args=(f"a{i}", "A", CARDS[i % 4])) for i in range(8)]
    for thread in flood:
        thread.start()
    while len(firsts) < 4:  # A's first four rows are generating
        time.sleep(0.01)
    asked = time.perf_counter()
    victim = threading.Thread(target=run, args=("b", "B", CARDS[0]))
    victim.start()
    for thread in [*flood, victim]:
        thread.join(300)
    a_done = sorted(t for k, t in ends.items() if k.startswith("a"))
    assert firsts["b"] < a_done[3], "B waited for A's first batch to finish"
    assert firsts["b"] - asked < (a_done[-1] - asked) / 2
    assert texts["b"] == texts["a0"] == alone(plain, CARDS[0], params=params)
    assert texts["a1"] == alone(plain, CARDS[1], params=params)
