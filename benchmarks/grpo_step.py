"""Where a GRPO step's time goes: `python benchmarks/grpo_step.py [--steps 20] [--grm DIR] [--json out.json]`.

Runs the miniature recipe's GRPO stage (training/grpo.py, TRL, LoRA, safety-aware rollouts) on mini-base
with the bundled judge for --steps steps after a warm-up step, on training-style cards, and splits each
step into the rollout's phases as `SafetyAwareRollout` timed them (sample the group, judge the drafts,
reflect on the flagged ones, judge the corrections) and the rest (rewards, log-probs, loss, backward,
optimizer). Prints median and IQR per phase and its share of the step; --json writes every step. Compare
judges (or settings) by running it once per judge on the same machine: `--grm DIR`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformers import TrainerCallback  # noqa: E402

from saferdemo.app.models import DEFAULTS  # noqa: E402
from saferdemo.engines.transformers_engine import TransformersEngine  # noqa: E402
from saferdemo.judge import GRMClient, rubric_of  # noqa: E402
from saferdemo.loading import load_model, load_processor  # noqa: E402
from training import recipes  # noqa: E402
from training.curate import prompt_dataset  # noqa: E402
from training.grpo import train_safer  # noqa: E402
from training.miniature import world  # noqa: E402
from training.miniature.build import MiniatureRecipe  # noqa: E402

RECIPE = Path(__file__).resolve().parent.parent / "training" / "recipes" / "miniature.yaml"
PHASES = ("sample", "judge", "reflect", "rejudge")


class StepTimer(TrainerCallback):
    def __init__(self):
        self.seconds: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._start)


def run(steps: int, grm: Path) -> list[dict]:
    recipe = recipes.load(RECIPE, MiniatureRecipe)
    config = recipe.grpo
    config.steps = steps + 1  # + the warm-up step, left out below
    judge = GRMClient(TransformersEngine.from_pretrained(grm, "cpu", name="judge"), rubric_of(grm))
    rows = world.candidates(world.load_phrases(), 1, seed=0)
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as out:
        _, log = train_safer(load_model(DEFAULTS["base"], "cpu"), load_processor(DEFAULTS["base"]), judge,
                             prompt_dataset(rows), config, out, recipe.reward, callbacks=[timer])
    records = []
    for seconds, step in zip(timer.seconds[1:], log.steps[1:]):
        split = {phase: step["seconds"].get(phase, 0.0) for phase in PHASES}
        records.append({"step_s": seconds, **split, "training": seconds - sum(split.values()),
                        "drafts": step["drafts"], "flagged": step["flagged"]})
    return records


def _iqr(values: list[float]) -> float:
    q = statistics.quantiles(values, n=4)
    return q[2] - q[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--grm", type=Path, default=DEFAULTS["grm"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    records = run(args.steps, args.grm)
    step = statistics.median(r["step_s"] for r in records)
    print(f"n = {len(records)} GRPO steps (miniature recipe: {records[0]['drafts']} rollouts per step), judge "
          f"{args.grm.name}, CPU\n")
    print("| part of a step | median s | IQR s | share of the step |")
    print("|---|---|---|---|")
    for part in ("step_s", *PHASES, "training"):
        values = [r[part] for r in records]
        label = "whole step" if part == "step_s" else part
        print(f"| {label} | {statistics.median(values):.3f} | {_iqr(values):.3f} "
              f"| {100 * statistics.median(values) / step:.0f}% |")
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
