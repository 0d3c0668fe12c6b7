"""The Gradio app: base and SaFeR-aligned models side by side, with thinking, reflection, answer and GRM scores.

Layout (top-down): two chat columns, one multimodal textbox, Stop / Regenerate / Clear, a parameters
accordion, the GRM chart, examples. Each column shows a turn as a collapsible "Thinking" message (pending
while it streams, then its duration and speed), the answer, the GRM's judgement, and, when the safety
loop fires, a "Reflection" message and the corrected answer with its new judgement. Everything a user
owns (history, images, chart data) lives in per-session `gr.State`; the only shared objects are the models.
"""

from __future__ import annotations

import html
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from saferdemo.charts import scores_figure
from saferdemo.engine import GenerationParams
from saferdemo.images import InputError, load_image
from saferdemo.judge import JudgeResult
from saferdemo.observability import health, log_turn, turn_record
from saferdemo.safety_loop import LoopConfig, Turn
from saferdemo.segments import Segments
from saferdemo.session import Column, Comparison, Exchange

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples"
COLUMN_NAMES = ("base", "aligned")


@dataclass
class Limits:
    prompt_chars: int = 4000
    images_per_turn: int = 4
    turns: int = 20
    audit_items: int = 100  # the Audit tab's largest audit (the CLI has no limit)
    upload_mb: int = 20  # per file (Gradio refuses larger uploads); decoded pixels: saferdemo.images
    queue_size: int = 32  # waiting turns across all users; beyond it Gradio answers "queue is full"
    concurrency: int = 2  # turns generating at once (each runs two columns and the judge)
    ui_updates_per_s: float = 20.0  # streamed redraws are throttled to this rate


@dataclass
class Conversation:
    """Per-session state: the finished exchanges and every GRM judgement for the chart."""

    exchanges: list[dict] = field(default_factory=list)  # {"text", "paths", "answers"}
    records: list[dict] = field(default_factory=list)
    # What each chat shows, kept on the server: the browser's copy is never read back.
    chats: dict[str, list] = field(default_factory=lambda: {name: [] for name in COLUMN_NAMES})


class StopRegistry:
    """The Stop button's way into a running turn: one event per browser session (control only, no user data)."""

    def __init__(self):
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def new(self, session: str) -> threading.Event:
        with self._lock:
            self._events[session] = event = threading.Event()
            return event

    def stop(self, session: str) -> None:
        with self._lock:
            event = self._events.pop(session, None)
        if event is not None:
            event.set()


# ---------------------------------------------------------------- rendering


def turn_messages(turn: Turn) -> list[gr.ChatMessage]:
    """The assistant messages one column shows for a turn, rebuilt from its latest snapshot."""
    messages = _segment_messages(turn.draft, turn.draft_stats, "Thinking", draft_of_reflected=turn.reflected)
    if turn.phase == "judging" and turn.draft_judge is None:
        messages.append(_note("GRM", "judging…", pending=True))
    if turn.draft_judge is not None:
        messages.append(_judge_message(turn.draft_judge, "draft" if turn.reflected else None))
    if turn.reflected:
        revision = turn.revision
        messages.append(gr.ChatMessage(
            role="assistant", content=inert(revision.reflection) or "…",
            metadata={"title": "Reflection", "status": "pending" if turn.phase == "reflecting" and revision.reflection_state != "closed" else "done"},
        ))
        messages += _segment_messages(revision, turn.revision_stats, "Thinking again")
        if turn.phase == "rejudging" and turn.final_judge is None:
            messages.append(_note("GRM", "judging the corrected answer…", pending=True))
        if turn.final_judge is not None:
            messages.append(_judge_message(turn.final_judge, "corrected"))
    if turn.error:
        messages.append(gr.ChatMessage(role="assistant", content=f"⚠️ {inert(turn.error)}"))
    if turn.stopped:
        messages.append(gr.ChatMessage(role="assistant", content="⏹ Stopped."))
    return messages


def _segment_messages(seg: Segments, stats, title: str, draft_of_reflected: bool = False) -> list[gr.ChatMessage]:
    messages = []
    if seg.think or seg.think_state != "none":
        metadata = {"title": title + (" (truncated at max tokens)" if seg.truncated else ""),
                    "status": "pending" if seg.think_state == "open" and not seg.truncated else "done"}
        if stats is not None and metadata["status"] == "done":
            metadata["duration"] = round(stats.seconds, 2)
            metadata["log"] = _speed(stats)
        messages.append(gr.ChatMessage(role="assistant", content=inert(seg.think) or "…", metadata=metadata))
    if seg.answer:
        if draft_of_reflected:  # the flagged draft stays visible, folded, above the reflection
            messages.append(gr.ChatMessage(role="assistant", content=inert(seg.answer),
                                           metadata={"title": "Draft answer (flagged by the GRM)", "status": "done"}))
        else:
            messages.append(gr.ChatMessage(role="assistant", content=inert(seg.answer)))
    return messages


