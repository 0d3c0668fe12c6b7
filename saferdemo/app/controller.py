"""What the chat's buttons do, as plain methods on one object: `ui.build_app` only lays out and wires them.

Everything a user owns (the finished exchanges with their decoded images, what each chat shows, the chart's
judgements) lives in the per-session `Conversation`; the only shared objects are the models. Images are
decoded once, at submit, and kept in the conversation (bounded by the turn and image limits): later turns
never re-read an upload from Gradio's cache, which is cleaned hourly. What the chat shows of an upload is a
copy in the app's own media folder, so a cleaned cache cannot break the next redraw either.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import gradio as gr
from PIL import Image

from saferdemo.app.inputs import (SEED_MAX, check_turn, message_parts, open_image, refused, regenerate_hint,  # noqa: F401
                                  seed_of, turn_settings)
from saferdemo.app.media import MediaFolder
from saferdemo.app.render import cut_last_turn, user_messages
from saferdemo.app.session import Column, Comparison, in_column_order
from saferdemo.limits import tokens as count_tokens
from saferdemo.app.state import (COLUMN_NAMES, Conversation, Limits, Pending, StopRegistry, UpdatePacer, clean_text,
                                 return_memory, session_of)
from saferdemo.app.turn_stream import NO_CHANGE, stop_button, turn_updates  # noqa: F401 (stop_button: for ui)


EMPTY_MESSAGE = "Type a message to send (and attach a card image if you like), or pick an example below the box."
BUSY_MESSAGE = ("The models are still answering your last message. Wait for the answers, or press Stop, then "
                "send again: your message stays in the box.")
ENDING_MESSAGE = "The stopped turn is still ending. Send again in a moment: your message stays in the box."


class ChatController:
    def __init__(self, columns: dict[str, Column], judge, titles: dict[str, str], limits: Limits | None = None,
                 media_dir: str | Path | None = None):
        self.columns, self.judge, self.titles = columns, judge, titles
        self.limits = limits or Limits()
        self.comparison = Comparison([columns[name] for name in COLUMN_NAMES], judge)
        # A session's live turns (chat and /compare together) are capped: one client cannot take every slot.
        self.stops, self.audit_stops = StopRegistry(self.limits.live_turns_per_session), StopRegistry()
        self.pacer = UpdatePacer(self.limits.ui_updates_per_s, self.limits.server_updates_per_s)
        self.media = MediaFolder(media_dir, self.limits.media_mb)  # budgeted; deleted at exit if made here
        self.media_dir = self.media.root

    # ---------------------------------------------------------------- events

    def check(self, message: dict | None, conv: Conversation) -> None:
        """Raise gr.Error if the message would be refused (the UI runs this first, with no outputs, so a
        mistake is a toast and leaves the chats and the textbox as they were). An empty message is no mistake:
        it gets a friendly note (an Info toast) and an invisible error that only ends the event chain."""
        text, paths = message_parts(message)
        if not text:
            gr.Info(EMPTY_MESSAGE if not paths else "Add a few words to go with the image, e.g. "
                    "\"Complete the list on this card.\"", title="Nothing to send yet")
            raise gr.Error("empty message", visible=False, print_exception=False)
        self._check(text, paths, conv)
        for path in paths:
            open_image(path, self.limits)
        return_memory()  # the decodes were only a check

    def ready(self, pending: Pending | None, request: gr.Request = None) -> None:
        """A send's second step (after `check`, before `submit` echoes it): the session's last turn must have ended.
        The browser runs the respond event once at a time and skips it while the last turn's is still open, and
        that turn's updates redraw the chats and empty `pending`: a message sent meanwhile was echoed, wiped and
        never answered. A stopped turn is waited for (it sends its last update within `Limits.stop_wait_s`); a
        turn still answering, or still queued (`pending` is only emptied by its first update), is not: a send is
        refused with a note and stays in the box (no output here: the box is emptied by `submit` only)."""
        session = session_of(request)
        if self.stops.running(session) or (pending is not None and not pending.stopped):
            raise gr.Error(BUSY_MESSAGE, title="Not sent yet", print_exception=False)
        if not self.stops.wait_ended(session, self.limits.stop_wait_s):
            raise gr.Error(ENDING_MESSAGE, title="Not sent yet", print_exception=False)

    def check_regenerate(self, conv: Conversation, temperature: float = 0.0, seed=None) -> None:
        if not conv.exchanges:
            raise gr.Error("Nothing to regenerate yet.")
        hint = regenerate_hint(temperature, seed)
        if hint:
            gr.Info(hint, title="Same settings, same answers")

    def submit(self, message: dict | None, conv: Conversation):
        """Check the message, decode its images once, echo it in both chats; `respond` answers it."""
        text, paths = message_parts(message)
        self._check(text, paths, conv)
        # Decoded once, at the size kept; a bad file is refused now, before it enters the history. The chats
        # show a small copy in the budgeted media folder (not the upload itself).
        images = [open_image(path, self.limits) for path in paths]
        pending = Pending(text, images, [self.media.keep(image) for image in images], conv.epoch)
        if paths:
            return_memory()  # the full-size decodes are gone: hand their pages back
        shown = user_messages(text, pending.shown)
        for chat in conv.chats.values():
            chat += shown
        return gr.MultimodalTextbox(value=None), pending, conv, *conv.chats.values(), stop_button(True)

    def respond(self, pending: Pending | None, conv: Conversation, temperature: float, top_p: float,
                max_new_tokens: int, threshold: float, loop_base: bool, loop_aligned: bool, seed: float | None = -1,
                request: gr.Request = None):
        """Stream both columns' turns into the chats; the turn enters the history however it ends."""
        if not pending or pending.epoch != conv.epoch:  # nothing to answer, or Clear came in between
            yield NO_CHANGE  # not nothing: for a generator that yields nothing, Gradio blanks every output
            return  # (a superseded turn leaves the Stop button to the action that superseded it)
        try:
            params, loops = turn_settings(temperature, top_p, max_new_tokens, threshold, loop_base, loop_aligned, seed,
                                          self.limits)
            with refused():
                stop = self.stops.new(session_of(request))  # the session's cap on live turns
        except gr.Error:  # bad settings, too many turns: the echoed message is taken back, nothing half-made stays
            conv.chats = {name: cut_last_turn(chat) for name, chat in conv.chats.items()}
            yield conv.chats["base"], conv.chats["aligned"], gr.skip(), conv, None, stop_button(False)
            raise
        try:
            yield from turn_updates(self, pending, conv, params, loops, stop, request)
        finally:  # only once its last update has gone out (Gradio resumes a generator after sending what it
            # yielded): `end_turns` waits for this, so nothing of the turn reaches the browser after a Clear
            self.stops.release(session_of(request), stop)

    def compare(self, message: dict | None, temperature: float, top_p: float, max_new_tokens: int, threshold: float,
                loop_base: bool, loop_aligned: bool, seed: float | None = -1, request: gr.Request = None):
        """The API for programs (`/compare`): one message, both columns' turns streamed as JSON, no history.

        Every update is {"base": Turn.as_dict(), "aligned": ...} (the app's column order) with the turns so far;
        the last is final, and each column's "verdict" then holds its final verdict."""
        text, paths = message_parts(message)
        self._check(text, paths, Conversation())
        params, loops = turn_settings(temperature, top_p, max_new_tokens, threshold, loop_base, loop_aligned, seed,
                                      self.limits)
        images = [open_image(path, self.limits) for path in paths]
        with refused():
            stop = self.stops.new(session_of(request))  # the session's cap on live turns
        turns, last = {}, 0.0
        events = self.comparison.run([], text, images, params, stop, loops, session_of(request))
        try:
            with self.pacer.turn() as pace:
                for name, turn in events:
                    turns[name] = turn
                    if turn.phase == "done" or time.perf_counter() - last >= pace.interval():
                        last = time.perf_counter()
                        yield in_column_order(turns)
        finally:
            events.close()
            self.stops.release(session_of(request), stop)
        if stop.is_set():
            turns = {name: turn.ended_by_stop() for name, turn in turns.items()}
        yield in_column_order(turns)

    def regenerate(self, conv: Conversation, request: gr.Request = None):
        self.stop(request=request)  # a turn still streaming ends first (the UI waits for it: `end_turns`)
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
        path = self.media.export_path(bundle)
        if not path.exists():  # the same conversation exported again: the same page
            write_page(bundle, path)
        self.media.trim(keep=(path,))  # older exports go first once the media folder is over its budget
        return str(path)

    def stop(self, pending: Pending | None = None, request: gr.Request = None):
        """End the session's running turn at its next token; its last update says where it stopped. A turn
        still waiting in the queue (`pending`) ends as soon as it starts."""
        if pending is not None:
            pending.stopped = True
        self.stops.stop(session_of(request), keep=True)  # kept until released: `end_turns` waits for them

    def end_turns(self, request: gr.Request = None) -> None:
        """Clear's and Regenerate's first step in the UI: stop the session's turns and wait until each has sent
        its last update. Without it an update of the old turn could land after the emptied chats and redraw them,
        and the browser, which runs the respond event once at a time, skipped the next turn's while the old one
        was still open (a lost turn). Past `Limits.stop_wait_s` the old turn is superseded and draws nothing."""
        self.stop(request=request)
        self.stops.wait_ended(session_of(request), self.limits.stop_wait_s)

    def clear(self, conv: Conversation | None = None, request: gr.Request = None):
        """Empty the conversation in place (a turn still streaming holds it too, and sees the new epoch)."""
        self.stop(request=request)  # a turn still streaming ends first (the UI also cancels its event)
        conv = conv or Conversation()
        conv.exchanges, conv.records, conv.epoch = [], [], conv.epoch + 1
        conv.chats = {name: [] for name in COLUMN_NAMES}
        return_memory()
        return conv, [], [], None, None

    def arm_audit(self, request: gr.Request = None) -> str:
        """The Run button's first step, at once (before the audit waits its turn in the queue): a fresh stop
        event for this session's audit, so Cancel reaches it even while it is queued."""
        self.audit_stops.new(session_of(request))
        return "Waiting for the audit to start…"

    def audit(self, dataset: str, limit: float, concurrency: float = 1, request: gr.Request = None):
        """A small audit for the Audit tab, streamed: a progress line after every response (this run's own pace),
        then the metrics table, the charts and the report; `concurrency` items at once. `cancel_audit` ends it
        after the responses in flight, and the partial run's summary is shown, headed "Cancelled"."""
        if self.judge is None:
            raise gr.Error("The audit needs a judge model (SAFERDEMO_GRM).")
        from saferdemo.audit.datasets import load_dataset
        from saferdemo.audit.report import category_figure, metrics_markdown, quadrant_figure
        from saferdemo.audit.progress import concurrency_of
        from saferdemo.audit.runner import AuditConfig, Progress, run_audit

        try:
            limit = max(1, min(int(limit), self.limits.audit_items))
        except (TypeError, ValueError):
            raise gr.Error(f"The number of items must be a whole number from 1 to {self.limits.audit_items}.") from None
        try:
            concurrency = concurrency_of(concurrency)
            items = load_dataset(dataset, limit=limit)
        except (ValueError, FileNotFoundError) as error:
            raise gr.Error(str(error)) from None
        out = self._audit_folder()
        engines = {name: self.columns[name].engine for name in COLUMN_NAMES}
        stop = self.audit_stops.current(session_of(request))
        progress = Progress(len(items) * len(engines))
        yield progress.line(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        runs = progress.run(lambda report: run_audit(engines, self.judge, items, out,
                                                     AuditConfig(dataset, limit, concurrency=concurrency),
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
        table = progress.with_cancel_note(metrics_markdown(summary))
        yield progress.line(), table, category_figure(summary), quadrant_figure(summary), str(out / "report.html")

    def cancel_audit(self, request: gr.Request = None) -> None:
        self.audit_stops.stop(session_of(request), keep=True)

    # ---------------------------------------------------------------- helpers

    def _check(self, text: str, paths: list[str], conv: Conversation) -> None:
        check_turn(text, paths, sum(len(e.images) for e in conv.exchanges), len(conv.exchanges), self.limits,
                   self._prompt_tokens)

    def _prompt_tokens(self, text: str) -> int:
        """The message's length in tokens for the column that counts it longest (0 for remote columns)."""
        return count_tokens(self.columns, text)

    def _audit_folder(self, keep: int = 8) -> Path:
        return self.media.audit_folder(keep)
