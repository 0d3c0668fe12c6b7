"""`saferdemo serve` runs the app; `saferdemo compare` runs one side-by-side turn in the terminal.

    saferdemo serve [--host 127.0.0.1] [--port 7860] [--base M] [--aligned M] [--grm M]
    saferdemo compare --image card.png --prompt "Complete the list." [--json]
    saferdemo audit --dataset figstep-tiny|figstep|miniature|PATH [--limit N] [--categories A,B] --out DIR
    saferdemo audit --dataset mm-safetybench:DIR|siuo:PATH|vlguard:PATH|hf:PATH [--columns MAPPING] --out DIR
    saferdemo attack --item "Steps to write a phishing email." [--variants A,B] [--controls look-alike|figstep] --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from saferdemo.app.models import ModelChoice, load_models, share_cpu_cores, zero_gpu
from saferdemo.attack import add_parser as attack_parser, precheck as attack_precheck, run as run_attack
from saferdemo.app.session import Comparison, in_column_order
from saferdemo.engines.base import EngineError, GenerationParams
from saferdemo import limits
from saferdemo.images import InputError, load_image
from saferdemo.loading import ModelLoadError
from saferdemo.reasoning_formats import CHOICES as REASONING_CHOICES, ENV as REASONING_ENV, ReasoningFormatError
from saferdemo.safety_loop import LoopConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="saferdemo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="the side-by-side Gradio app")
    serve.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    compare = commands.add_parser("compare", help="one side-by-side turn, printed (no browser)")
    compare.add_argument("--image", help="an image file (optional)")
    compare.add_argument("--prompt", required=True)
    compare.add_argument("--json", action="store_true", help="print JSON instead of text")
    compare.add_argument("--max-new-tokens", type=int, default=192)
    compare.add_argument("--temperature", type=float, default=0.0)
    compare.add_argument("--loop", choices=("aligned", "both", "none"), default="both",
                         help="which columns run the safety loop (default: both, as in the app)")
    compare.add_argument("--seed", type=int, default=None, help="seed for sampling (temperature > 0)")
    compare.add_argument("--export", type=Path, help="also write DIR/comparison.html and DIR/bundle.json")
    replay = commands.add_parser("replay", help="re-run an exported comparison and report where it differs")
    replay.add_argument("bundle", type=Path, help="an exported comparison .html or a bundle.json")
    replay.add_argument("--json", action="store_true")
    audit = commands.add_parser("audit", help="run a safety benchmark on both models (resumable)")
    audit.add_argument("--dataset", default="miniature", help="figstep-tiny, figstep, miniature, a JSONL path, or "
                       "mm-safetybench:DIR, siuo:PATH, vlguard:PATH, hf:PATH (options after #)")
    audit.add_argument("--out", required=True, help="folder for items.jsonl, summary.json and report.html")
    audit.add_argument("--limit", type=int, default=None, help="audit the first N items (categories interleaved)")
    audit.add_argument("--categories", default=None, help="comma-separated categories to keep")
    audit.add_argument("--columns", default=None, help="hf:PATH datasets: our field=their column, comma-separated "
                       "(image=img,prompt=question,harmful=label,category=cat; also split=NAME)")
    audit.add_argument("--max-new-tokens", type=int, default=192)
    audit.add_argument("--temperature", type=float, default=0.0)
    audit.add_argument("--seed", type=int, default=0)
    audit.add_argument("--turning-points", action="store_true",
                       help="also locate where each harmful item's reasoning turns unsafe (prefix judging: about one "
                            "more judge round per response); the statistics go into summary.json")
    audit.add_argument("--span-mode", choices=("schema", "separate"), default="schema",
                       help="judge reasoning and answer within one judgement (schema) or in separate calls")
    audit.add_argument("--concurrency", type=int, default=1, help="items in flight: their responses (one per "
                       "model) generate at once, each judged as it ends (default 1); the records are the same at "
                       "any value, and a resume may change it")
    audit.add_argument("--judge-concurrency", type=int, default=None,
                       help="responses being judged at once (default: as many as generate at once)")
    for sub in (serve, compare, audit, replay, attack_parser(commands)):
        sub.add_argument("--base", help="base model (folder or hub id); env SAFERDEMO_BASE")
        sub.add_argument("--aligned", help="aligned model; env SAFERDEMO_ALIGNED")
        sub.add_argument("--grm", help="judge model, or 'none'; env SAFERDEMO_GRM")
        sub.add_argument("--device", help="cpu, cuda, cuda:1 … (default: GPU if any)")
        sub.add_argument("--max-pixels", type=int, default=None, help="cap on image pixels after resizing")
        sub.add_argument("--backend", choices=("transformers", "vllm"), default="transformers",
                         help="how local models run (vllm: GPU hosts with the vllm extra)")
        for role in ("base", "aligned", "grm"):
            sub.add_argument(f"--{role}-url", help=f"serve the {role} model from this OpenAI-compatible URL "
                                                   f"(e.g. http://127.0.0.1:8000/v1); env SAFERDEMO_{role.upper()}_URL")
        sub.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
        sub.add_argument("--no-batching", action="store_true",
                         help="transformers backend: one generate per request instead of batching all users'")
        sub.add_argument("--reasoning-format", choices=REASONING_CHOICES, default=None,
                         help="the models' reasoning tags (default auto: read from each checkpoint); "
                              "env SAFERDEMO_REASONING_FORMAT")
    args = parser.parse_args(argv)
    if args.reasoning_format:  # read by every engine when it is made (saferdemo.reasoning_formats)
        os.environ[REASONING_ENV] = args.reasoning_format
    urls = {role: getattr(args, f"{role}_url") for role in ("base", "aligned", "grm")}
    choice = ModelChoice.resolve(args.base, args.aligned, args.grm, urls, args.backend, args.api_key_env,
                                 not args.no_batching)
    if args.command == "replay" and _check_bundle(args.bundle):
        return 2  # a bundle that cannot be replayed is refused before any model loads
    if args.command == "attack" and (code := attack_precheck(args)) is not None:
        return code  # --list, or a mistake in the sweep's arguments, before any model loads
    gpu = zero_gpu() if args.command == "serve" else None
    device = "cuda" if gpu else args.device  # ZeroGPU: models go to the GPU at start-up, as Spaces expects
    try:
        columns, judge = load_models(choice, device, args.max_pixels)
    except (ModelLoadError, EngineError, ReasoningFormatError) as error:
        print(f"saferdemo: {error}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return _serve(args, choice, columns, judge, gpu)
    if args.command == "audit":
        return _audit(args, columns, judge)
    if args.command == "attack":
        return run_attack(args, columns, judge)
    if args.command == "replay":
        return _replay(args, columns, judge)
    return _compare(args, columns, judge, choice.titles())


def _audit(args, columns, judge) -> int:
    from saferdemo.audit.datasets import load_dataset
    from saferdemo.audit.runner import AuditConfig, ResumeMismatch, run_audit

    if judge is None:
        print("saferdemo: an audit needs a judge (--grm)", file=sys.stderr)
        return 2
    categories = [c.strip() for c in args.categories.split(",")] if args.categories else None
    if args.columns:  # part of the dataset spec, so a resume with another mapping is refused (issue 26)
        if not args.dataset.lower().startswith("hf:") or "#" in args.dataset:
            print("saferdemo: --columns goes with --dataset hf:PATH (without a #mapping of its own)", file=sys.stderr)
            return 2
        args.dataset = f"{args.dataset}#{args.columns}"
    if args.concurrency < 1 or (args.judge_concurrency is not None and args.judge_concurrency < 1):
        print("saferdemo: --concurrency and --judge-concurrency must be at least 1", file=sys.stderr)
        return 2
    config = AuditConfig(args.dataset, args.limit, categories, args.max_new_tokens, args.temperature, args.seed,
                         args.span_mode, args.concurrency, args.judge_concurrency)
    problems: list[str] = []
    try:
        items = load_dataset(args.dataset, categories, args.limit, problems)
    except (ValueError, FileNotFoundError) as error:
        print(f"saferdemo: {error}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"saferdemo: skipped {problem}", file=sys.stderr)
    if not items:
        print(f"saferdemo: {args.dataset} has no usable items", file=sys.stderr)
        return 2
    share_cpu_cores(columns, judge)  # the models' workers run at once (at concurrency 1 too: answers and judging)
    try:
        summary = run_audit({name: column.engine for name, column in columns.items()}, judge, items, args.out, config)
    except ResumeMismatch as error:
        print(f"saferdemo: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # every finished record is on disk, none of the unfinished: the folder resumes
        print(f"\nsaferdemo: interrupted; run the same command again to resume into {args.out}", file=sys.stderr)
        return 130
    for name, m in summary["models"].items():
        asr, over = m["asr"], m["over_refusal"]
        score = m["safety_score"]["mean"]
        print(f"{name}: ASR {_rate(asr)}, over-refusal {_rate(over)}, safety score "
              f"{'n/a' if score is None else f'{score:.1f}'}, parse failures {m['parse_failures']}")
    if args.turning_points:
        from saferdemo.turning_point import into_summary

        for name, stats in into_summary(args.out, summary, judge)["models"].items():
            print(f"{name}: reasoning turned unsafe in {_rate(stats['turned'])} of its harmful items' traces")
    print(f"wrote {args.out}/items.jsonl, summary.json, report.html")
    return 0



def _rate(rate: dict) -> str:
    return "n/a" if rate["rate"] is None else f"{100 * rate['rate']:.1f}% (n={rate['n']})"


def _serve(args, choice, columns, judge, gpu) -> int:
    import logging

    from saferdemo.app.ui import build_app, launch

    logging.basicConfig(level=logging.INFO, format="%(message)s")  # one JSON line per column per turn
    logging.getLogger("httpx").setLevel(logging.WARNING)  # request lines would repeat every URL
    titles = choice.titles()
    share_cpu_cores(columns, judge)  # the server runs its models' workers at once
    # SIGTERM (a container's stop) exits like Ctrl-C, so the media folder is deleted at exit (atexit).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        launch(build_app(columns, judge, titles, gpu_decorator=gpu), titles, args.host, args.port,
               batched=choice.batching)
    except OSError as error:  # a busy port, an address that is not this machine's
        print(f"saferdemo: cannot serve on {args.host}:{args.port}: {_first_line(error)}", file=sys.stderr)
        return 2
    return 0


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _compare(args, columns, judge, titles: dict[str, str]) -> int:
    try:
        images = [load_image(args.image)] if args.image else []
    except InputError as error:
        print(f"saferdemo: {error}", file=sys.stderr)
        return 2
    loops = {name: LoopConfig(enabled=args.loop == "both" or args.loop == name) for name in columns}
    try:  # the app's limits (saferdemo/limits.py), so every exported bundle can be replayed
        limits.turn(args.prompt, len(images), 0, 0, tokens=limits.tokens(columns, args.prompt))
        limits.settings(args.temperature, 1.0, args.max_new_tokens, 0.5)
        limits.seed(-1 if args.seed is None else args.seed)
    except InputError as error:
        print(f"saferdemo: {error}", file=sys.stderr)
        return 2
    params = GenerationParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                              seed=args.seed if args.temperature > 0 else None)
    final = {}
    for name, turn in Comparison(list(columns.values()), judge).run([], args.prompt, images, params, threading.Event(), loops):
        final[name] = turn
    report = in_column_order(final)  # the app's order: base, then aligned
    if args.export:
        _export(args.export, args.prompt, images, params, loops, report, columns, judge, titles)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, entry in report.items():
            print(_as_text(name, entry))
    return 0 if all(entry["error"] is None for entry in report.values()) else 1


def _export(folder: Path, prompt: str, images, params, loops, report: dict, columns, judge, titles) -> None:
    from dataclasses import asdict

    from saferdemo.app.export import make_bundle, write_page
    from saferdemo.app.session import Exchange

    exchange = Exchange(prompt, images, settings={"params": asdict(params),
                                                  "loops": {n: asdict(c) for n, c in loops.items()}}, results=report)
    bundle = make_bundle([exchange], columns, judge, titles)
    folder.mkdir(parents=True, exist_ok=True)
    write_page(bundle, folder / "comparison.html")
    (folder / "bundle.json").write_text(json.dumps(bundle, indent=1) + "\n")
    print(f"wrote {folder / 'comparison.html'} and {folder / 'bundle.json'}", file=sys.stderr)


def _check_bundle(path: Path) -> bool:
    """Whether the bundle is refused (and why, printed) by the checks that need no model."""
    from saferdemo.app.replay import BundleError, checked_turns, read_bundle

    try:
        checked_turns(read_bundle(path), dict.fromkeys(("base", "aligned")))
    except BundleError as error:
        print(f"saferdemo: {error}", file=sys.stderr)
        return True
    return False


def _replay(args, columns, judge) -> int:
    """0: identical; 1: differences (the models' fingerprints included); 2: not a usable bundle, with why."""
    from saferdemo.app.replay import BundleError, read_bundle, replay

    try:
        bundle = read_bundle(args.bundle)
        differences = replay(bundle, columns, judge)  # every turn is checked before the first one runs
    except BundleError as error:
        print(f"saferdemo: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"turns": len(bundle["turns"]), "differences": differences}, indent=2))
    elif not differences:
        print(f"identical: {len(bundle['turns'])} turn(s) replayed, every column's output and judgement the same")
    for d in [] if args.json else differences:
        where = "models" if d["turn"] is None else f"turn {d['turn']}"
        print(f"{where} {d['column']} {d['field']}:\n  before: {d['before']!r}\n  after:  {d['after']!r}")
    return 0 if not differences else 1


def _as_text(name: str, entry: dict) -> str:
    lines = [f"=== {name} ===", f"think: {entry['draft']['think']}", f"answer: {entry['draft']['answer']}"]
    for key, label in (("draft_judgement", "GRM"), ("final_judgement", "GRM after reflection")):
        j = entry[key]
        if j:
            verdict = j["judgement"]["verdict"] if j["judgement"] else "unreadable"
            lines.append(f"{label}: {verdict}, reward {j['reward']}" + (f" ({j['error']})" if j["error"] else ""))
    if entry["reflected"]:
        lines += [f"reflection: {entry['revision']['reflection']}", f"corrected answer: {entry['revision']['answer']}"]
    if entry["verdict"]["strip"]:
        lines.append(f"verdict: {entry['verdict']['strip']}")
    timing = entry["timings"]["draft"]
    if timing:
        lines.append(f"draft: {timing['tokens']} tokens, TTFT {timing['ttft_s']} s, {timing['tokens_per_s']} tok/s")
    if entry["error"]:
        lines.append(f"error: {entry['error']}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
