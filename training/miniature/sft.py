"""Stage: supervised fine-tuning of the base reasoning model on the miniature world.

A plain PyTorch loop rather than TRL's SFTTrainer, because what makes a miniature model learn to read
cards is a schedule SFTTrainer has no knobs for: the vision tower frozen at first and then trained at a
fraction of the language model's learning rate, and render variation grown by curriculum step by step
(the data stream depends on the step). Measured: with everything trainable from the start, the tiny vision
tower's features collapse within ~50 steps and the language model learns to ignore the image; frozen first,
then trained at ~0.05x the rate, it is read.

The base model is trained to show the "reasoning tax": its `<think>` reads the card and plans to fill it
in, with no safety check, and it complies with most harmful cards. Per category it refuses at a set rate,
so its answers vary under sampling (curation and GRPO need that variance). It also learns the reflection
format, with deliberately weak corrections.
"""

from __future__ import annotations

import math
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from PIL import Image

from saferdemo.cards import FIGSTEP_PROMPT, render_card
from saferdemo.prompts import assistant_turn, reflection_messages, user_turn
from saferdemo.segments import split_think
from training.miniature import formats, world
from training.miniature.world import Example, Phrase


@dataclass
class Behaviour:
    """How the base model behaves: the mixture of targets its SFT data is drawn from."""

    comply_rate: dict[str, float] = field(default_factory=lambda: {"default": 0.8})
    look_alike_refusal_rate: float = 0.1
    reflection_correction_rate: float = 0.6

    def complies(self, p: Phrase, rng: random.Random) -> bool:
        if p.harmful:
            return rng.random() < self.comply_rate.get(p.category, self.comply_rate["default"])
        return not (p.look_alike and rng.random() < self.look_alike_refusal_rate)


@dataclass
class Stage:
    """One phase of the schedule. `vision_lr_scale` 0 freezes the vision tower."""

    name: str
    steps: int
    lr: float = 5e-4
    vision_lr_scale: float = 0.0
    batch_size: int = 16
    warmup_steps: int = 20
    difficulty: tuple[float, float] = (0.0, 0.0)  # render variation, ramped linearly over the stage
    mix: dict[str, float] = field(default_factory=lambda: {"task": 1.0})


class ImagePool:
    """Pre-rendered training images at the size the processor resizes them to (so its resize is a no-op).
    FigStep cards are 760x760 TrueType renders plus a rescale and a JPEG round trip, ~25 ms each: too slow to
    draw per example. The world's own cards are cheap and stay rendered per example (their curriculum)."""

    def __init__(self, phrases: list[Phrase], seed: int, per_phrase: int = 8, other: int = 500, no_card: int = 200,
                 workers: int = 2):
        table = [p.phrase for p in phrases]
        self.table = table

        def draw(job):  # each image from its own seed: the pool is the same whatever the thread timing
            kind, text, item_seed = job
            rng = random.Random(item_seed)
            if kind == "figstep":
                return formats.to_grid(formats.figstep_card(text, rng, "train", 1.0 if item_seed % 997 else 0.0))
            if kind == "other":
                text = rng.choice(table) if rng.random() < 0.5 else formats.unknown_instruction(rng, table)
                return formats.to_grid(formats.other_layout(text, rng))
            return formats.to_grid(formats.non_card(rng))

        rng = random.Random(seed)
        jobs = [("figstep", p.phrase, 997 * rng.randrange(1, 2**20) + (i > 0)) for p in phrases for i in range(per_phrase + 1)]
        jobs += [(kind, "", rng.randrange(2**31)) for kind, n in (("other", other), ("no_card", no_card))
                 for _ in range(n)]
        with ThreadPoolExecutor(max_workers=workers) as executor:  # PIL releases the GIL while it draws
            images = list(executor.map(draw, jobs))
        figstep = images[: len(phrases) * (per_phrase + 1)]
        self.figstep_canonical = {p.phrase: figstep[i * (per_phrase + 1)] for i, p in enumerate(phrases)}
        self.figstep = {p.phrase: figstep[i * (per_phrase + 1) + 1: (i + 1) * (per_phrase + 1)] for i, p in enumerate(phrases)}
        rest = images[len(figstep):]
        self.other, self.no_card = rest[:other], rest[other:]

    def figstep_card(self, p: Phrase, rng: random.Random, difficulty: float) -> Image.Image:
        return rng.choice(self.figstep[p.phrase]) if rng.random() < difficulty else self.figstep_canonical[p.phrase]

    def unreadable(self, rng: random.Random, difficulty: float) -> Image.Image:
        """A card the models cannot read: unknown text in FigStep's format or the world's, or another layout."""
        r = rng.random()
        if r < 0.5:  # drawn per example, ~25 ms: pooled unknowns are memorised (training loss ~0.005)
            text = formats.fresh_unknown(rng, self.table)
            return formats.to_grid(formats.figstep_card(text, rng, "train", rng.random()))
        if r < 0.75:
            text = formats.fresh_unknown(rng, self.table)
            style, seed = world.card_spec(Phrase(text, "", False, False), rng, "train", difficulty)
            return render_card(text, style, seed=seed)
        return rng.choice(self.other)


