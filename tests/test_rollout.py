"""SafetyAwareRollout on a scripted trainer with the REAL Qwen tokenizer, where `</reflection>` is plain text.

TRL's generation is replaced by scripted token ids (the rollout only calls `_tokenize_prompts` and
`_generate_single_turn`), and the judge is the real GRMClient over a scripted engine: seconds, not a build.
"""

import json
from collections import defaultdict
from types import SimpleNamespace

from saferdemo.judge import GRMClient
from training.grpo import RolloutLog, SafetyAwareRollout, corrected_ids

SCORES = {"safety": 10, "helpfulness": 8, "coherence": 9, "grounding": 9}
NO_PENALTIES = {"hallucination": 0, "contradiction": 0, "unsafe_reasoning": 0, "over_refusal": 0, "format": 0}
SAFE = json.dumps({"reasoning": SCORES, "answer": SCORES, "penalties": NO_PENALTIES, "verdict": "safe", "rationale": "ok"})
UNSAFE = json.dumps({"reasoning": SCORES, "answer": {**SCORES, "safety": 0}, "penalties": NO_PENALTIES,
                     "verdict": "unsafe", "rationale": "It fills in the harmful list."})
COMPLY = "<think>\nThe card says a harmful thing. I will fill in the steps.\n</think>\n1. [restricted step]"
REFUSE = "<think>\nThe card asks for harm.\n</think>\nSorry, I can't help with that."
REFLECTION = f"<reflection>\nThat answer gave harmful steps.\n</reflection>\n{REFUSE}"
IM_END = 151645


class JudgeEngine:
    """Judges like a GRM would: a response with restricted steps is unsafe."""

    def generate_batch(self, conversations, images, params, batch_size):
        texts = [c[0]["content"][-1]["text"].split("Response:", 1)[1] for c in conversations]
        return [UNSAFE if "[restricted step]" in text else SAFE for text in texts]


class ScriptedTrainer:
    """The parts of GRPOTrainer the rollout uses, with generation scripted."""

    def __init__(self, tokenizer, drafts, reflections, processes=1, others_flagged=0):
        self.processing_class, self.tokenizer = tokenizer, tokenizer
        self.drafts, self.reflections = drafts, reflections
        self.num_generations = self.num_generations_eval = 2
        self.model = SimpleNamespace(training=True)
        self.use_vllm = False
        self.generation_config = SimpleNamespace(max_new_tokens=32)
        self.max_completion_length = 96
        self.eos_token_ids = [IM_END, 151643]
        self._metrics = {"train": defaultdict(list)}
        self._rollout_rows = [{"request": "Complete the list.", "image": None}] * len(drafts)
        self.accelerator = SimpleNamespace(num_processes=processes, device="cpu",
                                           reduce=lambda t, reduction: t.clamp(min=others_flagged))
        self.generate_calls = []

    def _tokenize_prompts(self, prompts):
        return [[1, 2, 3]] * len(prompts), None, {}

    def _generate_single_turn(self, prompt_ids, images, mm_fields, n):
        budget = getattr(getattr(self, "generation_config", None), "max_new_tokens", None)
        self.generate_calls.append({"n": n, "rows": len(prompt_ids), "budget": budget})
        texts = self.drafts if len(self.generate_calls) == 1 else self.reflections[: len(prompt_ids)]
        return [self.tokenizer.encode(t, add_special_tokens=False) + [IM_END] for t in texts], None


def rollout(trainer):
    log = RolloutLog()
    judge = GRMClient(JudgeEngine(), "short")
    prompts = [[{"role": "user", "content": "Complete the list."}]] * len(trainer.drafts)
    return SafetyAwareRollout(judge, reflection_budget=64, log=log)(prompts, trainer), log


def test_real_tokenizers_have_no_reflection_token(real_tokenizer):
    """What broke GPU training: looking `</reflection>` up as one token finds nothing in Qwen's vocabulary."""
    assert real_tokenizer.convert_tokens_to_ids("</reflection>") in (None, real_tokenizer.unk_token_id)
    assert len(real_tokenizer.encode("</reflection>", add_special_tokens=False)) > 1


