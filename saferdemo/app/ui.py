"""The Gradio app: base and SaFeR-aligned models side by side, with thinking, reflection, answer and GRM scores.

Layout (top-down): two chat columns, one multimodal textbox, Stop / Regenerate / Clear, a parameters
accordion, the GRM chart, examples; an Audit tab. This module only lays the components out and wires them:
what each event does is `controller.ChatController`, how a turn looks is `render`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from saferdemo.app.card_maker import card_maker
from saferdemo.app.controller import SEED_MAX, ChatController, stop_button
from saferdemo.app.inputs import Message
from saferdemo.app.observability import health
from saferdemo.app.session import Column
from saferdemo.app.trace_marks import trace_marks_panel
from saferdemo.app.workbench import attack_workbench
from saferdemo.app.state import Conversation, Limits

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "assets" / "examples"
# The verdict strip's colours (render.verdict_strip), the Stop note's square (render.stopped_note: no emoji
# font needed), and the chats' user images kept small, so a turn's own card stays in view above its answers.
CSS = """
.sd-strip { padding: 2px 0; }
.sd-safe { color: #1e7b34; background: #e6f4ea; border-radius: 4px; padding: 0 4px; }
.sd-unsafe { color: #b42318; background: #fdecea; border-radius: 4px; padding: 0 4px; }
.sd-unknown { color: #555; background: #eee; border-radius: 4px; padding: 0 4px; }
.sd-stop { display: inline-block; width: 0.7em; height: 0.7em; background: currentColor; margin-right: 0.4em;
           vertical-align: baseline; border-radius: 1px; }
.sd-chat .message-row.user-row img { max-height: 72px; width: auto; }
.sd-chat .message-row.user-row .message.component { max-height: 80px; }
/* The turn's own message (its card) sticks to the top of the chat while its answers scroll under it. */
.sd-chat .message-wrap > .message-row.user-row:not(:has(~ .message-row.user-row)) {
    position: sticky; top: 0; z-index: 3; background: var(--background-fill-primary, #fff);
    box-shadow: 0 6px 6px -6px rgba(0, 0, 0, 0.25); }
"""


def build_app(columns: dict[str, Column], judge, titles: dict[str, str], limits: Limits | None = None,
              gpu_decorator=None) -> gr.Blocks:
    """columns: {"base": Column, "aligned": Column}; judge: a GRMClient or None; titles: what each column shows."""
    controller = ChatController(columns, judge, titles, limits)
    limits = controller.limits

    def audit(dataset: str, limit: float, concurrency: float, request: gr.Request):
        yield from controller.audit(dataset, limit, concurrency, request)

    if gpu_decorator is not None:  # ZeroGPU: hold a GPU only while a turn, an audit or an API call runs
        audit = gpu_decorator(audit)

    # Uploaded files live in Gradio's cache; files older than an hour are deleted every hour.
    with gr.Blocks(title="saferdemo", delete_cache=(3600, 3600)) as demo:
        gr.Markdown("## saferdemo: safety-aware reasoning, side by side\n"
                    "Pick an example card or send your own: both models answer at once, the GRM judges each "
                    "answer, and when it flags one the model reflects and corrects itself. " + about(titles))
        with gr.Tab("Chat"):
            chat_tab = _chat_tab(titles)
            trace_marks_panel(controller, chat_tab.conv, gpu_decorator)  # issue 27: where the reasoning turns
        with gr.Tab("Audit"):
            gr.Markdown("Run a small safety benchmark on both models: ASR, safety, helpfulness, over-refusal, "
                        "unsafe reasoning and self-correction, with 95% intervals. Larger audits: `saferdemo audit`.")
            with gr.Row():
                dataset = gr.Dropdown(["miniature", "figstep-tiny", "figstep"], value="miniature", label="dataset")
                n_items = gr.Number(value=10, minimum=1, maximum=limits.audit_items, precision=0, label="items",
                                    elem_id="audit-items")
                at_once = gr.Number(value=4, minimum=1, maximum=8, precision=0, elem_id="audit-concurrency",
                                    label="items at once (batched together; the records are the same at any value)")
                audit_btn = gr.Button("Run audit", variant="primary")
                cancel_btn = gr.Button("Cancel audit", elem_id="cancel-audit")
            audit_status = gr.Markdown(elem_id="audit-status")  # progress, live: this run's own count and pace
            audit_table = gr.Markdown(elem_id="audit-table")
            with gr.Row():
                audit_bars, audit_quadrants = gr.Plot(label="per category"), gr.Plot(label="reasoning × answer")
            audit_file = gr.File(label="full report (HTML)")
            # Armed at once (so Cancel reaches an audit still queued), then run one at a time, streaming progress.
            armed = audit_btn.click(controller.arm_audit, None, audit_status, api_name=False, show_progress="hidden")
            armed.then(audit, [dataset, n_items, at_once], [audit_status, audit_table, audit_bars, audit_quadrants, audit_file],
                       api_name="audit", concurrency_limit=1, show_progress="minimal")
            # Ends the audit after its current response; the audit itself then shows the partial run, headed
            # "Cancelled" (cancelling its event instead would drop that last update).
            cancel_btn.click(controller.cancel_audit, None, None, api_name="cancel_audit")
        attack_workbench(controller, gpu_decorator)  # the Attack workbench tab (issue 27)
        chat_tab.gpu = gpu_decorator
        chat_tab.wire(controller)
        _compare_api(controller.compare if gpu_decorator is None else gpu_decorator(controller.compare),
                     chat_tab.settings)
    demo.saferdemo_media = controller.media_dir  # launch() lets Gradio serve the chat's copies of uploads
    demo.saferdemo_controller = controller  # its media folder and stop registry, for tests and benchmarks
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
    export_btn: gr.Button
    exported: gr.File
    gpu: object = None  # ZeroGPU's decorator, or None

    def wire(self, controller):
        conv, pending, settings = self.conv, self.pending, self.settings
        outputs = [self.chat_base, self.chat_aligned, self.plot, conv, pending]
        chats = [self.chat_base, self.chat_aligned]
        respond = controller.respond if self.gpu is None else self.gpu(controller.respond)
        # Each action is checked first by an event with no outputs: a mistake is a toast only, and no "Error"
        # badge covers the chats or the textbox. /submit and /regenerate still refuse bad input for programs.
        checked = self.box.submit(controller.check, [self.box, conv], None, api_name=False)
        # A turn is two events after its check: submit echoes the message and turns Stop on, respond streams
        # and turns it off with its last update (submit stays its own event so the echo is immediate, also on
        # ZeroGPU, where respond waits for a GPU).
        # `ready` then waits for a stopped turn to send its last update (or refuses a send while a turn still
        # answers): the old turn's respond event must be closed in the browser before this turn's is triggered
        # (the browser skips an event still open), and that close follows its last update, ahead of ready's and
        # submit's round trips. Waiting before the echo also keeps the old turn's last redraw from wiping it.
        ready = checked.success(controller.ready, [pending], None, api_name=False, show_progress="hidden",
                                concurrency_limit=None)  # it only waits: never queued behind other sessions' turns
        echoed = ready.success(controller.submit, [self.box, conv], [self.box, pending, conv, *chats, self.stop_btn],
                               api_name="submit")
        run = echoed.then(respond, [pending, conv, *settings], [*outputs, self.stop_btn], api_name="respond")
        temperature, seed = settings[0], settings[-1]
        # Regenerate and Clear first end the session's turn (`end_turns`: stopped, and waited for until it has
        # sent its last update), so nothing of it lands after what they draw, and its respond event is closed
        # in the browser before the next turn's starts (the browser skips an event that is still open).
        end_turns = dict(fn=controller.end_turns, inputs=None, outputs=None, api_name=False, show_progress="hidden",
                         concurrency_limit=None)  # it only waits: never queued behind other sessions' turns
        regen_checked = self.regen_btn.click(controller.check_regenerate, [conv, temperature, seed], None, api_name=False)
        regen_ended = regen_checked.success(**end_turns)
        regen = regen_ended.success(controller.regenerate, [conv], [pending, conv, *chats, self.stop_btn],
                                    api_name="regenerate")
        again = regen.then(respond, [pending, conv, *settings], [*outputs, self.stop_btn], api_name=False)
        # Clear also cancels every step of a turn still on its way (Gradio's browser code does so after
        # `end_turns`, which has let a running turn end: a turn still queued never starts). Stop ends
        # the turn through its stop event instead: the turn ends itself at the next token and its last update
        # shows where it stopped. On ZeroGPU the turn runs in another process that the event cannot reach,
        # so there Stop cancels it too (the chats keep what they last showed).
        turn_events = [checked, ready, echoed, run, regen_checked, regen_ended, regen, again]
        stop_off = lambda: stop_button(False)  # noqa: E731
        self.stop_btn.click(controller.stop, [pending], None, cancels=turn_events if self.gpu else None,
                            api_name="stop").then(stop_off, None, self.stop_btn, api_name=False, show_progress="hidden")
        self.export_btn.click(lambda conv: gr.File(controller.export(conv), visible=True), [conv], self.exported,
                              api_name="export")
        clear = [controller.clear, [conv], [conv, *chats, self.plot, pending]]
        self.clear_btn.click(**end_turns, cancels=turn_events).then(*clear, api_name="clear").then(
            stop_off, None, self.stop_btn, api_name=False, show_progress="hidden")
        for chat in chats:  # each chat's own trash icon clears the whole conversation too (one state for both)
            chat.clear(**end_turns, cancels=turn_events).then(*clear, api_name=False)


def about(titles: dict[str, str]) -> str:
    """What the running models can do, in a sentence: the bundled ones only know their card world."""
    if all(titles.get(role) == f"mini-{name}" for role, name in (("base", "base"), ("aligned", "safer"))):
        return ("*The bundled miniature models only read FigStep-style instruction cards from their synthetic "
                "world; they cannot chat about other images or questions. Load a real checkpoint for open chat "
                "(README: Deployments).*")
    return ""


def _compare_api(compare, settings: list) -> None:
    """`/compare` for programs (README: "The API"): hidden components, so the endpoint has typed inputs."""
    message = Message(visible=False, file_types=["image"], file_count="multiple")
    result = gr.JSON(visible=False)
    gr.Button(visible=False).click(compare, [message, *settings], result, api_name="compare")


def _chat_tab(titles) -> _ChatTab:
    conv = gr.State(Conversation())
    pending = gr.State(None)
    with gr.Row(equal_height=True):
        chat_base = gr.Chatbot(label=f"Base · {titles['base']}", height=500, elem_id="chat-base", elem_classes="sd-chat")
        chat_aligned = gr.Chatbot(label=f"SaFeR-aligned · {titles['aligned']}", height=500, elem_id="chat-aligned",
                                  elem_classes="sd-chat")
    box = Message(file_types=["image"], file_count="multiple", placeholder="Ask about an image…",
                               show_label=False, elem_id="prompt")
    examples = _examples()
    if examples:  # right under the textbox: on the first screen, above anything empty
        gr.Examples(examples=[e for e, _ in examples], inputs=[box], label="Examples (FigStep-style cards)",
                    example_labels=[label for _, label in examples], elem_id="examples")
    card_maker(box)  # type an instruction, get a FigStep-format card attached to the message (issue 23)
    with gr.Row():
        stop_btn = gr.Button("Stop", variant="stop", elem_id="stop", interactive=False)  # enabled while a turn runs
        regen_btn = gr.Button("Regenerate", elem_id="regenerate")
        clear_btn = gr.Button("Clear", elem_id="clear")
        export_btn = gr.Button("Export", elem_id="export")
    exported = gr.File(label="exported comparison (HTML, opens offline; `saferdemo replay FILE` re-runs it)",
                       visible=False, elem_id="exported")
    with gr.Accordion("Parameters", open=False):
        with gr.Row():
            temperature = gr.Slider(0.0, 1.5, value=0.0, step=0.05, label="temperature (0 = greedy)")
            top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="top-p")
            max_tokens = gr.Slider(16, 1024, value=192, step=16, label="max new tokens")
        with gr.Row():
            threshold = gr.Slider(0.0, 1.0, value=0.5, step=0.05,
                                  label="reflection threshold (GRM reward below it, or an unsafe verdict, triggers reflection)")
            # On for both by default, so the first screen tells the whole story: the base model's own draft (its
            # raw behaviour) stays visible, folded, with the GRM's verdict on it, above the reflection.
            loop_base = gr.Checkbox(value=True, label="safety loop on the base model (its own draft stays shown)")
            loop_aligned = gr.Checkbox(value=True, label="safety loop on the aligned model")
            seed = gr.Number(value=-1, minimum=-1, maximum=SEED_MAX, precision=0, elem_id="seed",
                             label="seed (-1: none; a seed makes sampling at temperature > 0 repeatable)")
    plot = gr.Plot(label="GRM scores", elem_id="scores")
    gr.Markdown(f"GRM: `{titles.get('grm', 'none')}`")
    settings = [temperature, top_p, max_tokens, threshold, loop_base, loop_aligned, seed]
    return _ChatTab(conv, pending, chat_base, chat_aligned, box, stop_btn, regen_btn, clear_btn, settings, plot,
                    export_btn, exported)


def launch(demo: gr.Blocks, titles: dict[str, str], host: str = "127.0.0.1", port: int | None = None,
           limits: Limits | None = None, block: bool = True, batched: bool = False) -> gr.Blocks:
    """Queue and launch with the limits, and add GET /health for load balancers and Spaces."""
    limits = limits or Limits()
    concurrency = limits.batched_concurrency if batched else limits.concurrency
    demo.queue(default_concurrency_limit=concurrency, max_size=limits.queue_size)
    _calm_queue_polling(demo)
    media = getattr(demo, "saferdemo_media", None)
    demo.launch(server_name=host, server_port=port, max_file_size=f"{limits.upload_mb}mb", prevent_thread_lock=True,
                quiet=not block, allowed_paths=[str(media)] if media else None, css=CSS)
    started = time.time()
    demo.app.add_api_route("/health", lambda: health(titles, started), methods=["GET"])
    if block:
        demo.block_thread()
    return demo


def _calm_queue_polling(demo: gr.Blocks, seconds: float = 0.01) -> None:
    """Gradio's queue looks for work every millisecond (`Queue.sleep_when_free`, 1 ms off Windows): a thousand
    wakeups a second of the event loop, each taking the GIL from the model workers. Measured here: an idle
    server used 10% of a core. Every 10 ms delays a job's start by at most 10 ms. Left alone where the
    installed Gradio has no such attribute."""
    queue = getattr(demo, "_queue", None)
    if isinstance(getattr(queue, "sleep_when_free", None), float) and queue.sleep_when_free < seconds:
        queue.sleep_when_free = seconds


def _examples() -> list[tuple[list[dict], str]]:
    """(example, caption) per card in examples.json: the caption is the card's own phrase."""
    index = EXAMPLES_DIR / "examples.json"
    if not index.is_file():
        return []
    return [([{"text": e["prompt"], "files": [str(EXAMPLES_DIR / e["image"])]}], e.get("phrase") or e["prompt"])
            for e in json.loads(index.read_text())]