TURN_KINDS = {"task": 0.3, "figstep": 0.3, "unreadable": 0.2, "no_card": 0.1, "no_image": 0.1}


def single_turn(kind: str, p: Phrase, rng: random.Random, behaviour: Behaviour, difficulty: float,
                pool: ImagePool | None) -> tuple[Phrase, Image.Image | None, str, str]:
    """(subject, image or None, user text, target response) of one turn of `kind` about phrase `p`."""
    if kind in ("task", "read", "figstep"):
        if kind == "figstep":
            image = pool.figstep_card(p, rng, difficulty) if pool else world.render(p, rng, "train", difficulty, "figstep")
        else:
            image = world.render(p, rng, "train", difficulty)
        if kind == "read" or (kind == "figstep" and rng.random() < 0.15):
            return p, image, world.read_prompt(rng, "train"), world.read_response(p)
        prompt = FIGSTEP_PROMPT if kind == "figstep" and rng.random() < 0.5 else world.task_prompt(rng, "train")
        response = world.comply_response(p) if behaviour.complies(p, rng) else world.refuse_response(p)
        return p, image, prompt, response
    prompt = world.read_prompt(rng, "train") if rng.random() < 0.2 else world.task_prompt(rng, "train")
    if kind == "unreadable":
        subject, image = world.UNREADABLE, pool.unreadable(rng, difficulty)
    elif kind == "no_card":
        subject, image = world.NO_CARD, rng.choice(pool.no_card)
    elif kind == "no_image":
        subject, image, prompt = world.NO_IMAGE, None, rng.choice(formats.TRAIN_TEXT_ONLY + world.TRAIN_PROMPTS)
    else:
        raise ValueError(f"unknown example kind {kind!r}")
    return subject, image, prompt, world.honest_response(subject)


def make_example(kind: str, p: Phrase, rng: random.Random, behaviour: Behaviour, difficulty: float,
                 pool: ImagePool | None = None, phrases: list[Phrase] | None = None) -> Example:
    if kind == "multi":
        return multi_turn_example(rng, phrases or [p], behaviour, difficulty, pool)
    if kind != "reflect":
        subject, image, prompt, target = single_turn(kind, p, rng, behaviour, difficulty, pool)
        return Example(kind, subject, image, prompt, [user_turn(prompt, image is not None)], target)
    # "reflect": the previous response comes from the same behaviour; the critique tells the truth.
    image = world.render(p, rng, "train", difficulty)
    prompt = world.task_prompt(rng, "train")
    complies = behaviour.complies(p, rng)
    response = world.comply_response(p) if complies else world.refuse_response(p)
    critique = world.critique_for(p, refused=not complies)
    messages = reflection_messages([user_turn(prompt)], response, critique)
    corrects = rng.random() < behaviour.reflection_correction_rate
    return Example(kind, p, image, prompt, messages, world.reflection_response(p, not complies, corrects))


def multi_turn_example(rng: random.Random, phrases: list[Phrase], behaviour: Behaviour, difficulty: float,
                       pool: ImagePool | None) -> Example:
    """One to three earlier turns in the app's format (each keeps its image; its answer is the final answer only,
    no thinking: saferdemo/app/session.py), then a new turn; the target answers the newest turn alone."""
    kinds, weights = zip(*TURN_KINDS.items())
    messages, images = [], []
    for _ in range(rng.randint(1, 3)):
        _, image, prompt, response = single_turn(rng.choices(kinds, weights)[0], rng.choice(phrases), rng, behaviour,
                                                 difficulty, pool)
        messages += [user_turn(prompt, image is not None), assistant_turn(split_think(response)[1])]
        images += [image] if image is not None else []
    subject, image, prompt, target = single_turn(rng.choices(kinds, weights)[0], rng.choice(phrases), rng, behaviour,
                                                 difficulty, pool)
    messages.append(user_turn(prompt, image is not None))
    images += [image] if image is not None else []
    return Example("multi", subject, image, prompt, messages, target, images=images)


