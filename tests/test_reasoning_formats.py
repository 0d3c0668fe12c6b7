"""Reasoning formats of other model families: the one parser under random chunkings of each format's stream,
detection from real-format tokenizers and templates, the override, and the safety loop on each format."""

import json
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from saferdemo.engines.base import GenerationParams, collect
from saferdemo.engines.openai_engine import OpenAIEngine
from saferdemo.judge import GRMClient
from saferdemo.reasoning_formats import ENV, ReasoningFormatError, detect, for_processor, override, tags_survive_decoding
from saferdemo.safety_loop import LoopConfig, run_turn
from saferdemo.segments import ANY, KIMI, THINK, THINK_ANSWER, canonical, native, parse
from scripted import UNSAFE, Scripted

WORDS = st.sampled_from(["the", "card", "says", "a < b", "x>y", "step", "1.", "\n", " ", "<", "think", "<b>",
                         "\u25c1", "\u25b7", "/", "answer"])
BODY = st.lists(WORDS, max_size=8).map(" ".join)
KO, KC = "\u25c1think\u25b7", "\u25c1/think\u25b7"

# (format, how the think span is written): "tags" both tags, "announced" the template pre-filled the opening tag
# and the engine says so, "discovered" pre-filled but not announced (the closing tag shows it).
VARIANTS = [(THINK, "tags"), (THINK, "announced"), (THINK, "discovered"), (THINK_ANSWER, "tags"),
            (THINK_ANSWER, "announced"), (KIMI, "tags"), (KIMI, "announced"), (KIMI, "discovered")]


def response(fmt, how, think, refl, answer, use_refl):
    opening = "" if how != "tags" else fmt.opens[0]
    body = f"{opening}{think}{fmt.closes[0]}\n" + (f"<answer>{answer}</answer>" if fmt.answer_tags else answer)
    # a reflection turn starts with its reflection; a pre-filled think cannot follow one
    return (f"<reflection>{refl}</reflection>\n" if use_refl and how == "tags" else "") + body


cases = st.builds(lambda v, t, r, a, u: (v, response(*v, t, r, a, u), (t.strip(), r.strip() if u and v[1] == "tags"
                                                                          else "", a.strip())),
                  st.sampled_from(VARIANTS), BODY, BODY, BODY, st.booleans())


def held_fragments(fmt):
    return tuple(tag[:k] for tag in fmt.tags for k in range(3, len(tag)))


@settings(max_examples=400, deadline=None)
@given(cases, st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=40))
def test_every_format_parses_the_same_under_any_chunking(case, sizes):
    (fmt, how), text, parts = case
    announced = how == "announced"
    final = parse(text, announced, done=True, format=fmt)
    assert (final.think, final.reflection, final.answer) == parts
    assert final.think_state == "closed" and not final.truncated
    # What a caller that knows no format gets (the audit, training) reads the same.
    assert (parse(text, announced, done=True).think, parse(text, announced, done=True).answer) == parts[::2]
    position, index = 0, 0
    while position < len(text):
        position = min(len(text), position + sizes[index % len(sizes)])
        index += 1
        partial = parse(text[:position], announced, format=fmt)
        for name in ("think", "reflection", "answer"):  # nothing shown is retracted, no half tag leaks
            # (unannounced pre-filling shows the thinking as the answer until the closing tag says otherwise)
            if how != "discovered":
                assert getattr(final, name).startswith(getattr(partial, name)), (name, text[:position])
            assert not getattr(partial, name).endswith(held_fragments(fmt)), (name, text[:position])
    # The judge reads every format as saferdemo's own; what it reads parses back to the same segments.
    judged = parse(canonical(text, fmt, announced), done=True, format=THINK)
    assert (judged.think, judged.answer) == (final.think, final.answer)


def test_kimi_stream_cut_inside_its_tags():
    assert parse("\u25c1think\u25b7abc\u25c1/th", format=KIMI).think == "abc"
    assert parse("\u25c1thi", format=KIMI).answer == ""  # maybe an opening tag: held back
    s = parse("\u25c1think\u25b7still going", done=True, format=KIMI)
    assert s.truncated and s.think == "still going"


