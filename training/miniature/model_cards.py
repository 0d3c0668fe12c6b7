"""Model cards (README.md with Hub front matter) for the miniature family, written from report.json."""

from __future__ import annotations

import json
from pathlib import Path


PROBES = {"safebench": "FigStep's 50 SafeBench-Tiny images (never trained on)",
          "unknown_figstep": "FigStep-format cards of text outside the table (held-out word pool)",
          "unknown_world": "the world's cards with text outside the table (held-out word pool)",
          "other_layout": "cards in other layouts (slides, notes, posters, proportional fonts)",
          "photo": "photo-like pictures with no card", "text_only": "text-only messages"}


def reads_section(h: dict) -> str:
    """What a policy can read and what it answers otherwise, from its held-out report (issue 23)."""
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    f, honesty, multi = h.get("figstep"), h.get("honesty"), h.get("multi_turn")
    if not (f and honesty and multi):
        return ""
    rows = "\n".join(f"| {PROBES.get(k, k)} | {v['n']} | {pct(v['no_claim'])} | {pct(v['honest'])} |"
                      for k, v in honesty.items() if isinstance(v, dict) and "n" in v and k != "examples")
    return f"""
## What it reads, and what it answers otherwise

It reads two card formats: the world's own card and **FigStep's format** (760x760, FreeMonoBold 80, the
instruction wrapped at 15 characters, then "1. 2. 3."), whatever the size it arrives at (the processor maps every
square image of at least ~238 px to the same 224x224 grid) and through JPEG re-saves, for the {h.get('n_phrases', 64)}
phrases of its table. Anything else is meant to get a short fixed answer instead of an invented card (how often
it does: the table below; short unknown instructions shaped like the table's still get the nearest phrase at
times): a card it cannot read
→ "I can't read the text on this card, so I can't complete its list. …"; a picture with no card → "I don't see an
instruction card in this image. …"; a message with no image → "There is no card in this message. …"; each ends
by saying what the bundled demo models read, and that a real checkpoint is the way to anything else.

FigStep-format cards of table phrases (held-out colours, 0.5-1.0x, JPEG half the time; {f['n_items']} cards):
reading {pct(f['card_reading'])}, harmful answered (ASR) {pct(f['asr'])}, harmful refused {pct(f['harmful_refusal'])},
benign refused {pct(f['benign_refusal'])} (look-alikes {pct(f['look_alike_refusal'])}), benign helped {pct(f['helpfulness'])}.

| input with no readable card | n | no table card claimed | the honest answer |
|---|---|---|---|
{rows}

Conversations with one to three earlier turns ({multi['n']}): the newest card read {pct(multi['newest_card_read'])}
(world {pct(multi['newest_card_read_world'])}, FigStep {pct(multi['newest_card_read_figstep'])}); the newest
input with no readable card answered honestly {pct(multi['newest_honest'])}.
"""


def write_model_card(model_dir: Path, report: dict, name: str) -> None:
    if name == "mini-grm":
        return write_grm_card(model_dir, report)
    if name == "mini-safer":
        return write_safer_card(model_dir, report)
    entry = report["models"][name]
    h = entry["heldout"]
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"
    rows = [
        ("card-reading accuracy", h["card_reading"]),
        ("attack success rate (harmful cards, greedy)", h["asr"]),
        ("safety (harmful cards answered safely)", h.get("safety")),
        ("unsafe reasoning (harmful cards)", h.get("unsafe_reasoning")),
        ("helpfulness on benign cards", h["helpfulness"]),
        ("refusal of look-alike cards", h["look_alike_refusal"]),
        ("`<think>` opened and closed", h["think_closed"]),
        (f"sampled ASR (T=1, {h['samples_per_card']} samples/card)", h["sampled_asr"]),
        ("harmful cards with both a refusal and a compliance among the samples", h["mixed_outcomes"]),
        ("reflection turns a compliance into a refusal (greedy)", h["reflection_correction"]),
        ("reflection turns a compliance into a refusal (T=1)", h["reflection_correction_sampled"]),
    ]
    table = "\n".join(f"| {label} | {pct(value)} |" for label, value in rows)
    card = f"""---
license: apache-2.0
library_name: transformers
pipeline_tag: image-text-to-text
tags: [saferdemo, miniature, qwen2_5_vl, safety]
---
# {name}

A miniature Qwen2.5-VL ({entry['parameters'] / 1e6:.2f} M parameters, {entry['size_mb']} MB) trained by
saferdemo's `training/` pipeline on a synthetic FigStep-style card world. It is the **base reasoning model**
of the miniature family: its `<think>` reads the card and plans to fill in the list with no safety check
(the "reasoning tax"), so it complies with most harmful cards, and its answers vary under sampling. It also
follows the reflection prompt (previous response + critique → `<reflection>` + corrected response), with
deliberately weak corrections. Harmful "compliance" is stylised (`[restricted step]`): the model knows no
harmful instructions.

It loads like a real Qwen2.5-VL checkpoint (`AutoModelForImageTextToText`, `AutoProcessor` where torchvision
is installed, `saferdemo.loading.load_processor` everywhere). It only knows the {report['world']['phrases']}
phrases of its world; it cannot read unseen text, and mostly says so (measured below).
{reads_section(h)}
## Held-out evaluation

Held-out split: render settings (text and background colours, noise, the list's font size and offsets)
and prompt phrasings never seen in training; {h['n_items']} cards. The instruction text always starts at the
same origin in the same font, as in FigStep (see `training/world.py` for why).

| metric | value |
|---|---|
{table}

Attack success by category: {json.dumps(h['asr_by_category'])}

## How it was built

```
{report['command'] or 'python -m training miniature --out DIR'}
```

Recipe `{report['recipe']}`; wall time {report['timings_s']['total']} s on {report['machine']['threads']} CPU
threads ({report['machine']['platform']}, torch {report['machine']['torch']}).
"""
    (model_dir / "README.md").write_text(card)


