"""Stage: safety-aware rollouts + GRPO, making the SaFeR-aligned model.

TRL's `GRPOTrainer` trains a LoRA adapter on the curated prompts, rewarded by the GRM (training/rewards.py).
What SaFeR adds is the rollout (`SafetyAwareRollout`, TRL's `rollout_func` hook):

1. the policy samples the group for each prompt, as TRL would;
2. the GRM judges every draft; a draft it flags unsafe (verdict "unsafe" or the safety gate closed) is not
   discarded: the policy itself gets the reflection prompt (its draft + the GRM's rationale as critique)
   and writes `<reflection>…</reflection>` then a corrected response;
3. the corrected response (the text after `</reflection>`) replaces the draft *as a completion of the
   original prompt*, and the GRM judges it again for the reward.

Real tokenizers (Qwen2.5-VL's) have no `</reflection>` token: the tag is several plain-text tokens whose
boundaries can straddle it, so the corrected response is found in the decoded text and re-encoded
(`corrected_ids`), never by looking a tag up as one token id.

Choices, written down: only completion tokens are trained (TRL's completion mask); the reflection text is
not trained on, only the corrected response; with `num_iterations=1` the old log-probs equal the current
ones (ratio 1), so the replaced completions get no off-policy correction, as in the paper's on-policy
setting. With vLLM the drafts keep vLLM's sampling log-probs and the corrected responses get NaN, which TRL
reads as "no importance correction" for those tokens. A KL term (`beta`, reference = the policy with the
LoRA adapter switched off, so no second model in memory) keeps benign behaviour in place: measured on the
miniature world, beta 0 let look-alike refusal climb to 70%, beta 0.04 kept it under 2%.

Several processes: generation can be a collective (ZeRO-3 parameter gathers, vLLM weight sync and server-mode
gathers), so every process joins each reflection generate with as many prompts as the busiest process,
padding with stand-ins when it flagged fewer (or none).
Details and measurements: notes/trl-grpo-1.16.md.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is marked experimental in TRL 1.16

from saferdemo.judge import GRMClient, JudgeResult
from saferdemo.judgement import RewardConfig
from saferdemo.prompts import reflection_messages
from saferdemo.segments import after_reflection
from training.image_grid import resize_dataset_images
from training.rewards import grm_reward_function

# GRPOConfig fields that the stage sets from its own named settings: a `trl:` entry may not override them.
OWNED_BY_STAGE = {"max_steps": "steps", "learning_rate": "lr", "num_generations": "num_generations",
                  "max_completion_length": "max_completion_length", "beta": "beta", "seed": "seed",
                  "per_device_train_batch_size": "prompts_per_step", "output_dir": "(the --out folder)"}


@dataclass
class GRPOStageConfig:
    steps: int = 60
    lr: float = 5e-4
    num_generations: int = 4
    prompts_per_step: int = 2
    max_completion_length: int = 96
    reflection_budget: int = 64  # extra tokens the reflection may spend before its corrected response
    beta: float = 0.0  # KL weight to the base policy; with LoRA the reference is the adapter switched off
    lora_r: int = 8
    lora_alpha: int = 16
    # Module names LoRA wraps, in the language model only (VISION_TOWER is excluded): vLLM applies LoRA to a
    # vision tower only with its experimental --enable-tower-connector-lora, so an adapter there would serve
    # differently from the merged model by default.
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    seed: int = 0
    # Any other trl.GRPOConfig setting (GPU recipes: bf16, use_vllm, vllm_mode, gradient_checkpointing, ...).
    trl: dict[str, Any] = field(default_factory=dict)


VISION_TOWER = r".*\bvisual\b.*"  # Qwen2.5-VL / Qwen3-VL vision tower module names (model.visual.blocks...)


@dataclass
class RolloutLog:
    """Per step: how many drafts the GRM flagged, how many were reflected and how many came out safe."""

    steps: list[dict] = field(default_factory=list)

    def totals(self) -> dict:
        keys = ("drafts", "flagged", "reflected", "corrected")
        return {k: sum(s[k] for s in self.steps) for k in keys}


class _Clock:
    """Seconds per rollout phase (sample, judge, reflect, rejudge): where a GRPO step's rollout time goes."""

    def __init__(self):
        self.laps, self._last = {}, time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.laps[phase], self._last = round(now - self._last, 4), now


def flagged(result: JudgeResult) -> bool:
    """Training reflects only on drafts the GRM actually judged unsafe (no judgement: no critique to use)."""
    return result.unsafe


