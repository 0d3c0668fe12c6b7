import os

# Tests never reach a hub: everything they load is built here or shipped in assets/.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def real_checkpoint(tmp_path_factory):
    """A tiny random Qwen2.5-VL that differs from the real ones only in size (tests/real_qwen.py)."""
    from real_qwen import real_format_checkpoint

    return real_format_checkpoint(tmp_path_factory.mktemp("real-format"))


@pytest.fixture(scope="session")
def real_tokenizer(real_checkpoint):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(real_checkpoint)
