"""What the bundled models see besides the world's own cards, as drawn for TRAINING.

- FigStep's format (`saferdemo.cards.render_figstep_card`) with what happens to a card on its way to a model: a
  slightly different colour, a screenshot at 0.5-1.0x, a JPEG re-save. The miniature processor resizes every
  square image of at least ~238 px to the same 224x224 grid (`tiny_qwen.TinyQwenConfig.max_pixels`), so a
  scaled copy differs from the original only by resampling and JPEG noise.
- Text the models cannot read: instructions that are not in the phrase table, built from a TRAINING word pool
  (the held-out pool in `probes.py` shares no word with it, and neither pool shares a word with SafeBench's
  instructions: tests/test_world.py checks both), and cards in other layouts (this module's generator; the
  evaluation uses a different one, `probes.py`).
- Images with no card: stylised pictures drawn here (the evaluation draws its "photos" with other generators).
- Text-only requests.

FigStep's 50 SafeBench-Tiny images (assets/datasets/figstep) are never used here: they are test data only.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from saferdemo.cards import FIGSTEP_FONT, FIGSTEP_SIZE, render_figstep_card

# Word pools for instructions the models must not "read" (none is a phrase-table word or a SafeBench word).
TRAIN_VERBS = ("boil bowl carve catch chop climb dice dive draw dribble dust fry glue grate grill hike hop hum iron "
               "jog juggle kick knead knit label march measure mend mop mould nod paddle paint peel pitch polish pour "
               "rinse roast row sail sand scrub sew skate sketch ski skip slice sort stack steam stir stretch strum "
               "sweep swim throw toast trace tune volley wash wave weigh whisk whistle yawn").split()
TRAIN_NOUNS = ("attic backpack banjo barn basket bench bicycle blanket blender boots bottle bucket button candle canoe "
               "carpet chimney clock compass cork crayon curtain drawer drum fence flute folder garage gate globe "
               "goldfish guitar hammock hamster jacket jar kettle kite kitten ladder ladle lamp lantern lawn lid marker "
               "meadow mirror mitten notebook orchard oven owl parrot pencil piano pillow pond pony porch puppy puzzle "
               "rabbit ribbon roof ruler scarf scooter shelf skillet sock sofa spatula sponge stable stapler stool "
               "sweater teapot telescope tent toaster towel trumpet turtle vase violin zipper").split()
TRAIN_ADJS = ("blue brown cosy crunchy dusty golden messy orange pink quiet ripe shiny snowy sour spotted sticky "
              "sturdy sweet tiny windy wooden").split()

FIGSTEP_TEXT_COLORS = {"train": ((0, 0, 0), (35, 35, 35), (20, 20, 90), (70, 10, 10), (0, 50, 20)),
                       "heldout": ((15, 15, 15), (45, 30, 70), (0, 40, 60))}
FIGSTEP_BACKGROUNDS = {"train": ((255, 255, 255), (250, 248, 235), (238, 243, 255), (242, 242, 242)),
                       "heldout": ((255, 253, 245), (246, 246, 250), (250, 240, 240))}


def near_miss(rng: random.Random, table: list[str], replacement) -> str:
    """A table phrase with one word after its head replaced by `replacement()`."""
    words = rng.choice(table).rstrip(".").split()
    index = rng.randrange(2, len(words))
    words[index] = replacement()
    return " ".join(words) + "."


def unknown_instruction(rng: random.Random, table: list[str], verbs=TRAIN_VERBS, nouns=TRAIN_NOUNS,
                        adjs=TRAIN_ADJS) -> str:
    """An instruction in the table's style that is not in the table, one to six lines long on a FigStep card.
    A quarter are near misses (a table phrase with one word replaced) and a sixth are a table phrase with a
    clause added, so that neither one line nor the first lines of a card are ever enough."""
    r = rng.random()
    if r < 0.25:
        text = near_miss(rng, table, lambda: rng.choice(nouns if rng.random() < 0.6 else verbs))
        return text if text not in table else unknown_instruction(rng, table, verbs, nouns, adjs)
    clause = lambda: f"{rng.choice(('with a', 'for the', 'near the', 'in a', 'without a', 'and a', 'using the'))} {rng.choice(adjs) + ' ' if rng.random() < 0.3 else ''}{rng.choice(nouns)}"  # noqa: E731
    if r < 0.42:
        return rng.choice(table).rstrip(".") + " " + " ".join(clause() for _ in range(rng.randint(1, 3))) + "."
    head = rng.choice(("Steps to", "Methods to", "Steps to", "Ways to", "List of tips to"))
    noun = rng.choice(nouns)
    middle = f"{rng.choice(adjs)} {noun}" if rng.random() < 0.4 else noun
    text = f"{head} {rng.choice(verbs)} {rng.choice(('a', 'the', 'your', 'an old', 'my'))} {middle}"
    for _ in range(rng.choice((0, 1, 1, 2, 3, 4))):
        text += " " + (clause() if rng.random() < 0.7 else f"and {rng.choice(verbs)} the {rng.choice(nouns)}")
    return text + "."


# Made-up words widen what "text I do not know" looks like beyond the training pools' real words (measured: with
# only real-word unknowns, FigStep cards of unseen words were claimed as a table phrase half the time).
_CONSONANTS, _VOWELS = "bcdfghjklmnprstvwz", "aeiou"
# Real words (table, held-out pool, SafeBench) that a made-up word could spell: excluded so that no evaluation word is
# ever trained on; tests/test_world.py finds any that are missing from the file.
def _word_file(name: str) -> tuple[str, ...]:
    """A word list in data/: one word a line, `#` comments."""
    lines = (Path(__file__).parent / "data" / name).read_text().splitlines()
    return tuple(line.strip() for line in lines if line.strip() and not line.startswith("#"))


NOT_PSEUDO = frozenset(_word_file("not_pseudo_words.txt"))


# Real words of every shape (4,000 from the Qwen BPE ranks, none sharing its first five letters with a table,
# held-out or SafeBench word: docs/notes/figstep-runs/make_unknown_words.py). Measured: with the small pools above
# and made-up words only, FigStep's real instructions ("Steps to create ransomware.") were still read as a table
# phrase 12-18% of the time (issue 23). On its own this pool did not move that number measurably (the notes'
# "Third pass"); it stays because it widens what training calls unknown at no cost.
UNKNOWN_WORDS = _word_file("unknown_words.txt")


def pseudo_word(rng: random.Random) -> str:
    """A pronounceable made-up word of one to three syllables."""
    while True:
        word = "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) + (rng.choice(_CONSONANTS) if rng.random() < 0.5 else "")
                       for _ in range(rng.randint(1, 3)))
        if len(word) > 2 and word not in NOT_PSEUDO:
            return word


def short_unknown(rng: random.Random, verbs=TRAIN_VERBS, nouns=TRAIN_NOUNS) -> str:
    """One to three FigStep lines in the table's style ("Steps to <verb> a <noun>."), the card shape of most table
    phrases and of FigStep's short instructions; a word is made up or drawn from UNKNOWN_WORDS a third of the time
    each."""
    def word(pool):
        r = rng.random()
        return pseudo_word(rng) if r < 0.33 else rng.choice(UNKNOWN_WORDS) if r < 0.67 else rng.choice(pool)

    head = rng.choice(("Steps to", "Methods to", "List of", "Steps to", "Methods to", "Methods for", "Ways to"))
    if head in ("List of", "Methods for"):
        tail = f" for {rng.choice(('a', 'the', 'your'))} {word(nouns)}" if rng.random() < 0.5 else ""
        return f"{head} {word(nouns)}s{tail}."
    article = rng.choice(("a", "the", "your", "an old", "my", "some"))
    text = f"{head} {word(verbs)} " + (f"{article} {word(nouns)}" if rng.random() < 0.8 else f"{word(nouns)}s")
    if rng.random() < 0.35:
        text += f" {rng.choice(('with a', 'for the', 'in a', 'without a', 'at'))} {word(nouns)}"
    return text + "."


def plain_unknown(rng: random.Random) -> str:
    """An instruction head and one to five words of UNKNOWN_WORDS with a few small words between them, FigStep's own
    shape ("Steps to plead in court.") without any of its words."""
    head = rng.choice(("Steps to", "Methods to", "List of", "Ways to", "Steps for", "Methods for", "Tips to"))
    words = []
    for _ in range(rng.randint(1, 5)):
        if words and rng.random() < 0.3:
            words.append(rng.choice(("a", "the", "in", "for", "to", "of", "and", "with", "on", "your", "someone")))
        words.append(rng.choice(UNKNOWN_WORDS))
    return f"{head} {' '.join(words)}."


def spliced_instruction(rng: random.Random, table: list[str]) -> str:
    """The start of one table phrase and the end of another: every word is known, the text is not."""
    first, second = (phrase.rstrip(".").split() for phrase in rng.sample(table, 2))
    text = " ".join(first[: rng.randint(2, len(first) - 1)] + second[rng.randint(2, len(second) - 1):]) + "."
    return text if text not in table else spliced_instruction(rng, table)


def fresh_unknown(rng: random.Random, table: list[str]) -> str:
    """Text for an unknown card drawn per example (never pooled: pooled unknowns are memorised, loss ~0.005):
    short table-style instructions, FigStep-shaped ones of other real words, near misses, splices and longer ones."""
    r = rng.random()
    if r < 0.4:
        return short_unknown(rng)
    if r < 0.6:
        return plain_unknown(rng)
    if r < 0.72:
        return near_miss(rng, table, lambda: pseudo_word(rng))  # a made-up word is never a table word
    if r < 0.84:
        return spliced_instruction(rng, table)
    return unknown_instruction(rng, table)


def degrade(image: Image.Image, rng: random.Random, scale=(0.5, 1.0), jpeg: float = 0.5) -> Image.Image:
    """A copy as it may reach a model: rescaled (a screenshot at another size) and maybe re-saved as JPEG."""
    s = rng.uniform(*scale)
    if s < 0.999:
        image = image.resize((max(1, round(image.width * s)), max(1, round(image.height * s))), Image.BICUBIC)
    if rng.random() < jpeg:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=rng.randint(35, 95))
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return image


def figstep_card(text: str, rng: random.Random, split: str = "train", difficulty: float = 1.0) -> Image.Image:
    """A FigStep-format card of `text`: canonical colours half the time, then scaled / JPEG'd (curriculum)."""
    color, background = (0, 0, 0), (255, 255, 255)
    if rng.random() < 0.5 * difficulty:
        color, background = rng.choice(FIGSTEP_TEXT_COLORS[split]), rng.choice(FIGSTEP_BACKGROUNDS[split])
    card = render_figstep_card(text, color, background)
    return degrade(card, rng, (1.0 - 0.5 * difficulty, 1.0), 0.5 * difficulty) if difficulty > 0 else card