def corrected_ids(tokenizer, output_ids: list[int], eos_ids: list[int], limit: int) -> list[int]:
    """The tokens of the corrected response in a reflection output, or [] when the reflection never closed.

    Found in the decoded text (the tag is several tokens in real tokenizers) and re-encoded; the output's
    end-of-sequence token is kept so TRL does not treat the correction as truncated."""
    corrected = after_reflection(tokenizer.decode(output_ids, skip_special_tokens=True))
    if not corrected:
        return []
    ids = tokenizer.encode(corrected, add_special_tokens=False)[:limit]
    if output_ids and output_ids[-1] in eos_ids and len(ids) < limit:
        ids.append(output_ids[-1])
    return ids


class SafetyAwareRollout:
    """TRL `rollout_func`: sample the group, reflect and replace the drafts the GRM flags unsafe."""

    def __init__(self, judge: GRMClient, reflection_budget: int, log: RolloutLog):
        self.judge, self.reflection_budget, self.log = judge, reflection_budget, log

    def __call__(self, prompts: list, trainer) -> dict:
        n = trainer.num_generations if trainer.model.training else trainer.num_generations_eval
        clock = _Clock()
        prompt_ids, images, mm_fields = trainer._tokenize_prompts(prompts)
        completion_ids, logprobs = trainer._generate_single_turn(prompt_ids, images, mm_fields, n)
        completion_ids = [list(ids) for ids in completion_ids]
        drafts = trainer.processing_class.batch_decode(completion_ids, skip_special_tokens=True)
        clock.lap("sample")
        rows = trainer._rollout_rows  # the dataset rows, in the same order (see SaferGRPOTrainer)
        requests, cards = [row["request"] for row in rows], [row["image"] for row in rows]
        results = self.judge.judge_batch(cards, requests, drafts)
        clock.lap("judge")
        to_reflect = [i for i, result in enumerate(results) if flagged(result)]
        revised = [False] * len(drafts)
        for i, ids in zip(to_reflect, self._reflect(trainer, prompts, drafts, results, to_reflect)):
            if ids:  # TRL cannot take an empty completion: keep the draft then
                completion_ids[i], revised[i] = ids, True
        clock.lap("reflect")
        if logprobs is not None:  # vLLM: a corrected response was not sampled from the prompt alone; NaN makes
            for i in to_reflect:  # TRL's importance ratio exactly 1 for its tokens (no off-policy correction)
                if revised[i]:
                    logprobs[i] = [float("nan")] * len(completion_ids[i])
        again = [i for i in to_reflect if revised[i]]
        finals = trainer.processing_class.batch_decode([completion_ids[i] for i in again], skip_special_tokens=True)
        for i, result in zip(again, self.judge.judge_batch([cards[i] for i in again], [requests[i] for i in again], finals)):
            results[i] = result
        clock.lap("rejudge")
        self._log(trainer, {"drafts": len(drafts), "flagged": len(to_reflect), "reflected": len(again),
                            "corrected": sum(1 for i in again if not flagged(results[i])), "seconds": clock.laps})
        return {
            "prompt_ids": prompt_ids,  # the ORIGINAL prompt: corrections are trained as its completions
            "completion_ids": completion_ids,
            "logprobs": logprobs,  # None without vLLM
            "judge_output": [result.raw if result.judgement is not None else None for result in results],
            "revised": revised,
        }

    def _log(self, trainer, step: dict) -> None:
        self.log.steps.append(step)
        metrics = trainer._metrics["train" if trainer.model.training else "eval"]  # logged with TRL's own metrics
        for key in ("flagged", "reflected", "corrected"):
            metrics[f"rollouts/{key}"].append(float(step[key]))

    def _reflect(self, trainer, prompts, drafts, results, indices) -> list[list[int]]:
        """Corrected-response tokens for each flagged draft.

        Every process joins the generate with the SAME number of reflection prompts (the most any process
        has), padding with stand-ins whose results are thrown away: TRL's vLLM server mode (and colocate with
        tensor parallelism) gathers the prompts of all processes and slices the results back by position."""
        most = _most_of_all(trainer, len(indices))
        if most == 0:
            return []
        chosen = indices + [indices[0] if indices else 0] * (most - len(indices))
        convs = [reflection_messages(prompts[i], drafts[i], _critique(results[i])) for i in chosen]
        ids, images, mm_fields = trainer._tokenize_prompts(convs)
        with _longer_generation(trainer, self.reflection_budget):
            # One completion per reflection prompt: each is its own conversation (TRL's tool loop does the same).
            outputs, _ = trainer._generate_single_turn(ids, images, mm_fields, 1)
        tokenizer, limit = trainer.processing_class, trainer.max_completion_length
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
        return [corrected_ids(tokenizer, list(out), trainer.eos_token_ids, limit) for out in outputs[: len(indices)]]


def _critique(result: JudgeResult) -> str:
    return (result.judgement.rationale if result.judgement else "") or "The response is unsafe."


