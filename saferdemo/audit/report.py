"""The audit's self-contained HTML report: settings, metrics with intervals, charts, every item with both
answers and verdicts, and the definitions. Categories with fewer than SMALL_N judged items are marked: their
intervals are wide and their rates move with a single answer."""

from __future__ import annotations

import html
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from saferdemo.app.charts import COLOURS
from saferdemo.audit import metrics
from saferdemo.audit.paper import table_html

RATES = (("asr", "ASR"), ("unsafe_reasoning", "unsafe reasoning"), ("self_correction", "self-correction"),
         ("over_refusal", "over-refusal"))
SCORES = (("safety_score", "safety score"), ("helpfulness", "helpfulness"))
SMALL_N = 5


def format_rate(rate: dict) -> str:
    if rate["rate"] is None:
        return "n/a (n=0)"
    return f"{100 * rate['rate']:.1f}% [{100 * rate['low']:.1f}, {100 * rate['high']:.1f}] (n={rate['n']})"


def format_score(score: dict) -> str:
    if score["mean"] is None:
        return "n/a (n=0)"
    if score["n"] < 2:  # one item has no spread: an interval would read [x, x]
        return f"{score['mean']:.1f} (n={score['n']}, no interval)"
    if score["low"] == score["high"]:  # every item scored the same: no spread to estimate an interval from
        return f"{score['mean']:.1f} (n={score['n']}, all equal)"
    return f"{score['mean']:.1f} [{score['low']:.1f}, {score['high']:.1f}] (n={score['n']})"


def metrics_markdown(summary: dict) -> str:
    """The metrics table as Markdown (the app's Audit tab)."""
    names = list(summary["models"])
    lines = ["| metric (95% interval) | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key, label in RATES:
        lines.append(f"| {label} | " + " | ".join(format_rate(summary["models"][n][key]) for n in names) + " |")
    for key, label in SCORES:
        lines.append(f"| {label} | " + " | ".join(format_score(summary["models"][n][key]) for n in names) + " |")
    lines.append("| judge parse failures | " + " | ".join(str(summary["models"][n]["parse_failures"]) for n in names) + " |")
    paired = summary.get("paired")
    if paired:
        u = paired["answer_unsafe"]
        lines.append(f"\nPaired on {u['n_pairs']} harmful items: only {paired['models'][0]} unsafe {u['only_a_unsafe']}, "
                     f"only {paired['models'][1]} unsafe {u['only_b_unsafe']} (exact McNemar p = {u['p_value']:.3g}).")
    return "\n".join(lines)


def metrics_table(summary: dict) -> str:
    names = list(summary["models"])
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = [(label, [format_rate(summary["models"][n][key]) for n in names]) for key, label in RATES]
    rows += [(label, [format_score(summary["models"][n][key]) for n in names]) for key, label in SCORES]
    rows += [(label, [str(summary["models"][n][key]) for n in names])
             for key, label in (("n_items", "responses"), ("parse_failures", "judge parse failures"),
                                ("truncations", "truncated responses"))]
    body = "".join(f"<tr><td>{label}</td>{''.join(f'<td>{v}</td>' for v in values)}</tr>" for label, values in rows)
    return f"<table><tr><th>metric (95% interval)</th>{head}</tr>{body}</table>"


def category_figure(summary: dict) -> go.Figure:
    """ASR per harmful category and over-refusal per benign category, both models side by side."""
    fig = go.Figure()
    for name, entry in summary["models"].items():
        cats = entry["by_category"]
        xs, ys, lo, hi = [], [], [], []
        for category, m in cats.items():
            rate = m["asr"] if m["asr"]["n"] else m["over_refusal"]
            if rate["rate"] is None:
                continue
            label = category + ("" if m["asr"]["n"] else " (over-refusal)")
            xs.append(label + (f" (n={rate['n']}, small)" if rate["n"] < SMALL_N else ""))
            ys.append(100 * rate["rate"])
            lo.append(100 * (rate["rate"] - rate["low"]))
            hi.append(100 * (rate["high"] - rate["rate"]))
        fig.add_trace(go.Bar(x=xs, y=ys, name=name, marker_color=COLOURS.get(name),
                             error_y={"type": "data", "array": hi, "arrayminus": lo},
                             hovertemplate="%{x}: %{y:.1f}%<extra>" + html.escape(name) + "</extra>"))
    fig.update_layout(barmode="group", title="ASR per harmful category, over-refusal per benign one (%, 95% CI)",
                      yaxis={"range": [0, 105]}, height=420)
    return fig


def quadrant_figure(summary: dict) -> go.Figure:
    """Reasoning x answer on harmful items: the reasoning tax lives in the unsafe-reasoning row."""
    names = list(summary["models"])
    # One shared y axis: the second panel's labels would otherwise sit on the first panel's cells.
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, shared_yaxes=True, horizontal_spacing=0.08)
    for col, name in enumerate(names, start=1):
        t = summary["models"][name]["reasoning_x_answer"]
        z = [[t["reasoning_safe_answer_safe"], t["reasoning_safe_answer_unsafe"]],
             [t["reasoning_unsafe_answer_safe"], t["reasoning_unsafe_answer_unsafe"]]]
        fig.add_trace(go.Heatmap(z=z, x=["answer safe", "answer unsafe"], y=["reasoning safe", "reasoning unsafe"],
                                 text=z, texttemplate="%{text}", colorscale="Reds", showscale=False), row=1, col=col)
    fig.update_layout(title="Harmful items: reasoning × answer", height=320)
    return fig


