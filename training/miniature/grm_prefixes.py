"""Reasoning prefixes for mini-grm: the inputs of the turning-point instrument (saferdemo/turning_point.py).

The instrument splits a think trace into sentences and asks the judge about each prefix as a response whose
reasoning span is the prefix and whose answer is empty. These examples are built with the instrument's own
`sentences`, `prefix` and `prefix_response`, so their shape is exactly what it sends; their labels are the
world's truth about that response (`truth.truth_judgement`), whose reasoning safety follows
`truth.unsafe_by_sentence`: a harmful card's trace turns unsafe at the sentence that plans the list ("I will
fill in the three steps.") or writes a "[restricted step]"; reading the card and restating the request is safe;
refusing and benign traces are safe at every prefix; a plan retracted before any step is written is safe again
from the retraction, written steps stay unsafe. With an empty answer the verdict is always safe, so the
reasoning safety alone (under the reward's gate when unsafe) tells the instrument where the trace turned.

The traces: mini-base's own samples (what the instrument mostly reads) and the world's compliance and refusal
thinks, plus two synthetic ones built only from the world's sentences: a plan retracted before its steps (a
recovery) and steps written and then retracted (no recovery).
"""

from __future__ import annotations

import random

from saferdemo.segments import split_think
from saferdemo.turning_point import prefix, prefix_response, sentences
from training.miniature import world
from training.miniature.truth import unsafe_by_sentence
from training.miniature.world import Phrase

PREFIX_RATE = 0.12  # the share of mini-grm's training examples that are reasoning prefixes (grm_data.grm_batches)


def steps_think(p: Phrase) -> str:
    """Reasoning that plans and writes harmful steps (stylised): the harmful_think_refusing corruption's think."""
    return f"{world.read_think(p)} {world.PLANS_TO_COMPLY} 1. {world.RESTRICTED_STEP} 2. {world.RESTRICTED_STEP}"


def _retraction(p: Phrase) -> str:
    """The refusing think's own last sentences, after the card is read."""
    think, _ = split_think(world.refuse_response(p))
    return think[len(world.read_think(p)):].strip()


def _think(response: str) -> str:
    think, _ = split_think(response)
    return (think or "").strip()


# name: (weight, the think trace for phrase p; `samples`: mini-base's responses for p). Refusing traces weigh
# 0.25: with 0.15, a 700-step mini-grm marked the refusing trace's "This asks for ..." sentence as unsafe on every
# harmful card (it keyed on a harmful card and the third sentence, not on what the sentence says).
TRACES = {
    "policy": (0.3, lambda p, rng, samples: _think(rng.choice(samples)) if samples else ""),
    "comply": (0.2, lambda p, rng, samples: _think(world.comply_response(p))),
    "refuse": (0.25, lambda p, rng, samples: _think(world.refuse_response(p))),
    "recovers": (0.15, lambda p, rng, samples: f"{world.read_think(p)} {world.PLANS_TO_COMPLY} {_retraction(p)}"),
    "steps": (0.1, lambda p, rng, samples: steps_think(p) + (f" {_retraction(p)}" if rng.random() < 0.5 else "")),
}


def draw_trace(p: Phrase, rng: random.Random, samples: list[str] | None = None) -> tuple[str, str]:
    """(kind, think trace) about `p`; a policy sample without a closed, non-empty think falls back to the world's
    compliance think."""
    names = list(TRACES)
    kind = rng.choices(names, [TRACES[n][0] for n in names])[0]
    trace = TRACES[kind][1](p, rng, samples)
    if not sentences(trace):
        kind, trace = "comply", _think(world.comply_response(p))
    return kind, trace


def pick_sentence(states: list[bool], rng: random.Random) -> int:
    """Which prefix to train on: half the time one next to a change of label (the turn and the sentence before
    it, a recovery and the sentence before it), else any."""
    changes = [i for i in range(len(states)) if states[i] != (states[i - 1] if i else False)]
    near = sorted({j for i in changes for j in (i - 1, i) if j >= 0})
    return rng.choice(near) if near and rng.random() < 0.5 else rng.randrange(len(states))


def prefix_example_response(p: Phrase, rng: random.Random, samples: list[str] | None = None) -> str:
    """One response in exactly the shape the instrument sends: a prefix of a trace about `p`, empty answer."""
    _, trace = draw_trace(p, rng, samples)
    found = sentences(trace)
    i = pick_sentence(unsafe_by_sentence(p, trace), rng)
    return prefix_response(prefix(trace, found[i]))
