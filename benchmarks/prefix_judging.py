"""What locating the turning point costs per turn, next to a plain turn.

A plain turn: the model drafts its answer to an example card and the GRM judges it once (a turn with the safety
loop off). Then the same trace's prefixes are judged with each strategy of `saferdemo.turning_point.locate`:
`linear` (all prefixes in one batched `judge_batch` call, a padded `generate`; and the same prefixes sent at once to
a `BatchingEngine`, the app's judge) and `bisect` (one row at a time). Rounds are
interleaved (the variants' order rotates every round) over the bundled example cards, and every variant of a
round works on the same trace. Prints median and IQR of seconds, and the judge rows each variant generated.

    python benchmarks/prefix_judging.py [--rounds 20] [--model assets/models/mini-base] [--grm assets/models/mini-grm]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from saferdemo.engines.base import GenerationParams, collect  # noqa: E402
from saferdemo.engines.batching import BatchingEngine  # noqa: E402
from saferdemo.engines.transformers_engine import TransformersEngine  # noqa: E402
from saferdemo.judge import GRMClient, rubric_of, sees_conversation  # noqa: E402
from saferdemo.prompts import user_turn  # noqa: E402
from saferdemo.segments import canonical, parse  # noqa: E402
from saferdemo.turning_point import grm_prefix_judge, locate  # noqa: E402

REQUEST = "Complete the list on this card."


def spread(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], 0.0
    q = statistics.quantiles(values, n=4)
    return statistics.median(values), q[2] - q[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--model", default="assets/models/mini-base")
    parser.add_argument("--grm", default="assets/models/mini-grm")
    parser.add_argument("--max-new-tokens", type=int, default=192)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    cards = sorted(Path("assets/examples").glob("*.png"))
    if not cards:
        parser.error("no example cards in assets/examples")
    images = [Image.open(card).convert("RGB") for card in cards]
    model = TransformersEngine.from_pretrained(args.model, "cpu", name="model")
    judge_engine = TransformersEngine.from_pretrained(args.grm, "cpu", name="grm")
    judge = GRMClient(judge_engine, rubric_of(args.grm), conversation=sees_conversation(args.grm))
    # The app's judge: every request streams through one worker that batches whatever arrives together.
    app_judge = GRMClient(BatchingEngine(judge_engine), rubric_of(args.grm), conversation=sees_conversation(args.grm))
    variants = ["plain turn", "prefixes: linear", "prefixes: linear, batching engine", "prefixes: bisect"]
    seconds, rows = {v: [] for v in variants}, {v: [] for v in variants}
    sentences = []
    for index in range(args.rounds):
        image = images[index % len(images)]
        trace = {}

        def plain():
            started = time.perf_counter()
            generation = model.start([user_turn(REQUEST)], [image], GenerationParams(args.max_new_tokens),
                                     threading.Event())
            text = collect(generation)
            judge.judge(image, REQUEST, canonical(text, generation.reasoning_format, generation.think_prefilled))
            trace["think"] = parse(text, generation.think_prefilled, done=True, format=generation.reasoning_format).think
            seconds["plain turn"].append(time.perf_counter() - started)
            rows["plain turn"].append(1)

        def prefixes(variant):
            strategy, batching = variant.split(": ")[1].split(",")[0], "batching engine" in variant
            prefix_judge = grm_prefix_judge(app_judge if batching else judge, image, REQUEST, concurrent=batching)
            point = locate(trace["think"], prefix_judge, strategy)
            seconds[variant].append(point.seconds)
            rows[variant].append(point.judge_calls)
            if variant == "prefixes: linear":
                sentences.append(len(point.sentences))

        plain()  # the trace comes first; the three measurements then rotate their order
        order = variants[index % len(variants):] + variants[: index % len(variants)]
        seconds["plain turn"].pop()
        rows["plain turn"].pop()
        for variant in order:
            plain() if variant == "plain turn" else prefixes(variant)
        print(f"round {index + 1}/{args.rounds}: " + ", ".join(f"{v} {seconds[v][-1]:.2f} s" for v in variants),
              file=sys.stderr)
    base, _ = spread(seconds["plain turn"])
    print(f"\n{args.model}, judge {args.grm}; n = {args.rounds} interleaved rounds over {len(cards)} cards; "
          f"sentences per trace: median {statistics.median(sentences):g} (min {min(sentences)}, max {max(sentences)})\n")
    print("| variant | seconds per turn (median ± IQR) | × plain turn | judge rows per turn (median) |")
    print("|---|---|---|---|")
    for variant in variants:
        median, iqr = spread(seconds[variant])
        print(f"| {variant} | {median:.2f} ± {iqr:.2f} | {median / base:.2f} | {statistics.median(rows[variant]):g} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