def score_figure(records: list[dict]) -> go.Figure:
    fig = go.Figure()
    for name in dict.fromkeys(r["model"] for r in records):
        rewards = [r["reward"] for r in records if r["model"] == name and r["reward"] is not None]
        fig.add_trace(go.Histogram(x=rewards, name=name, opacity=0.6, xbins={"start": 0, "end": 1.0001, "size": 0.05},
                                   marker_color=COLOURS.get(name)))
    fig.update_layout(barmode="overlay", title="GRM reward of each response", xaxis_title="reward", height=320)
    return fig


def turning_points_html(located: dict | None, order: list[str] = ()) -> str:
    """`saferdemo audit --turning-points`: per model (in `order` first), how often the reasoning turned unsafe and
    where (the first unsafe sentence's relative position: quartiles, and the turned traces per third), with a chart
    of the thirds."""
    if not located:
        return ""
    models = {n: located["models"][n] for n in [*order, *located["models"]] if n in located["models"]}
    thirds = ("early", "middle", "late")
    bar = lambda r, part: 0 if r["rate"] is None else 100 * {"y": r["rate"], "up": r["high"] - r["rate"],  # noqa: E731
                                                              "down": r["rate"] - r["low"]}[part]
    quartiles = lambda p: " / ".join("n/a" if p[q] is None else f"{p[q]:.2f}"  # noqa: E731
                                     for q in ("q25", "median", "q75")) + f" (n={p['n']})"
    rows = [("turned unsafe", [format_rate(m["turned"]) for m in models.values()]),
            ("position q25 / median / q75", [quartiles(m["position"]) for m in models.values()]),
            *[(f"{t} third", [format_rate(m[t]) for m in models.values()]) for t in thirds],
            ("self-corrected", [format_rate(m["self_corrected"]) for m in models.values()])]
    head = "".join(f"<th>{html.escape(n)}</th>" for n in models)
    body = "".join(f"<tr><td>{label}</td>{''.join(f'<td>{v}</td>' for v in values)}</tr>" for label, values in rows)
    fig = go.Figure([go.Bar(x=list(thirds), y=[bar(m[t], "y") for t in thirds], name=name,
                            marker_color=COLOURS.get(name),
                            error_y={"type": "data", "array": [bar(m[t], "up") for t in thirds],
                                     "arrayminus": [bar(m[t], "down") for t in thirds]})
                     for name, m in models.items()])
    fig.update_layout(barmode="group", height=320, yaxis={"range": [0, 105]},
                      title="Where the reasoning turned unsafe: turned traces per third of the trace (%, 95% CI)")
    return (f"<h2>Where the reasoning turns unsafe</h2><p>Strategy {html.escape(str(located['strategy']))}; position: "
            f"(first unsafe sentence + 1) / sentences.</p><table><tr><th>turning point (95% interval)</th>{head}</tr>"
            f"{body}</table>{fig.to_html(full_html=False, include_plotlyjs=False)}")


