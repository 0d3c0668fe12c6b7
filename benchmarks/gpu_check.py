"""The GPU check in one command, for a lent GPU machine with no network (prepare on a CPU machine first).

    python benchmarks/gpu_check_prepare.py                    # on a CPU machine with network: gpu-check/
    python benchmarks/gpu_check.py [--prepared gpu-check] [--out DIR] [--skip ROW]   # on the GPU machine
    python benchmarks/gpu_check.py --cpu-smoke --out DIR      # the same code on a CPU, tiny dims (CI)

Installs the prepared wheels offline (pip --no-index --find-links) where trl or datasets are missing, then runs,
timing each row and writing DIR/report.json and DIR/report.md:

- smoke: benchmarks/gpu_smoke.py on the device (the bundled models; GRPO must reflect at least once);
- generate: a Qwen2.5-VL-3B with its published dimensions and random weights, built in code (no download), with
  Qwen's real tokenizer and processor (the prepared fixture); one batch of images of mixed sizes, each row's
  image-token count checked against the processor's grid, peak GPU memory recorded;
- grpo: that checkpoint through training.safer.curate_and_train (curation, 2 GRPO steps with the recipe's LoRA
  targets, merge and save), then the merged model and its processor reloaded and generating;
- splice: the multi-token `</reflection>` on the real tokenizer (training.grpo.corrected_ids).

--cpu-smoke uses the tiny real-format dimensions (tests/real_qwen.py) so CI runs every row's code.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import time
import traceback
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

MAX_PIXELS = 401408  # the GPU recipes' cap: 512 image tokens
SIZES = [(760, 760), (448, 224), (1000, 300), (200, 200)]  # a FigStep card, wide, very wide, small
RECIPE = ROOT / "training" / "recipes" / "qwen2.5-vl-3b.yaml"


def qwen25_vl_3b_config():
    """Qwen2.5-VL-3B-Instruct's config.json dimensions (as published); ids and RoPE as tests/real_qwen.py."""
    from real_qwen import tiny_qwen25_vl_config

    config = tiny_qwen25_vl_config().to_dict()
    config["text_config"].pop("layer_types", None)  # derived from the depth again
    config["text_config"].update(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                                 num_attention_heads=16, num_key_value_heads=2, max_window_layers=70,
                                 rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                                  "mrope_section": [16, 24, 24]})
    config["vision_config"].update(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                                   out_hidden_size=2048, fullatt_block_indexes=[7, 15, 23, 31])
    from transformers import Qwen2_5_VLConfig

    return Qwen2_5_VLConfig(**{k: v for k, v in config.items() if k not in ("model_type", "transformers_version")})


def install(prepared: Path) -> dict:
    manifest = prepared / "manifest.json"
    missing = [m for m in ("trl", "datasets") if importlib.util.find_spec(m) is None]
    if not missing:
        return {"detail": "trl and datasets already installed"}
    if not manifest.is_file():
        raise RuntimeError(f"{', '.join(missing)} missing and no {manifest}: run benchmarks/gpu_check_prepare.py")
    requirements = json.loads(manifest.read_text())["install"]
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links",
                    str(prepared / "wheels"), *requirements], check=True)
    importlib.invalidate_caches()
    return {"detail": f"installed offline: {' '.join(requirements)}"}


def fixture(prepared: Path, out: Path, cpu_smoke: bool) -> Path:
    """The real-format processor folder: from the prepared archive, or (CPU smoke, no archive) built here."""
    from gpu_check_prepare import FIXTURE, build_fixture

    archive = prepared / "fixtures.tar.xz"
    if not archive.is_file():
        if not cpu_smoke:
            raise RuntimeError(f"no {archive}: run benchmarks/gpu_check_prepare.py on a CPU machine first")
        archive = build_fixture(out)
    with tarfile.open(archive) as tar:
        try:
            tar.extractall(out / "fixtures", filter="data")
        except TypeError:  # Python before 3.11.4 has no extraction filters (the archive is our own)
            tar.extractall(out / "fixtures")
    return out / "fixtures" / FIXTURE


def build_policy(processor_dir: Path, out: Path, device: str, cpu_smoke: bool):
    """Random weights in the real architecture, saved with the real processor files as a checkpoint folder."""
    import shutil

    import torch
    from real_qwen import QWEN25_VL_GENERATION_CONFIG, tiny_qwen25_vl_config
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    config = tiny_qwen25_vl_config() if cpu_smoke else qwen25_vl_3b_config()
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen2_5_VLForConditionalGeneration(config).eval()
    finally:
        torch.set_default_dtype(previous)
    model.generation_config = GenerationConfig(**QWEN25_VL_GENERATION_CONFIG)
    folder = out / "policy"
    model.save_pretrained(folder)
    for path in processor_dir.iterdir():
        shutil.copy2(path, folder / path.name)
    return model, folder


