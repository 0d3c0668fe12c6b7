"""Prepare, on a CPU machine with network, everything `benchmarks/gpu_check.py` needs on a bare GPU machine.

    python benchmarks/gpu_check_prepare.py [--out gpu-check] [--python-version 3.11] [--with-plotly] [--skip PKG]

A lent GPU machine has torch, transformers, peft, accelerate and torchvision, and no network. It lacks trl,
datasets and what datasets brings (pyarrow, pandas, dill, multiprocess, xxhash, python-dateutil); plotly is
optional (curation writes its HTML only when plotly is there). This downloads those wheels with `pip download`
(the versions installed here, which the suite passed on; pyarrow at the oldest datasets accepts, the smallest
wheel) for the GPU machine's Python, into an ignored folder, and builds the real-format Qwen2.5-VL processor
fixture there (Qwen's tokenizer from dashscope's qwen.tiktoken, the real preprocessor config and chat template:
tests/real_qwen.py), packed as fixtures.tar.xz. No Hugging Face Hub access. Prints the folder's size: the device
tool carries at most 64 MiB.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

# What the GPU machine lacks, with the version to fetch (None: the version installed here).
WHEELS = {"trl": None, "datasets": None, "pyarrow": "24.0.0", "pandas": None, "dill": None, "multiprocess": None,
          "xxhash": None, "python-dateutil": None}
OPTIONAL = {"plotly": None, "narwhals": None}  # curation.html only
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
FIXTURE = "qwen2.5-vl-processor"  # the folder inside fixtures.tar.xz


def pinned(packages: dict[str, str | None]) -> list[str]:
    return [f"{name}=={version or importlib.metadata.version(name)}" for name, version in packages.items()]


def download(requirements: list[str], wheels: Path, python_version: str) -> None:
    abi = "cp" + python_version.replace(".", "")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(wheels),
               "--python-version", python_version, "--implementation", "cp", "--abi", abi, "--abi", "none",
               "--abi", "abi3"]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    subprocess.run(command + ["--platform", "any", *requirements], check=True)


def build_fixture(out: Path) -> Path:
    """fixtures.tar.xz: the real-format Qwen2.5-VL processor files (tokenizer, preprocessor, chat template)."""
    from real_qwen import QWEN25_VL_PREPROCESSOR_CONFIG, QWEN25_VL_TOKENIZER, write_qwen_tokenizer

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / FIXTURE
        folder.mkdir()
        write_qwen_tokenizer(folder, QWEN25_VL_TOKENIZER)
        (folder / "preprocessor_config.json").write_text(json.dumps(QWEN25_VL_PREPROCESSOR_CONFIG, indent=2))
        (folder / "chat_template.json").write_text(json.dumps({"chat_template": QWEN25_VL_TOKENIZER.chat_template}))
        archive = out / "fixtures.tar.xz"
        with tarfile.open(archive, "w:xz") as tar:
            tar.add(folder, arcname=FIXTURE)
    return archive


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "gpu-check")
    parser.add_argument("--python-version", default=f"{sys.version_info.major}.{sys.version_info.minor}",
                        help="the GPU machine's Python (binary wheels are per version)")
    parser.add_argument("--with-plotly", action="store_true", help="also plotly (curation.html), ~10 MB more")
    parser.add_argument("--skip", action="append", default=[], help="a package the GPU machine already has")
    args = parser.parse_args(argv)
    wheels = args.out / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    packages = {**WHEELS, **(OPTIONAL if args.with_plotly else {})}
    requirements = pinned({k: v for k, v in packages.items() if k not in args.skip})
    download(requirements, wheels, args.python_version)
    build_fixture(args.out)
    manifest = {"python_version": args.python_version, "requirements": requirements,
                "install": [r for r in requirements if r.split("==")[0] in ("trl", "datasets", "plotly")]}
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    out = io.StringIO()
    print(f"{args.out}: {size / 2**20:.1f} MiB ({len(list(wheels.glob('*.whl')))} wheels, fixtures.tar.xz)", file=out)
    if size > 64 * 2**20:
        print("  over the device tool's 64 MiB carry: --skip what the GPU machine has, or drop --with-plotly", file=out)
    print(f"  on the GPU machine: python benchmarks/gpu_check.py --prepared {args.out.name}", file=out)
    print(out.getvalue(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
