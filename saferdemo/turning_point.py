"""Where a reasoning trace turns unsafe: the first unsafe sentence of a think trace, and any later self-correction.

The trace is split into sentences (`sentences`); prefix i is the trace up to the end of sentence i. The judge
reads each prefix as the reasoning span of a response with an empty answer (`<think>\\nprefix\\n</think>\\n`),
exactly as the audit's `--span-mode separate` judges a whole trace, and a prefix is unsafe when its reasoning
safety is under the reward's gate (the audit's `reasoning_unsafe`) or its verdict is unsafe (with an empty
answer, only the reasoning can make it so). An unreadable judgement counts as not unsafe and is counted.

- first unsafe sentence: the shortest unsafe prefix's last sentence;
- recovered at: the first later sentence whose prefix is judged safe again (the trace corrected itself);
- self-corrected: the trace turned unsafe and then recovered, or the turn's final answer was judged safe
  (SafeMLRM's "unsafe reasoning, safe answer"), when the caller passes that verdict.

How the prefixes are judged (`strategy`):
- `linear` (the default): every prefix in one `GRMClient.judge_batch` call, which a batching engine answers in
  one padded `generate` per `batch_size` rows: one round trip, and the only strategy that sees a recovery. Up to
  `max_prefixes` prefixes; a longer trace is scanned at evenly spaced prefixes first and the bracket around the
  first unsafe one is then bisected.
- `bisect`: binary search for the shortest unsafe prefix, ceil(log2(n + 1)) sequential calls of one row each.
  It assumes that once a prefix is unsafe every longer one is (no recovery is looked for) and suits engines that
  cannot batch (a remote API judge billed per call, with long traces).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from PIL import Image

from saferdemo.judge import GRMClient, JudgeResult
from saferdemo.prompts import format_response

# Sentence ends: . ! ? (closing quotes or brackets stay with the sentence) before whitespace, or a line break.
_BOUNDARY = re.compile(r"(?<=[.!?])([\"'\u201d\u2019)\]]*)\s+|\s*\n\s*")
# A piece that is only an enumerator ("1.", "b)") or an abbreviation belongs to the next sentence.
_GLUE = re.compile(r"^(\(?\w{1,2}[.)]|e\.g\.|i\.e\.|etc\.|vs\.|dr\.|mr\.|mrs\.|ms\.|no\.)$", re.IGNORECASE)

PrefixJudge = Callable[[list[str]], list["bool | None"]]  # prefixes -> unsafe? (None: unreadable)


@dataclass
class Sentence:
    text: str
    start: int  # character offsets in the trace
    end: int


def sentences(trace: str) -> list[Sentence]:
    """The trace's sentences with their offsets; an empty or blank trace has none."""
    found: list[Sentence] = []
    start = 0
    for match in [*_BOUNDARY.finditer(trace), None]:
        end = match.start() + len(match.group(1) or "") if match else len(trace)
        piece = trace[start:end]
        if piece.strip():
            lead = len(piece) - len(piece.lstrip())
            sentence = Sentence(piece.strip(), start + lead, start + lead + len(piece.strip()))
            if found and _GLUE.match(found[-1].text):
                glued = found.pop()
                sentence = Sentence(trace[glued.start:sentence.end], glued.start, sentence.end)
            found.append(sentence)
        start = match.end() if match else len(trace)
    return found


def prefix(trace: str, sentence: Sentence) -> str:
    """The prefix of `trace` that ends with `sentence`: what the judge reads at that sentence."""
    return trace[: sentence.end]


def prefix_response(prefix_text: str) -> str:
    """The response the judge sees for a prefix: the prefix as the reasoning span, with an empty answer (mini-grm's
    training data builds its prefix examples with this and `sentences`, so the two cannot drift apart)."""
    return format_response(prefix_text, "")


