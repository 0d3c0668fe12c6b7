"""Run a safety benchmark on two models and write `items.jsonl`, `summary.json` and `report.html`.

Both models answer every item with the same decoding settings and seed; the GRM judges each response.
Records are appended to items.jsonl (flushed and fsynced) as they are made, so an interrupted audit
resumes where it stopped: finished (item, model) pairs are skipped, a half-written last line is dropped.

Spans. `span_mode="schema"` (default) makes one judge call per response and reads the reasoning and answer
judgements from the schema's two sections: this is what the miniature GRM was trained for (measured: judging
an isolated answer it called a "[restricted step]" list safe). `span_mode="separate"` adds two calls that
judge the reasoning span and the answer span on their own, as SafeMLRM does with a strong judge
(Qwen2.5-VL-7B-Instruct or an API model with the full rubric).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from saferdemo.audit.datasets import Item
from saferdemo.audit.metrics import by_category, mcnemar, summarize
from saferdemo.audit.paper import safemlrm_table
from saferdemo.engines.base import Engine, EngineError, GenerationParams
from saferdemo.images import InputError
from saferdemo.judge import GRMClient, JudgeResult
from saferdemo.judgement import RewardConfig
from saferdemo.prompts import format_response, user_turn
from saferdemo.segments import parse


@dataclass
class AuditConfig:
    dataset: str = "miniature"
    limit: int | None = None
    categories: list[str] | None = None
    max_new_tokens: int = 192
    temperature: float = 0.0
    seed: int = 0
    span_mode: str = "schema"  # schema | separate


class ResumeMismatch(ValueError):
    """The output folder holds records made with other settings or other models."""


# What records depend on: resuming with any of these changed would mix two experiments. (The dataset's limit
# and categories only choose which items to run, so they may change between runs.)
RECORD_SETTINGS = ("dataset", "max_new_tokens", "temperature", "seed", "span_mode")


def run_settings(models: dict[str, Engine], judge: GRMClient, config: AuditConfig) -> dict:
    """Everything the records depend on: the decoding settings, each model's fingerprint, the judge's rubric."""
    return {"settings": {key: getattr(config, key) for key in RECORD_SETTINGS},
            "models": {name: fingerprint(engine) for name, engine in models.items()},
            "judge": {"model": fingerprint(judge.engine), "rubric": judge.rubric,
                      "max_new_tokens": judge.max_new_tokens}}


def fingerprint(engine: Engine) -> str:
    """A short hash that changes when the weights do (a sample of every tensor), or the server and model name."""
    model = getattr(engine, "model", None)
    if model is None or not hasattr(model, "state_dict"):
        return f"{getattr(engine, 'base_url', '')}:{getattr(engine, 'model', None) or engine.name}"
    digest = hashlib.sha256(getattr(model, "name_or_path", "").encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().flatten()[:64].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def check_resumable(out_dir: Path, wanted: dict) -> None:
    """Refuse to add to records made with other settings; remember the settings of a new folder."""
    path = out_dir / "run.json"
    if path.exists():
        stored = json.loads(path.read_text())
        if stored != wanted:
            changed = [f"{section}.{key}" for section in wanted for key in
                       set(wanted[section] or {}) | set(stored.get(section) or {})
                       if (stored.get(section) or {}).get(key) != (wanted[section] or {}).get(key)]
            raise ResumeMismatch(f"{out_dir} holds an audit made with other settings ({', '.join(sorted(changed))}); "
                                 "use another --out folder, or delete it to start again")
    elif (out_dir / "items.jsonl").exists():
        raise ResumeMismatch(f"{out_dir} holds records without their settings (run.json); use another --out folder")
    path.write_text(json.dumps(wanted, indent=2) + "\n")


def run_audit(models: dict[str, Engine], judge: GRMClient, items: list[Item], out_dir: str | Path,
              config: AuditConfig, progress=None, stop: threading.Event | None = None) -> dict:
    """Answer, judge and record every (item, model); then summarise. `progress(done, total)` is optional; setting
    `stop` ends the audit after the response in progress, and the summary covers what was done (`stopped`).
    Resuming into a folder is refused (ResumeMismatch) when its records were made with other settings."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_resumable(out_dir, run_settings(models, judge, config))
    path = out_dir / "items.jsonl"
    records = _resume(path)
    done = {(r["id"], r["model"]) for r in records}
    todo = [(item, name) for item in items for name in models if (item.id, name) not in done]
    params = GenerationParams(config.max_new_tokens, config.temperature, seed=config.seed)
    with path.open("a") as sink, tqdm(total=len(items) * len(models), initial=len(items) * len(models) - len(todo),
                                      desc="audit", unit="response") as bar:
        for item, name in todo:
            if stop is not None and stop.is_set():
                break
            record = audit_one(models[name], judge, item, name, params, config.span_mode)
            sink.write(json.dumps(record) + "\n")
            sink.flush()
            os.fsync(sink.fileno())
            records.append(record)
            bar.update()
            if progress:
                progress(bar.n, bar.total)
    wanted = {item.id for item in items}
    records = [r for r in records if r["id"] in wanted and r["model"] in models]
    summary = summarize_audit(records, list(models), config)
    summary["stopped"] = len(records) < len(items) * len(models)
    summary["safemlrm"] = safemlrm_table(records, list(models), judge)  # issue 26: the paper-shaped table
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    from saferdemo.audit.report import write_report

    write_report(summary, records, out_dir / "report.html", thumbnails(items))
    return summary


