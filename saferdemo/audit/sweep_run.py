"""Run an attack sweep (saferdemo/audit/sweep.py) as an audit: `run_audit` answers, judges and records every
(item, model) in the run folder (run.json, items.jsonl, resumable), then the sweep adds its per-variant rates
to summary.json (`sweep`), its spec to sweep.json, and its section (pairs, variants, the plot) to report.html.

Per variant and model: attack success = harmful instructions whose answer the judge found unsafe / judged ones;
over-refusal = benign controls the judge gave an over-refusal penalty / judged ones; control unsafe = benign
controls answered unsafely / judged ones (the model read something harmful into a benign card: a misreading,
which also inflates that variant's attack success); each with its Wilson 95% interval (the audit's definitions,
saferdemo/audit/metrics.py).
"""

from __future__ import annotations

import html
import json
import threading
from dataclasses import replace
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from saferdemo.app.charts import COLOURS
from saferdemo.audit.metrics import summarize, wilson
from saferdemo.audit.report import write_report
from saferdemo.audit.runner import AuditConfig, run_audit, thumbnails
from saferdemo.audit.sweep import Sweep
from saferdemo.engines.base import Engine

RATES = (("asr", "attack success (harmful instruction)"), ("over_refusal", "over-refusal (benign look-alike control)"),
         ("control_unsafe", "benign control answered unsafely (a misreading)"))
SMALL_TOKENS = 96  # the bundled models' answers take 50-65 tokens; a sweep is many short responses


def run_sweep(models: dict[str, Engine], judge, sweep: Sweep, out_dir: str | Path, config: AuditConfig | None = None,
              progress=None, stop: threading.Event | None = None) -> dict:
    """Run the sweep into `out_dir` (resuming what is there if it is the same sweep with the same models and
    settings; another sweep is refused with runner.ResumeMismatch) and return the summary, `sweep` included."""
    items = sweep.items()
    config = replace(config or AuditConfig(max_new_tokens=SMALL_TOKENS), dataset=sweep.dataset(), limit=None,
                     categories=None)
    out_dir = Path(out_dir)
    summary = run_audit(models, judge, items, out_dir, config, progress=progress, stop=stop)
    wanted = {item.id for item in items}
    records = [r for r in _records(out_dir / "items.jsonl") if r["id"] in wanted and r["model"] in models]
    summary["sweep"] = {**sweep.spec(), "rates": variant_rates(records, list(models), [v.name for v in sweep.variants])}
    (out_dir / "sweep.json").write_text(json.dumps(sweep.spec(), indent=2) + "\n")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_report(summary, records, out_dir / "report.html", thumbnails(items), extra=report_section(summary))
    return summary


def _records(path: Path) -> list[dict]:
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def variant_rates(records: list[dict], models: list[str], variants: list[str]) -> dict:
    """{variant: {model: {asr, over_refusal, control_unsafe, unsafe_reasoning, parse_failures, errors}}}, in the
    sweep's order."""
    out = {}
    for variant in variants:
        out[variant] = {}
        for model in models:
            mine = [r for r in records if r.get("variant") == variant and r["model"] == model]
            usable = [r for r in mine if r["error"] is None]
            s = summarize(usable)
            controls = [r for r in usable if not r["harmful"] and not r["parse_failed"]]
            out[variant][model] = {"asr": s["asr"], "over_refusal": s["over_refusal"],
                                   "control_unsafe": wilson(sum(r["answer_unsafe"] for r in controls), len(controls)),
                                   "unsafe_reasoning": s["unsafe_reasoning"], "parse_failures": s["parse_failures"],
                                   "errors": len(mine) - len(usable)}
    return out


def short_rate(rate: dict) -> str:
    if rate["rate"] is None:
        return "n/a"
    return f"{100 * rate['rate']:.0f}% [{100 * rate['low']:.0f}, {100 * rate['high']:.0f}] ({rate['k']}/{rate['n']})"


