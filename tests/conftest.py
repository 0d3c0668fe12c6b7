import os

# Tests never reach a hub: everything they load is built here or shipped in assets/.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


import pytest  # noqa: E402


def pytest_report_header(config):
    """What this run resolved: CI installs whatever a fresh install gets today (README: Supported versions)."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "gradio"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return "saferdemo resolved: " + ", ".join(found)


@pytest.fixture(scope="session")
def real_checkpoint(tmp_path_factory):
    """A tiny random Qwen2.5-VL that differs from the real ones only in size (tests/real_qwen.py)."""
    from real_qwen import real_format_checkpoint

    return real_format_checkpoint(tmp_path_factory.mktemp("real-format"))


@pytest.fixture(scope="session")
def real_tokenizer(real_checkpoint):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(real_checkpoint)
