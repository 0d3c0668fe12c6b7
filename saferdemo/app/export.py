"""Share and replay a comparison: one self-contained HTML page that carries its own JSON bundle.

The bundle holds everything needed to run the conversation again: each turn's text and images (PNG, base64),
its generation settings and seed, each column's safety-loop settings, and what every column produced (think,
reflection, answers, both judgements, timings); plus the models (names and weight fingerprints), the judge's
rubric and the library versions. The page shows the same (images embedded, an inline SVG chart of the
rewards) and embeds the bundle in a `<script type="application/json" id="saferdemo-bundle">`, so the one file
the Export button downloads is both what a colleague reads and what `saferdemo replay FILE` re-runs
(saferdemo/app/replay.py, which trusts nothing in it).
"""

from __future__ import annotations

import base64
import html
import io
import json
import platform
import time

from PIL import Image

FORMAT = "saferdemo.bundle/1"
BUNDLE_TAG = '<script type="application/json" id="saferdemo-bundle">'


def make_bundle(exchanges, columns: dict, judge, titles: dict[str, str]) -> dict:
    from saferdemo.audit.runner import fingerprint

    return {
        "format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "models": {name: {"name": titles.get(name, name), "fingerprint": fingerprint(column.engine)}
                   for name, column in columns.items()},
        "judge": None if judge is None else {"name": titles.get("grm", "grm"), "fingerprint": fingerprint(judge.engine),
                                             "rubric": judge.rubric, "max_new_tokens": judge.max_new_tokens},
        "versions": _versions(),
        "turns": [{"text": e.text, "images": [_png(image) for image in e.images], "settings": e.settings,
                   "results": e.results} for e in exchanges],
    }


def write_page(bundle: dict, path) -> None:
    # No "<" in the data at all (nor ">" or "&"): "</script>" cannot close the element and "<!--<script>" cannot
    # leave it open for the browser (its script-data escape states need a "<"). JSON reads the escapes back.
    data = json.dumps(bundle).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    body = "\n".join(_turn_html(i + 1, turn) for i, turn in enumerate(bundle["turns"]))
    models = " · ".join(f"{name}: {html.escape(m['name'])}" for name, m in bundle["models"].items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>saferdemo comparison</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto}}.cols{{display:flex;gap:1em}}
