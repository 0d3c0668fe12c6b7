"""What the chat's buttons do, as plain methods on one object: `ui.build_app` only lays out and wires them.

Everything a user owns (the finished exchanges with their decoded images, what each chat shows, the chart's
judgements) lives in the per-session `Conversation`; the only shared objects are the models. Images are
decoded once, at submit, and kept in the conversation (bounded by the turn and image limits): later turns
never re-read an upload from Gradio's cache, which is cleaned hourly. What the chat shows of an upload is a
copy in the app's own media folder, so a cleaned cache cannot break the next redraw either.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import gradio as gr
from PIL import Image

from saferdemo.app.charts import scores_figure
from saferdemo.app.observability import log_turn, turn_record
from saferdemo.app.pending import PendingHold
from saferdemo.app.render import cut_last_turn, judgement_records, turn_messages, user_messages
from saferdemo.app.session import Column, Comparison, Exchange, in_column_order
from saferdemo.app.state import (COLUMN_NAMES, Conversation, Limits, Pending, StopRegistry, UpdatePacer, clean_text,
                                 session_of)
from saferdemo.engines.base import GenerationParams
from saferdemo.images import InputError, fit, load_image
from saferdemo.safety_loop import LoopConfig, Turn


def stop_button(running: bool) -> gr.Button:
    """The Stop button's state, sent with a turn's first and last updates (no events of its own)."""
    return gr.Button(interactive=running)


SEED_MAX = 2**31 - 1  # the seed control's range (torch.manual_seed takes 64 bits; a UI needs fewer)


def seed_of(seed) -> int | None:
    """The seed control's value: None (empty or -1) means unseeded, else an integer in [0, SEED_MAX]."""
    if seed is None or seed == "" or (isinstance(seed, (int, float)) and int(seed) == -1):
        return None
    try:
        value = int(seed)
    except (TypeError, ValueError):
        raise gr.Error(_bad_seed(seed)) from None
    if value != seed or not 0 <= value <= SEED_MAX:
        raise gr.Error(_bad_seed(seed))
    return value


def _bad_seed(seed) -> str:
    return f"The seed must be a whole number from 0 to {SEED_MAX:,}, or -1 for none; got {seed!r}."


def turn_settings(temperature, top_p, max_new_tokens, threshold, loop_base, loop_aligned, seed=None):
    """The UI's generation and safety-loop controls as (GenerationParams, {column: LoopConfig}). A seed only
    matters when sampling (temperature > 0): greedy turns stay unseeded, so they may share a running batch."""
    seed = seed_of(seed)
    params = GenerationParams(max_new_tokens=int(max_new_tokens), temperature=float(temperature), top_p=float(top_p),
                              seed=seed if float(temperature) > 0 else None)
    loops = {"base": LoopConfig(enabled=bool(loop_base), threshold=float(threshold)),
             "aligned": LoopConfig(enabled=bool(loop_aligned), threshold=float(threshold))}
    return params, loops


def regenerate_hint(temperature, seed=None) -> str | None:
    """Why Regenerate would give the same answers again, or None when it will sample anew."""
    if float(temperature or 0) == 0:
        return ("Temperature is 0 (greedy): Regenerate gives the same answers again. Raise the temperature in "
                "Parameters to sample different ones.")
    if seed_of(seed) is not None:
        return (f"The seed is fixed at {seed_of(seed)}: Regenerate repeats the same sample. Set the seed to -1 "
                "(or change it) for a different one.")
    return None


EMPTY_MESSAGE = "Type a message to send (and attach a card image if you like), or pick an example below the box."


