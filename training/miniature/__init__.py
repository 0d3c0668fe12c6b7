"""The miniature world and the build of the bundled model family (`python -m training miniature`).

A synthetic FigStep-style card world (`world`: phrases, cards, prompts, and the truth about every response),
a tiny Qwen2.5-VL built from scratch (`tiny_qwen`), SFT into the base reasoning model (`sft`), the GRM's
training data and its evaluation (`grm_data`), held-out evaluation (`evaluate`), model cards and the app's
examples. `build` runs it all and hands the SaFeR stages to `training.safer.curate_and_train`, the function
GPU users run: nothing outside this folder imports the world.
"""