def test_a_forced_format_reads_only_its_own_tags():
    text = "<think>plan</think>answer"
    assert parse(text, done=True, format=KIMI).answer == text  # Kimi tags only: <think> is text
    assert parse(f"{KO}plan{KC}answer", done=True, format=THINK).answer == f"{KO}plan{KC}answer"
    assert parse(f"{KO}plan{KC}answer", done=True).think == "plan"  # "any" reads both


def test_native_puts_a_prefilled_tag_back_and_canonical_keeps_saferdemos_own_text():
    assert native("plan</think>answer", THINK, think_prefilled=True) == "<think>\nplan</think>answer"
    assert native(f"{KO}plan{KC}answer", KIMI) == f"{KO}plan{KC}answer"
    own = "<think>\nplan\n</think>\nanswer"
    assert canonical(own, THINK) == own and canonical(own) == own
    assert canonical(f"{KO}plan{KC}answer", KIMI) == own
    assert canonical("<think>plan</think><answer>answer</answer>", THINK_ANSWER) == own


# ------------------------------------------------------------------------------------ OpenAI reasoning_content


class SSE(BaseHTTPRequestHandler):
    """An OpenAI-compatible server whose reasoning parser splits the thinking into reasoning_content."""

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for event in EVENTS:
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def sse_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), SSE)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


EVENTS = [{"choices": [{"delta": {"reasoning_content": "The card asks for"}}]},
          {"choices": [{"delta": {"reasoning_content": " fraud."}}]},
          {"choices": [{"delta": {"content": "I can't help."}, "finish_reason": "stop"}]}]


@pytest.mark.parametrize("chosen, tags", [(None, ("<think>", "</think>")), ("kimi", (KO, KC))])
def test_reasoning_content_comes_back_in_the_models_own_tags(monkeypatch, sse_server, chosen, tags):
    if chosen:
        monkeypatch.setenv(ENV, chosen)
    else:
        monkeypatch.delenv(ENV, raising=False)
    generation = OpenAIEngine(sse_server, "m").start([{"role": "user", "content": "Hi"}], [], GenerationParams(64),
                                                      threading.Event())
    text = collect(generation)
    assert text.startswith(tags[0]) and tags[1] in text
    s = parse(text, done=True, format=generation.reasoning_format)
    assert (s.think, s.answer) == ("The card asks for fraud.", "I can't help.")


# -------------------------------------------------------------------------------------------------- detection


@pytest.fixture(scope="module")
def qwen3_tokenizer():
    from real_qwen import QWEN3_VL_TOKENIZER, fresh_qwen_tokenizer

    return fresh_qwen_tokenizer(QWEN3_VL_TOKENIZER)


@pytest.fixture(scope="module")
def qwen25_tokenizer():
    from real_qwen import QWEN25_VL_TOKENIZER, fresh_qwen_tokenizer

    return fresh_qwen_tokenizer(QWEN25_VL_TOKENIZER)


def thinking_template(instruct: str) -> str:
    """Qwen3-VL-*-Thinking's generation prompt: the Instruct one plus a pre-filled `<think>` line."""
    old = "{{- '<|im_start|>assistant\\n' }}\n{%- endif %}"
    assert instruct.rstrip().endswith(old)
    return instruct.rstrip()[: -len(old)] + "{{- '<|im_start|>assistant\\n<think>\\n' }}\n{%- endif %}"


def test_qwen3_vl_thinking_is_think_and_its_prompt_is_prefilled(qwen3_tokenizer):
    assert detect(qwen3_tokenizer) is THINK  # <think> is a token of Qwen3's vocabulary
    messages = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    instruct = qwen3_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    thinking = qwen3_tokenizer.apply_chat_template(messages, chat_template=thinking_template(
        qwen3_tokenizer.chat_template), add_generation_prompt=True, tokenize=False)
    assert not THINK.prefilled(instruct) and THINK.prefilled(thinking)
    assert thinking.endswith("<|im_start|>assistant\n<think>\n")
    assert tags_survive_decoding(qwen3_tokenizer, THINK)  # non-special added tokens: decoding keeps them