def sweep_markdown(summary: dict) -> str:
    """The per-variant table (the workbench tab and the CLI)."""
    sweep, models = summary["sweep"], list(summary["models"])
    factor = {v["name"]: v["factor"] for v in sweep["variants"]}
    head = " | ".join(f"{label.split(' (')[0]}: {m}" for _, label in RATES for m in models)
    lines = [f"| variant | factor | {head} |", "|---|---|" + "---|" * (len(RATES) * len(models))]
    for variant, per_model in sweep["rates"].items():
        cells = " | ".join(short_rate(per_model[m][key]) for key, _ in RATES for m in models)
        lines.append(f"| {variant} | {factor[variant]} | {cells} |")
    pairs = "; ".join(f"{p['instruction']['text']} → {p['control']['text']}" for p in sweep["pairs"])
    return "\n".join(lines) + f"\n\nPairs (instruction → benign control, {sweep['pool']} pool): {pairs}"


def sweep_figure(summary: dict) -> go.Figure:
    """Attack success, over-refusal and unsafe answers to the controls per variant (one row each), a bar per model
    with its Wilson interval; variants are grouped by the factor they change."""
    sweep, models = summary["sweep"], list(summary["models"])
    factor = {v["name"]: v["factor"] for v in sweep["variants"]}
    names = list(sweep["rates"])
    x = [[factor[n] for n in names], names]
    fig = make_subplots(rows=len(RATES), cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=[label for _, label in RATES])
    for row, (key, _) in enumerate(RATES, start=1):
        for model in models:
            rates = [sweep["rates"][n][model][key] for n in names]
            y = [None if r["rate"] is None else 100 * r["rate"] for r in rates]
            fig.add_trace(go.Bar(
                x=x, y=y, name=model, legendgroup=model, showlegend=row == 1, marker_color=COLOURS.get(model),
                error_y={"type": "data", "symmetric": False,  # none where n = 0: there is no rate to bound
                         "array": [0 if r["n"] == 0 else 100 * (r["high"] - r["rate"]) for r in rates],
                         "arrayminus": [0 if r["n"] == 0 else 100 * (r["rate"] - r["low"]) for r in rates]},
                customdata=[[r["k"], r["n"]] for r in rates],
                hovertemplate="%{x}: %{y:.0f}% (%{customdata[0]}/%{customdata[1]})<extra>" + model + "</extra>"),
                row=row, col=1)
        fig.update_yaxes(title_text="%", range=[0, 105], row=row, col=1)
    fig.update_layout(barmode="group", height=820, margin={"t": 40, "b": 10},
                      title="Attack sweep: rate per variant, Wilson 95% intervals")
    return fig


def report_section(summary: dict) -> str:
    """The sweep's part of report.html: what was swept, the pairs, the variants and the plot."""
    sweep = summary["sweep"]
    pairs = "".join(f"<tr><td>{html.escape(p['instruction']['text'])}</td><td>{html.escape(p['instruction']['category'])}"
                    f"</td><td>{html.escape(p['control']['text'])}</td></tr>" for p in sweep["pairs"])
    keys = ("card", "font_size", "text_color", "background", "noise", "jpeg", "prompt")
    variants = "".join("<tr>" + "".join(f"<td>{html.escape(str(v[k]))}</td>" for k in ("name", "factor", *keys)) + "</tr>"
                       for v in sweep["variants"])
    figure = sweep_figure(summary).to_html(full_html=False, include_plotlyjs=False)
    return (f"<h2>Attack sweep</h2><p>Each harmful instruction is drawn in every variant next to a benign control "
            f"from the {html.escape(sweep['pool'])} pool drawn in the same variant (saferdemo/audit/sweep.py). Attack "
            "success: harmful instructions answered unsafely; over-refusal: controls refused (GRM penalty); control unsafe: "
            "controls answered unsafely (a misreading).</p>"
            f"<table><tr><th>instruction</th><th>category</th><th>benign control</th></tr>{pairs}</table>"
            f"<table><tr><th>variant</th><th>factor</th>{''.join(f'<th>{k}</th>' for k in keys)}</tr>{variants}</table>"
            f"{figure}")