def settings_table(config: dict) -> str:
    rows = "".join(f"<tr><td>{html.escape(str(k).replace('_', ' '))}</td><td>{html.escape(str(v))}</td></tr>"
                   for k, v in config.items())
    return f"<table><tr><th>setting</th><th>value</th></tr>{rows}</table>"


def items_table(records: list[dict], thumbnails: dict[str, str]) -> str:
    """One row per item: its image, prompt and category, and each model's answer with the GRM's verdict."""
    by_id: dict[str, dict] = {}
    for r in records:
        by_id.setdefault(r["id"], {})[r["model"]] = r
    names = list(dict.fromkeys(r["model"] for r in records))
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = []
    for item_id, answers in by_id.items():
        first = next(iter(answers.values()))
        image = (f'<img src="data:image/png;base64,{thumbnails[item_id]}" width="96">' if item_id in thumbnails else "")
        cells = "".join(f"<td>{_answer(answers.get(n))}</td>" for n in names)
        kind = "harmful" if first["harmful"] else "look-alike" if first.get("look_alike") else "benign"
        rows.append(f"<tr><td>{image}</td><td>{html.escape(item_id)}<br>{html.escape(first['category'])} ({kind})"
                    f"<br><i>{html.escape(first['prompt'])}</i></td>{cells}</tr>")
    return f"<table><tr><th>image</th><th>item</th>{head}</tr>{''.join(rows)}</table>"


def _answer(record: dict | None) -> str:
    if record is None:
        return ""
    if record.get("error"):
        return f"⚠️ {html.escape(record['error'])}"
    verdict = ("judge output unreadable" if record["parse_failed"] else
               f"{'unsafe' if record['answer_unsafe'] else 'safe'} · reward {record['reward']:.2f}")
    return f"<b>{verdict}</b><br>{html.escape(record['answer'][:400])}"


def write_report(summary: dict, records: list[dict], path: Path, thumbnails: dict[str, str] | None = None,
                 extra: str = "") -> None:
    """`extra`: more HTML after the charts (an attack sweep's per-variant section, saferdemo/audit/sweep_run.py)."""
    figures = [category_figure(summary), quadrant_figure(summary), score_figure(records)]
    charts = "".join(f.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, f in enumerate(figures))
    paired = summary.get("paired")
    paired_html = ""
    if paired:
        a, b = paired["models"]
        u = paired["answer_unsafe"]
        paired_html = (f"<p><b>Paired, same harmful items (n={u['n_pairs']}):</b> only {html.escape(a)} unsafe on "
                       f"{u['only_a_unsafe']}, only {html.escape(b)} unsafe on {u['only_b_unsafe']}; exact McNemar "
                       f"p = {u['p_value']:.3g}.</p>")
    definitions = html.escape(metrics.__doc__.split("Definitions", 1)[1])
    path.write_text(f"""<!doctype html><html><head><meta charset="utf-8"><title>saferdemo audit</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top}}</style></head><body>
<h1>saferdemo audit</h1>{settings_table(summary["config"])}
<p>Judge errors and load errors are counted, not hidden ({summary['errors']} load errors). Categories with
fewer than {SMALL_N} judged items are marked "small".</p>
{metrics_table(summary)}{paired_html}{table_html(summary.get("safemlrm"))}{charts}
{turning_points_html(summary.get("turning_points"), list(summary["models"]))}{extra}
<h2>Every item</h2>{items_table(records, thumbnails or {})}
<h2>Definitions</h2><pre>{definitions}</pre></body></html>
""")
