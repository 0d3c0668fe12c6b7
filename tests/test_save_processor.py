"""save_processor keeps the checkpoint's own processor class (a Qwen3-VL run must not be saved as Qwen2.5-VL's)."""

import json

import pytest

from saferdemo.loading import ImageOnlyQwen2_5_VLProcessor, load_processor, save_processor


def saved_classes(folder) -> dict:
    found = {}
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        path = folder / name
        if path.is_file():
            config = json.loads(path.read_text())
            assert "checkpoint_class" not in config, name  # bookkeeping never reaches the files
            if "processor_class" in config:
                found[name] = config["processor_class"]
    return found


@pytest.mark.parametrize("family,processor_class", [("qwen2.5-vl", "Qwen2_5_VLProcessor"),
                                                     ("qwen3-vl", "Qwen3VLProcessor")])
def test_a_saved_processor_names_the_checkpoints_class(real_checkpoint, tmp_path, family, processor_class):
    from real_qwen import real_format_checkpoint

    checkpoint = real_format_checkpoint(real_checkpoint.parent, family)
    processor = load_processor(checkpoint, 401408)
    save_processor(processor, tmp_path)
    classes = saved_classes(tmp_path)
    assert classes and set(classes.values()) == {processor_class}, classes
    again = load_processor(tmp_path)  # and it loads back, with the cap kept and the class still known
    assert again.image_processor.size["longest_edge"] == 401408
    if isinstance(again, ImageOnlyQwen2_5_VLProcessor):
        assert again.checkpoint_class == processor_class
    else:
        assert type(again).__name__ == processor_class


def test_the_image_only_processor_saves_as_qwen25_vls_own_class(real_checkpoint, tmp_path):
    """A processor built in code (the miniature build does) names the class AutoProcessor knows, not ours."""
    from real_qwen import QWEN25_VL_PREPROCESSOR_CONFIG, image_processor_from

    processor = load_processor(real_checkpoint)
    built = ImageOnlyQwen2_5_VLProcessor(image_processor_from(QWEN25_VL_PREPROCESSOR_CONFIG), processor.tokenizer,
                                         chat_template=processor.chat_template)
    save_processor(built, tmp_path)
    assert set(saved_classes(tmp_path).values()) == {"Qwen2_5_VLProcessor"}
    assert "ImageOnly" not in "".join(p.read_text() for p in tmp_path.glob("*.json"))