def _speed(stats) -> str:
    parts = []
    if stats.ttft_s is not None:
        parts.append(f"TTFT {stats.ttft_s:.2f} s")
    if stats.tokens_per_s is not None:
        parts.append(f"{stats.tokens_per_s:.0f} tok/s")
    return " · ".join(parts)


def _judge_message(result: JudgeResult, which: str | None) -> gr.ChatMessage:
    label = f"GRM ({which})" if which else "GRM"
    if result.judgement is None:
        raw = inert(result.raw.strip().replace("`", "'")[:300])
        return gr.ChatMessage(role="assistant", content=f"{inert(result.error)}\n\nRaw output: `{raw or '(empty)'}`",
                              metadata={"title": f"{label}: no score", "status": "done"})
    j = result.judgement
    penalties = ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in j.penalties.items() if v) or "none"
    body = (f"{inert(j.rationale)}\n\nAnswer: safety {j.answer['safety']:g}, helpfulness {j.answer['helpfulness']:g} · "
            f"reasoning safety {j.reasoning['safety']:g} · penalties: {penalties}")
    return gr.ChatMessage(role="assistant", content=body, metadata={
        "title": f"{label}: {j.verdict} · reward {result.reward:.2f}", "status": "done"})


def _note(title: str, text: str, pending: bool) -> gr.ChatMessage:
    return gr.ChatMessage(role="assistant", content=text, metadata={"title": title, "status": "pending" if pending else "done"})


def inert(text: str) -> str:
    """Text shown in a chat, made inert: HTML is escaped (no tags, no scripts) and Markdown images, which
    would make the browser fetch any URL, are shown as text."""
    return html.escape(text, quote=False).replace("![", "!\\[")


def user_messages(text: str, paths: list[str]) -> list[gr.ChatMessage]:
    return [gr.ChatMessage(role="user", content={"path": path}) for path in paths] + [gr.ChatMessage(role="user", content=inert(text))]


def judgement_records(turn: Turn, column: str, index: int) -> list[dict]:
    records = []
    for stage, result in (("draft", turn.draft_judge), ("final", turn.final_judge if turn.reflected else None)):
        if result is not None and result.judgement is not None:
            records.append({"turn": index, "column": column, "stage": stage, "reward": result.reward,
                            "penalties": dict(result.judgement.penalties)})
    return records


# ---------------------------------------------------------------- the app


