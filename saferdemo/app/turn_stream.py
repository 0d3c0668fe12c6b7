"""One chat turn's updates, as `ChatController.respond` streams them into the two chats.

The turn enters the history at once and its answers fill in as they stream; both columns are redrawn at most at
the turn's share of the server's update budget (a new stage always), each pending stage stays on screen at least
`Limits.min_pending_s`, and the last update ends the turn however it ended (done, Stop, a closed tab).
"""

from __future__ import annotations

import time
from dataclasses import asdict

import gradio as gr

from saferdemo.app.charts import scores_figure
from saferdemo.app.observability import log_turn, turn_record
from saferdemo.app.pending import PendingHold
from saferdemo.app.render import judgement_records, turn_messages
from saferdemo.app.session import Exchange, in_column_order
from saferdemo.app.state import Conversation, Pending, session_of
from saferdemo.safety_loop import Turn

NO_CHANGE = (gr.skip(),) * 6  # a `respond` update that leaves the chats, chart, states and Stop as they are


def stop_button(running: bool) -> gr.Button:
    """The Stop button's state, sent with a turn's first and last updates (no events of its own)."""
    return gr.Button(interactive=running)


def turn_updates(controller, pending: Pending, conv: Conversation, params, loops, stop, request):
    """`respond`'s updates, from the first snapshot to the last; `controller` holds the models (`comparison`),
    the update budget (`pacer`), the limits and the titles."""
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
    hold = PendingHold(controller.limits.min_pending_s)

    def redraw():  # rebuilt from the latest snapshots only when drawn, not at every streamed chunk
        for name, turn in turns.items():
            chats[name] = chats[name][: prefix[name]] + turn_messages(turn)
            exchange.answers[name] = turn.final_answer
        hold.drawn(turns)

    events = controller.comparison.run(history, pending.text, pending.images, params, stop, loops, session_of(request))
    try:
        with controller.pacer.turn() as pace:  # this turn's share of the server's update budget
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
            record_turn(conv, pending, turns, session_of(request), controller.titles)
    # Gradio's last message repeats a generator's last update: a superseded turn's must redraw nothing.
    yield (chats["base"], chats["aligned"], scores_figure(conv.records) if conv.records else None, conv, None,
           stop_button(False)) if conv.epoch == epoch else NO_CHANGE


def record_turn(conv: Conversation, pending: Pending, turns: dict[str, Turn], session: str, titles: dict) -> None:
    """The ended turn's results into its exchange, its judgements into the chart, one log line per column."""
    conv.exchanges[-1].results = in_column_order(turns)
    for name, turn in turns.items():
        conv.records += judgement_records(turn, name, len(conv.exchanges))
        log_turn(turn_record(session, name, titles.get(name, name), turn, len(pending.text), len(pending.images)))
