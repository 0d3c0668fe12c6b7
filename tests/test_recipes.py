"""Typed recipes: every shipped recipe parses; mistakes name their key; the trl passthrough cannot shadow."""

from pathlib import Path

import pytest

from training import recipes
from training.grpo import GRPOStageConfig, grpo_args
from training.miniature.build import MiniatureRecipe

RECIPES = Path(__file__).resolve().parent.parent / "training" / "recipes"
SAFER = {"policy": "p", "judge": {"model": "j"}, "prompts": "x.jsonl"}


@pytest.mark.parametrize("name,cls", [("miniature.yaml", MiniatureRecipe), ("miniature-smoke.yaml", MiniatureRecipe),
                                      ("miniature-continue.yaml", MiniatureRecipe), ("miniature-shipped.yaml", MiniatureRecipe),
                                      ("qwen2.5-vl-3b.yaml", recipes.SaferRecipe),
                                      ("qwen2.5-vl-7b.yaml", recipes.SaferRecipe)])
def test_shipped_recipes_parse(name, cls):
    recipe = recipes.load(RECIPES / name, cls)
    assert recipe.grpo.steps > 0 and recipe.reward.penalty_scale["over_refusal"] == 3.0


def test_sections_are_typed():
    recipe = recipes.parse_section(recipes.SaferRecipe, {**SAFER, "grpo": {"steps": 3, "lr": 1},
                                                          "reward": {"gate_threshold": 6}}, "r")
    assert isinstance(recipe.grpo, GRPOStageConfig) and recipe.grpo.lr == 1.0 and recipe.reward.gate_threshold == 6.0
    assert recipe.judge.rubric is None and recipe.method.grpo is recipe.grpo


@pytest.mark.parametrize("data,message", [
    ({**SAFER, "grm": {"model": "j"}}, r"r: unknown setting\(s\) grm"),
    ({**SAFER, "grpo": {"step": 3}}, r"r.grpo: unknown setting\(s\) step"),
    ({**SAFER, "grpo": {"lr": "fast"}}, r"r.grpo.lr: expected a number, got 'fast'"),
    ({**SAFER, "curation": {"samples": 2.5}}, r"r.curation.samples: expected an integer"),
    ({**SAFER, "grpo": {"lora_targets": "q_proj"}}, r"r.grpo.lora_targets: expected a list"),
    ({"policy": "p", "prompts": "x"}, r"r: missing judge"),
    ({**SAFER, "reward": {"penalty_scale": {"format": "x"}}}, r"r.reward.penalty_scale.format: expected a number"),
])
def test_mistakes_name_their_key(data, message):
    with pytest.raises(recipes.RecipeError, match=message):
        recipes.parse_section(recipes.SaferRecipe, data, "r")


def test_a_bad_file_is_a_recipe_error(tmp_path):
    (tmp_path / "r.yaml").write_text("grpo: [1, 2\n")
    with pytest.raises(recipes.RecipeError, match="cannot read the recipe"):
        recipes.load(tmp_path / "r.yaml", recipes.SaferRecipe)


def test_trl_extras_cannot_override_the_stage_settings(tmp_path):
    with pytest.raises(ValueError, match=r"learning_rate \(use grpo.lr\), max_steps \(use grpo.steps\)"):
        grpo_args(GRPOStageConfig(trl={"learning_rate": 1e-3, "max_steps": 9}), str(tmp_path))
    args = grpo_args(GRPOStageConfig(steps=7, lr=1e-3, trl={"gradient_checkpointing": True}), str(tmp_path))
    assert args.max_steps == 7 and args.learning_rate == 1e-3 and args.gradient_checkpointing


def test_the_cli_reports_a_recipe_error(tmp_path, capsys):
    from training.__main__ import main

    (tmp_path / "r.yaml").write_text("policy: p\nprompts: x\njudge: {model: j}\ngrpo: {stepz: 1}\n")
    assert main(["safer", "--recipe", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "out")]) == 2
    assert "grpo: unknown setting(s) stepz" in capsys.readouterr().err


PROMPT_TEXT_ALLOWANCE = 256  # tokens of a prompt's own text, as the GPU recipes' comment allows


@pytest.mark.parametrize("name", ["qwen2.5-vl-3b.yaml", "qwen2.5-vl-7b.yaml"])
def test_gpu_recipes_give_vllm_a_context_that_holds_the_longest_reflection(name, real_checkpoint, tmp_path):
    """Without vllm_max_model_length vLLM takes the model's 128k context and may refuse to start (issue 22).
    The longest sequence vLLM sees is a reflection: its prompt (image, template, prompt text, draft, critique)
    plus the reflection's output; the fixed template text is measured with Qwen's real tokenizer."""
    from saferdemo.loading import load_processor
    from saferdemo.prompts import reflection_messages, user_turn

    recipe = recipes.load(RECIPES / name, recipes.SaferRecipe)
    length = recipe.grpo.trl.get("vllm_max_model_length")
    assert isinstance(length, int), f"{name}: grpo.trl.vllm_max_model_length is not set"
    processor = load_processor(real_checkpoint)
    text = processor.apply_chat_template(reflection_messages([user_turn("")], "", ""), add_generation_prompt=True,
                                         tokenize=False)
    fixed = len(processor.tokenizer.encode(text)) - 1  # less the one image placeholder, counted below
    image_tokens = recipe.max_pixels // (14 * 14 * 2 * 2)
    grpo = recipe.grpo
    longest = (image_tokens + fixed + PROMPT_TEXT_ALLOWANCE + grpo.max_completion_length + recipe.judge.max_new_tokens
               + grpo.max_completion_length + grpo.reflection_budget)
    assert longest <= length < 128000, (longest, length)
    assert grpo_args(grpo, str(tmp_path)).vllm_max_model_length == length  # TRL's GRPOConfig field name
