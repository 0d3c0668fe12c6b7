"""Plotly charts of GRM judgements: penalties of the latest turn and the reward across turns."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from saferdemo.judgement import PENALTIES

COLOURS = {"base": "#d9534f", "aligned": "#2b8a3e"}


def scores_figure(records: list[dict]) -> go.Figure:
    """records: {"turn", "column", "stage" (draft|final), "reward", "penalties"} for every judgement made.

    Left: penalties of the latest turn per column and stage (lower bars = worse). Right: each column's reward
    per turn, the draft's (dotted) and, when the turn was reflected, the corrected one's (solid), so the gain
    from reflection shows. A judgement that could not be read (reward None) is marked "unverified" under the
    axis rather than left out. The turn axis always spans half a turn either side, so one turn's points sit in
    the middle, not at the edges. Columns not named in COLOURS get plotly's default colours.
    """
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4],
                        subplot_titles=("GRM penalties, latest turn (0 = none)", "GRM reward per turn"))
    latest = max((r["turn"] for r in records), default=0)
    for record in [r for r in records if r["turn"] == latest and r["reward"] is not None]:
        fig.add_trace(go.Bar(
            x=[p.replace("_", " ") for p in PENALTIES], y=[record["penalties"].get(p, 0.0) for p in PENALTIES],
            name=f"{record['column']} ({record['stage']})", marker_color=COLOURS.get(record["column"]),
            marker_pattern_shape="/" if record["stage"] == "draft" else "", legendgroup=record["column"],
            hovertemplate="%{x}: %{y}<extra>" + f"{record['column']} {record['stage']}, reward {record['reward']:.2f}</extra>",
        ), row=1, col=1)
    for offset, column in zip((-0.08, 0.08), dict.fromkeys(r["column"] for r in records)):
        for stage, dash, symbol in (("draft", "dot", "circle-open"), ("final", "solid", "diamond")):
            points = sorted((r["turn"], r["reward"]) for r in records
                            if r["column"] == column and r["stage"] == stage and r["reward"] is not None)
            if points:  # columns side by side (offset), so equal rewards do not hide one another
                fig.add_trace(go.Scatter(
                    x=[t + offset for t, _ in points], y=[v for _, v in points], mode="lines+markers",
                    name=f"{column} {'draft' if stage == 'draft' else 'corrected'} reward", legendgroup=column,
                    line={"color": COLOURS.get(column), "dash": dash}, marker={"symbol": symbol, "size": 9},
                    hovertemplate=f"{column} {stage}, turn %{{customdata}}: %{{y:.2f}}<extra></extra>",
                    customdata=[t for t, _ in points]), row=1, col=2)
        unverified = sorted((r["turn"], r["stage"]) for r in records if r["column"] == column and r["reward"] is None)
        if unverified:  # no reward to plot: a grey cross under the axis, named, so the column is not missing
            fig.add_trace(go.Scatter(
                x=[t + offset for t, _ in unverified], y=[-0.12] * len(unverified), mode="markers+text",
                text=["unverified"] * len(unverified), textposition="bottom center", textfont={"size": 9},
                name=f"{column} unverified (no score)", legendgroup=column,
                marker={"symbol": "x-thin-open", "size": 10, "color": COLOURS.get(column, "#777"), "line": {"width": 2}},
                hovertemplate=[f"{column} {stage}, turn {t}: no score (the judgement could not be read)<extra></extra>"
                               for t, stage in unverified]), row=1, col=2)
    fig.update_yaxes(range=[-4.2, 0.2], row=1, col=1)
    fig.update_yaxes(range=[-0.3, 1.08], zeroline=True, tickvals=[0, 0.25, 0.5, 0.75, 1], row=1, col=2)
    fig.update_xaxes(title_text="turn", dtick=1, range=[0.5, max(latest, 1) + 0.5], row=1, col=2)
    fig.update_layout(barmode="group", height=380, margin={"l": 40, "r": 20, "t": 60, "b": 40},
                      legend={"orientation": "h", "y": -0.3}, showlegend=True,
                      modebar={"orientation": "v"})  # the toolbar on the side, off the titles
    return fig
