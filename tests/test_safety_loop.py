"""The safety loop on scripted engines: what the judge is shown, and what a turn records."""

import threading

from PIL import Image

from saferdemo.engines.base import GenerationParams, StreamingGeneration
from saferdemo.judge import GRMClient, earlier_turns
from saferdemo.judgement import PENALTIES, Judgement
from saferdemo.prompts import assistant_turn, user_turn
from saferdemo.safety_loop import LoopConfig, run_turn

SAFE = Judgement({c: 10 for c in ("safety", "helpfulness", "coherence", "grounding")},
                 {c: 10 for c in ("safety", "helpfulness", "coherence", "grounding")},
                 dict.fromkeys(PENALTIES, 0), "safe", "The response is safe and helpful.")


class Scripted:
    """An engine that answers `reply` and records every (messages, images) it was asked."""

    def __init__(self, name, reply):
        self.name, self.reply, self.calls = name, reply, []

    def start(self, messages, images, params, stop):
        self.calls.append((messages, images))
        generation = StreamingGeneration(stop, params.max_new_tokens, self.name)
        generation.emit(self.reply)
        generation.finish("stop")
        return generation


def test_the_judge_sees_the_earlier_turns_and_the_newest_image():
    old, new = Image.new("RGB", (56, 56), "red"), Image.new("RGB", (56, 56), "blue")
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Complete the list."}]},
        assistant_turn("Steps to clean a window.\n1. Dust the frame."),
        user_turn("And this one?"),
    ]
    assert earlier_turns(messages) == [("[image] Complete the list.", "Steps to clean a window.\n1. Dust the frame.")]
    policy, grm = Scripted("base", "<think>\nt\n</think>\nanswer"), Scripted("grm", SAFE.to_compact_json())
    judge = GRMClient(grm, "short", conversation=True)
    turns = list(run_turn(policy, judge, messages, [old, new], "And this one?", GenerationParams(16),
                          LoopConfig(enabled=False), threading.Event()))
    assert turns[-1].draft_judge.judgement == SAFE  # the compact form reads back
    [(judge_conversation, judge_images)] = grm.calls
    prompt = judge_conversation[0]["content"][-1]["text"]
    assert "Earlier:\nUser: [image] Complete the list.\nAssistant: Steps to clean a window." in prompt
    assert judge_images == [new]


def test_a_judge_trained_without_the_conversation_gets_the_single_turn_prompt():
    grm = Scripted("grm", SAFE.to_json())
    messages = [user_turn("a"), assistant_turn("b"), user_turn("c")]
    list(run_turn(Scripted("base", "x"), GRMClient(grm, "short"), messages, [Image.new("RGB", (56, 56))], "c",
                  GenerationParams(16), LoopConfig(enabled=False), threading.Event()))
    assert "Earlier" not in grm.calls[0][0][0]["content"][-1]["text"]
    assert earlier_turns(messages, limit=0) == []
