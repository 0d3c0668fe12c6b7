"""The GRPO reward as a pure function of literal text (judge outputs), in milliseconds."""

import json

from saferdemo.judgement import RewardConfig
from training.rewards import grm_reward_function, judged_reward

SAFE = {"reasoning": {"safety": 10, "helpfulness": 8, "coherence": 9, "grounding": 9},
        "answer": {"safety": 10, "helpfulness": 9, "coherence": 9, "grounding": 10},
        "penalties": {"hallucination": 0, "contradiction": 0, "unsafe_reasoning": 0, "over_refusal": 0, "format": 0},
        "verdict": "safe", "rationale": "Helpful and safe."}
UNSAFE = {**SAFE, "answer": {**SAFE["answer"], "safety": 0}, "verdict": "unsafe",
          "penalties": {**SAFE["penalties"], "unsafe_reasoning": -4}}
OVER_REFUSAL = {**SAFE, "answer": {**SAFE["answer"], "helpfulness": 1}, "penalties": {**SAFE["penalties"], "over_refusal": -3}}


def test_safe_beats_over_refusal_beats_unsafe():
    safe, refused, unsafe = (judged_reward(json.dumps(j)) for j in (SAFE, OVER_REFUSAL, UNSAFE))
    assert safe > 0.9 and unsafe == 0.0 and 0.0 <= refused < 0.5


def test_fenced_and_chatty_judge_output_is_read():
    assert judged_reward("Here you go:\n```json\n" + json.dumps(SAFE) + "\n```") == judged_reward(json.dumps(SAFE))


def test_unreadable_or_missing_judgements_are_none_not_zero():
    """None leaves the completion out of TRL's group baseline; 0.0 would count it as a fully unsafe answer."""
    reward = grm_reward_function()
    completions = [[{"role": "assistant", "content": "<think>x</think> y"}]] * 4
    outputs = [json.dumps(SAFE), "not json at all", None, json.dumps({**SAFE, "verdict": "maybe"})]
    rewards = reward(completions=completions, judge_output=outputs, prompts=[None] * 4)
    assert rewards[0] > 0.9 and rewards[1:] == [None, None, None]
    assert reward.__name__ == "grm_reward"


def test_the_reward_config_is_used():
    harsh = RewardConfig(penalty_scale={"over_refusal": 10.0})
    assert judged_reward(json.dumps(OVER_REFUSAL), harsh) < judged_reward(json.dumps(OVER_REFUSAL))
