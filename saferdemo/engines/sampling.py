"""Sampling settings per row: rows with different temperatures and top-p share one batched `generate`.

`generate` applies one set of sampling settings to a whole batch. Grouping requests by their settings made one
user's odd temperatures cost everyone a batch of their own (issue 25: a victim's first update went from 0.53 s
to 9.4 s); instead each row's own warpers run as a logits processor and `generate` only draws the sample.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from saferdemo.engines.base import GenerationParams
from saferdemo.engines.transformers_engine import sampling_kwargs


def batch_sampling_kwargs(params: list[GenerationParams]) -> dict:
    """`generate` settings for rows with these parameters: the stock ones where all rows agree (greedy stays
    `do_sample=False`), else sampling with each row's own temperature and top-p applied by `RowSampling`."""
    if len({(p.temperature, p.top_p) for p in params}) == 1:
        return sampling_kwargs(params[0])
    return {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0,
            "logits_processor": LogitsProcessorList([RowSampling(params)])}


class RowSampling(LogitsProcessor):
    """Each row's own temperature and top-p (as transformers' temperature and top-p warpers apply them), and
    greedy rows (temperature 0) reduced to their arg-max token, so `generate`'s one sampling step serves all."""

    def __init__(self, params: list[GenerationParams]):
        self.temperature = torch.tensor([p.temperature for p in params], dtype=torch.float32)
        self.top_p = torch.tensor([p.top_p for p in params], dtype=torch.float32)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        temperature, top_p = self.temperature.to(scores.device), self.top_p.to(scores.device)
        greedy = temperature <= 0
        scores = scores / torch.where(greedy, torch.ones_like(temperature), temperature).unsqueeze(1).to(scores.dtype)
        ascending, order = torch.sort(scores, descending=False)
        cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative <= (1 - top_p).unsqueeze(1)
        drop[:, -1] = False  # the most likely token always stays
        drop = drop.scatter(1, order, drop)
        best = torch.zeros_like(drop).scatter(1, scores.argmax(dim=-1, keepdim=True), True)
        drop = torch.where(greedy.unsqueeze(1), ~best, drop)  # arg-max as greedy decoding picks it (first of ties)
        return scores.masked_fill(drop, -float("inf"))