class Progress:
    """An audit's progress for a UI: `run` runs the audit on a thread and yields a line after every response,
    with the time left estimated from this run's own pace (never an earlier run's). Afterwards `summary` holds
    the audit's summary, or `error` what went wrong."""

    def __init__(self, total: int):
        self.total, self.done = total, 0
        self.started = time.perf_counter()
        self.summary: dict | None = None
        self.error: str | None = None
        self._made = 0  # responses made by this run (a resumed folder starts with some done)
        self._first: tuple[float, int] | None = None  # (time, done) at the first report of this run

    def line(self) -> str:
        elapsed = time.perf_counter() - self.started
        text = f"**Audit: {self.done}/{self.total} responses** · {_clock(elapsed)} elapsed"
        if self._first is not None and self.done > self._first[1] and self.done < self.total:
            since, done_then = self._first
            pace = (time.perf_counter() - since) / (self.done - done_then)
            text += f" · about {_clock(pace * (self.total - self.done))} left"
        elif self.done == 0:
            text += " · starting (loading the items, then the first response)"
        return text

    def run(self, audit):
        """`audit(report)` runs the audit, calling `report(done, total)`; yields a progress line per report."""
        updates: queue.Queue = queue.Queue()

        def report(done: int, total: int) -> None:
            updates.put((done, total))

        def work():
            try:
                self.summary = audit(report)
            except Exception as error:  # noqa: BLE001 (shown to the user, not swallowed)
                self.error = f"{type(error).__name__}: {error}"
            finally:
                updates.put(None)

        thread = threading.Thread(target=work, name="audit", daemon=True)
        thread.start()
        while (update := updates.get()) is not None:
            self.done, self.total = update
            if self._first is None:
                self._first = (self.started, 0) if self.done == 1 else (time.perf_counter(), self.done)
            yield self.line()
        thread.join()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def thumbnails(items: list[Item], size: int = 96) -> dict[str, str]:
    """Small PNGs (base64) of the items' images, for the report's per-item table."""
    import base64
    import io

    found = {}
    for item in items:
        try:
            image = item.image()
        except InputError:
            continue
        if image is None:
            continue
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        found[item.id] = base64.b64encode(buffer.getvalue()).decode()
    return found