def build_app(columns: dict[str, Column], judge, titles: dict[str, str], limits: Limits | None = None,
              gpu_decorator=None) -> gr.Blocks:
    """columns: {"base": Column, "aligned": Column}; judge: a GRMClient or None; titles: what each column shows."""
    limits = limits or Limits()
    comparison = Comparison([columns[name] for name in COLUMN_NAMES], judge)
    stops = StopRegistry()

    def submit(message: dict, conv: Conversation):
        text = (message or {}).get("text", "").strip()
        paths = list((message or {}).get("files", []))
        if not text:
            raise gr.Error("Type a message (and attach a card image if you like).")
        if len(text) > limits.prompt_chars:
            raise gr.Error(f"The message is {len(text):,} characters; the limit is {limits.prompt_chars:,}.")
        if len(paths) > limits.images_per_turn:
            raise gr.Error(f"{len(paths)} images attached; the limit is {limits.images_per_turn} per message.")
        if len(conv.exchanges) >= limits.turns:
            raise gr.Error(f"This conversation has reached {limits.turns} turns. Press Clear to start a new one.")
        for path in paths:
            _open(path)  # reject a bad file now, before it enters the history
        shown = user_messages(text, paths)
        for chat in conv.chats.values():
            chat += shown
        return gr.MultimodalTextbox(value=None), {"text": text, "paths": paths}, conv, *conv.chats.values()

    def respond(pending: dict | None, conv: Conversation, temperature: float,
                top_p: float, max_new_tokens: int, threshold: float, loop_base: bool, loop_aligned: bool,
                request: gr.Request):
        if not pending:
            return
        stop = stops.new(_session(request))
        history = [Exchange(e["text"], [_open(p) for p in e["paths"]], e["answers"]) for e in conv.exchanges]
        images = [_open(p) for p in pending["paths"]]
        loops = {"base": LoopConfig(enabled=loop_base, threshold=threshold),
                 "aligned": LoopConfig(enabled=loop_aligned, threshold=threshold)}
        params = GenerationParams(max_new_tokens=int(max_new_tokens), temperature=float(temperature), top_p=float(top_p))
        chats = conv.chats
        prefix = {name: len(chat) for name, chat in chats.items()}
        turns: dict[str, Turn] = {}
        index = len(conv.exchanges) + 1
        last_draw = 0.0

        def redraw():  # rebuilt from the latest snapshots only when drawn, not at every streamed chunk
            for name, turn in turns.items():
                chats[name] = chats[name][: prefix[name]] + turn_messages(turn)

        try:
            for name, turn in comparison.run(history, pending["text"], images, params, stop, loops):
                turns[name] = turn
                streaming = turn.phase in ("drafting", "reflecting")
                if not streaming or time.perf_counter() - last_draw >= 1 / limits.ui_updates_per_s:
                    last_draw = time.perf_counter()
                    redraw()
                    yield chats["base"], chats["aligned"], gr.skip(), conv, None
        finally:  # also when Stop cancels this generator: the turn still enters the history as far as it got
            redraw()
            conv.exchanges.append({"text": pending["text"], "paths": pending["paths"],
                                   "answers": {name: turn.final_answer for name, turn in turns.items()}})
            for name, turn in turns.items():
                conv.records += judgement_records(turn, name, index)
                log_turn(turn_record(_session(request), name, titles.get(name, name), turn, len(pending["text"]),
                                     len(images)))
        yield chats["base"], chats["aligned"], scores_figure(conv.records) if conv.records else None, conv, None

    if gpu_decorator is not None:  # ZeroGPU: hold a GPU only while a turn runs
        respond = gpu_decorator(respond)

    def stop_turn(request: gr.Request):
        stops.stop(_session(request))

    def regenerate(conv: Conversation):
        if not conv.exchanges:
            raise gr.Error("Nothing to regenerate yet.")
        last = conv.exchanges.pop()  # the same text and images go again
        conv.records = [r for r in conv.records if r["turn"] <= len(conv.exchanges)]
        shown = user_messages(last["text"], last["paths"])
        conv.chats = {name: _cut_last_turn(chat) + shown for name, chat in conv.chats.items()}
        return {"text": last["text"], "paths": last["paths"]}, conv, *conv.chats.values()

    def clear():
        return Conversation(), [], [], None, None

    def audit(dataset: str, limit: float, progress=gr.Progress()):  # noqa: B008 (Gradio injects progress)
        if judge is None:
            raise gr.Error("The audit needs a judge model (SAFERDEMO_GRM).")
        from saferdemo.audit import AuditConfig, run_audit
        from saferdemo.audit_report import category_figure, metrics_markdown, quadrant_figure
        from saferdemo.datasets import load_dataset

        limit = max(1, min(int(limit), limits.audit_items))
        items = load_dataset(dataset, limit=limit)
        out = Path(tempfile.mkdtemp(prefix="saferdemo-audit-"))
        engines = {name: columns[name].engine for name in COLUMN_NAMES}
        summary = run_audit(engines, judge, items, out, AuditConfig(dataset, limit),
                            progress=lambda done, total: progress(done / total, desc=f"{done}/{total} responses"))
        return metrics_markdown(summary), category_figure(summary), quadrant_figure(summary), str(out / "report.html")

    # Uploaded files live in Gradio's cache; files older than an hour are deleted every hour.
    with gr.Blocks(title="saferdemo", delete_cache=(3600, 3600)) as demo:
        gr.Markdown("## saferdemo: safety-aware reasoning, side by side\n"
                    "Send a message (attach a card image). Both models answer at once; the GRM judges each "
                    "answer and, when it flags one, the model reflects and corrects itself.")
        with gr.Tab("Chat"):
            chat_tab = _chat_tab(columns, titles)
        with gr.Tab("Audit"):
            gr.Markdown("Run a small safety benchmark on both models: ASR, safety, helpfulness, over-refusal, "
                        "unsafe reasoning and self-correction, with 95% intervals. Larger audits: `saferdemo audit`.")
            with gr.Row():
                dataset = gr.Dropdown(["miniature", "figstep-tiny", "figstep"], value="miniature", label="dataset")
                n_items = gr.Number(value=10, minimum=1, maximum=limits.audit_items, precision=0, label="items")
                audit_btn = gr.Button("Run audit", variant="primary")
            audit_table = gr.Markdown()
            with gr.Row():
                audit_bars, audit_quadrants = gr.Plot(label="per category"), gr.Plot(label="reasoning × answer")
            audit_file = gr.File(label="full report (HTML)")
            audit_btn.click(audit, [dataset, n_items], [audit_table, audit_bars, audit_quadrants, audit_file],
                            api_name="audit", concurrency_limit=1)
        chat_tab.wire(submit, respond, regenerate, stop_turn, clear)
    return demo


