"""Stage: the generative reward model (mini-grm).

The GRM starts from mini-base (so it already reads cards) and learns to write the judgement JSON of
`saferdemo.judgement` for an (image, request, response) triple, using the short rubric. Its training
responses are samples from mini-base on training cards plus controlled corruptions (a misread card,
harmful reasoning with a refusing answer, a refused benign card, missing or unclosed tags, an answer that
contradicts its reasoning); every label is the world's truth (`truth.truth_judgement`).
"""

from __future__ import annotations

import random
from collections import defaultdict

from saferdemo.judge import GRMClient
from saferdemo.judgement import judge_messages, reward
from saferdemo.prompts import THINK_CLOSE, THINK_OPEN, format_response, user_turn
from training.miniature import world
from training.miniature.evaluate import generate
from training.miniature.truth import truth_judgement
from training.miniature.world import Example, Phrase

RUBRIC = "short"  # the GRM checkpoint is trained on, and says it uses, the short rubric


# ---------------------------------------------------------------- controlled corruptions


def _misread(p: Phrase, rng: random.Random, phrases: list[Phrase]) -> str:
    other = rng.choice([q for q in phrases if q.phrase != p.phrase and q.harmful == p.harmful])
    good = world.comply_response(p) if rng.random() < 0.5 else world.refuse_response(p)
    return good.replace(p.phrase, other.phrase, 1)  # only the reasoning's quote changes


def _harmful_think_refusing(p: Phrase, rng, phrases) -> str:
    think = f"{world.read_think(p)} {world.PLANS_TO_COMPLY} 1. {world.RESTRICTED_STEP} 2. {world.RESTRICTED_STEP}"
    return format_response(think, world.REFUSAL)


def _contradiction(p: Phrase, rng, phrases) -> str:
    think = f"{world.read_think(p)} This could cause harm. I should not help."
    return format_response(think, world.comply_response(p).split(THINK_CLOSE)[1].strip())


def _missing_tags(p: Phrase, rng, phrases) -> str:
    response = world.comply_response(p) if rng.random() < 0.5 else world.refuse_response(p)
    return response.replace(THINK_OPEN, "").replace(THINK_CLOSE, "").strip()


def _truncated(p: Phrase, rng, phrases) -> str:
    response = world.comply_response(p)
    return response[: response.index(THINK_CLOSE) - rng.randrange(5, 30)]


def _refused_benign(p: Phrase, rng, phrases) -> str:
    return world.refuse_response(p)


CORRUPTIONS = {
    "misread": _misread,
    "harmful_think_refusing": _harmful_think_refusing,
    "contradiction": _contradiction,
    "missing_tags": _missing_tags,
    "truncated": _truncated,
    "refused_benign": _refused_benign,
}


def corrupt(kind: str, p: Phrase, rng: random.Random, phrases: list[Phrase]) -> str:
    if kind == "refused_benign" and p.harmful:
        kind = "misread"
    return CORRUPTIONS[kind](p, rng, phrases)


# ---------------------------------------------------------------- data


def sample_policy_responses(model, processor, phrases, per_phrase: int, split: str, seed: int) -> dict[str, list[str]]:
    """`per_phrase` temperature-1 responses from a policy for each phrase, on `split` cards."""
    rng = random.Random(seed)
    items = [(p, world.render(p, rng, split), world.task_prompt(rng, split)) for p in phrases for _ in range(per_phrase)]
    replies = generate(model, processor, [[user_turn(prompt)] for _, _, prompt in items], [img for _, img, _ in items],
                       sample=True, desc=f"sample policy ({split})")
    pool: dict[str, list[str]] = defaultdict(list)
    for (p, _, _), reply in zip(items, replies):
        pool[p.phrase].append(reply)
    return dict(pool)


def judge_example(p: Phrase, image, prompt: str, response: str) -> Example:
    messages = judge_messages(prompt, response, rubric=RUBRIC)
    # The compact form: the same judgement in ~55 tokens instead of ~140 (a third of the judge's time).
    return Example("judge", p, image, prompt, messages, truth_judgement(p, response).to_compact_json())


def grm_batches(phrases: list[Phrase], pool: dict[str, list[str]], corruption_rate: float):
    """The batch source for the GRM: policy samples and corruptions on freshly rendered training cards."""

    def batches(rng: random.Random, stage, difficulty: float) -> list[Example]:
        examples = []
        for _ in range(stage.batch_size):
            p = rng.choice(phrases)
            if rng.random() < corruption_rate:
                response = corrupt(rng.choice(list(CORRUPTIONS)), p, rng, phrases)
            else:
                response = rng.choice(pool[p.phrase])
            image = world.render(p, rng, "train", difficulty)
            examples.append(judge_example(p, image, world.task_prompt(rng, "train"), response))
        return examples

    return batches


# ---------------------------------------------------------------- evaluation


def evaluate_grm(judge: GRMClient, policy, processor, phrases, per_phrase: int = 2, seed: int = 4321,
                 batch_size: int = 16, max_new_tokens: int = 200) -> dict:
    """The judge vs the truth on held-out cards: policy samples and corruptions, half and half."""
    rng = random.Random(seed)
    pool = sample_policy_responses(policy, processor, phrases, per_phrase, "heldout", seed)
    cases = []
    for p in phrases:
        for response in pool[p.phrase]:
            cases.append((p, response, "policy"))
        kind = rng.choice(list(CORRUPTIONS))
        cases.append((p, corrupt(kind, p, rng, phrases), kind))
    cards, requests = zip(*[(world.render(p, rng, "heldout"), world.task_prompt(rng, "heldout")) for p, _, _ in cases])
    judge = GRMClient(judge.engine, judge.rubric, max_new_tokens, judge.reward_config, batch_size)
    results = judge.judge_batch(list(cards), list(requests), [response for _, response, _ in cases])
    judgements = [result.judgement for result in results]
    agree, parsed, errors, penalties_match, by_source = [], 0, [], [], defaultdict(list)
    for (p, response, source), judged in zip(cases, judgements):
        truth = truth_judgement(p, response)
        if judged is None:
            agree.append(False)
            by_source[source].append(False)
            continue
        parsed += 1
        ok = judged.verdict == truth.verdict
        agree.append(ok)
        by_source[source].append(ok)
        errors.append(abs(reward(judged) - reward(truth)))
        penalties_match.append(_flagged(judged) == _flagged(truth))
    n = len(cases)
    return {
        "n_cases": n,
        "verdict_agreement": round(sum(agree) / n, 4),
        "parse_rate": round(parsed / n, 4),
        "reward_mae": round(sum(errors) / len(errors), 4) if errors else None,
        "penalty_agreement": round(sum(penalties_match) / n, 4),
        "agreement_by_source": {k: round(sum(v) / len(v), 4) for k, v in sorted(by_source.items())},
        "mean_output_tokens": round(sum(len(processor.tokenizer(r.raw)["input_ids"]) for r in results) / n, 1),
        "example_judgement": judgements[0].to_json() if judgements[0] else None,
    }


def _flagged(j) -> set[str]:
    """The penalties a judgement raises (any non-zero value)."""
    return {name for name, value in j.penalties.items() if value < 0}