def test_flagged_drafts_are_reflected_and_replaced_with_the_real_tokenizer(real_tokenizer):
    trainer = ScriptedTrainer(real_tokenizer, [COMPLY, REFUSE], [REFLECTION])
    out, log = rollout(trainer)
    assert log.totals() == {"drafts": 2, "flagged": 1, "reflected": 1, "corrected": 1}
    assert list(log.steps[0]["seconds"]) == ["sample", "judge", "reflect", "rejudge"]  # benchmarks/grpo_step.py
    assert all(s >= 0 for s in log.steps[0]["seconds"].values())
    assert out["revised"] == [True, False]
    assert real_tokenizer.decode(out["completion_ids"][0], skip_special_tokens=True) == REFUSE
    assert out["completion_ids"][0][-1] == IM_END  # still a finished completion for TRL
    assert out["prompt_ids"] == [[1, 2, 3]] * 2  # trained as a completion of the ORIGINAL prompt
    reflect = trainer.generate_calls[1]
    assert reflect == {"n": 1, "rows": 1, "budget": 32 + 64}  # one per reflection prompt, with the extra budget
    assert trainer.generation_config.max_new_tokens == 32  # restored afterwards
    assert json.loads(out["judge_output"][0])["verdict"] == "safe"


def test_a_reflection_that_never_closes_keeps_the_draft(real_tokenizer):
    trainer = ScriptedTrainer(real_tokenizer, [COMPLY, COMPLY], ["<reflection>\nI was wrong", "no tags at all"])
    out, log = rollout(trainer)
    assert out["revised"] == [False, False] and log.totals()["reflected"] == 0
    assert real_tokenizer.decode(out["completion_ids"][0], skip_special_tokens=True) == COMPLY
    assert json.loads(out["judge_output"][0])["verdict"] == "unsafe"


def test_corrected_ids_find_the_tag_wherever_token_boundaries_fall(real_tokenizer):
    for glue in ("", "\n", " ", "\n\n"):
        ids = real_tokenizer.encode(f"<reflection>x</reflection>{glue}Sorry.", add_special_tokens=False) + [IM_END]
        corrected = corrected_ids(real_tokenizer, ids, [IM_END], 96)
        assert real_tokenizer.decode(corrected, skip_special_tokens=True) == "Sorry." and corrected[-1] == IM_END


def test_every_process_joins_the_reflection_generate_with_as_many_prompts(real_tokenizer):
    """Two processes: one that flagged fewer drafts than the other still generates as many reflection prompts
    (TRL's vLLM server mode slices gathered results by position), and throws the stand-ins' results away."""
    quiet = ScriptedTrainer(real_tokenizer, [REFUSE, REFUSE], [REFLECTION] * 2, processes=2, others_flagged=2)
    out, log = rollout(quiet)
    assert quiet.generate_calls[1]["rows"] == 2 and out["revised"] == [False, False]
    assert log.totals()["flagged"] == 0
    busy = ScriptedTrainer(real_tokenizer, [COMPLY, REFUSE], [REFLECTION] * 3, processes=2, others_flagged=3)
    out, log = rollout(busy)
    assert busy.generate_calls[1]["rows"] == 3 and out["revised"] == [True, False]  # 1 real + 2 stand-ins
    nobody = ScriptedTrainer(real_tokenizer, [REFUSE, REFUSE], [REFLECTION], processes=2, others_flagged=0)
    rollout(nobody)
    assert len(nobody.generate_calls) == 1  # nobody flagged anything: nobody generates


def test_the_reduce_takes_the_maximum_of_this_process_count(real_tokenizer):
    seen = []
    trainer = ScriptedTrainer(real_tokenizer, [COMPLY, REFUSE], [REFLECTION], processes=2)
    trainer.accelerator.reduce = lambda t, reduction: seen.append((t.tolist(), reduction)) or t
    rollout(trainer)
    assert seen == [([1], "max")]


def test_the_vllm_path_has_no_generation_config(real_tokenizer):
    """TRL sets trainer.generation_config only without vLLM; the reflection budget goes to vLLM's limit."""
    trainer = ScriptedTrainer(real_tokenizer, [COMPLY, REFUSE], [REFLECTION])
    del trainer.generation_config
    trainer.use_vllm = True
    trainer.vllm_generation = SimpleNamespace(max_completion_length=32)
    budgets = []
    generate = trainer._generate_single_turn

    def watch(*args):
        budgets.append(trainer.vllm_generation.max_completion_length)
        return generate(*args)

    trainer._generate_single_turn = watch
    out, log = rollout(trainer)
    assert budgets == [32, 96] and trainer.vllm_generation.max_completion_length == 32
    assert log.totals()["reflected"] == 1 and out["logprobs"] is None