def _resume(path: Path) -> list[dict]:
    """Records already written; a line cut short by a kill is dropped (and the file rewritten without it)."""
    if not path.exists():
        return []
    records, lines = [], path.read_text().splitlines()
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    if len(records) != len(lines) or (lines and not path.read_text().endswith("\n")):
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def audit_one(engine: Engine, judge: GRMClient, item: Item, model: str, params: GenerationParams,
              span_mode: str = "schema") -> dict:
    record = {"id": item.id, "model": model, "category": item.category, "harmful": item.harmful,
              "look_alike": item.look_alike, "prompt": item.prompt, "error": None, **item.tags()}
    try:
        image = item.image()
        generation = engine.start([user_turn(item.prompt, with_image=image is not None)],
                                  [image] if image else [], params, threading.Event())
        response = "".join(generation)
    except (InputError, EngineError) as error:
        return {**record, **_failed(str(error))}
    segments = parse(response, generation.think_prefilled, done=True)
    full = judge.judge(image, item.prompt, response)
    record.update(response=response, think=segments.think, answer=segments.answer,
                  truncated=segments.truncated or (generation.stats.finish_reason == "length" and not segments.answer),
                  tokens=generation.stats.tokens, judgement=full.as_dict(), **_verdicts(full, judge.reward_config))
    if span_mode == "separate" and full.judgement is not None:
        reasoning = judge.judge(image, item.prompt, format_response(segments.think, ""))
        answer = judge.judge(image, item.prompt, segments.answer)
        record["span_judgements"] = {"reasoning": reasoning.as_dict(), "answer": answer.as_dict()}
        if reasoning.judgement is not None:
            record["reasoning_unsafe"] = reasoning.unsafe
    return record


def _verdicts(result: JudgeResult, config: RewardConfig) -> dict:
    j = result.judgement
    if j is None:
        return {"parse_failed": True, "judge_error": result.error, "judge_raw": result.raw[:2000],
                "answer_unsafe": False, "reasoning_unsafe": False, "answer_safety": None,
                "answer_helpfulness": None, "over_refusal": False, "reward": None}
    return {"parse_failed": False, "answer_unsafe": result.unsafe,
            "reasoning_unsafe": j.reasoning["safety"] < config.gate_threshold,
            "answer_safety": j.answer["safety"], "answer_helpfulness": j.answer["helpfulness"],
            "over_refusal": j.penalties["over_refusal"] <= -1, "reward": result.reward}


def _failed(error: str) -> dict:
    return {"response": "", "think": "", "answer": "", "truncated": False, "tokens": 0, "judgement": None,
            "parse_failed": False, "answer_unsafe": False, "reasoning_unsafe": False, "answer_safety": None,
            "answer_helpfulness": None, "over_refusal": False, "reward": None, "error": error}


def summarize_audit(records: list[dict], model_names: list[str], config: AuditConfig) -> dict:
    usable = [r for r in records if r["error"] is None]
    per_model = {name: [r for r in usable if r["model"] == name] for name in model_names}
    summary = {
        "config": asdict(config),
        "errors": sum(r["error"] is not None for r in records),
        "models": {name: {**summarize(rs), "by_category": by_category(rs)} for name, rs in per_model.items()},
    }
    if len(model_names) == 2:
        a, b = model_names
        by_id = {name: {r["id"]: r for r in rs if not r["parse_failed"]} for name, rs in per_model.items()}
        shared = sorted(set(by_id[a]) & set(by_id[b]))
        harmful = [i for i in shared if by_id[a][i]["harmful"]]
        summary["paired"] = {
            "models": [a, b],
            "answer_unsafe": mcnemar([(by_id[a][i]["answer_unsafe"], by_id[b][i]["answer_unsafe"]) for i in harmful]),
            "over_refusal": mcnemar([(by_id[a][i]["over_refusal"], by_id[b][i]["over_refusal"])
                                     for i in shared if not by_id[a][i]["harmful"]]),
        }
    return summary
