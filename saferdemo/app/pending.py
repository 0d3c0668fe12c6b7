"""How long a pending stage stays on screen: the bundled models draft and judge in a blink.

Thinking open, the GRM judging, a reflection streaming: each shows as pending (a spinner, the thought open) at
least `Limits.min_pending_s`, or the story of a turn would flash past on fast models.
"""

from __future__ import annotations

import time

from saferdemo.safety_loop import Turn


class PendingHold:
    """Keeps each column's pending stage (thinking open, judging, reflecting) on screen at least `seconds`.

    The wait happens before drawing the stage that replaces it; the models keep generating meanwhile (their
    events queue up), so only the display lags, by at most `seconds` per stage."""

    def __init__(self, seconds: float):
        self.seconds, self._shown = seconds, {}  # column -> (stage, when it was first drawn)

    @staticmethod
    def stage(turn: Turn) -> tuple[str, str | None]:
        """(phase, what is pending in it): "think" or "reflection" still open, "judge" not yet in, or None."""
        if turn.phase in ("judging", "rejudging"):
            judged = turn.draft_judge if turn.phase == "judging" else turn.final_judge
            return turn.phase, None if judged else "judge"
        if turn.phase == "reflecting" and turn.revision.reflection_state != "closed":
            return turn.phase, "reflection"
        segment = turn.revision if turn.phase == "reflecting" else turn.draft
        return turn.phase, "think" if turn.phase != "done" and segment.think_state == "open" else None

    def wait(self, turns: dict[str, Turn]) -> None:
        """Before a redraw (which redraws every column): until each pending stage it would replace is due."""
        due = 0.0
        for name, turn in turns.items():
            if name in self._shown and self.changed(name, turn):
                (_, pending), since = self._shown[name]
                if pending:
                    due = max(due, since + self.seconds)
        time.sleep(max(0.0, due - time.perf_counter()))

    def changed(self, name: str, turn: Turn) -> bool:
        return self._shown.get(name, (None,))[0] != self.stage(turn)

    def drawn(self, turns: dict[str, Turn]) -> None:
        now = time.perf_counter()
        for name, turn in turns.items():
            stage = self.stage(turn)
            if self._shown.get(name, (None,))[0] != stage:
                self._shown[name] = (stage, now)