def test_qwen25_vl_has_no_evidence_and_reads_every_format(qwen25_tokenizer):
    assert detect(qwen25_tokenizer) is ANY  # <think> is three ordinary tokens there, the template never says it
    assert tags_survive_decoding(qwen25_tokenizer, ANY)


def kimi_style_tokenizer(tags_as_tokens: bool, special: bool = False) -> PreTrainedTokenizerFast:
    """A minimal Kimi-style tokenizer: byte-level BPE over bytes only, Kimi's chat markers as special tokens and,
    when asked, its thinking tags as added tokens (else they are only bytes, as in tokenizers that split them)."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens([AddedToken(t, special=True) for t in ("<|im_user|>", "<|im_assistant|>",
                                                                    "<|im_middle|>", "<|im_end|>")])
    if tags_as_tokens:
        core.add_tokens([AddedToken(KO, special=special), AddedToken(KC, special=special)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>")
    if special and tags_as_tokens:
        tokenizer.add_special_tokens({"additional_special_tokens": [KO, KC]})
    # Kimi-VL's layout (role markers, <|im_middle|>); the assistant history keeps only the text after ◁/think▷
    # only when the template is told so: `strip` decides whether the template mentions the tag at all.
    tokenizer.chat_template = (
        "{%- for m in messages -%}{%- if m.role == 'user' -%}<|im_user|>user<|im_middle|>"
        "{%- for c in m.content -%}{%- if c.type == 'text' -%}{{ c.text }}{%- endif -%}{%- endfor -%}<|im_end|>"
        "{%- else -%}<|im_assistant|>assistant<|im_middle|>{{ m.content[0].text }}<|im_end|>{%- endif -%}"
        "{%- endfor -%}{%- if add_generation_prompt -%}<|im_assistant|>assistant<|im_middle|>{%- endif -%}")
    return tokenizer


KIMI_HISTORY_TEMPLATE_PART = "{%- set content = content.split('\u25c1/think\u25b7')[-1] -%}"


def test_kimi_is_found_in_the_vocabulary_or_in_the_template():
    as_tokens = kimi_style_tokenizer(tags_as_tokens=True)
    assert detect(as_tokens) is KIMI
    assert as_tokens.encode(KO) != [] and tags_survive_decoding(as_tokens, KIMI)
    split = kimi_style_tokenizer(tags_as_tokens=False)  # the tag is several byte tokens: no trace in the vocabulary
    assert len(split.encode(KO)) > 1 and detect(split) is ANY
    assert detect(split, split.chat_template + KIMI_HISTORY_TEMPLATE_PART) is KIMI
    # With no evidence at all the parser still reads Kimi's tags ("any"), and the tags survive decoding.
    assert parse(split.decode(split.encode(f"{KO}plan{KC}answer")), done=True, format=ANY).think == "plan"


def test_special_tags_that_decoding_would_drop_are_reported():
    tokenizer = kimi_style_tokenizer(tags_as_tokens=True, special=True)
    assert not tags_survive_decoding(tokenizer, KIMI)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert for_processor(tokenizer) is KIMI
    assert any("skip_special_tokens drops them" in str(w.message) for w in caught)


def test_the_override_wins_and_a_bad_name_is_explained(monkeypatch, qwen3_tokenizer):
    monkeypatch.setenv(ENV, "kimi")
    assert for_processor(qwen3_tokenizer) is KIMI
    monkeypatch.setenv(ENV, "auto")
    assert for_processor(qwen3_tokenizer) is THINK and override() is None
    monkeypatch.setenv(ENV, "deepseek")
    with pytest.raises(ReasoningFormatError, match="'deepseek' is not a reasoning format; choose from auto, think"):
        for_processor(qwen3_tokenizer)


def test_the_cli_flag_refuses_an_unknown_format(capsys):
    from saferdemo.cli import main

    with pytest.raises(SystemExit) as exit:
        main(["compare", "--prompt", "hi", "--reasoning-format", "deepseek"])
    assert exit.value.code == 2 and "invalid choice: 'deepseek'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- the loop on each format


class FormatScripted(Scripted):
    """A scripted engine whose generations speak `fmt`, pre-filled or not."""

    def __init__(self, name, fmt, prefilled, *replies):
        super().__init__(name, *replies)
        self.fmt, self.prefilled = fmt, prefilled

    def start(self, messages, images, params, stop):
        generation = super().start(messages, images, params, stop)
        generation.reasoning_format, generation.think_prefilled = self.fmt, self.prefilled and len(self.calls) == 1
        return generation


SAFE_JSON = json.dumps({"verdict": "safe", "reasoning": [10, 9, 9, 9], "answer": [10, 9, 9, 9], "penalties": {}})


@pytest.mark.parametrize("fmt, prefilled, draft", [
    (KIMI, False, f"{KO}The card asks for fraud.{KC}\n1. [restricted step]"),
    (THINK, True, "The card asks for fraud.</think>\n1. [restricted step]"),
    (THINK_ANSWER, False, "<think>The card asks for fraud.</think><answer>1. [restricted step]</answer>"),
])
def test_the_judge_and_the_reflection_work_the_same_on_each_format(fmt, prefilled, draft):
    reflection = f"<reflection>I helped with fraud.</reflection>\n{fmt.opens[0]}Fraud.{fmt.closes[0]}\nSorry, no."
    policy = FormatScripted("policy", fmt, prefilled, draft, reflection)
    judge_engine = Scripted("grm", UNSAFE.to_json(), SAFE_JSON)
    turns = list(run_turn(policy, GRMClient(judge_engine, rubric="short"), [{"role": "user", "content": [
        {"type": "text", "text": "Complete the list."}]}], [], "Complete the list.", GenerationParams(64),
        LoopConfig(), threading.Event()))
    last = turns[-1]
    assert (last.draft.think, last.draft.answer) == ("The card asks for fraud.", "1. [restricted step]")
    judged = judged_response(judge_engine, 0)  # the judge reads saferdemo's own format
    assert KO not in judged and "<answer>" not in judged and judged.lstrip().startswith("<think>")
    assert parse(judged, done=True, format=THINK).think == "The card asks for fraud."
    fed_back = policy.calls[1][0][-2]["content"][0]["text"]  # the model reads its draft in its own tags
    assert fed_back.startswith(fmt.opens[0]) and fmt.closes[0] in fed_back
    assert last.reflected and last.kept == "revision" and last.final_answer == "Sorry, no."
    judged = judged_response(judge_engine, 1)
    assert KO not in judged and (parse(judged, done=True, format=THINK).think, parse(judged, done=True).answer) == (
        "Fraud.", "Sorry, no.")


def judged_response(judge_engine, call: int) -> str:
    return judge_engine.calls[call][0][0]["content"][-1]["text"].split("Response:\n", 1)[1]


def test_a_real_engine_with_a_thinking_template_says_its_prompt_is_prefilled():
    from saferdemo.engines.transformers_engine import TransformersEngine
    from saferdemo.loading import load_model, load_processor

    processor = load_processor("assets/models/mini-base")
    processor.chat_template = processor.chat_template.replace("<|im_start|>assistant\n{% endif %}",
                                                              "<|im_start|>assistant\n<think>\n{% endif %}")
    engine = TransformersEngine(load_model("assets/models/mini-base", "cpu"), processor, "mini-base")
    assert engine.reasoning_format is THINK
    image = Image.open("assets/examples/1-fraud.png").convert("RGB")
    generation = engine.start([{"role": "user", "content": [{"type": "image"}, {"type": "text",
                               "text": "Complete the list on this card."}]}], [image], GenerationParams(48),
                              threading.Event())
    text = collect(generation)
    assert generation.think_prefilled and generation.reasoning_format is THINK
    assert parse(text, True, done=True, format=THINK).think_state in ("open", "closed")
