"""What the project accepts as input, in one place: the app, `/compare`, `saferdemo replay` and the audit all
check their input here, so a limit cannot hold at one door and not at another.

Every refusal is a `LimitError` (an `InputError`) whose message says what was wrong and what the limit is; the
app shows it as a toast or an API error, the CLI as one `saferdemo: …` line with exit status 2.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from saferdemo.images import MAX_FILE_BYTES, InputError, fit, load_image, load_image_bytes


class LimitError(InputError):
    """An input outside the limits; the message is meant for the user."""


@dataclass
class Limits:
    prompt_chars: int = 4000
    # Tokens, not characters, are what fill a context: 4,000 emoji are ~16,000 tokens. Counted with each local
    # column's own tokenizer.
    prompt_tokens: int = 1024
    images_per_turn: int = 4
    # Every earlier image goes to the models again each turn; vLLM is started with this as its per-prompt limit.
    images_per_conversation: int = 16
    # Pixels a conversation keeps of each upload, decoded once (more than the processors use, unless a
    # checkpoint's max_pixels is larger): 8 images stay under 50 MB however large the files were.
    kept_pixels: int = 2_000_000
    turns: int = 20
    audit_items: int = 100  # the Audit tab's largest audit (the CLI has no limit)
    upload_mb: int = 20  # per file (Gradio refuses larger uploads); decoded pixels: saferdemo.images
    queue_size: int = 32  # waiting turns across all users; beyond it Gradio answers "queue is full"
    concurrency: int = 2  # turns generating at once (each runs two columns and the judge)
    # ... when the columns batch (engines/batching.py): the turns' rows share each generate step, so more
    # turns at once raise throughput instead of contending for the cores.
    batched_concurrency: int = 8
    # Turns one browser session (one gradio_client Client) may have generating at once, chat and /compare
    # together: 20 streams from one client held every slot, and another client's first update waited 43 s.
    live_turns_per_session: int = 2
    ui_updates_per_s: float = 20.0  # a streaming turn's redraws are throttled to this rate...
    # ...and all live turns' together to this one. Every update is Python work in the server's event loop
    # (diff, JSON, SSE) under the GIL the model workers need at each step: at 8 users x 20/s the event loop
    # held 37% of the server's GIL time (py-spy), and 8-user turns took 1.16x as long as at 5/s each
    # (server_load rounds, interleaved, n = 4).
    server_updates_per_s: float = 40.0
    # A pending state (thinking open, the GRM judging, a reflection) stays on screen at least this long: the
    # bundled models draft and judge in a fraction of a second, and the story of a turn would flash past.
    min_pending_s: float = 0.4
    # Clear, Regenerate and a send wait this long at most for the session's stopped turn to send its last update
    # (it stops at its next token; a long prefill on a CPU can delay that). Past it Clear and Regenerate go on (the
    # old turn is superseded and draws nothing more); a send is refused, its text kept, to be sent again.
    stop_wait_s: float = 30.0
    # The generation settings' ranges (the Parameters sliders'; a program may send any number).
    temperature: tuple[float, float] = (0.0, 1.5)
    top_p: tuple[float, float] = (0.05, 1.0)
    max_new_tokens: tuple[int, int] = (1, 1024)
    threshold: tuple[float, float] = (0.0, 1.0)
    seed_max: int = 2**31 - 1
    # The app's media folder (copies of uploads shown in the chats, exports, audits): its oldest files go
    # first past this size, and the whole folder at exit.
    media_mb: int = 512
    # `saferdemo replay`: the largest page or bundle it reads (16 images of 2 megapixels as PNG fit easily).
    bundle_mb: int = 200
    # The audit's dataset rows (benchmark prompts are longer than chat messages) and its rendered cards (a
    # 40000x40000 style took over 4 GB before anything was checked).
    audit_prompt_chars: int = 16_000
    card_text_chars: int = 1_000
    card_size: tuple[int, int] = (16, 4096)
    font_size: tuple[int, int] = (4, 400)


DEFAULT = Limits()


def short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def message_parts(message) -> tuple[str, list[str]]:
    """A multimodal message's text and file paths: {"text": str, "files": [path, …]}; a missing or null text or
    files list is empty. Anything else is refused with what was sent."""
    if message is None:
        return "", []
    if not isinstance(message, dict):
        raise LimitError(f"The message must be an object with text and files, got {short(message)}.")
    text, files = message.get("text"), message.get("files")
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise LimitError(f"The message's text must be a string, got {type(text).__name__} {short(text)}.")
    if files is None:
        files = []
    if not isinstance(files, (list, tuple)):
        raise LimitError(f"The message's files must be a list of files, got {type(files).__name__}.")
    paths = []
    for entry in files:
        path = entry.get("path") if isinstance(entry, dict) else entry
        if not isinstance(path, str) or not path:
            raise LimitError(f"Each attached file must be a file, got {short(entry)}.")
        paths.append(path)
    return text, paths


def number(value, name: str, bounds: tuple, whole: bool = False):
    """A setting as a finite number within `bounds` (a whole one if `whole`), else a LimitError naming it."""
    low, high = bounds
    kind = "a whole number" if whole else "a number"
    wrong = LimitError(f"{name} must be {kind} from {low:g} to {high:g}; got {short(value)}.")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise wrong
    if (whole and value != int(value)) or not low <= value <= high:
        raise wrong
    return int(value) if whole else float(value)


def settings(temperature, top_p, max_new_tokens, threshold, limits: Limits = DEFAULT) -> tuple[float, float, int, float]:
    """The generation settings, checked: (temperature, top-p, max new tokens, reflection threshold)."""
    return (number(temperature, "The temperature", limits.temperature), number(top_p, "Top-p", limits.top_p),
            number(max_new_tokens, "Max new tokens", limits.max_new_tokens, whole=True),
            number(threshold, "The reflection threshold", limits.threshold))


def seed(value, limits: Limits = DEFAULT) -> int | None:
    """The seed: None (empty or -1) means unseeded, else a whole number in [0, seed_max]."""
    if value is None or value == "" or (isinstance(value, (int, float)) and not isinstance(value, bool)
                                        and math.isfinite(value) and value == -1):
        return None
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or value != int(value) or not 0 <= value <= limits.seed_max):
        raise LimitError(f"The seed must be a whole number from 0 to {limits.seed_max:,}, or -1 for none; "
                         f"got {value!r}.")
    return int(value)


def turn(text: str, n_images: int, held_images: int, turns: int, limits: Limits = DEFAULT,
         tokens: int = 0) -> None:
    """A new turn of a conversation: its text (characters and `tokens`), its images, the conversation's size."""
    if not text:
        raise LimitError("Type a message (and attach a card image if you like).")
    if len(text) > limits.prompt_chars:
        raise LimitError(f"The message is {len(text):,} characters; the limit is {limits.prompt_chars:,}.")
    if tokens > limits.prompt_tokens:
        raise LimitError(f"The message is {tokens:,} tokens long; the limit is {limits.prompt_tokens:,}. "
                         "Shorten it and try again.")
    if n_images > limits.images_per_turn:
        raise LimitError(f"{n_images} images attached; the limit is {limits.images_per_turn} per message.")
    if held_images + n_images > limits.images_per_conversation:
        raise LimitError(f"This conversation already holds {held_images} images; the limit is "
                         f"{limits.images_per_conversation}. Press Clear to start a new one.")
    if turns >= limits.turns:
        raise LimitError(f"This conversation has reached {limits.turns} turns. Press Clear to start a new one.")