@dataclass
class TurningPoint:
    """Where one trace turned unsafe; indices count sentences from 0."""

    sentences: list[Sentence]
    first_unsafe: int | None = None
    recovered_at: int | None = None
    answer_safe: bool | None = None  # the turn's final answer was judged safe (None: not given)
    judged: dict[int, bool | None] = field(default_factory=dict)  # prefix end index -> unsafe (None: unreadable)
    strategy: str = "linear"
    judge_calls: int = 0  # rows the judge generated
    rounds: int = 0  # sequential judge calls (each a batch)
    seconds: float = 0.0

    @property
    def unreadable(self) -> int:
        return sum(v is None for v in self.judged.values())

    @property
    def turned(self) -> bool:
        return self.first_unsafe is not None

    @property
    def self_corrected(self) -> bool:
        return self.turned and (self.recovered_at is not None or self.answer_safe is True)

    @property
    def relative_position(self) -> float | None:
        """(first unsafe index + 1) / sentences: the share of the trace read when it turned, in (0, 1]."""
        return None if self.first_unsafe is None else (self.first_unsafe + 1) / len(self.sentences)

    def as_dict(self) -> dict:
        return {"sentences": [s.text for s in self.sentences],
                "spans": [[s.start, s.end] for s in self.sentences],
                "first_unsafe": self.first_unsafe, "recovered_at": self.recovered_at,
                "relative_position": None if self.relative_position is None else round(self.relative_position, 4),
                "self_corrected": self.self_corrected, "answer_safe": self.answer_safe,
                "judged": {str(k): v for k, v in sorted(self.judged.items())}, "unreadable": self.unreadable,
                "strategy": self.strategy, "judge_calls": self.judge_calls, "rounds": self.rounds,
                "seconds": round(self.seconds, 3)}


def prefix_unsafe(result: JudgeResult, gate: float) -> bool | None:
    """Whether a judged prefix is unsafe: reasoning safety under the gate, or an unsafe verdict."""
    j = result.judgement
    if j is None:
        return None
    return j.verdict == "unsafe" or j.reasoning["safety"] < gate


def grm_prefix_judge(client: GRMClient, image: Image.Image | None, request: str,
                     earlier: Sequence[tuple[str, str]] = (), concurrent: bool = False) -> PrefixJudge:
    """A PrefixJudge asking `client` about prefixes of a trace: one `judge_batch` call per list of prefixes (a
    padded batch), or with `concurrent` one streaming `judge` per prefix, all at once, which a `BatchingEngine`
    (the app's judge) runs as one batched generate with the other users' requests."""
    gate = client.reward_config.gate_threshold

    def judge(prefixes: list[str]) -> list[bool | None]:
        responses = [prefix_response(p) for p in prefixes]
        if concurrent and len(prefixes) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(len(prefixes)) as pool:
                results = list(pool.map(lambda r: client.judge(image, request, r, earlier=list(earlier)), responses))
        else:
            results = client.judge_batch([image] * len(prefixes), [request] * len(prefixes), responses,
                                         [list(earlier)] * len(prefixes))
        return [prefix_unsafe(r, gate) for r in results]

    return judge


def locate(trace: str, judge: PrefixJudge, strategy: str = "linear", max_prefixes: int = 32,
           answer_safe: bool | None = None) -> TurningPoint:
    """The turning point of `trace` (see the module docstring); `judge` answers a list of prefixes at once."""
    if strategy not in ("linear", "bisect"):
        raise ValueError(f"unknown strategy {strategy!r}; choose linear or bisect")
    if max_prefixes < 2:
        raise ValueError(f"max_prefixes must be at least 2 (got {max_prefixes})")
    found = TurningPoint(sentences(trace), answer_safe=answer_safe, strategy=strategy)
    n = len(found.sentences)
    if n == 0:
        return found
    started = time.perf_counter()

    def ask(indices: list[int]) -> None:
        indices = [i for i in dict.fromkeys(indices) if i not in found.judged]
        if not indices:
            return
        verdicts = judge([prefix(trace, found.sentences[i]) for i in indices])
        if len(verdicts) != len(indices):
            raise ValueError(f"the prefix judge answered {len(verdicts)} verdicts for {len(indices)} prefixes")
        found.judged.update(zip(indices, verdicts))
        found.judge_calls += len(indices)
        found.rounds += 1

    if strategy == "linear":
        if n <= max_prefixes:
            ask(list(range(n)))
            unsafe = [i for i in range(n) if found.judged[i]]
            found.first_unsafe = unsafe[0] if unsafe else None
        else:  # evenly spaced prefixes, then bisect the bracket around the first unsafe one
            coarse = sorted({round(k * (n - 1) / (max_prefixes - 1)) for k in range(max_prefixes)})
            ask(coarse)
            hits = [i for i in coarse if found.judged[i]]
            if hits:
                high = hits[0]
                low = max([i for i in coarse if i < high], default=-1)
                found.first_unsafe = _bisect(ask, found.judged, low, high)
        if found.first_unsafe is not None:
            later = sorted(i for i, v in found.judged.items() if i > found.first_unsafe and v is False)
            found.recovered_at = later[0] if later else None
    else:
        found.first_unsafe = _bisect(ask, found.judged, -1, None, n)
    found.seconds = time.perf_counter() - started
    return found


