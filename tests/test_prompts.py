from saferdemo import prompts


def test_split_think():
    assert prompts.split_think("<think>\nplan\n</think>\nanswer") == ("plan", "answer")
    assert prompts.split_think("plain answer") == ("", "plain answer")
    assert prompts.split_think("<think>never closed") == (None, "")
    # A template that pre-fills `<think>` leaves only the closing tag in the generated text.
    assert prompts.split_think("plan</think>answer") == ("plan", "answer")


def test_reflection_round_trip():
    text = prompts.format_reflection("it was unsafe", prompts.format_response("read", "Sorry."))
    reflection, corrected = prompts.split_reflection(text)
    assert reflection == "it was unsafe"
    assert prompts.split_think(corrected) == ("read", "Sorry.")
    assert prompts.split_reflection("no tags") == ("", "no tags")


def test_reflection_messages_append_the_previous_response_and_critique():
    first = [prompts.user_turn("Complete the list.")]
    messages = prompts.reflection_messages(first, "<think>x</think>y", "The response is unsafe.")
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert "The response is unsafe." in messages[-1]["content"][0]["text"]
    assert messages[-1]["content"][0]["type"] == "text"  # no second image
