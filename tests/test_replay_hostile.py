"""Issue 25 items 8 and 10: `saferdemo replay` trusts nothing in a bundle. Every refusal is one
`saferdemo: …` line and exit status 2 (1 means "differences"), and comes before any model runs."""

import base64
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from saferdemo.app.export import BUNDLE_TAG, FORMAT

RUN = [sys.executable, "-m", "saferdemo.cli", "replay"]
RESULT = {"final_answer": "x", "reflected": False}


def bundle(turns=None, **turn):
    one = {"text": "Complete the list.", "images": [], "results": {"base": RESULT, "aligned": RESULT},
           "settings": {"params": {"max_new_tokens": 32, "temperature": 0.0, "top_p": 1.0, "seed": None},
                        "loops": {"base": {"enabled": False, "threshold": 0.5}}}} | turn
    return {"format": FORMAT, "created": "now", "models": {}, "judge": None, "versions": {},
            "turns": [one] if turns is None else turns}


def replay(path: Path, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([*RUN, str(path), *extra], capture_output=True, text=True, timeout=600)


def refused(result, message: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-1500:])
    assert "Traceback" not in result.stderr and message in result.stderr, result.stderr[-1500:]


def png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def write(tmp_path: Path, name: str, data) -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


HUGE = png(Image.new("1", (13000, 13000)))  # 169 megapixels in ~25 KB


@pytest.mark.parametrize("name, data, message", [
    ("twelve-huge.json", bundle(images=[HUGE] * 4), "turn 1: image 1 is 13000x13000 pixels (169 megapixels); the limit is 40"),
    ("long.json", bundle(text="x" * 200_000), "turn 1: The message is 200,000 characters; the limit is 4,000."),
    ("five-images.json", bundle(images=[png(Image.new("RGB", (8, 8)))] * 5), "5 images attached; the limit is 4"),
    ("turns.json", bundle([bundle()["turns"][0]] * 21), "turn 21: This conversation has reached 20 turns."),
    ("hot.json", bundle(settings={"params": {"max_new_tokens": 32, "temperature": 9.0, "top_p": 1.0}, "loops": {}}),
     "The temperature must be a number from 0 to 1.5; got 9.0."),
    ("nan.json", '{"format": "%s", "turns": [{"text": "a", "images": [], "results": {"base": {}}, "settings": '
     '{"params": {"max_new_tokens": NaN, "temperature": 0, "top_p": 1}, "loops": {}}}]}' % FORMAT,
     "Max new tokens must be a whole number from 1 to 1024; got nan."),
    ("not-base64.json", bundle(images=["%%%"]), "turn 1 image 1 is not base64"),
    ("no-settings.json", bundle(settings=None), "turn 1: settings must hold params and loops objects"),
    ("empty.json", bundle([]), "holds no turns to replay"),
    ("garbage.json", "{not json", "not JSON (JSONDecodeError)"),
    ("deep.json", "[" * 100_000, "not JSON (RecursionError)"),
    ("list.json", [1, 2], "is not a saferdemo bundle"),
    ("binary.json", "\udcff", "is not text (UTF-8)"),
])
def test_a_bad_bundle_is_refused_with_exit_2(tmp_path, name, data, message):
    path = tmp_path / name
    if data == "\udcff":
        path.write_bytes(b"\xff\xfe\x00garbage")
    else:
        write(tmp_path, name, data)
    started = time.perf_counter()
    result = replay(path)
    refused(result, message)
    assert time.perf_counter() - started < 60  # refused up front, not after replaying


def test_a_device_and_a_folder_are_not_bundles(tmp_path):
    refused(replay(Path("/dev/zero")), "/dev/zero is not a regular file.")
    refused(replay(tmp_path), "is not a regular file.")


def test_huge_images_are_refused_without_decoding_them(tmp_path):
    """Twelve 13000x13000 1-bit PNGs (a 0.3 MB bundle) took replay past 5 GB; now refused in well under 1 GB."""
    path = write(tmp_path, "huge.json", bundle([bundle(images=[HUGE] * 4)["turns"][0]] * 3))
    script = ("import resource, sys; from saferdemo.cli import main; code = main(sys.argv[1:]); "
              "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFERDEMO_")}  # the bundled models, nothing else
    result = subprocess.run([sys.executable, "-c", script, "replay", str(path)], capture_output=True, text=True,
                            timeout=300, env=env)
    refused(result, "megapixels")
    # Peak RSS in KB: 0.45 GB when this test runs alone (torch and the three models), 1.7-2.0 GB inside a full
    # suite run (not understood: the subprocess is fresh and its SAFERDEMO_ settings cleared). Decoding the twelve
    # images takes over 5 GB (each is 0.5 GB as RGB), which this bound still catches.
    assert int(result.stdout.split()[-1]) < 2_500_000


def test_a_decoy_second_bundle_element_is_refused(tmp_path):
    """A page holding an empty decoy bundle before the real one replayed "identical" with nothing checked."""
    page = tmp_path / "page.html"
    decoy = f'{BUNDLE_TAG}{{"format": "{FORMAT}", "turns": []}}</script>'
    page.write_text(f"<html><body>{decoy}<p>...</p>{BUNDLE_TAG}{json.dumps(bundle())}</script></body></html>")
    refused(replay(page), "holds 2 bundle elements; an exported page holds one")
    unclosed = tmp_path / "unclosed.html"
    unclosed.write_text(f"<html>{BUNDLE_TAG}{json.dumps(bundle())}")
    refused(replay(unclosed), "the bundle element is never closed")


def test_other_models_are_a_difference_not_identical(tmp_path):
    """Model fingerprints are compared: a bundle made with other weights is reported (exit 1), never identical."""
    from saferdemo.app.export import make_bundle
    from saferdemo.app.models import ModelChoice, load_models
    from saferdemo.app.session import Exchange

    choice = ModelChoice.resolve()
    columns, judge = load_models(choice, "cpu")
    exchange = Exchange("Hi.", [], settings={"params": {"max_new_tokens": 8, "temperature": 0.0, "top_p": 1.0,
                                                        "seed": None}, "loops": {}}, results={})
    made = make_bundle([exchange], columns, judge, choice.titles())
    made["models"]["base"]["fingerprint"] = "0123456789abcdef"
    made["turns"][0]["results"] = {"base": {"final_answer": "x"}}
    result = replay(write(tmp_path, "other.json", made), "--json")
    assert result.returncode == 1, result.stderr[-1500:]
    found = json.loads(result.stdout)["differences"]
    assert {"turn": None, "column": "base", "field": "model.fingerprint", "before": "0123456789abcdef"}.items() <= found[0].items()
    assert not [d for d in found if d["column"] in ("aligned", "grm") and d["field"] == "model.fingerprint"]


def test_compare_applies_the_apps_limits_so_its_exports_replay(tmp_path):
    """`saferdemo compare` takes what the app takes (saferdemo/limits.py): a bundle it exports can be replayed."""
    result = subprocess.run([sys.executable, "-m", "saferdemo.cli", "compare", "--prompt", "Hi.", "--max-new-tokens",
                             "5000", "--export", str(tmp_path)], capture_output=True, text=True, timeout=600)
    refused(result, "Max new tokens must be a whole number from 1 to 1024; got 5000.")
    assert not (tmp_path / "bundle.json").exists()
