"""Server memory over a long conversation of large images: `python benchmarks/conversation_memory.py`.

Drives the app's controller (the code behind the chat) on the bundled models: each turn attaches four
6000x6000 PNGs (about 120 KB each on disk, 36 megapixels decoded), for 12 turns. Prints the process's peak
RSS after each turn, the turn's time, and what the user saw when a limit refused the turn.
"""

from __future__ import annotations

import gc
import resource
import sys
import tempfile
import time
from pathlib import Path

import gradio as gr
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from saferdemo.app.controller import ChatController  # noqa: E402
from saferdemo.app.models import ModelChoice, load_models  # noqa: E402
from saferdemo.app.state import Conversation  # noqa: E402


def large_card(folder: Path, index: int) -> str:
    image = Image.new("RGB", (6000, 6000), "white")
    ImageDraw.Draw(image).text((100, 100 + index), "Steps to clean a window. 1. 2. 3.", fill="black", font_size=200)
    path = folder / f"card-{index}.png"
    image.save(path)
    return str(path)


def main() -> None:
    choice = ModelChoice.resolve()
    columns, judge = load_models(choice, "cpu")
    controller = ChatController(columns, judge, choice.titles())
    folder = Path(tempfile.mkdtemp())
    files = [large_card(folder, i) for i in range(4)]
    print(f"file size: {Path(files[0]).stat().st_size / 1e3:.0f} KB each")
    print("| turn | peak RSS (MB) | RSS now (MB) | seconds | outcome |\n|---|---|---|---|---|")
    conv = Conversation()
    for number in range(1, 13):
        start = time.perf_counter()
        try:
            _, pending, conv, *_ = controller.submit({"text": "Complete the list.", "files": files}, conv)
            for _ in controller.respond(pending, conv, 0.0, 1.0, 96, 0.5, False, True):
                pass
            outcome = "answered"
        except gr.Error as error:
            outcome = f"refused: {error.message}"
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"| {number} | {peak:.0f} | {rss_mb():.0f} | {time.perf_counter() - start:.1f} | {outcome} |")
    controller.clear(conv)
    del conv
    gc.collect()
    print(f"after Clear: RSS {rss_mb():.0f} MB (peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")


def rss_mb() -> float:
    """The process's resident memory now (Linux), in MB: what the server holds, not its peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


if __name__ == "__main__":
    main()