def tokens(columns: dict, text: str) -> int:
    """The text's length in tokens for the local column that counts it longest (0 when none is local)."""
    processors = [getattr(getattr(column, "engine", None), "processor", None) for column in columns.values()]
    tokenizers = [getattr(p, "tokenizer", p) for p in processors if p is not None]
    return max((len(t(text, add_special_tokens=False)["input_ids"]) for t in tokenizers), default=0)


def image(source: str | Path | bytes, limits: Limits = DEFAULT, name: str = "the image") -> Image.Image:
    """An image as a conversation keeps it: a file or bytes, checked (size, pixels, shape) and decoded once,
    then shrunk to `kept_pixels`."""
    with _DECODING:  # a 40-megapixel decode holds ~120 MB and a copy: a few at once, whatever the users
        decoded = load_image_bytes(source, name) if isinstance(source, bytes) else load_image(source)
        return fit(decoded, limits.kept_pixels)


_DECODING = threading.Semaphore(2)


def prompt(value, where: str, limit: int | None = None) -> str:
    """A prompt read from a file (an audit dataset, a bundle): a non-empty string within `limit` characters."""
    limit = DEFAULT.audit_prompt_chars if limit is None else limit
    if not isinstance(value, str) or not value.strip():
        raise LimitError(f"{where} must be a non-empty string, got {short(value)}")
    if len(value) > limit:
        raise LimitError(f"{where} has {len(value):,} characters; the limit is {limit:,}")
    return value


def file_size(path: Path, limit_mb: int, what: str) -> int:
    """A regular file's size within `limit_mb` (a device such as /dev/zero, or a folder, is refused)."""
    if not path.is_file():
        raise LimitError(f"{path} is not a regular file.")
    size = path.stat().st_size
    if size > limit_mb * 2**20:
        raise LimitError(f"{path} is {size / 2**20:.0f} MB; the limit for {what} is {limit_mb} MB.")
    return size


IMAGE_FILE_MB = MAX_FILE_BYTES // 2**20  # one image file (saferdemo.images refuses larger before decoding)