class ChatController:
    def __init__(self, columns: dict[str, Column], judge, titles: dict[str, str], limits: Limits | None = None,
                 media_dir: str | Path | None = None):
        self.columns, self.judge, self.titles = columns, judge, titles
        self.limits = limits or Limits()
        self.comparison = Comparison([columns[name] for name in COLUMN_NAMES], judge)
        self.stops, self.audit_stops = StopRegistry(), StopRegistry()
        self.pacer = UpdatePacer(self.limits.ui_updates_per_s, self.limits.server_updates_per_s)
        self.media_dir = Path(media_dir or tempfile.mkdtemp(prefix="saferdemo-media-"))
        self.media_dir.mkdir(parents=True, exist_ok=True)

    # ---------------------------------------------------------------- events

    def check(self, message: dict | None, conv: Conversation) -> None:
        """Raise gr.Error if the message would be refused (the UI runs this first, with no outputs, so a
        mistake is a toast and leaves the chats and the textbox as they were). An empty message is no mistake:
        it gets a friendly note (an Info toast) and an invisible error that only ends the event chain."""
        text = clean_text((message or {}).get("text", "")).strip()
        paths = list((message or {}).get("files", []))
        if not text:
            gr.Info(EMPTY_MESSAGE if not paths else "Add a few words to go with the image, e.g. "
                    "\"Complete the list on this card.\"", title="Nothing to send yet")
            raise gr.Error("empty message", visible=False, print_exception=False)
        self._check(text, paths, conv)
        for path in paths:
            self._open(path)

    def check_regenerate(self, conv: Conversation, temperature: float = 0.0, seed=None) -> None:
        if not conv.exchanges:
            raise gr.Error("Nothing to regenerate yet.")
        hint = regenerate_hint(temperature, seed)
        if hint:
            gr.Info(hint, title="Same settings, same answers")

    def submit(self, message: dict | None, conv: Conversation):
        """Check the message, decode its images once, echo it in both chats; `respond` answers it."""
        text = clean_text((message or {}).get("text", "")).strip()
        paths = list((message or {}).get("files", []))
        self._check(text, paths, conv)
        # Decoded once, at the size kept; a bad file is refused now, before it enters the history.
        images = [fit(self._open(path), self.limits.kept_pixels) for path in paths]
        pending = Pending(text, images, [self._keep(path) for path in paths], conv.epoch)
        shown = user_messages(text, pending.shown)
        for chat in conv.chats.values():
            chat += shown
        return gr.MultimodalTextbox(value=None), pending, conv, *conv.chats.values(), stop_button(True)

    def respond(self, pending: Pending | None, conv: Conversation, temperature: float, top_p: float,
                max_new_tokens: int, threshold: float, loop_base: bool, loop_aligned: bool, seed: float | None = -1,
                request: gr.Request = None):
        """Stream both columns' turns into the chats; the turn enters the history however it ends."""
        if not pending or pending.epoch != conv.epoch:  # nothing to answer, or Clear came in between
            return  # (a superseded turn leaves the Stop button to the action that superseded it)
        try:
            params, loops = turn_settings(temperature, top_p, max_new_tokens, threshold, loop_base, loop_aligned, seed)
        except gr.Error:  # a bad seed: the echoed message is taken back, so nothing half-made stays
            conv.chats = {name: cut_last_turn(chat) for name, chat in conv.chats.items()}
            yield conv.chats["base"], conv.chats["aligned"], gr.skip(), conv, None, stop_button(False)
            raise
        stop = self.stops.new(session_of(request))
        if pending.stopped:
            stop.set()
        chats, turns = conv.chats, {}
        prefix = {name: len(chat) for name, chat in chats.items()}
        history = list(conv.exchanges)
        # The exchange enters the history now and its answers fill in as they stream, so every update sent
        # carries a consistent history: on ZeroGPU this runs in a worker process, and after a Stop only what
        # was yielded reaches the session (Regenerate then redoes the stopped turn).
        exchange = Exchange(pending.text, pending.images, {}, pending.shown,
                            settings={"params": asdict(params), "loops": {n: asdict(c) for n, c in loops.items()}})
        conv.exchanges.append(exchange)
        epoch, last_draw = conv.epoch, 0.0
        hold = PendingHold(self.limits.min_pending_s)

        def redraw():  # rebuilt from the latest snapshots only when drawn, not at every streamed chunk
            for name, turn in turns.items():
                chats[name] = chats[name][: prefix[name]] + turn_messages(turn)
                exchange.answers[name] = turn.final_answer
            hold.drawn(turns)

        events = self.comparison.run(history, pending.text, pending.images, params, stop, loops)
        try:
            with self.pacer.turn() as pace:  # this turn's share of the server's update budget
                undrawn = False  # a snapshot was skipped by the throttle since the last redraw
                for name, turn in events:
                    if conv.epoch != epoch:
                        break  # Clear or Regenerate took over (they also stop the generation)
                    new_stage = hold.changed(name, turn)
                    if undrawn and new_stage:  # a stage ends: show all of it before it folds
                        redraw()
                        yield chats["base"], chats["aligned"], gr.skip(), conv, None, gr.skip()
                    turns[name] = turn
                    streaming = turn.phase in ("drafting", "reflecting")
                    due = time.perf_counter() - last_draw >= pace.interval()
                    undrawn = streaming and not due and not new_stage
                    if not undrawn:  # a new stage is always drawn
                        hold.wait(turns)
                        last_draw = time.perf_counter()
                        redraw()
                        yield chats["base"], chats["aligned"], gr.skip(), conv, None, gr.skip()
        finally:  # also when Stop cancels this generator: the turn is in the history as far as it got
            events.close()  # left early (Stop, a closed tab): this sets the stop event and ends both columns
            if stop.is_set():  # the last snapshots came before Stop: end them in the phase they reached
                turns.update({name: turn.ended_by_stop() for name, turn in turns.items()})
            if conv.epoch == epoch:
                redraw()
                self._record(conv, len(conv.exchanges), pending, turns, request)
        if conv.epoch == epoch:
            yield chats["base"], chats["aligned"], scores_figure(conv.records) if conv.records else None, conv, None, stop_button(False)

    def compare(self, message: dict | None, temperature: float, top_p: float, max_new_tokens: int, threshold: float,
                loop_base: bool, loop_aligned: bool, seed: float | None = -1, request: gr.Request = None):
        """The API for programs (`/compare`): one message, both columns' turns streamed as JSON, no history.

        Every update is {"base": Turn.as_dict(), "aligned": ...} (the app's column order) with the turns so far;
        the last is final, and each column's "verdict" then holds its final verdict."""
        text = clean_text((message or {}).get("text", "")).strip()
        paths = list((message or {}).get("files", []))
        self._check(text, paths, Conversation())
        params, loops = turn_settings(temperature, top_p, max_new_tokens, threshold, loop_base, loop_aligned, seed)
        images = [fit(self._open(path), self.limits.kept_pixels) for path in paths]
        stop = self.stops.new(session_of(request))
        turns, last = {}, 0.0
        events = self.comparison.run([], text, images, params, stop, loops)
        try:
            with self.pacer.turn() as pace:
                for name, turn in events:
                    turns[name] = turn
                    if turn.phase == "done" or time.perf_counter() - last >= pace.interval():
                        last = time.perf_counter()
                        yield in_column_order(turns)
        finally:
            events.close()
        if stop.is_set():
            turns = {name: turn.ended_by_stop() for name, turn in turns.items()}
        yield in_column_order(turns)

    def regenerate(self, conv: Conversation, request: gr.Request = None):
        self.stop(request)  # a turn still streaming ends first (the UI also cancels its event)
        if not conv.exchanges:
            raise gr.Error("Nothing to regenerate yet.")
        conv.epoch += 1
        last = conv.exchanges.pop()  # the same text and images go again
        conv.records = [r for r in conv.records if r["turn"] <= len(conv.exchanges)]
        shown = user_messages(last.text, last.shown)
        conv.chats = {name: cut_last_turn(chat) + shown for name, chat in conv.chats.items()}
        return Pending(last.text, last.images, last.shown, conv.epoch), conv, *conv.chats.values(), stop_button(True)

    def export(self, conv: Conversation) -> str:
        """The conversation as one self-contained HTML page with its replay bundle inside (export.py)."""
        from saferdemo.app.export import make_bundle, write_page

        finished = [e for e in conv.exchanges if e.results]
        if not finished:
            raise gr.Error("Nothing to export yet: send a message first.")
        bundle = make_bundle(finished, self.columns, self.judge, self.titles)
        folder = self.media_dir / "exports"
        folder.mkdir(exist_ok=True)
        path = folder / f"comparison-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}.html"
        write_page(bundle, path)
        return str(path)

    def stop(self, pending: Pending | None = None, request: gr.Request = None):
        """End the session's running turn at its next token; its last update says where it stopped. A turn
        still waiting in the queue (`pending`) ends as soon as it starts."""
        if pending is not None:
            pending.stopped = True
        self.stops.stop(session_of(request))

    def clear(self, conv: Conversation | None = None, request: gr.Request = None):
        """Empty the conversation in place (a turn still streaming holds it too, and sees the new epoch)."""
        self.stop(request)  # a turn still streaming ends first (the UI also cancels its event)
        conv = conv or Conversation()
        conv.exchanges, conv.records, conv.epoch = [], [], conv.epoch + 1
        conv.chats = {name: [] for name in COLUMN_NAMES}
        return conv, [], [], None, None

    def arm_audit(self, request: gr.Request = None) -> str:
        """The Run button's first step, at once (before the audit waits its turn in the queue): a fresh stop
        event for this session's audit, so Cancel reaches it even while it is queued."""
        self.audit_stops.new(session_of(request))
        return "Waiting for the audit to start…"

    def audit(self, dataset: str, limit: float, request: gr.Request = None):
        """A small audit for the Audit tab, streamed: a progress line after every response (this run's own pace),
        then the metrics table, the charts and the report. `cancel_audit` ends it after the response in
        progress, and the partial run's summary is shown, headed "Cancelled"."""
        if self.judge is None:
            raise gr.Error("The audit needs a judge model (SAFERDEMO_GRM).")
        from saferdemo.audit.datasets import load_dataset
        from saferdemo.audit.report import category_figure, metrics_markdown, quadrant_figure
        from saferdemo.audit.runner import AuditConfig, Progress, run_audit

        try:
            limit = max(1, min(int(limit), self.limits.audit_items))
        except (TypeError, ValueError):
            raise gr.Error(f"The number of items must be a whole number from 1 to {self.limits.audit_items}.") from None
        try:
            items = load_dataset(dataset, limit=limit)
        except (ValueError, FileNotFoundError) as error:
            raise gr.Error(str(error)) from None
        out = self._audit_folder()
        engines = {name: self.columns[name].engine for name in COLUMN_NAMES}
        stop = self.audit_stops.current(session_of(request))
        progress = Progress(len(items) * len(engines))
        yield progress.line(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        runs = progress.run(lambda report: run_audit(engines, self.judge, items, out, AuditConfig(dataset, limit),
                                                     progress=report, stop=stop))
        try:
            for line in runs:
                yield line, gr.skip(), gr.skip(), gr.skip(), gr.skip()
        finally:
            if progress.summary is None:  # the page left (a closed tab): end the audit after this response
                stop.set()
            self.audit_stops.release(session_of(request), stop)
        if progress.error is not None:
            raise gr.Error(f"The audit failed: {progress.error}")
        summary = progress.summary
        table = metrics_markdown(summary)
        if summary["stopped"]:
            table = (f"**Cancelled after {progress.done} of {progress.total} responses: the numbers cover the "
                     "responses made before.**\n\n" + table)
        yield progress.line(), table, category_figure(summary), quadrant_figure(summary), str(out / "report.html")

    def cancel_audit(self, request: gr.Request = None) -> None:
        self.audit_stops.stop(session_of(request), keep=True)

    # ---------------------------------------------------------------- helpers

    def _check(self, text: str, paths: list[str], conv: Conversation) -> None:
        limits = self.limits
        if not text:
            raise gr.Error("Type a message (and attach a card image if you like).")
        if len(text) > limits.prompt_chars:
            raise gr.Error(f"The message is {len(text):,} characters; the limit is {limits.prompt_chars:,}.")
        tokens = self._prompt_tokens(text)
        if tokens > limits.prompt_tokens:
            raise gr.Error(f"The message is {tokens:,} tokens long; the limit is {limits.prompt_tokens:,}. "
                           "Shorten it and try again.")
        if len(paths) > limits.images_per_turn:
            raise gr.Error(f"{len(paths)} images attached; the limit is {limits.images_per_turn} per message.")
        held = sum(len(exchange.images) for exchange in conv.exchanges)
        if held + len(paths) > limits.images_per_conversation:
            raise gr.Error(f"This conversation already holds {held} images; the limit is "
                           f"{limits.images_per_conversation}. Press Clear to start a new one.")
        if len(conv.exchanges) >= limits.turns:
            raise gr.Error(f"This conversation has reached {limits.turns} turns. Press Clear to start a new one.")

    def _prompt_tokens(self, text: str) -> int:
        """The message's length in tokens for the column that counts it longest (0 for remote columns)."""
        counts = [len(tokenizer(text, add_special_tokens=False)["input_ids"])
                  for tokenizer in self._tokenizers]
        return max(counts, default=0)

    @property
    def _tokenizers(self) -> list:
        processors = [getattr(column.engine, "processor", None) for column in self.columns.values()]
        return [getattr(p, "tokenizer", p) for p in processors if p is not None]

    @staticmethod
    def _open(path: str) -> Image.Image:
        try:
            return load_image(path)
        except InputError as error:
            raise gr.Error(str(error)) from error

    def _audit_folder(self, keep: int = 8) -> Path:
        """A new folder for an audit's files under the app's media folder; only the newest `keep` are kept
        (the Audit tab serves the report from there, so the files must outlive the call)."""
        root = self.media_dir / "audits"
        root.mkdir(exist_ok=True)
        folders = sorted(root.iterdir(), key=lambda p: p.stat().st_mtime)
        for old in folders[: max(0, len(folders) - keep + 1)]:
            shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(prefix="audit-", dir=root))

    def _keep(self, path: str) -> str:
        """A copy of an upload in the app's media folder, for the chat to show after Gradio's cache is cleaned."""
        kept = self.media_dir / f"{uuid.uuid4().hex}{Path(path).suffix.lower()}"
        shutil.copyfile(path, kept)
        return str(kept)

    def _record(self, conv: Conversation, index: int, pending: Pending, turns: dict[str, Turn], request) -> None:
        conv.exchanges[-1].results = in_column_order(turns)
        for name, turn in turns.items():
            conv.records += judgement_records(turn, name, index)
            log_turn(turn_record(session_of(request), name, self.titles.get(name, name), turn, len(pending.text),
                                 len(pending.images)))