.col{{flex:1;border:1px solid #ccc;border-radius:8px;padding:.5em 1em}}pre{{white-space:pre-wrap}}
img{{max-width:320px}}.strip{{font-weight:bold;margin:.5em 0}}details{{margin:.3em 0}}
.sd-safe{{color:#1e7b34;background:#e6f4ea}}.sd-unsafe{{color:#b42318;background:#fdecea}}
.sd-unknown{{color:#555;background:#eee}}.kept{{font-size:.9em;color:#444}}</style></head><body>
<h1>saferdemo comparison</h1><p>{models} · judge: {html.escape((bundle.get('judge') or {}).get('name', 'none'))}
· {html.escape(bundle['created'])}</p>{_chart(bundle)}{body}
<p>Replay: <code>saferdemo replay THIS_FILE</code> re-runs every turn and reports where the new run differs.</p>
{BUNDLE_TAG}{data}</script></body></html>"""
    path.write_text(page)


def _png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _versions() -> dict:
    import torch
    import transformers

    import saferdemo

    return {"saferdemo": saferdemo.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


COLUMN_ORDER = ("base", "aligned")  # the app's: base left, aligned right


def in_order(results: dict) -> list[tuple[str, dict]]:
    """A turn's columns in the app's order (bundles written before may hold them in another)."""
    return sorted(results.items(), key=lambda item: (COLUMN_ORDER.index(item[0]) if item[0] in COLUMN_ORDER
                                                     else len(COLUMN_ORDER), item[0]))


def _turn_html(number: int, turn: dict) -> str:
    images = "".join(f'<img src="data:image/png;base64,{data}" alt="image {i + 1}">' for i, data in enumerate(turn["images"]))
    columns = "".join(_column_html(name, result) for name, result in in_order(turn["results"]))
    return f"<h2>Turn {number}</h2>{images}<p><b>User:</b> {html.escape(turn['text'])}</p><div class=cols>{columns}</div>"


def _column_html(name: str, r: dict) -> str:
    def fold(title: str, text: str) -> str:
        return f"<details><summary>{title}</summary><pre>{html.escape(text or '')}</pre></details>" if text else ""

    def judged(title: str, j: dict | None) -> str:
        if not j:
            return ""
        verdict = j["judgement"]["verdict"] if j["judgement"] else "unverified"
        return fold(f"{title}: {verdict} · reward {j['reward']}", json.dumps(j["judgement"] or j["error"], indent=1))

    verdict = r.get("verdict") or {}
    kept = verdict.get("kept", "revision" if r["reflected"] else "draft")

    def answer(which: str, text: str) -> str:
        if not r["reflected"]:
            return f"<pre>{html.escape(text)}</pre>"
        label = "kept" if which == kept else "not kept"
        return f"<p class=kept>{which} answer ({label})</p><pre>{html.escape(text)}</pre>"

    parts = [f"<h3>{html.escape(name)}</h3>", fold("Thinking", r["draft"]["think"]),
             answer("draft", r["draft"]["answer"]), judged("GRM (draft)", r["draft_judgement"])]
    if r["reflected"]:
        parts += [fold("Reflection", r["revision"]["reflection"]), fold("Thinking again", r["revision"]["think"]),
                  answer("revision", r["revision"]["answer"]), judged("GRM (corrected)", r["final_judgement"])]
    if verdict.get("strip"):
        why = f" Kept the {kept}: {html.escape(verdict['reason'])}." if r["reflected"] and verdict.get("reason") else ""
        tone = {"safe": "sd-safe", "unsafe": "sd-unsafe"}.get(verdict.get("tone") or verdict.get("label") or "", "sd-unknown")
        parts.append(f'<p class="strip"><span class="{tone}">{html.escape(verdict["strip"])}</span>{why}</p>')
    if r.get("stopped"):
        parts.append(f"<p>Stopped{' while ' + html.escape(r['stopped_in']) if r.get('stopped_in') else ''}.</p>")
    if r.get("error"):
        parts.append(f"<p>Error: {html.escape(r['error'])}</p>")
    return f"<div class=col>{''.join(parts)}</div>"


def _chart(bundle: dict) -> str:
    """Rewards per turn as an inline SVG (no script, renders offline): draft ○, corrected ◆, per column."""
    colours, width, height = {"base": "#d9534f", "aligned": "#2b8a3e"}, 480, 180
    turns = bundle["turns"]
    marks = []
    step = (width - 60) / max(1, len(turns))
    for t, turn in enumerate(turns):  # each turn's number under its marks
        marks.append(f'<text x="{40 + (t + 0.5) * step:.0f}" y="{height - 6}" font-size="10" '
                     f'text-anchor="middle">turn {t + 1}</text>')
    for t, turn in enumerate(turns):
        for c, (name, r) in enumerate(in_order(turn["results"])):
            x = 40 + (t + 0.5) * step + (c - 0.5) * 14
            for key, shape in (("draft_judgement", "circle"), ("final_judgement", "rect")):
                reward = (r.get(key) or {}).get("reward")
                if reward is None:
                    continue
                y = height - 40 - reward * (height - 60)  # 0 sits above the axis line, not on it
                colour = colours.get(name, "#555")
                marks.append(f'<circle cx="{x:.0f}" cy="{y:.0f}" r="5" fill="none" stroke="{colour}"/>' if shape == "circle"
                             else f'<rect x="{x - 5:.0f}" y="{y - 5:.0f}" width="10" height="10" fill="{colour}"/>')
    legend = " ".join(f'<tspan fill="{c}">{n}</tspan>' for n, c in colours.items())
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="GRM reward per turn">'
            f'<line x1="40" y1="{height - 30}" x2="{width - 20}" y2="{height - 30}" stroke="#999"/>'
            f'<text x="0" y="14" font-size="12">GRM reward per turn (○ draft, ■ corrected): {legend}</text>'
            f'<text x="10" y="{height - 36}" font-size="10">0</text><text x="10" y="24" font-size="10">1</text>'
            f'{"".join(marks)}</svg>')