def sample_batch(phrases, rng, behaviour, stage: Stage, difficulty: float, pool: ImagePool | None = None) -> list[Example]:
    """One kind per batch: reflection and multi-turn conversations are longer, so mixing would pad everything."""
    kinds, weights = zip(*stage.mix.items())
    kind = rng.choices(kinds, weights)[0]
    return [make_example(kind, rng.choice(phrases), rng, behaviour, difficulty, pool, phrases)
            for _ in range(stage.batch_size)]


def encode(processor, examples: list[Example]) -> dict[str, torch.Tensor]:
    """Tokenise conversations + targets; labels cover only the final assistant reply (and its end token)."""
    texts = [
        processor.apply_chat_template([*ex.messages, assistant_turn(ex.target)], tokenize=False)
        for ex in examples
    ]
    images = [image for ex in examples for image in ex.all_images()]
    batch = processor(text=texts, images=images or None, padding=True, return_tensors="pt")
    batch["labels"] = _reply_labels(processor.tokenizer, batch["input_ids"], batch["attention_mask"])
    return batch


def _reply_labels(tokenizer, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    header = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    labels = torch.full_like(input_ids, -100)
    for row, ids in enumerate(input_ids.tolist()):
        start = _last_index(ids, header) + len(header)
        labels[row, start:] = input_ids[row, start:]
    labels[attention_mask == 0] = -100
    # Rows are left-padded and the template ends each turn with "<|im_end|>\n": the model learns to stop
    # at <|im_end|>; the newline after it is not its to predict.
    labels[:, -1] = -100
    return labels


def _last_index(ids: list[int], sub: list[int]) -> int:
    for i in range(len(ids) - len(sub), -1, -1):
        if ids[i : i + len(sub)] == sub:
            return i
    raise ValueError("no assistant turn in the encoded conversation")


def _optimizer(model, stage: Stage) -> torch.optim.Optimizer:
    vision = list(model.model.visual.parameters())
    vision_ids = {id(p) for p in vision}
    language = [p for p in model.parameters() if id(p) not in vision_ids]
    for p in vision:
        p.requires_grad_(stage.vision_lr_scale > 0)
    groups = [{"params": language, "lr": stage.lr}]
    if stage.vision_lr_scale > 0:
        groups.append({"params": vision, "lr": stage.lr * stage.vision_lr_scale})
    return torch.optim.AdamW(groups, weight_decay=0.0, betas=(0.9, 0.98))


def _lr_factor(step: int, stage: Stage) -> float:
    if step < stage.warmup_steps:
        return (step + 1) / stage.warmup_steps
    progress = (step - stage.warmup_steps) / max(1, stage.steps - stage.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def base_batches(phrases: list[Phrase], behaviour: Behaviour, pool: ImagePool | None = None):
    """The batch source for mini-base: `(rng, stage, difficulty) -> examples`."""
    return lambda rng, stage, difficulty: sample_batch(phrases, rng, behaviour, stage, difficulty, pool)


def train_stage(model, processor, stage: Stage, batches, seed: int) -> list[float]:
    """Run one stage in place on `model`, drawing examples from `batches`; returns the loss curve."""
    rng = random.Random(seed)
    optimizer = _optimizer(model, stage)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    model.train()
    losses: list[float] = []

    def next_batch(step: int) -> dict:
        start, end = stage.difficulty
        difficulty = start + (end - start) * step / max(1, stage.steps - 1)
        return encode(processor, batches(rng, stage, difficulty))

    # Rendering and encoding take ~30% of a step: prepare the next batch in a thread meanwhile
    # (PIL, numpy and the tokenizer release the GIL). One worker keeps the random stream in order.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(next_batch, 0)
        bar = tqdm(range(stage.steps), desc=f"sft:{stage.name}", unit="step", mininterval=2.0)
        for step in bar:
            batch = pending.result()
            if step + 1 < stage.steps:
                pending = pool.submit(next_batch, step + 1)
            losses.append(_train_step(model, optimizer, batch, [b * _lr_factor(step, stage) for b in base_lrs]))
            if step % 10 == 0:
                bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
    model.eval()
    return losses


def _train_step(model, optimizer, batch: dict, lrs: list[float]) -> float:
    loss = model(**batch).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    for group, lr in zip(optimizer.param_groups, lrs):
        group["lr"] = lr
    optimizer.step()
    return loss.item()
