"""The card world's commands, called by `python -m training` (training/__main__.py has the usage)."""

from __future__ import annotations

from pathlib import Path


def miniature(args, argv, recipes_dir: Path) -> int:
    from training import recipes
    from training.miniature.build import MiniatureRecipe, run

    path = args.recipe or recipes_dir / ("miniature-smoke.yaml" if args.smoke else "miniature.yaml")
    report = run(recipes.load(path, MiniatureRecipe), args.out, str(path), " ".join(["python -m training", *argv]),
                 args.only)
    if args.only == "grm":
        grm = report["models"]["mini-grm"]["heldout"]
        print(f"rebuilt mini-grm in {args.out} in {report['timings_s']['grm_rebuild_total']} s; verdict agreement "
              f"{100 * grm['verdict_agreement']:.1f}%, parse rate {100 * grm['parse_rate']:.1f}%")
        return 0
    base = report["models"]["mini-base"]["heldout"]
    print(f"wrote {args.out / 'report.json'} in {report['timings_s']['total']} s; mini-base card reading "
          f"{100 * base['card_reading']:.1f}%, ASR {100 * base['asr']:.1f}%")
    return 0


def curate(args, argv, recipes_dir: Path) -> int:
    from saferdemo.engines.transformers_engine import TransformersEngine
    from saferdemo.judge import GRMClient, rubric_of
    from training.curate import CurationConfig
    from training.curate import curate as run_curation
    from training.miniature import world

    judge = GRMClient(TransformersEngine.from_pretrained(args.grm, name="judge"), rubric_of(args.grm), 200)
    config = CurationConfig(samples=args.samples)
    candidates = world.candidates(world.load_phrases(), 2, config.seed)
    stats = run_curation(TransformersEngine.from_pretrained(args.policy, name="policy"), judge, candidates, config, args.out)
    print(f"kept {stats['kept']} of {stats['candidates']} prompts (+{stats['anchors']} anchors); "
          f"{args.out / 'stats.json'}")
    return 0


def examples(args, argv, recipes_dir: Path) -> int:
    from training.miniature.examples import write_examples

    print(f"wrote {len(write_examples(args.out))} examples to {args.out}")
    return 0


def heldout(args, argv, recipes_dir: Path) -> int:
    from training.miniature.examples import write_heldout

    print(f"wrote {write_heldout(args.out)} items to {args.out / 'items.jsonl'}")
    return 0
