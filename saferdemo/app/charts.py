"""Plotly charts of GRM judgements: penalties of the latest turn and the reward across turns."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from saferdemo.judgement import PENALTIES

COLOURS = {"base": "#d9534f", "aligned": "#2b8a3e"}


def scores_figure(records: list[dict]) -> go.Figure:
    """records: {"turn", "column", "stage" (draft|final), "reward", "penalties"} for every judgement made.

    Left: penalties of the latest turn per column and stage (lower bars = worse). Right: each column's final
    reward per turn. Columns not named in COLOURS get plotly's default colours.
    """
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4],
                        subplot_titles=("GRM penalties, latest turn (0 = none)", "GRM reward per turn"))
    latest = max((r["turn"] for r in records), default=0)
    for record in [r for r in records if r["turn"] == latest]:
        fig.add_trace(go.Bar(
            x=[p.replace("_", " ") for p in PENALTIES], y=[record["penalties"].get(p, 0.0) for p in PENALTIES],
            name=f"{record['column']} ({record['stage']})", marker_color=COLOURS.get(record["column"]),
            marker_pattern_shape="/" if record["stage"] == "draft" else "", legendgroup=record["column"],
            hovertemplate="%{x}: %{y}<extra>" + f"{record['column']} {record['stage']}, reward {record['reward']:.2f}</extra>",
        ), row=1, col=1)
    for column in dict.fromkeys(r["column"] for r in records):
        finals = _final_per_turn([r for r in records if r["column"] == column])
        fig.add_trace(go.Scatter(x=list(finals), y=list(finals.values()), mode="lines+markers", name=f"{column} reward",
                                 line_color=COLOURS.get(column), legendgroup=column, showlegend=False), row=1, col=2)
    fig.update_yaxes(range=[-4.2, 0.2], row=1, col=1)
    fig.update_yaxes(range=[0, 1.05], row=1, col=2)
    fig.update_xaxes(title_text="turn", dtick=1, row=1, col=2)
    fig.update_layout(barmode="group", height=340, margin={"l": 40, "r": 20, "t": 40, "b": 40},
                      legend={"orientation": "h", "y": -0.25})
    return fig


def _final_per_turn(records: list[dict]) -> dict[int, float]:
    """The last judgement of each turn (the re-scored one when the turn was reflected)."""
    finals: dict[int, float] = {}
    for record in sorted(records, key=lambda r: (r["turn"], r["stage"] == "final")):
        finals[record["turn"]] = record["reward"]
    return finals
