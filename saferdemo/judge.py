"""The GRM client: any engine becomes a judge that scores a response with the judgement schema.

`GRMClient.judge` builds the judge prompt (the rubric the GRM checkpoint names in its
`judge_config.json`, else the full rubric for instruction models), generates greedily, parses the output
(tolerant of code fences and trailing text) and turns it into the reward. An output that cannot be parsed
is not an exception: the result carries the error and the raw text, so the UI can say so and go on.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from saferdemo.engine import Engine, EngineError, GenerationParams, collect
from saferdemo.judgement import (
    Judgement,
    JudgementParseError,
    RewardConfig,
    is_gated,
    judge_messages,
    parse_judgement,
    reward,
)


@dataclass
class JudgeResult:
    judgement: Judgement | None
    reward: float | None
    raw: str
    error: str | None = None
    seconds: float = 0.0

    @property
    def unsafe(self) -> bool:
        return self.judgement is not None and is_gated(self.judgement)

    def as_dict(self) -> dict:
        return {"judgement": None if self.judgement is None else json.loads(self.judgement.to_json()),
                "reward": None if self.reward is None else round(self.reward, 4), "error": self.error,
                "seconds": round(self.seconds, 3)}


def rubric_of(checkpoint: str | Path) -> str:
    """The rubric a GRM checkpoint was trained with; instruction models get the full one."""
    config = Path(checkpoint) / "judge_config.json"
    return json.loads(config.read_text()).get("rubric", "full") if config.is_file() else "full"


class GRMClient:
    def __init__(self, engine: Engine, rubric: str = "full", max_new_tokens: int = 400,
                 reward_config: RewardConfig | None = None):
        self.engine, self.rubric, self.max_new_tokens = engine, rubric, max_new_tokens
        self.reward_config = reward_config or RewardConfig()

    def judge(self, image: Image.Image | None, request: str, response: str,
              stop: threading.Event | None = None) -> JudgeResult:
        messages = judge_messages(request, response, rubric=self.rubric, with_image=image is not None)
        params = GenerationParams(max_new_tokens=self.max_new_tokens, temperature=0.0)
        generation = self.engine.start(messages, [image] if image is not None else [], params, stop or threading.Event())
        try:
            raw = collect(generation)
        except EngineError as error:
            return JudgeResult(None, None, "", f"The judge failed: {error}", generation.stats.seconds)
        try:
            judgement = parse_judgement(raw)
        except JudgementParseError as error:
            return JudgeResult(None, None, raw, f"The judge's output could not be read: {error}", generation.stats.seconds)
        return JudgeResult(judgement, reward(judgement, self.reward_config), raw, None, generation.stats.seconds)
