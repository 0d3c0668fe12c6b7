"""A smoke test for any host with a GPU (or, with --device cpu, any host): does the real code path run?

    python benchmarks/gpu_smoke.py [--device cuda|cpu] [--out DIR]

Rows: each bundled model loaded through saferdemo.loading (bf16 on CUDA) and streamed by the transformers
engine; one side-by-side turn with the judge and the aligned column's safety loop; the vLLM engine, when vLLM
is installed; a few GRPO steps (on accelerate's device) with LoRA and safety-aware rollouts through `training.safer.curate_and_train`
(the function both the miniature build and `python -m training safer` run), which must reflect at least once.
Needs only torch, transformers, peft and accelerate; trl and vLLM rows are skipped with the reason when
missing. Prints a table (what ran, seconds, tokens/s) and exits 1 if a row that could run failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from saferdemo.app.models import DEFAULTS  # noqa: E402
from saferdemo.app.session import Column, Comparison  # noqa: E402
from saferdemo.engines.base import GenerationParams  # noqa: E402
from saferdemo.engines.transformers_engine import TransformersEngine  # noqa: E402
from saferdemo.images import load_image  # noqa: E402
from saferdemo.judge import GRMClient, rubric_of  # noqa: E402
from saferdemo.prompts import user_turn  # noqa: E402

EXAMPLES = ROOT / "assets" / "examples"
PROMPT = "Complete the list on this card, step by step."


class Row(dict):
    """One line of the table: check, status, seconds, tokens/s, detail."""


def run_row(rows: list[Row], check: str, fn) -> None:
    start = time.perf_counter()
    try:
        result = fn() or {}
        rows.append(Row(check=check, status=result.pop("status", "ran"), seconds=time.perf_counter() - start, **result))
    except Exception as error:  # a failed row is reported, and the others still run
        traceback.print_exc()
        rows.append(Row(check=check, status="FAILED", seconds=time.perf_counter() - start,
                        detail=f"{type(error).__name__}: {error}"[:120]))


def stream(engine, image) -> dict:
    generation = engine.start([user_turn(PROMPT)], [image], GenerationParams(max_new_tokens=128), threading.Event())
    text = "".join(generation)
    assert text, "nothing generated"
    return {"tokens_per_s": generation.stats.tokens_per_s, "detail": f"{generation.stats.tokens} tokens, "
            f"TTFT {generation.stats.ttft_s:.3f} s, {generation.stats.finish_reason}"}


def side_by_side(engines, image) -> dict:
    judge = GRMClient(engines["grm"], rubric_of(DEFAULTS["grm"]), 200)
    comparison = Comparison([Column("base", engines["base"]), Column("aligned", engines["aligned"])], judge)
    final = {}
    for name, turn in comparison.run([], PROMPT, [image], GenerationParams(max_new_tokens=192)):
        final[name] = turn
    verdicts = {n: (t.final_judgement.judgement.verdict if t.final_judgement and t.final_judgement.judgement
                    else "unverified") for n, t in final.items()}
    assert all(t.error is None for t in final.values()), {n: t.error for n, t in final.items()}
    return {"detail": f"base {verdicts['base']}, aligned {verdicts['aligned']} "
                      f"(reflected: {final['aligned'].reflected})"}


def vllm_row(image) -> dict:
    from saferdemo.engines.vllm_engine import VLLMEngine, vllm_unavailable_reason

    reason = vllm_unavailable_reason()
    if reason:
        return {"status": "skipped", "detail": reason}
    engine = VLLMEngine.from_pretrained(str(DEFAULTS["base"]), "base")
    try:
        return stream(engine, image)
    finally:
        engine.shutdown()


def grpo_row(device: str, out: Path) -> dict:
    missing = [m for m in ("trl", "datasets") if importlib.util.find_spec(m) is None]
    if missing:
        return {"status": "skipped", "detail": f"not installed: {', '.join(missing)} (pip install -e '.[training]')"}
    from training.curate import CurationConfig
    from training.grpo import GRPOStageConfig
    from training.recipes import SaferConfig
    from training.safer import curate_and_train

    index = json.loads((EXAMPLES / "examples.json").read_text())
    candidates = [{"image": load_image(EXAMPLES / e["image"]), "prompt": e["prompt"], "harmful": e["harmful"],
                   "category": e["category"], "look_alike": e["look_alike"]} for e in index]
    judge = GRMClient(TransformersEngine.from_pretrained(DEFAULTS["grm"], device, name="judge"), "short", 200)
    method = SaferConfig(CurationConfig(samples=2, mean_low=0.0, mean_high=1.0, std_min=0.0, keep_unjudged=True,
                                        max_new_tokens=64),
                         GRPOStageConfig(steps=3, num_generations=4, prompts_per_step=2, max_completion_length=64,
                                         reflection_budget=48, beta=0.04))
    report = curate_and_train(DEFAULTS["base"], judge, candidates, method, out)
    r = report["rollouts"]
    assert r["reflected"] > 0, f"no reflection in {r['drafts']} drafts"
    return {"detail": f"{r['drafts']} drafts, {r['flagged']} flagged, {r['reflected']} reflected, "
                      f"{r['corrected']} corrected; reward {report['reward_curve']}"}


def main(argv=None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None, help="folder for the GRPO run (default: a temp folder)")
    args = parser.parse_args(argv)
    image = load_image(EXAMPLES / "1-fraud.png")
    rows: list[Row] = []
    engines = {}
    for role in ("base", "aligned", "grm"):
        def load_and_stream(role=role):
            engines[role] = TransformersEngine.from_pretrained(DEFAULTS[role], args.device, name=role)
            return stream(engines[role], image)

        run_row(rows, f"{role}: load + stream ({args.device}, {_dtype(args.device)})", load_and_stream)
    if len(engines) == 3:
        run_row(rows, "side-by-side turn (judge, safety loop)", lambda: side_by_side(engines, image))
    run_row(rows, "vLLM engine: stream", lambda: vllm_row(image))
    out = args.out or Path(tempfile.mkdtemp(prefix="saferdemo-gpu-smoke-"))
    run_row(rows, "GRPO: 3 steps, LoRA, safety-aware rollouts", lambda: grpo_row(args.device, out))
    print(table(rows, torch))
    return 1 if any(r["status"] == "FAILED" for r in rows) else 0


def _dtype(device: str) -> str:
    return "bf16" if device.startswith("cuda") else "fp32"


def table(rows: list[Row], torch) -> str:
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    lines = [f"GPU smoke on {device}, torch {torch.__version__}", "",
             "| check | status | seconds | tok/s | detail |", "|---|---|---|---|---|"]
    for r in rows:
        speed = f"{r['tokens_per_s']:.0f}" if r.get("tokens_per_s") else ""
        lines.append(f"| {r['check']} | {r['status']} | {r['seconds']:.2f} | {speed} | {r.get('detail', '')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
