"""The incremental segment parser, over hand-made cases and random chunkings of tagged text."""

from hypothesis import given, settings
from hypothesis import strategies as st

from saferdemo.segments import parse

WORDS = st.sampled_from(["the", "card", "says", "a < b", "x>y", "step", "1.", "\n", " ", "<", "think", "<b>"])
BODY = st.lists(WORDS, max_size=8).map(" ".join)


def test_plain_response():
    s = parse("<think>\nI read it.\n</think>\nThe answer.", done=True)
    assert (s.think, s.answer, s.think_state, s.truncated) == ("I read it.", "The answer.", "closed", False)


def test_no_tags_is_all_answer():
    s = parse("Just an answer.", done=True)
    assert (s.think, s.answer, s.think_state) == ("", "Just an answer.", "none")


def test_prefilled_think_announced_or_discovered():
    assert parse("reasoning so far", think_prefilled=True).think == "reasoning so far"
    s = parse("reasoning</think>answer", done=True)
    assert (s.think, s.answer, s.think_state) == ("reasoning", "answer", "closed")


def test_unclosed_think_at_the_end_is_truncated():
    s = parse("<think>still thinking", done=True)
    assert s.truncated and s.think == "still thinking" and s.answer == ""
    assert not parse("<think>still thinking").truncated  # still streaming: not truncated yet


def test_answer_tags_and_reflection():
    s = parse("<reflection>I was wrong.</reflection>\n<think>redo</think><answer>Safe.</answer>", done=True)
    assert (s.reflection, s.think, s.answer) == ("I was wrong.", "redo", "Safe.")
    assert s.reflection_state == "closed"


def test_split_tag_is_held_back():
    assert parse("<think>abc</thi").think == "abc"
    assert parse("<think>abc</thi").think_state == "open"
    assert parse("answer <").answer == "answer"
    assert parse("answer <", done=True).answer == "answer <"


tagged = st.builds(
    lambda think, refl, answer, use_refl, answer_tags: (
        (f"<reflection>{refl}</reflection>\n" if use_refl else "")
        + f"<think>{think}</think>\n"
        + (f"<answer>{answer}</answer>" if answer_tags else answer),
        (think.strip(), refl.strip() if use_refl else "", answer.strip()),
    ),
    BODY, BODY, BODY, st.booleans(), st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(tagged, st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=40))
def test_random_chunkings_agree_with_the_whole(case, sizes):
    text, parts = case
    final = parse(text, done=True)
    assert (final.think, final.reflection, final.answer) == parts
    position, index = 0, 0
    while position < len(text):
        position = min(len(text), position + sizes[index % len(sizes)])
        index += 1
        partial = parse(text[:position])
        # Every segment seen while streaming is a prefix of the final one: nothing shown is ever retracted,
        # and no half tag leaks into the text.
        for name in ("think", "reflection", "answer"):
            assert getattr(final, name).startswith(getattr(partial, name)), (name, text[:position])
            assert not getattr(partial, name).endswith(("<thi", "</th", "<refl", "</ans"))