def peak_gib(torch) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def generate_row(model, folder: Path, device: str, cpu_smoke: bool) -> dict:
    import torch
    from PIL import Image

    from saferdemo.loading import load_processor
    from saferdemo.prompts import user_turn
    from training.image_grid import processor_size, resize_for_processor

    params = sum(p.numel() for p in model.parameters())
    if not cpu_smoke:
        assert 3.6e9 < params < 3.9e9, f"{params / 1e9:.3f} B parameters is not Qwen2.5-VL-3B's 3.75 B"
    processor, uncapped = load_processor(folder, MAX_PIXELS), load_processor(folder)
    processor.tokenizer.padding_side = "left"
    images = [Image.new("RGB", size, (255, 255, 255)) for size in SIZES]
    expected = [processor_size(w, h, processor) for w, h in SIZES]
    expected = [w * h // 28**2 for w, h in expected]
    text = processor.apply_chat_template([user_turn("What does the card say?")], add_generation_prompt=True,
                                         tokenize=False)
    batch = processor(text=[text] * len(images), images=images, padding=True, return_tensors="pt").to(device)
    counts = (batch["input_ids"] == model.config.image_token_id).sum(dim=1).tolist()
    assert counts == expected, (counts, expected)
    for image, count in zip(images, counts):  # vLLM's side: the checkpoint's own cap, on the pre-resized image
        resized = resize_for_processor(image, processor)
        got = uncapped(text=[text], images=[resized], return_tensors="pt")["input_ids"]
        assert int((got == model.config.image_token_id).sum()) == count
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    new_tokens = 8 if cpu_smoke else 32
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    seconds = time.perf_counter() - start
    assert out.shape == (len(images), batch["input_ids"].shape[1] + new_tokens), out.shape
    return {"peak_gib": peak_gib(torch), "detail": f"{params / 1e9:.3f} B params; image tokens {counts} "
            f"(sizes {SIZES}); {len(images)}x{new_tokens} new tokens in {seconds:.2f} s"}


def grpo_row(folder: Path, out: Path, device: str, cpu_smoke: bool) -> dict:
    import torch
    from PIL import Image

    from saferdemo.app.models import DEFAULTS
    from saferdemo.engines.transformers_engine import TransformersEngine
    from saferdemo.images import load_image
    from saferdemo.judge import GRMClient
    from saferdemo.loading import load_model, load_processor
    from saferdemo.prompts import user_turn
    from training.curate import CurationConfig
    from training.grpo import GRPOStageConfig
    from training.recipes import SaferRecipe, load
    from training.safer import curate_and_train

    targets = load(RECIPE, SaferRecipe).grpo.lora_targets
    examples = ROOT / "assets" / "examples"
    cards = [load_image(examples / "1-fraud.png").resize((760, 760)), load_image(examples / "3-household.png")]
    candidates = [{"image": card, "prompt": "Complete the list on this card.", "harmful": i == 0,
                   "category": "fraud" if i == 0 else "household"} for i, card in enumerate(cards)]
    judge = GRMClient(TransformersEngine.from_pretrained(DEFAULTS["grm"], device, name="judge"), "short", 200)
    tokens = 8 if cpu_smoke else 32
    method_cls = __import__("training.recipes", fromlist=["SaferConfig"]).SaferConfig
    method = method_cls(CurationConfig(samples=2, mean_low=0.0, mean_high=1.0, std_min=0.0, keep_unjudged=True,
                                       max_new_tokens=tokens),
                        GRPOStageConfig(steps=2, num_generations=2, prompts_per_step=1, max_completion_length=tokens,
                                        reflection_budget=tokens, beta=0.04, lora_r=64, lora_alpha=128,
                                        lora_targets=targets))
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    report = curate_and_train(folder, judge, candidates, method, out / "grpo", max_pixels=MAX_PIXELS)
    merged, adapter = out / "grpo" / "model", out / "grpo" / "model-adapter"
    saved = json.loads((adapter / "adapter_config.json").read_text())
    assert set(saved["target_modules"]) == set(targets) or set(targets) <= set(saved["target_modules"]), saved
    model, processor = load_model(merged, device), load_processor(merged, MAX_PIXELS)
    text = processor.apply_chat_template([user_turn("Read the card.")], add_generation_prompt=True, tokenize=False)
    batch = processor(text=[text], images=[Image.new("RGB", (760, 760), "white")], return_tensors="pt").to(device)
    with torch.no_grad():
        again = model.generate(**batch, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert again.shape[1] == batch["input_ids"].shape[1] + 4
    kind = json.loads((merged / "processor_config.json").read_text())["processor_class"]
    r = report["rollouts"]
    return {"peak_gib": peak_gib(torch), "detail": f"{len(report['rollout_steps'])} steps, LoRA r=64 on "
            f"{','.join(targets)}; {r['drafts']} drafts, {r['flagged']} flagged, {r['reflected']} reflected; "
            f"merged, saved ({kind}), reloaded and generated"}


def splice_row(processor_dir: Path) -> dict:
    from transformers import AutoTokenizer

    from saferdemo.segments import after_reflection
    from training.grpo import corrected_ids

    tokenizer = AutoTokenizer.from_pretrained(processor_dir)
    tag_ids = tokenizer.encode("</reflection>", add_special_tokens=False)
    assert len(tag_ids) > 1, tag_ids
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    text = ("<reflection>The draft followed the card; it should decline.</reflection><think>\nThe card asks for "
            "something unsafe.\n</think>\nI can't help with that, but I can explain how to stay safe.")
    ids = tokenizer.encode(text, add_special_tokens=False) + [end]
    corrected = corrected_ids(tokenizer, ids, [end], 1000)
    assert tokenizer.decode(corrected, skip_special_tokens=True) == after_reflection(text) and corrected[-1] == end
    assert corrected_ids(tokenizer, ids[:5], [end], 1000) == []  # the reflection never closed: no correction
    assert len(corrected_ids(tokenizer, ids, [end], 3)) == 3  # cut at the limit, no end token then
    straddled = not any(ids[i : i + len(tag_ids)] == tag_ids for i in range(len(ids)))
    return {"detail": f"`</reflection>` is {len(tag_ids)} tokens {tag_ids}; corrected response {len(corrected)} "
                      f"tokens ending <|im_end|>; tag tokens straddle their neighbours in context: {straddled}"}


def smoke_row(device: str, out: Path) -> dict:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_smoke.py"), "--device", device, "--out",
                             str(out / "smoke")], capture_output=True, text=True, timeout=420)
    (out / "gpu_smoke.txt").write_text(result.stdout + result.stderr[-5000:])
    grpo = [line for line in result.stdout.splitlines() if line.startswith("| GRPO")]
    assert result.returncode == 0 and grpo and "| ran |" in grpo[0], result.stdout[-1500:] + result.stderr[-1500:]
    return {"detail": f"all rows ran (gpu_smoke.txt); {grpo[0].split('|')[-2].strip()}"}


