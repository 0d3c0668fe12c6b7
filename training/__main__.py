"""Training commands.

  python -m training miniature --out DIR [--smoke] [--recipe PATH]   build the miniature model family
  python -m training curate --policy P --grm G --out DIR              QI-Safe curation of the card world
  python -m training safer --recipe R --out DIR                       curation + GRPO for a real checkpoint
  python -m training examples --out assets/examples                   the app's example cards
  python -m training heldout --out assets/datasets/miniature-heldout  the held-out split as an audit dataset
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

RECIPES = Path(__file__).parent / "recipes"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    mini = commands.add_parser("miniature", help="build the miniature models on the synthetic card world")
    mini.add_argument("--out", required=True, type=Path, help="folder for checkpoints and report.json")
    mini.add_argument("--smoke", action="store_true", help="a tiny run (minutes) that exercises every stage")
    mini.add_argument("--recipe", type=Path, help="YAML recipe (default: recipes/miniature[-smoke].yaml)")
    cur = commands.add_parser("curate", help="QI-Safe curation of the card world with a policy and a GRM")
    cur.add_argument("--policy", required=True, type=Path, help="policy checkpoint (e.g. assets/models/mini-base)")
    cur.add_argument("--grm", required=True, type=Path, help="GRM checkpoint (e.g. assets/models/mini-grm)")
    cur.add_argument("--out", required=True, type=Path)
    cur.add_argument("--samples", type=int, default=8, help="K samples per prompt")
    safer = commands.add_parser("safer", help="SaFeR curation + GRPO of a real checkpoint (recipes/qwen2.5-vl-*.yaml)")
    safer.add_argument("--recipe", required=True, type=Path)
    safer.add_argument("--out", required=True, type=Path)
    examples = commands.add_parser("examples", help="render the app's example cards")
    examples.add_argument("--out", required=True, type=Path)
    heldout = commands.add_parser("heldout", help="export the held-out evaluation cards for `saferdemo audit`")
    heldout.add_argument("--out", required=True, type=Path)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)

    if args.command == "examples":
        from training.examples import write_examples

        print(json.dumps(write_examples(args.out), indent=2))
        return 0
    if args.command == "heldout":
        from training.examples import write_heldout

        print(f"wrote {write_heldout(args.out)} items to {args.out / 'items.jsonl'}")
        return 0
    if args.command == "safer":
        return _safer(args)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the miniature world is built locally
    if args.command == "curate":
        return _curate(args)
    from training.miniature import load_recipe, run

    recipe_path = args.recipe or RECIPES / ("miniature-smoke.yaml" if args.smoke else "miniature.yaml")
    report = run(load_recipe(recipe_path), args.out, command=" ".join(["python -m training", *argv]))
    print(f"wrote {args.out / 'report.json'}  (base: {report['models']['mini-base']['heldout']})")
    return 0


def _curate(args) -> int:
    from saferdemo.loading import load_model, load_processor
    from training import world
    from training.curate import CurationConfig, curate, world_candidates
    from training.grm import GRMJudge

    judge_config = args.grm / "judge_config.json"
    rubric = json.loads(judge_config.read_text())["rubric"] if judge_config.exists() else "full"
    config = CurationConfig(samples=args.samples, rubric=rubric)
    processor = load_processor(args.policy)
    judge = GRMJudge(load_model(args.grm), load_processor(args.grm), rubric)
    stats = curate(load_model(args.policy), judge, processor, world_candidates(world.load_phrases(), 2, config.seed),
                   config, args.out)
    print(json.dumps(stats, indent=2))
    return 0


def _safer(args) -> int:
    from training.miniature import load_recipe
    from training.safer import run

    report = run(load_recipe(args.recipe), args.out)  # paths in the recipe are relative to the working directory
    if report:  # empty on the other processes of a multi-GPU run
        print(json.dumps({k: report[k] for k in ("curation", "rollouts", "timings_s")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