@dataclass
class _ChatTab:
    """The chat tab's components, so `build_app` can wire events after building both tabs."""

    conv: gr.State
    pending: gr.State
    chat_base: gr.Chatbot
    chat_aligned: gr.Chatbot
    box: gr.MultimodalTextbox
    stop_btn: gr.Button
    regen_btn: gr.Button
    clear_btn: gr.Button
    settings: list
    plot: gr.Plot

    def wire(self, submit, respond, regenerate, stop_turn, clear):
        conv, pending, settings = self.conv, self.pending, self.settings
        outputs = [self.chat_base, self.chat_aligned, self.plot, conv, pending]
        chats = [self.chat_base, self.chat_aligned]
        run = self.box.submit(submit, [self.box, conv], [self.box, pending, conv, *chats], api_name="submit").then(
            respond, [pending, conv, *settings], outputs, api_name="respond")
        again = self.regen_btn.click(regenerate, [conv], [pending, conv, *chats], api_name="regenerate").then(
            respond, [pending, conv, *settings], outputs, api_name=False)
        self.stop_btn.click(stop_turn, None, None, cancels=[run, again], api_name="stop")
        self.clear_btn.click(clear, None, [conv, *chats, self.plot, pending], api_name="clear")
        for chat in chats:  # each chat's own trash icon clears the whole conversation too (one state for both)
            chat.clear(clear, None, [conv, *chats, self.plot, pending], api_name=False)


def _chat_tab(columns, titles) -> _ChatTab:
    conv = gr.State(Conversation())
    pending = gr.State(None)
    with gr.Row(equal_height=True):
        chat_base = gr.Chatbot(label=f"Base · {titles['base']}", height=520, elem_id="chat-base")
        chat_aligned = gr.Chatbot(label=f"SaFeR-aligned · {titles['aligned']}", height=520, elem_id="chat-aligned")
    box = gr.MultimodalTextbox(file_types=["image"], file_count="multiple", placeholder="Ask about an image…",
                               show_label=False, elem_id="prompt")
    with gr.Row():
        stop_btn = gr.Button("Stop", variant="stop", elem_id="stop")
        regen_btn = gr.Button("Regenerate", elem_id="regenerate")
        clear_btn = gr.Button("Clear", elem_id="clear")
    with gr.Accordion("Parameters", open=False):
        with gr.Row():
            temperature = gr.Slider(0.0, 1.5, value=0.0, step=0.05, label="temperature (0 = greedy)")
            top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="top-p")
            max_tokens = gr.Slider(16, 1024, value=192, step=16, label="max new tokens")
        with gr.Row():
            threshold = gr.Slider(0.0, 1.0, value=0.5, step=0.05,
                                  label="reflection threshold (GRM reward below it, or an unsafe verdict, triggers reflection)")
            loop_base = gr.Checkbox(value=False, label="safety loop on the base model")
            loop_aligned = gr.Checkbox(value=True, label="safety loop on the aligned model")
    plot = gr.Plot(label="GRM scores", elem_id="scores")
    gr.Markdown(f"GRM: `{titles.get('grm', 'none')}`")
    examples = _examples()
    if examples:
        gr.Examples(examples=examples, inputs=[box], label="Examples (FigStep-style cards)")
    settings = [temperature, top_p, max_tokens, threshold, loop_base, loop_aligned]
    return _ChatTab(conv, pending, chat_base, chat_aligned, box, stop_btn, regen_btn, clear_btn, settings, plot)


def launch(demo: gr.Blocks, titles: dict[str, str], host: str = "127.0.0.1", port: int | None = None,
           limits: Limits | None = None, block: bool = True) -> gr.Blocks:
    """Queue and launch with the limits, and add GET /health for load balancers and Spaces."""
    limits = limits or Limits()
    demo.queue(default_concurrency_limit=limits.concurrency, max_size=limits.queue_size)
    demo.launch(server_name=host, server_port=port, max_file_size=f"{limits.upload_mb}mb", prevent_thread_lock=True,
                quiet=not block)
    started = time.time()
    demo.app.add_api_route("/health", lambda: health(titles, started), methods=["GET"])
    if block:
        demo.block_thread()
    return demo


def _open(path: str):
    try:
        return load_image(path)
    except InputError as error:
        raise gr.Error(str(error)) from error


def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "default"


def _cut_last_turn(chat: list) -> list:
    """Drop the last turn: the trailing assistant messages and the user messages before them."""
    i = len(chat)
    while i > 0 and _role(chat[i - 1]) == "assistant":
        i -= 1
    while i > 0 and _role(chat[i - 1]) == "user":
        i -= 1
    return list(chat[:i])


def _role(message) -> str:
    return message["role"] if isinstance(message, dict) else message.role


def _examples() -> list[list[dict]]:
    import json

    index = EXAMPLES_DIR / "examples.json"
    if not index.is_file():
        return []
    return [[{"text": e["prompt"], "files": [str(EXAMPLES_DIR / e["image"])]}] for e in json.loads(index.read_text())]
