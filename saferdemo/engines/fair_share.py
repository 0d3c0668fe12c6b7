"""Clients take turns for a batch's rows (engines/batching.py): one client sending many requests at once cannot
hold the batch while another waits (issue 25: 20 streams of one client delayed another's first update from
0.19 s to 43 s). A client is whatever the caller names (`batching.CLIENT`; the app: the browser session)."""

from __future__ import annotations

from collections import Counter


def round_robin(candidates: list, running: list, room: int) -> list:
    """At most `room` of `candidates` (in arrival order), the client with the fewest rows (in `running` and
    taken so far) first, arrival order among equals."""
    counts, order = Counter(r.client for r in running), []
    for index, request in enumerate(candidates):  # a client's k-th candidate ranks after its rows so far
        order.append((counts[request.client], index, request))
        counts[request.client] += 1
    return [request for *_, request in sorted(order, key=lambda o: o[:2])[:room]]


def fairer(rows: list, request) -> bool:
    """Whether `request`'s client has at least two rows fewer than the heaviest client among `rows` (so handing
    one of that client's rows back for it makes the batch fairer)."""
    counts = Counter(r.client for r in rows)
    return bool(counts) and counts[request.client] + 1 < max(counts.values())


def hand_back(rows: list) -> object:
    """The row to hand back to the queue: the heaviest client's newest."""
    heavy = Counter(r.client for r in rows).most_common(1)[0][0]
    return next(r for r in reversed(rows) if r.client == heavy)