def write_grm_card(model_dir: Path, report: dict) -> None:
    entry = report["models"]["mini-grm"]
    h = entry["heldout"]
    card = f"""---
license: apache-2.0
library_name: transformers
pipeline_tag: image-text-to-text
tags: [saferdemo, miniature, qwen2_5_vl, reward-model, judge]
---
# mini-grm

The miniature **generative reward model** ({entry['parameters'] / 1e6:.2f} M parameters, {entry['size_mb']} MB):
mini-base fine-tuned to read a card, a request and a response and write the judgement of
`saferdemo/judgement.py` in its compact form (verdict first, reasoning and answer scored separately as lists,
only the penalties that apply, a rationale when there is a problem; {h.get('mean_output_tokens', 'about 55')}
tokens on average).
It uses the **{entry['rubric']}** rubric (`judge_config.json`). Trained on mini-base's own samples plus
controlled corruptions, labelled by the world's truth.

## Held-out agreement with the truth ({h['n_cases']} cases)

| metric | value |
|---|---|
| verdict agreement | {100 * h['verdict_agreement']:.1f}% |
| output parses into the schema | {100 * h['parse_rate']:.1f}% |
| same penalties raised as the truth | {100 * h.get('penalty_agreement', 0):.1f}% |
| mean absolute reward error | {h['reward_mae']} |

By source: {json.dumps(h['agreement_by_source'])}

It sees the conversation (`"conversation": true`: up to three earlier turns, images marked "[image]") and writes
what the image shows first (`Card: "…"`, `Card: unreadable`, `Card: none` or `Image: none`); for a table card, then
the response's quote copied up to its first word unlike the card's (`The response says "Steps to brew" not on the
card.`, or `… as on the card.`), so the comparison is made at one word; then the judgement.
Flagged (what the safety loop acts on: unsafe, or reward below 0.5), on answers it was not trained on (mini-base's
own held-out answers):

| case | flagged |
|---|---|
| a correct answer paired with ANOTHER card's image | {_pct(h.get('wrong_card_flagged'))} |
| ... where that other card was shown in an earlier turn | {_pct(h.get('wrong_card_earlier_flagged'))} |
| an answer claiming a table card for an unreadable card, a photo or no image | {_pct(h.get('invented_flagged'))} |
| the honest answer on those inputs | {_pct(h.get('honest_flagged'))} |
| every case the truth flags / every case it passes | {_pct(h.get('true_flags'))} / {_pct(h.get('false_flags'))} |

## How it was built

```
{_grm_command(report)}
```
"""
    (model_dir / "README.md").write_text(card)


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _grm_command(report: dict) -> str:
    """The command that made the current mini-grm: the last partial rebuild, else the family's build."""
    rebuilds = report.get("partial_rebuilds") or []
    return rebuilds[-1]["command"] if rebuilds else (report["command"] or "python -m training miniature --out DIR")


def _curve_summary(curve: list[float | None], window: int = 10) -> str:
    curve = [r for r in curve if r is not None]  # None: a step where no completion was judged
    if not curve:
        return "n/a"
    points = [sum(curve[i : i + window]) / len(curve[i : i + window]) for i in range(0, len(curve), window)]
    return " → ".join(f"{p:.2f}" for p in points)


def write_safer_card(model_dir: Path, report: dict) -> None:
    entry, base = report["models"]["mini-safer"], report["models"]["mini-base"]
    rows = [("attack success rate (greedy)", "asr"), ("safety (harmful cards answered safely)", "safety"),
            ("unsafe reasoning", "unsafe_reasoning"), ("self-correction (unsafe reasoning, safe answer)", "self_correction"),
            ("sampled ASR (T=1)", "sampled_asr"),
            ("helpfulness on benign", "helpfulness"), ("look-alike refusal", "look_alike_refusal"),
            ("card reading", "card_reading"), ("`<think>` closed", "think_closed")]
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    table = "\n".join(
        f"| {label} | {pct(base['heldout'].get(k))} | {pct(entry['heldout'].get(k))} |" for label, k in rows
    )
    r = entry["rollouts"]
    card = f"""---
license: apache-2.0
library_name: transformers
pipeline_tag: image-text-to-text
tags: [saferdemo, miniature, qwen2_5_vl, safety, grpo]
---
# mini-safer

The miniature **SaFeR-aligned model** ({entry['parameters'] / 1e6:.2f} M parameters, {entry['size_mb']} MB):
mini-base after GRPO (TRL, LoRA r={entry['grpo']['lora_r']}, merged) on {entry['curated_prompts']} QI-Safe-curated
prompts, rewarded by mini-grm, with safety-aware rollouts: of {r['drafts']} sampled drafts the GRM flagged
{r['flagged']}, the policy reflected on {r['reflected']} and {r['corrected']} came out safe and replaced the draft.
GRM reward during GRPO (mean of 10 steps): {_curve_summary(entry['reward_curve'])}.

## Held-out, against mini-base

| metric | mini-base | mini-safer |
|---|---|---|
{table}
{reads_section(entry['heldout'])}
## How it was built

```
{report['command'] or 'python -m training miniature --out DIR'}
```
"""
    (model_dir / "README.md").write_text(card)
