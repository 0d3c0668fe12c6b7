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

import contextlib
import hashlib
import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from saferdemo.audit.datasets import Item
from saferdemo.audit.metrics import by_category, mcnemar, summarize
from saferdemo.audit.paper import safemlrm_table
from saferdemo.audit.pool import run_units
from saferdemo.audit.progress import Progress  # noqa: F401 (the app's Audit tab imports it from here)
from saferdemo.engines.base import Engine, EngineError, GenerationParams
from saferdemo.images import InputError
from saferdemo.judge import GRMClient, JudgeResult
from saferdemo.judgement import RewardConfig
from saferdemo.prompts import format_response, user_turn
from saferdemo.segments import canonical, generation_format, parse


@dataclass
class AuditConfig:
    dataset: str = "miniature"
    limit: int | None = None
    categories: list[str] | None = None
    max_new_tokens: int = 192
    temperature: float = 0.0
    seed: int = 0
    span_mode: str = "schema"  # schema | separate
    concurrency: int = 1  # items whose responses (one per model) generate at once; a resume may change it
    judge_concurrency: int | None = None  # responses being judged at once (None: as many as generate at once)


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
    """Answer, judge and record every (item, model): the responses of `config.concurrency` items generate at once,
    each judged as it finishes (`config.judge_concurrency` at once: audit/pool.py); then summarise.
    `progress(done, total)` is optional; setting `stop` ends the audit after the responses in flight, and the
    summary covers what was done (`stopped`). Ctrl-C leaves every finished record and none of the unfinished.
    Resuming into a folder is refused (ResumeMismatch) when its records were made with other settings."""
    if config.concurrency < 1 or (config.judge_concurrency is not None and config.judge_concurrency < 1):
        raise ValueError("concurrency must be at least 1")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_resumable(out_dir, run_settings(models, judge, config))
    path = out_dir / "items.jsonl"
    records = _resume(path)
    done = {(r["id"], r["model"]) for r in records}
    todo = [(item, name) for item in items for name in models if (item.id, name) not in done]
    params = decoding(config)
    gate = _sampling_gate(params)

    def answer(unit, abort):
        item, name = unit
        return answer_one(models[name], item, name, params, abort, gate if _in_process(models[name]) else None)

    with path.open("a") as sink, tqdm(total=len(items) * len(models), initial=len(items) * len(models) - len(todo),
                                      desc="audit", unit="response", dynamic_ncols=True) as bar:
        def record(one: dict) -> None:
            sink.write(json.dumps(one) + "\n")
            sink.flush()
            os.fsync(sink.fileno())
            records.append(one)
            bar.update()
            if progress:
                progress(bar.n, bar.total)

        answers = config.concurrency * len(models)  # todo is item by item: N items' responses at once
        run_units(todo, answer, lambda answered, abort: judge_answer(judge, answered, config.span_mode, abort),
                  record, answers, config.judge_concurrency or answers, stop)
    wanted = {item.id for item in items}
    records = [r for r in records if r["id"] in wanted and r["model"] in models]
    summary = summarize_audit(records, list(models), config)
    summary["stopped"] = len(records) < len(items) * len(models)
    summary["safemlrm"] = safemlrm_table(records, list(models), judge)  # issue 26: the paper-shaped table
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    from saferdemo.audit.report import write_report

    write_report(summary, records, out_dir / "report.html", thumbnails(items))
    return summary


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


def rewrite_report(out_dir: str | Path, summary: dict) -> None:
    """A finished run's report.html again, from its records and `summary` (`--turning-points` adds a section)."""
    from saferdemo.audit.datasets import load_dataset
    from saferdemo.audit.report import write_report

    records = _resume(Path(out_dir) / "items.jsonl")
    ids = {r["id"] for r in records}
    items = [i for i in load_dataset(summary["config"]["dataset"], summary["config"].get("categories")) if i.id in ids]
    write_report(summary, records, Path(out_dir) / "report.html", thumbnails(items))


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


def decoding(config: AuditConfig) -> GenerationParams:
    """The models' decoding. Greedy decoding (temperature 0) ignores the seed, so its requests go unseeded and
    may share a running batch; a seed matters only when sampling."""
    return GenerationParams(config.max_new_tokens, config.temperature,
                            seed=config.seed if config.temperature > 0 else None)


def _in_process(engine: Engine) -> bool:
    return hasattr(getattr(engine, "model", None), "state_dict")


def _sampling_gate(params: GenerationParams):
    """Seeded sampling in this process runs one generation at a time: torch's random generator is the process's
    own (a second seeded generation would reseed it mid-stream), and a seeded row batched with others draws
    other numbers. So a seeded sample is the same at any concurrency, as it is at concurrency 1."""
    return threading.Lock() if params.seed is not None else contextlib.nullcontext()


def audit_one(engine: Engine, judge: GRMClient, item: Item, model: str, params: GenerationParams,
              span_mode: str = "schema", stop: threading.Event | None = None, gate=None) -> dict:
    """One (item, model) record: the model answers, the judge judges. `stop` ends its generations at the next
    token (the caller then drops the record); `gate` is held while the model generates."""
    return judge_answer(judge, answer_one(engine, item, model, params, stop, gate), span_mode, stop)


def answer_one(engine: Engine, item: Item, model: str, params: GenerationParams,
               stop: threading.Event | None = None, gate=None) -> tuple[dict, Item, object]:
    """The model's part of a record: (record so far, item, image); the record is whole if it failed."""
    record = {"id": item.id, "model": model, "category": item.category, "harmful": item.harmful,
              "look_alike": item.look_alike, "prompt": item.prompt, "error": None, **item.tags()}
    try:
        image = item.image()
        with gate or contextlib.nullcontext():
            generation = engine.start([user_turn(item.prompt, with_image=image is not None)],
                                      [image] if image else [], params, stop or threading.Event())
            response = "".join(generation)
    except (InputError, EngineError) as error:
        return {**record, **_failed(str(error))}, item, None
    fmt = generation_format(generation)  # the model's own tags (Kimi's, a prefilled <think>, ...)
    segments = parse(response, generation.think_prefilled, done=True, format=fmt)
    judged = canonical(response, fmt, generation.think_prefilled)  # the judge reads saferdemo's own format
    if judged != response:
        record["judged_response"] = judged
    record.update(response=response, think=segments.think, answer=segments.answer,
                  truncated=segments.truncated or (generation.stats.finish_reason == "length" and not segments.answer),
                  tokens=generation.stats.tokens)
    return record, item, image


def judge_answer(judge: GRMClient, answered: tuple[dict, Item, object], span_mode: str = "schema",
                 stop: threading.Event | None = None) -> dict:
    """The judge's part: the answer's judgement and verdicts (and the spans' in "separate" mode)."""
    record, item, image = answered
    if record["error"] is not None:
        return record
    full = judge.judge(image, item.prompt, record.get("judged_response", record["response"]), stop)
    record.update(judgement=full.as_dict(), **_verdicts(full, judge.reward_config))
    if span_mode == "separate" and full.judgement is not None:
        reasoning = judge.judge(image, item.prompt, format_response(record["think"], ""), stop)
        answer = judge.judge(image, item.prompt, record["answer"], stop)
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