def _bisect(ask, judged: dict, low: int, high: int | None, n: int | None = None) -> int | None:
    """The smallest unsafe index in (low, high], assuming monotone verdicts; `high` None: (low, n - 1], which
    may hold no unsafe index at all (then None)."""
    if high is None:
        ask([n - 1])
        if not judged[n - 1]:
            return None
        high = n - 1
    while high - low > 1:
        middle = (low + high) // 2
        ask([middle])
        if judged[middle]:
            high = middle
        else:
            low = middle
    return high


def audit_run(out_dir, judge: GRMClient, strategy: str = "linear", harmful_only: bool = True,
              max_prefixes: int = 32) -> dict:
    """Locate the turning point of every trace of an audit run (`saferdemo audit --out DIR`): writes
    `DIR/turning_points.jsonl` (one line per record) and `DIR/turning_points.json` (per model:
    `saferdemo.audit.metrics.turning_points`), and returns the latter. The images come from the run's dataset."""
    import json
    from pathlib import Path

    from saferdemo.audit.datasets import load_dataset
    from saferdemo.audit.metrics import turning_points

    out_dir = Path(out_dir)
    items_file, summary_file = out_dir / "items.jsonl", out_dir / "summary.json"
    if not items_file.is_file() or not summary_file.is_file():
        raise FileNotFoundError(f"{out_dir} is not a finished audit run (it needs items.jsonl and summary.json)")
    config = json.loads(summary_file.read_text())["config"]
    items = {item.id: item for item in load_dataset(config["dataset"], config.get("categories"))}
    records = [json.loads(line) for line in items_file.read_text().splitlines() if line.strip()]
    located, models = [], list(dict.fromkeys(r["model"] for r in records))
    with (out_dir / "turning_points.jsonl").open("w") as sink:
        for record in records:
            if record.get("error") or (harmful_only and not record["harmful"]) or record["id"] not in items:
                continue
            item = items[record["id"]]
            answer_safe = None if record["parse_failed"] else not record["answer_unsafe"]
            point = locate(record.get("think") or "", grm_prefix_judge(judge, item.image(), item.prompt),
                           strategy, max_prefixes, answer_safe)
            row = {"id": record["id"], "model": record["model"], "turning_point": point.as_dict()}
            located.append(row)
            sink.write(json.dumps(row) + "\n")
    summary = {"strategy": strategy, "harmful_only": harmful_only,
               "models": {m: turning_points([r for r in located if r["model"] == m]) for m in models}}
    (out_dir / "turning_points.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def into_summary(out_dir, summary: dict, judge: GRMClient) -> dict:
    """`saferdemo audit --turning-points`: `audit_run`'s statistics, also written into the run's summary.json and
    report.html."""
    import json
    from pathlib import Path

    from saferdemo.audit.runner import rewrite_report

    located = audit_run(out_dir, judge)
    summary["turning_points"] = located
    (Path(out_dir) / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    rewrite_report(out_dir, summary)
    return located


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import sys

    parser = argparse.ArgumentParser(prog="python -m saferdemo.turning_point",
                                     description="where each trace of an audit run turns unsafe")
    parser.add_argument("run", help="an audit run folder (saferdemo audit --out DIR)")
    parser.add_argument("--grm", default="assets/models/mini-grm", help="the judge checkpoint")
    parser.add_argument("--strategy", choices=("linear", "bisect"), default="linear")
    parser.add_argument("--all-items", action="store_true", help="benign items too (default: harmful only)")
    args = parser.parse_args(argv)
    from saferdemo.engines.transformers_engine import TransformersEngine
    from saferdemo.judge import rubric_of, sees_conversation
    from saferdemo.loading import ModelLoadError

    try:
        engine = TransformersEngine.from_pretrained(args.grm, name="grm")
        summary = audit_run(args.run, GRMClient(engine, rubric_of(args.grm), conversation=sees_conversation(args.grm)),
                            args.strategy, not args.all_items)
    except (ModelLoadError, FileNotFoundError, ValueError) as error:
        print(f"saferdemo: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
