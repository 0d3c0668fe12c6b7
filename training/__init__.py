"""Training pipeline for SaFeR checkpoints.

The method, general for any Qwen2.5-VL-style checkpoint: `curate` (QI-Safe curation), `grpo` (GRPO with
safety-aware rollouts, TRL + PEFT), `rewards` (the reward function), `safer` (the one curate → GRPO entry),
`recipes` (typed YAML recipes). `miniature/` is the synthetic card world and the build of the bundled model
family, which runs the same `safer.curate_and_train`. Commands: `python -m training --help`.
"""