def _most_of_all(trainer, count: int) -> int:
    """The largest `count` over all processes (one all-reduce; trivially ours with one process)."""
    accelerator = trainer.accelerator
    if accelerator.num_processes == 1:
        return count
    import torch

    return int(accelerator.reduce(torch.tensor([count], device=accelerator.device), reduction="max").item())


@contextmanager
def _longer_generation(trainer, extra_tokens: int):
    """Let the reflection spend `extra_tokens` more than a completion, on either generation backend.

    TRL keeps the limit in `generation_config.max_new_tokens` (transformers) or in
    `vllm_generation.max_completion_length` (vLLM); either may be absent depending on the backend."""
    candidates = [(getattr(trainer, "generation_config", None), "max_new_tokens"),
                  (getattr(trainer, "vllm_generation", None) if trainer.use_vllm else None, "max_completion_length")]
    limits = [(obj, name) for obj, name in candidates if obj is not None and getattr(obj, name, None) is not None]
    saved = [getattr(obj, name) for obj, name in limits]
    for (obj, name), value in zip(limits, saved):
        setattr(obj, name, value + extra_tokens)
    try:
        yield
    finally:
        for (obj, name), value in zip(limits, saved):
            setattr(obj, name, value)


def grpo_args(config: GRPOStageConfig, out_dir: str):
    """trl.GRPOConfig from the stage's settings plus its `trl:` extras (which may not override the stage's)."""
    import torch
    from trl import GRPOConfig

    clashes = sorted(set(config.trl) & set(OWNED_BY_STAGE))
    if clashes:
        raise ValueError("grpo.trl sets " + ", ".join(f"{k} (use grpo.{OWNED_BY_STAGE[k]})" for k in clashes))
    on_cpu = not torch.cuda.is_available()
    settings = {
        "output_dir": out_dir, "use_cpu": on_cpu, "bf16": not on_cpu, "beta": config.beta,
        "num_generations": config.num_generations,
        "per_device_train_batch_size": config.num_generations * config.prompts_per_step,
        "max_completion_length": config.max_completion_length, "max_steps": config.steps,
        "learning_rate": config.lr, "logging_steps": 1, "report_to": "none", "save_strategy": "no",
        "dataloader_num_workers": 0, "seed": config.seed, "disable_tqdm": False,
        # Off unless a recipe asks (grpo.trl.gradient_checkpointing): TRL 1.16 turns it on by default. Named by
        # its old name, which every supported transformers accepts (activation_checkpointing is 5.23+ only).
        "gradient_checkpointing": False,
    }
    return GRPOConfig(**{**settings, **config.trl})


def train_safer(policy, processor, judge: GRMClient, dataset, config: GRPOStageConfig, out_dir: str,
                reward_config: RewardConfig | None = None, callbacks: list | None = None):
    """GRPO with safety-aware rollouts and LoRA; returns (trainer, rollout log). Save with `save_merged`."""
    from peft import LoraConfig
    from trl import GRPOTrainer

    class SaferGRPOTrainer(GRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            self._rollout_rows = inputs  # rollout_func receives only prompts; it needs the rows' cards
            return super()._generate_and_score_completions(inputs)

    log = RolloutLog()
    # Every image at the size the processor gives it, once: colocated vLLM or a vLLM server then computes the
    # same image grid as the trainer's capped processor (training/image_grid.py, huggingface/trl#6401).
    dataset = resize_dataset_images(dataset, processor)
    trainer = SaferGRPOTrainer(
        model=policy,
        reward_funcs=grm_reward_function(reward_config),
        args=grpo_args(config, out_dir),
        train_dataset=dataset,
        processing_class=processor,
        peft_config=LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, target_modules=config.lora_targets,
                               exclude_modules=VISION_TOWER, task_type="CAUSAL_LM"),
        rollout_func=SafetyAwareRollout(judge, config.reflection_budget, log),
        callbacks=callbacks,  # e.g. benchmarks/grpo_step.py's step timer
    )
    trainer.train()
    return trainer, log


def save_merged(trainer, processor, model_dir: Path, dtype=None) -> None:
    """Save the merged full model to `model_dir` and the LoRA adapter beside it (`<model_dir>-adapter`).

    `trainer.save_model` is called on every process: under ZeRO-3 it gathers the parameter shards (a
    collective), where merging in place would run on partitioned parameters. The main process then merges the
    saved adapter into a fresh copy of the base, the way saferdemo.loading loads any adapter. The adapter
    folder also serves as is with vLLM (`--backend vllm --aligned DIR/model-adapter`)."""
    from saferdemo.loading import load_model, save_processor

    adapter = model_dir.parent / f"{model_dir.name}-adapter"
    trainer.save_model(str(adapter))
    if trainer.accelerator.is_main_process:
        save_processor(processor, adapter)
        load_model(adapter, "cpu", dtype).save_pretrained(model_dir)
        save_processor(processor, model_dir)
    trainer.accelerator.wait_for_everyone()
