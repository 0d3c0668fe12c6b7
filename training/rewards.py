"""Reward functions for GRPO, as plain functions of literal text (open-r1's rewards.py is the model).

The safety-aware rollout (training/grpo.py) has the GRM judge every final completion and hands the judge's raw
output to the reward function as the extra column `judge_output`; the reward is read from that text alone, so
it can be tested on literal strings in milliseconds. A judge output that cannot be read gives `None`: TRL then
leaves that completion out of its group's baseline (nanmean) instead of counting it as a fully unsafe answer.
"""

from __future__ import annotations

from collections.abc import Callable

from saferdemo.judgement import JudgementParseError, RewardConfig, parse_judgement, reward


def judged_reward(judge_output: str | None, config: RewardConfig | None = None) -> float | None:
    """The reward of one judged completion: the GRM's judgement through the gated reward, or None."""
    if judge_output is None:
        return None
    try:
        return reward(parse_judgement(judge_output), config)
    except JudgementParseError:
        return None


def grm_reward_function(config: RewardConfig | None = None) -> Callable[..., list[float | None]]:
    """The reward function TRL calls (its __name__, "grm_reward", names the logged reward column)."""

    def grm_reward(completions, judge_output, **kwargs) -> list[float | None]:
        return [judged_reward(output, config) for output in judge_output]

    return grm_reward
