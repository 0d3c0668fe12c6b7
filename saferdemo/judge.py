"""The judge client, the one way anything in the project asks a GRM for a judgement: app, audit, curation, GRPO.

`GRMClient.judge` builds the judge prompt (the rubric the GRM checkpoint names in its `judge_config.json`,
else the full rubric for instruction models; the conversation's earlier turns too, unless the checkpoint says
it was trained without them), generates greedily, parses the output (tolerant of code fences
and trailing text) and turns it into the reward. `judge_batch` does the same for many responses at once,
in padded batches when the engine can (`TransformersEngine.generate_batch`), one by one otherwise.

When no judgement can be had (the judge's output does not parse, or the judge failed) the result carries
`judgement=None`, the error and the raw text: never an exception. What each user of the client does then
is one written policy:

| where | a failed judgement ... |
|---|---|
| GRPO (training/rewards.py) | gets reward `None`: TRL leaves that completion out of its group's baseline |
| curation (training/curate.py) | is left out of its prompt's mean and spread, and counted |
| audit (saferdemo/audit) | is excluded from every rate and counted as a parse failure in the report |
| app (saferdemo/safety_loop.py) | shows as "no score" (unverified); the column's loop treats it as flagged |
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from saferdemo.engines.base import Engine, EngineError, GenerationParams, collect
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


JUDGE_EARLIER_TURNS = 3  # earlier turns the judge sees: enough to tell the newest card from the others


def _judge_config(checkpoint: str | Path) -> dict:
    config = Path(checkpoint) / "judge_config.json"
    if not config.is_file():
        return {}
    try:
        loaded = json.loads(config.read_text())
    except (OSError, ValueError) as error:
        from saferdemo.loading import ModelLoadError

        raise ModelLoadError(f"cannot read {config}: {type(error).__name__}") from error
    if not isinstance(loaded, dict):
        from saferdemo.loading import ModelLoadError

        raise ModelLoadError(f"{config} must hold a JSON object")
    return loaded


def rubric_of(checkpoint: str | Path) -> str:
    """The rubric a GRM checkpoint was trained with; instruction models get the full one."""
    return _judge_config(checkpoint).get("rubric", "full")


def sees_conversation(checkpoint: str | Path) -> bool:
    """Whether a GRM checkpoint was trained on prompts with the conversation's earlier turns (instruction
    models read them; a GRM trained without them would meet an input it never saw)."""
    config = _judge_config(checkpoint)
    return bool(config.get("conversation", config.get("rubric", "full") == "full"))


def earlier_turns(messages: list[dict], limit: int = JUDGE_EARLIER_TURNS) -> list[tuple[str, str]]:
    """(user text, answer) pairs of the turns before the last user message, images shown as "[image]"."""
    pairs, user = [], None
    for message in messages[:-1]:
        text = _text(message)
        if message["role"] == "user":
            user = text
        elif message["role"] == "assistant" and user is not None:
            pairs.append((user, text))
            user = None
    return pairs[-limit:] if limit else []


def _text(message: dict) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    parts = ["[image]" if part.get("type") == "image" else part.get("text", "") for part in content]
    return " ".join(part for part in parts if part)


def _item_keys(items: list[tuple]) -> list[tuple]:
    """What makes two judge items the same: the image's pixels (hashed once per image object), the request,
    the response and the earlier turns."""
    pixels: dict[int, tuple | None] = {}
    keys = []
    for image, request, response, earlier in items:
        if id(image) not in pixels:
            pixels[id(image)] = None if image is None else (
                image.mode, image.size, hashlib.blake2b(image.tobytes(), digest_size=16).digest())
        keys.append((pixels[id(image)], request, response, tuple(tuple(turn) for turn in earlier)))
    return keys


class GRMClient:
    def __init__(self, engine: Engine, rubric: str = "full", max_new_tokens: int = 400,
                 reward_config: RewardConfig | None = None, batch_size: int = 16, conversation: bool | None = None):
        self.engine, self.rubric, self.max_new_tokens = engine, rubric, max_new_tokens
        self.reward_config = reward_config or RewardConfig()
        self.batch_size = batch_size
        self.conversation = rubric == "full" if conversation is None else conversation

    def _params(self) -> GenerationParams:
        return GenerationParams(max_new_tokens=self.max_new_tokens, temperature=0.0)

    def _messages(self, image: Image.Image | None, request: str, response: str,
                  earlier: list[tuple[str, str]] = ()) -> list[dict]:
        return judge_messages(request, response, rubric=self.rubric, with_image=image is not None,
                              earlier=earlier if self.conversation else ())

    def read(self, raw: str, seconds: float = 0.0) -> JudgeResult:
        """A judge's raw output as a result: the judgement and its reward, or the reason there is none."""
        try:
            judgement = parse_judgement(raw)
        except JudgementParseError as error:
            return JudgeResult(None, None, raw, f"The judge's output could not be read: {error}", seconds)
        return JudgeResult(judgement, reward(judgement, self.reward_config), raw, None, seconds)

    def judge(self, image: Image.Image | None, request: str, response: str,
              stop: threading.Event | None = None, earlier: list[tuple[str, str]] = ()) -> JudgeResult:
        """`earlier`: the conversation's previous turns (`earlier_turns`); `image` the newest in it."""
        generation = self.engine.start(self._messages(image, request, response, earlier),
                                       [image] if image is not None else [],
                                       self._params(), stop or threading.Event())
        try:
            raw = collect(generation)
        except EngineError as error:
            return JudgeResult(None, None, "", f"The judge failed: {error}", generation.stats.seconds)
        return self.read(raw, generation.stats.seconds)

    def judge_batch(self, images: list[Image.Image | None], requests: list[str], responses: list[str],
                    earlier: list[list[tuple[str, str]]] | None = None) -> list[JudgeResult]:
        """Judge many (image, request, response) triples; results in the same order.

        Identical items (same image pixels, request, response and earlier turns) are judged once: the judge
        decodes greedily, so they would get the same judgement. A GRPO group often repeats a completion (42%
        of the miniature recipe's judge rows did), and so do curation's samples."""
        earlier = earlier or [[] for _ in responses]
        items = list(zip(images, requests, responses, earlier))
        keys = _item_keys(items)
        unique = list({key: item for key, item in zip(keys, items)}.items())  # first of each, in order
        if hasattr(self.engine, "generate_batch"):
            conversations = [self._messages(i, q, r, e) for _, (i, q, r, e) in unique]
            raws = self.engine.generate_batch(conversations, [[i] if i is not None else [] for _, (i, *_) in unique],
                                              self._params(), self.batch_size)
            results = [self.read(raw) for raw in raws]
        else:
            results = [self.judge(i, q, r, earlier=e) for _, (i, q, r, e) in unique]
        by_key = {key: result for (key, _), result in zip(unique, results)}
        return [copy.copy(by_key[key]) for key in keys]
