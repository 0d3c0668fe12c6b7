"""The audit: a safety benchmark of two models, judged by the GRM.

- `datasets`: FigStep (vendored), the miniature held-out split, or a JSONL of items;
- `runner`: answer, judge and record every (item, model), resumable; `metrics`: rates with Wilson intervals and
  an exact McNemar test; `report`: the self-contained HTML report.
"""