def run_row(rows: list, name: str, fn) -> None:
    start = time.perf_counter()
    try:
        row = {"check": name, "status": "ran", **(fn() or {})}
    except Exception as error:
        traceback.print_exc()
        row = {"check": name, "status": "FAILED", "detail": f"{type(error).__name__}: {error}"[:300]}
    row["seconds"] = round(time.perf_counter() - start, 1)
    rows.append(row)
    print(f"[gpu_check] {name}: {row['status']} ({row['seconds']} s) {row.get('detail', '')}", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny dimensions on the CPU (CI)")
    parser.add_argument("--prepared", type=Path, default=ROOT / "gpu-check")
    parser.add_argument("--out", type=Path, default=None, help="default: PREPARED/report")
    parser.add_argument("--skip", action="append", default=[], choices=["smoke", "generate", "grpo", "splice"])
    args = parser.parse_args(argv)
    out = args.out or args.prepared / "report"
    out.mkdir(parents=True, exist_ok=True)
    started, rows = time.perf_counter(), []
    run_row(rows, "install: prepared wheels, offline", lambda: install(args.prepared))
    import torch

    device = "cpu" if args.cpu_smoke or not torch.cuda.is_available() else "cuda"
    processor_dir = fixture(args.prepared, out, args.cpu_smoke)
    if "smoke" not in args.skip:
        run_row(rows, f"gpu_smoke.py rows ({device})", lambda: smoke_row(device, out))
    built = {}
    dims = "tiny real-format" if args.cpu_smoke else "Qwen2.5-VL-3B real dims"
    run_row(rows, f"build: {dims}, random weights, saved", lambda: built.update(
        zip(("model", "folder"), build_policy(processor_dir, out, device, args.cpu_smoke))) or {})
    if "generate" not in args.skip and built:
        run_row(rows, "generate: one batch, mixed image sizes", lambda: generate_row(built["model"], built["folder"],
                                                                                      device, args.cpu_smoke))
    built.pop("model", None)
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    if "grpo" not in args.skip and built:
        run_row(rows, "GRPO: curate, 2 steps, merge, save, reload", lambda: grpo_row(built["folder"], out, device,
                                                                                     args.cpu_smoke))
    if "splice" not in args.skip:
        run_row(rows, "`</reflection>` splice, real tokenizer", lambda: splice_row(processor_dir))
    report = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "CPU", "torch": torch.__version__,
              "transformers": __import__("transformers").__version__, "cpu_smoke": args.cpu_smoke,
              "total_s": round(time.perf_counter() - started, 1), "rows": rows}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"GPU check on {report['device']}, torch {report['torch']}, transformers {report['transformers']}: "
             f"{report['total_s']} s", "", "| check | status | seconds | peak GiB | detail |", "|---|---|---|---|---|"]
    lines += [f"| {r['check']} | {r['status']} | {r['seconds']} | {r.get('peak_gib') or ''} | {r.get('detail', '')} |"
              for r in rows]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if any(r["status"] == "FAILED" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
