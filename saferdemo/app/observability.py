"""Structured logs, one JSON line per column per turn, and the health check.

A turn log says which model answered, how fast, how many tokens, what the GRM decided and whether the
loop reflected: enough to watch a deployment. It never holds prompt text, image bytes, file paths or API
keys: only sizes, and a short hash of the browser session so one user's turns can be followed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time

logger = logging.getLogger("saferdemo.turn")


def session_tag(session: str) -> str:
    return hashlib.sha256(session.encode()).hexdigest()[:10]


def turn_record(session: str, column: str, model: str, turn, prompt_chars: int, n_images: int) -> dict:
    def verdict(result):
        if result is None:
            return None
        return "unreadable" if result.judgement is None else result.judgement.verdict

    final = turn.final_judgement
    return {
        "event": "turn", "time": round(time.time(), 3), "session": session_tag(session), "column": column,
        "model": model, "prompt_chars": prompt_chars, "images": n_images,
        "draft": turn.draft_stats.as_dict() if turn.draft_stats else None,
        "revision": turn.revision_stats.as_dict() if turn.revision_stats else None,
        "draft_verdict": verdict(turn.draft_judge), "final_verdict": verdict(final),
        "final_reward": None if final is None or final.reward is None else round(final.reward, 4),
        "reflected": turn.reflected, "stopped": turn.stopped, "error": turn.error,
    }


def log_turn(record: dict) -> None:
    logger.info(json.dumps(record))


def health(titles: dict[str, str], started: float) -> dict:
    return {"status": "ok", "models": titles, "uptime_s": round(time.time() - started, 1)}
