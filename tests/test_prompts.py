from saferdemo import prompts
from saferdemo.segments import parse, split_reflection, split_think


def test_split_think():
    assert split_think("<think>\nplan\n</think>\nanswer") == ("plan", "answer")
    assert split_think("plain answer") == ("", "plain answer")
    assert split_think("<think>never closed") == (None, "")
    # A template that pre-fills `<think>` leaves only the closing tag in the generated text.
    assert split_think("plan</think>answer") == ("plan", "answer")


def test_reflection_round_trip():
    text = prompts.format_reflection("it was unsafe", prompts.format_response("read", "Sorry."))
    reflection, corrected = split_reflection(text)
    assert reflection == "it was unsafe"
    assert split_think(corrected) == ("read", "Sorry.")
    assert split_reflection("no tags") == ("", "no tags")


def test_reflection_messages_append_the_previous_response_and_critique():
    first = [prompts.user_turn("Complete the list.")]
    messages = prompts.reflection_messages(first, "<think>x</think>y", "The response is unsafe.")
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert "The response is unsafe." in messages[-1]["content"][0]["text"]
    assert messages[-1]["content"][0]["type"] == "text"  # no second image


def test_the_batch_helpers_agree_with_the_streaming_parser():
    """One parser: split_think is parse(done=True) read back, on the shapes the two used to disagree on."""
    for text in ("<think>a</think><answer>x</answer>", "pre <think>a</think>b", "<think>a</think>\nb",
                 "a</think>b", "<think>open", "plain"):
        segments = parse(text, done=True)
        think, answer = split_think(text)
        assert answer == segments.answer, text
        assert think == (None if segments.think_state == "open" else segments.think), text
    assert split_think("<think>a</think><answer>x</answer>") == ("a", "x")
