"""A bad checkpoint at start-up gives `saferdemo: cannot …` and exit status 2, never a traceback (issue 25,
item 11: truncated or garbage weights, a broken tokenizer, judge_config or adapter_config, an adapter whose
base is nowhere)."""

import json
import os
import shutil
from pathlib import Path

import pytest

from saferdemo.app.models import DEFAULTS
from saferdemo.cli import main


def corrupt(folder: Path, kind: str) -> None:
    weights = folder / "model.safetensors"
    if kind == "truncated weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif kind == "garbage weights":
        weights.write_bytes(os.urandom(5000))
    elif kind == "broken tokenizer.json":
        (folder / "tokenizer.json").write_text("{not json")
    elif kind == "broken judge_config.json":
        (folder / "judge_config.json").write_text("{bad")
    else:  # adapters: a folder with an adapter config and no weights of its own
        weights.unlink()
        (folder / "config.json").unlink()
        (folder / "adapter_model.safetensors").write_bytes(b"")
        config = "[1, 2" if kind == "broken adapter_config.json" else json.dumps(
            {"base_model_name_or_path": str(folder.parent / "no-such-base"), "peft_type": "LORA"})
        (folder / "adapter_config.json").write_text(config)


@pytest.mark.parametrize("kind, role", [
    ("truncated weights", "base"), ("garbage weights", "aligned"), ("broken tokenizer.json", "base"),
    ("broken judge_config.json", "grm"), ("adapter without its base", "aligned"),
    ("broken adapter_config.json", "base"),
])
def test_a_bad_checkpoint_is_named_with_exit_2(tmp_path, capsys, kind, role):
    folder = tmp_path / "model"
    shutil.copytree(DEFAULTS[role], folder)
    corrupt(folder, kind)
    status = main(["compare", "--prompt", "hi", f"--{role}", str(folder)])
    err = capsys.readouterr().err  # the other models' loading bars come first
    assert status == 2 and err.splitlines()[-1].startswith("saferdemo: cannot ") and str(folder) in err
    assert "Traceback" not in err
