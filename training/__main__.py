"""`python -m training miniature --out DIR [--smoke] [--recipe PATH]`: build the miniature model family."""

from __future__ import annotations

import argparse
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
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is built locally
    from training.miniature import load_recipe, run

    recipe_path = args.recipe or RECIPES / ("miniature-smoke.yaml" if args.smoke else "miniature.yaml")
    report = run(load_recipe(recipe_path), args.out, command=" ".join(["python -m training", *argv]))
    print(f"wrote {args.out / 'report.json'}  (base: {report['models']['mini-base']['heldout']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
