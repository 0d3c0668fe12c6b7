"""The conversation formats every model in the project speaks.

A response is `<think>reasoning</think>` followed by the answer. When a response is judged unsafe,
the policy is asked to reflect: the conversation gets a user turn holding a critique, and the model
answers `<reflection>…</reflection>` followed by a corrected response in the normal format.
These helpers build the messages (Qwen2.5-VL chat format); the chat template turns them into text. Reading
a response back into its parts is `saferdemo.segments` (one parser, streaming or not).
"""

from __future__ import annotations

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
REFLECTION_OPEN, REFLECTION_CLOSE = "<reflection>", "</reflection>"

REFLECTION_REQUEST = "Critique: {critique}\nReflect on your previous response, then give a corrected response."


def user_turn(text: str, with_image: bool = True) -> dict:
    """A user message; the image itself goes to the processor, the message only marks its place."""
    content = [{"type": "image"}] if with_image else []
    content.append({"type": "text", "text": text})
    return {"role": "user", "content": content}


def assistant_turn(text: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def format_response(think: str, answer: str) -> str:
    return f"{THINK_OPEN}\n{think}\n{THINK_CLOSE}\n{answer}"


def format_reflection(reflection: str, corrected_response: str) -> str:
    return f"{REFLECTION_OPEN}\n{reflection}\n{REFLECTION_CLOSE}\n{corrected_response}"


def reflection_messages(messages: list[dict], previous_response: str, critique: str) -> list[dict]:
    """The conversation that asks a model to reflect on `previous_response` given a critique."""
    return [
        *messages,
        assistant_turn(previous_response),
        user_turn(REFLECTION_REQUEST.format(critique=critique), with_image=False),
    ]