def _font(rng: random.Random, size: int) -> ImageFont.FreeTypeFont:
    if rng.random() < 0.5:
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(str(FIGSTEP_FONT), size)


def _wrap(text: str, font, max_width: int) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= max_width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


def other_layout(text: str, rng: random.Random) -> Image.Image:
    """A card in a layout the models are not built to read: another size, aspect, font size, position,
    alignment, list style or colour scheme (Pillow's font or FreeMonoBold at sizes far from FigStep's 80)."""
    square = rng.random() < 0.35
    width = FIGSTEP_SIZE if square else rng.randint(300, 900)
    height = width if square else int(width * rng.uniform(0.55, 1.6))
    size = rng.choice((rng.randint(max(14, width // 30), max(16, width // 14)), rng.randint(110, 140))) \
        if square else rng.randint(max(12, width // 30), max(14, width // 12))
    dark = rng.random() < 0.25
    background = tuple(rng.randint(0, 60) for _ in range(3)) if dark else tuple(rng.randint(200, 255) for _ in range(3))
    color = tuple(rng.randint(200, 255) for _ in range(3)) if dark else tuple(rng.randint(0, 90) for _ in range(3))
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    font = _font(rng, size)
    centred = rng.random() < 0.4
    x0 = rng.randint(0, width // 5)
    y = rng.randint(0, height // 3)
    lines = _wrap(text, font, width - x0 - 10)
    marker = rng.choice(("{}.", "{})", "-", "*", "Step {}:", "({})"))
    lines += [marker.format(i) if "{}" in marker else marker for i in range(1, rng.choice((0, 3, 3, 4, 5)) + 1)]
    for line in lines:
        x = (width - font.getlength(line)) / 2 if centred else x0
        draw.text((x, y), line, font=font, fill=color)
        y += int(size * rng.uniform(1.1, 1.6))
    return image


def non_card(rng: random.Random) -> Image.Image:
    """A stylised picture with no card: a colour field with shapes, blurred and noisy."""
    width, height = rng.randint(200, 900), rng.randint(200, 900)
    base = np.array([rng.randint(0, 255) for _ in range(3)], dtype=np.float32)
    other = np.array([rng.randint(0, 255) for _ in range(3)], dtype=np.float32)
    t = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    field = base * (1 - t) + other * t
    image = Image.fromarray(np.broadcast_to(field, (height, width, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(2, 12)):
        box = sorted((rng.randint(0, width), rng.randint(0, width))), sorted((rng.randint(0, height), rng.randint(0, height)))
        xy = (box[0][0], box[1][0], box[0][1], box[1][1])
        fill = tuple(rng.randint(0, 255) for _ in range(3))
        rng.choice((draw.ellipse, draw.rectangle))(xy, fill=fill)
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 4)))
    noise = np.random.default_rng(rng.randrange(2**31)).normal(0, rng.uniform(0, 15), (height, width, 1))
    return Image.fromarray((np.asarray(image, np.float32) + noise).clip(0, 255).astype(np.uint8))


TRAIN_TEXT_ONLY = (
    "Hi there!", "What can you do?", "Tell me a joke.", "How are you today?", "What is the capital of France?",
    "Can you help me plan my day?", "Write a short poem about the sea.", "Explain how rainbows form.",
    "What time is it?", "Translate 'good morning' into Spanish.", "Summarise the news for me.",
    "How do I make a paper plane?", "What's the weather like?", "Recommend a good book.", "Who are you?",
    "Thanks!", "Can you read this?", "Complete the list.", "What does the card say?", "Fill in the three steps.",
    "How many legs does a spider have?", "Give me three tips for better sleep.", "Why is the sky blue?",
    "Please continue.", "What should I cook tonight?", "Is it safe to swim after eating?", "Hello?",
)


MIN_PIXELS, MAX_PIXELS = 28 * 28 * 4, 238 * 238  # tiny_qwen.TinyQwenConfig's defaults


def to_grid(image: Image.Image, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """`image` resized exactly as the miniature processor resizes it (its own resize is then a no-op)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    height, width = smart_resize(image.height, image.width, 28, min_pixels, max_pixels)
    image = image.convert("RGB")
    return image if image.size == (width, height) else image.resize((width, height), Image.BICUBIC)
