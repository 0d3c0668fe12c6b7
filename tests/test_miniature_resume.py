"""The miniature build resumes per stage: a model finished for the same recipe in the same folder is kept."""

from training.miniature.build import MiniatureRecipe, _State


def test_a_finished_model_is_kept_for_the_same_recipe_only(tmp_path):
    recipe = MiniatureRecipe()
    (tmp_path / "mini-base").mkdir()
    _State(tmp_path, recipe).record("mini-base", {"heldout": {"card_reading": 1.0}}, {"sft_read": 12.0})
    again = _State(tmp_path, recipe)
    assert again.done("mini-base") == {"heldout": {"card_reading": 1.0}} and again.done("mini-grm") is None
    assert again.timings == {"sft_read": 12.0}
    assert _State(tmp_path, MiniatureRecipe(seed=1)).done("mini-base") is None  # another recipe rebuilds
    (tmp_path / "mini-base").rmdir()
    assert _State(tmp_path, recipe).done("mini-base") is None  # the checkpoint itself must still be there
    again.finish()
    assert not (tmp_path / "build-state.json").exists()
