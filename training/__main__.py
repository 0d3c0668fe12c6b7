"""Training commands.

  python -m training safer --recipe R --out DIR                       curation + GRPO for a real checkpoint
  python -m training miniature --out DIR [--smoke] [--recipe PATH] [--only grm]   build the miniature models
  python -m training curate --policy P --grm G --out DIR              QI-Safe curation of the card world
  python -m training examples --out assets/examples                   the app's example cards
  python -m training heldout --out assets/datasets/miniature-heldout  the held-out split as an audit dataset
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

RECIPES = Path(__file__).parent / "recipes"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    safer = commands.add_parser("safer", help="SaFeR curation + GRPO of a real checkpoint (recipes/qwen2.5-vl-*.yaml)")
    safer.add_argument("--recipe", required=True, type=Path)
    safer.add_argument("--out", required=True, type=Path)
    mini = commands.add_parser("miniature", help="build the miniature models on the synthetic card world")
    mini.add_argument("--out", required=True, type=Path, help="folder for checkpoints and report.json")
    mini.add_argument("--smoke", action="store_true", help="a tiny run (minutes) that exercises every stage")
    mini.add_argument("--recipe", type=Path, help="YAML recipe (default: recipes/miniature[-smoke].yaml)")
    mini.add_argument("--only", choices=["grm"], help="rebuild only mini-grm, from the mini-base already in --out")
    cur = commands.add_parser("curate", help="QI-Safe curation of the card world with a policy and a GRM")
    cur.add_argument("--policy", required=True, type=Path, help="policy checkpoint (e.g. assets/models/mini-base)")
    cur.add_argument("--grm", required=True, type=Path, help="GRM checkpoint (e.g. assets/models/mini-grm)")
    cur.add_argument("--out", required=True, type=Path)
    cur.add_argument("--samples", type=int, default=8, help="K samples per prompt")
    examples = commands.add_parser("examples", help="render the app's example cards")
    examples.add_argument("--out", required=True, type=Path)
    heldout = commands.add_parser("heldout", help="export the held-out evaluation cards for `saferdemo audit`")
    heldout.add_argument("--out", required=True, type=Path)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    from training.recipes import RecipeError

    try:
        return COMMANDS[args.command](args, argv)
    except RecipeError as error:
        print(f"python -m training: {error}", file=sys.stderr)
        return 2


def _safer(args, argv) -> int:
    from training import recipes
    from training.safer import NothingCurated, run

    recipe = recipes.load(args.recipe, recipes.SaferRecipe)  # paths in it are relative to the working directory
    try:
        report = run(recipe, args.out)
    except NothingCurated as error:
        print(f"python -m training safer: {error}", file=sys.stderr)
        return 1
    if report:  # empty on the other processes of a multi-GPU run
        print(_summary(report, args.out))
    return 0


def _summary(report: dict, out: Path) -> str:
    c, r = report["curation"], report["rollouts"]
    return (f"curation: kept {c['kept']} of {c['candidates']} prompts (+{c['anchors']} anchors)\n"
            f"rollouts: {r['drafts']} drafts, {r['flagged']} flagged, {r['reflected']} reflected, "
            f"{r['corrected']} corrected\nwrote {out / 'model'} and {out / 'report.json'}")


def _world_command(name: str):
    """The card world's commands live with it (training/miniature/commands.py)."""
    def command(args, argv) -> int:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the miniature world is built locally
        from training.miniature import commands

        return getattr(commands, name)(args, argv, RECIPES)

    return command


COMMANDS = {"safer": _safer, **{name: _world_command(name) for name in ("miniature", "curate", "examples", "heldout")}}

if __name__ == "__main__":
    sys.exit(main())
