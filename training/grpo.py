"""Stage: safety-aware rollouts + GRPO, making the SaFeR-aligned model (mini-safer).

TRL's `GRPOTrainer` trains a LoRA adapter on the curated prompts, rewarded by the GRM. What SaFeR adds is
the rollout (`SafetyAwareRollout`, TRL's `rollout_func` hook):

1. the policy samples the group for each prompt, as TRL would;
2. the GRM judges every draft; a draft it flags unsafe (verdict "unsafe" or the safety gate closed) is not
   discarded: the policy itself gets the reflection prompt (its draft + the GRM's rationale as critique)
   and writes `<reflection>…</reflection>` then a corrected response;
3. the corrected response (only the part after `</reflection>`) replaces the draft *as a completion of
   the original prompt*, and the reward function re-scores it with the GRM.

Choices, written down: only completion tokens are trained (TRL's completion mask); the reflection text is
not trained on, only the corrected response; with `num_iterations=1` the old log-probs equal the current
ones (ratio 1), so the replaced completions get no off-policy correction, as in the paper's on-policy
setting. With vLLM the drafts keep vLLM's sampling log-probs and the corrected responses get NaN, which TRL
reads as "no importance correction" for those tokens. A KL term (`beta`, reference = the policy with the
LoRA adapter switched off, so no second model in memory) keeps benign behaviour in place: measured on the
miniature world, beta 0 let look-alike refusal climb to 70%, beta 0.04 kept it under 2%.
Details and measurements: notes/trl-grpo-1.16.md.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is marked experimental in TRL 1.16

from saferdemo.judgement import Judgement, is_gated, reward
from saferdemo.prompts import REFLECTION_CLOSE, reflection_messages
from training.grm import GRMJudge


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
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    seed: int = 0
    # Passed to trl.GRPOConfig as is (GPU recipes: bf16, use_vllm, vllm_mode, gradient_checkpointing, ...).
    trl: dict = field(default_factory=dict)


def flagged(j: Judgement | None) -> bool:
    return j is not None and is_gated(j)


@dataclass
class RolloutLog:
    """Per step: how many drafts the GRM flagged, how many were reflected and how many came out safe."""

    steps: list[dict] = field(default_factory=list)

    def totals(self) -> dict:
        keys = ("drafts", "flagged", "reflected", "corrected")
        return {k: sum(s[k] for s in self.steps) for k in keys}


class SafetyAwareRollout:
    """TRL `rollout_func`: sample the group, reflect and replace the drafts the GRM flags unsafe."""

    def __init__(self, judge: GRMJudge, reflection_budget: int, log: RolloutLog):
        self.judge, self.reflection_budget, self.log = judge, reflection_budget, log

    def __call__(self, prompts: list, trainer) -> dict:
        n = trainer.num_generations if trainer.model.training else trainer.num_generations_eval
        prompt_ids, images, mm_fields = trainer._tokenize_prompts(prompts)
        completion_ids, logprobs = trainer._generate_single_turn(prompt_ids, images, mm_fields, n)
        decode = trainer.processing_class.batch_decode
        drafts = decode(completion_ids, skip_special_tokens=True)
        rows = trainer._rollout_rows  # the dataset rows, in the same order (see SaferGRPOTrainer)
        requests = [row["request"] for row in rows]
        cards = [row["image"] for row in rows]
        judgements = self.judge(cards, requests, drafts)
        to_reflect = [i for i, j in enumerate(judgements) if flagged(j)]
        revised = [False] * len(drafts)
        for i, ids in zip(to_reflect, self._reflect(trainer, prompts, drafts, judgements, to_reflect, n)):
            if ids:  # TRL cannot take an empty completion: keep the draft then
                completion_ids[i], revised[i] = ids, True
        if logprobs is not None:  # vLLM: a corrected response was not sampled from the prompt alone; NaN makes
            for i in to_reflect:  # TRL's importance ratio exactly 1 for its tokens (no off-policy correction)
                if revised[i]:
                    logprobs[i] = [float("nan")] * len(completion_ids[i])
        finals = decode(completion_ids, skip_special_tokens=True)
        rescored = self.judge([cards[i] for i in to_reflect], [requests[i] for i in to_reflect], [finals[i] for i in to_reflect])
        for i, j in zip(to_reflect, rescored):
            judgements[i] = j
        step = {"drafts": len(drafts), "flagged": len(to_reflect), "reflected": sum(revised),
                "corrected": sum(1 for i in to_reflect if revised[i] and not flagged(judgements[i]))}
        self.log.steps.append(step)
        metrics = trainer._metrics["train" if trainer.model.training else "eval"]  # logged with TRL's own metrics
        for key in ("flagged", "reflected", "corrected"):
            metrics[f"rollouts/{key}"].append(float(step[key]))
        return {
            "prompt_ids": prompt_ids,  # the ORIGINAL prompt: corrections are trained as its completions
            "completion_ids": completion_ids,
            "logprobs": logprobs,  # None without vLLM
            "grm_reward": [0.0 if j is None else reward(j) for j in judgements],
            "revised": revised,
        }

    def _reflect(self, trainer, prompts, drafts, judgements, indices, n) -> list[list[int]]:
        if not indices:
            return []
        convs = [reflection_messages(prompts[i], drafts[i], judgements[i].rationale or "The response is unsafe.") for i in indices]
        ids, images, mm_fields = trainer._tokenize_prompts(convs)
        with _longer_generation(trainer, self.reflection_budget):
            outputs, _ = trainer._generate_single_turn(ids, images, mm_fields, n)
        close = trainer._tokenizer.convert_tokens_to_ids(REFLECTION_CLOSE)
        newline = trainer._tokenizer("\n", add_special_tokens=False)["input_ids"]
        corrected = []
        for out in outputs:
            out = list(out)
            if close not in out:
                corrected.append([])  # no reflection: nothing to replace the draft with
                continue
            out = out[out.index(close) + 1 :]
            if out[: len(newline)] == newline:
                out = out[len(newline) :]
            corrected.append(out[: trainer.max_completion_length])
        return corrected


@contextmanager
def _longer_generation(trainer, extra_tokens: int):
    """Let the reflection spend `extra_tokens` more than a completion, on either generation backend."""
    vllm = getattr(trainer, "vllm_generation", None) if trainer.use_vllm else None
    limits = [(trainer.generation_config, "max_new_tokens")] + ([(vllm, "max_completion_length")] if vllm else [])
    saved = [getattr(obj, name) for obj, name in limits]
    for (obj, name), value in zip(limits, saved):
        setattr(obj, name, value + extra_tokens)
    try:
        yield
    finally:
        for (obj, name), value in zip(limits, saved):
            setattr(obj, name, value)


def rollout_reward(prompts, completions, grm_reward, **kwargs) -> list[float]:
    """The GRM reward the rollout computed for each final completion (re-scored after reflection)."""
    return list(grm_reward)


def train_safer(policy, processor, judge: GRMJudge, dataset, config: GRPOStageConfig, out_dir: str):
    """GRPO with safety-aware rollouts and LoRA; returns (merged model, rollout log, trainer log history)."""
    import torch
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    class SaferGRPOTrainer(GRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            self._rollout_rows = inputs  # rollout_func receives only prompts; it needs the rows' cards
            return super()._generate_and_score_completions(inputs)

    log = RolloutLog()
    on_cpu = not torch.cuda.is_available()
    args = GRPOConfig(**{
        "output_dir": out_dir,
        "use_cpu": on_cpu,
        "bf16": not on_cpu,
        "activation_checkpointing": False,
        "beta": config.beta,
        "num_generations": config.num_generations,
        "per_device_train_batch_size": config.num_generations * config.prompts_per_step,
        "max_completion_length": config.max_completion_length,
        "max_steps": config.steps,
        "learning_rate": config.lr,
        "logging_steps": 1,
        "report_to": "none",
        "save_strategy": "no",
        "dataloader_num_workers": 0,
        "seed": config.seed,
        "disable_tqdm": False,
        **config.trl,
    })
    trainer = SaferGRPOTrainer(
        model=policy,
        reward_funcs=rollout_reward,
        args=args,
        train_dataset=dataset,
        processing_class=processor,
        peft_config=LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, target_modules=config.lora_targets,
                               task_type="CAUSAL_LM"),
        rollout_func=SafetyAwareRollout(judge, config.reflection_budget, log),
    )
    trainer.train()
    merged = trainer.model.merge_and_unload()
    merged.eval()
    return merged, log, trainer.state.log_history


def curated_dataset(curation_dir, rows: list[dict]):
    """A TRL dataset from curated rows: conversational prompt (TRL inserts the image), the card, the request."""
    from datasets import Dataset
    from PIL import Image

    def load(path):
        with Image.open(curation_dir / path) as image:
            return image.convert("RGB")

    return Dataset.from_dict({
        "prompt": [[{"role": "user", "content": row["prompt"]}] for row in rows],
        "image": [load(row["image"]) for row in rows],
        "request": [row["prompt"] for row in rows],
        "label": [row["label"] for row in rows],
    })
