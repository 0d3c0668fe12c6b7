"""Published safety benchmarks read in their own released layouts: `load_dataset("NAME:PATH[#OPTIONS]")`.

    mm-safetybench:DIR  MM-SafetyBench's data folder (DIR or DIR/data holds processed_questions/ and imgs/)
    siuo:PATH           SIUO's siuo_gen.json (or the folder holding it, or the repository), images in images/
    vlguard:PATH        VLGuard's test.json (or its folder), images in the unzipped test/ folder beside it
    hf:PATH             a Hugging Face dataset saved locally, with a column mapping (saferdemo/audit/hf_adapter.py)

Options follow the last '#', comma-separated key=value; several values are joined by '+':
    mm-safetybench:~/MM-SafetyBench/data#kinds=vanilla+SD_TYPO     (kinds: SD, SD_TYPO, TYPO, text, vanilla)
    vlguard:~/VLGuard/test.json#subsets=unsafes+safe_unsafes,images=~/VLGuard/test
    siuo:~/SIUO/data#images=~/siuo-images
The whole spec (options included) is the audit's `dataset` setting, so resuming with other options is refused.
A bad file is an error naming it; a bad question or a missing image is named and skipped (with a `problems` list).

Sources read (the layouts and pairings below were checked against these files; no data is vendored):
  MM-SafetyBench  github.com/isXinLiu/MM-SafetyBench at b80eedea3db312c09ded2082813390f68e750ef3 (its last
                  commit, read through the fork syk1052/MM-SafetyBench, which keeps that history): README.md
                  "Dataset Format" and "Evaluation" (Kind 1: imgs/<scenario>/SD/<id>.jpg + "Rephrased Question(SD)";
                  Kind 2: SD_TYPO + "Rephrased Question"; Kind 3: TYPO + "Rephrased Question"), and the 13
                  data/processed_questions/<scenario>.json files (objects keyed by question id, ids not contiguous).
                  Text-only: "text" sends the "Question" field alone; "vanilla" sends "Changed Question" alone, which is
                  what SafeMLRM's toolkit sends as its vanilla baseline (github.com/fangjf1/OpenSafeMLRM at bb4fa50,
                  code/exp_on_MM-SafeBench/exp3.py; its attack, exp1.py, is SD_TYPO + "Rephrased Question").
  SIUO            github.com/sinwang20/SIUO at 18974b65d238ad636d65d238541c7d75279ebb3e: README.md "Download" and
                  data/siuo_gen.json (a list of {question_id, image, question, category, safety_warning,
                  reference_answer}; images unzipped into data/images/; eval/generation-gpt4o-gen.py reads
                  "./data/images/" + image). siuo_mcqa.json (multiple choice) is refused: the audit is open generation.
  VLGuard         github.com/ys-zong/VLGuard at a2f85c90e10345dc5e7eceecadd89c1ed982d04f: data/test.json (a list of
                  {id, image, safe, instr-resp, harmful_category?, harmful_subcategory?}) and utils/utils.py
                  load_data, whose three subsets we keep: unsafes (safe=false: instr-resp[0]["instruction"]),
                  safe_unsafes (safe=true: "unsafe_instruction"), safe_safes (safe=true: "safe_instruction").

Harmful or benign: every MM-SafetyBench item is harmful. SIUO's image and text are each safe, their combination
asks for something unsafe: every SIUO item is harmful (SIUO's "safe" rate is 1 - our ASR; its ideal answer warns
rather than refuses, so read its helpfulness apart). VLGuard: safe_safes (safe image, safe instruction) are
benign; safe_unsafes and unsafes (an unsafe instruction or an unsafe image) are harmful.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from saferdemo.audit import hf_adapter
from saferdemo.audit.items import Item, checked_prompt, report, short

MMSB_KINDS = {  # kind: (question field, image folder under imgs/<scenario>/, or None for text only)
    "SD": ("Rephrased Question(SD)", "SD"),
    "SD_TYPO": ("Rephrased Question", "SD_TYPO"),
    "TYPO": ("Rephrased Question", "TYPO"),
    "text": ("Question", None),
    "vanilla": ("Changed Question", None),
}
VLGUARD_SUBSETS = ("unsafes", "safe_unsafes", "safe_safes")


def is_spec(name: str) -> bool:
    prefix, colon, _ = name.partition(":")
    return bool(colon) and prefix.lower() in ADAPTERS


def parse_spec(spec: str) -> tuple[str, Path, dict[str, str]]:
    """`NAME:PATH[#k=v,k=v]` as (adapter, path, options); a ValueError says what is wrong with it."""
    prefix, _, rest = spec.partition(":")
    adapter = prefix.lower()
    path, hash_, text = rest.rpartition("#") if "#" in rest else (rest, "", "")
    if not path.strip():
        raise ValueError(f"{spec!r}: give a path after '{prefix}:'")
    options: dict[str, str] = {}
    for part in filter(str.strip, text.split(",")):
        key, equals, value = (s.strip() for s in part.partition("="))
        if not equals or not key or not value:
            raise ValueError(f"{spec!r}: option {part.strip()!r} is not key=value")
        if key not in OPTIONS[adapter]:
            raise ValueError(f"{spec!r}: unknown option {key!r} for {adapter}; known: {', '.join(sorted(OPTIONS[adapter]))}")
        if key in options:
            raise ValueError(f"{spec!r}: option {key!r} is given twice")
        options[key] = value
    return adapter, Path(path.strip()).expanduser(), options


def load(spec: str, problems: list[str] | None = None) -> list[Item]:
    adapter, path, options = parse_spec(spec)
    if not path.exists():
        raise ValueError(f"{path} does not exist ({adapter} reads {EXPECTS[adapter]})")
    seen: set[str] = set()
    items = []
    for item in ADAPTERS[adapter](path, options, problems):
        if item.id in seen:  # records are keyed by id: a repeated one would be skipped as done on resume
            report(problems, f"{path}: id {item.id!r} appears twice; the later one is skipped")
            continue
        seen.add(item.id)
        items.append(item)
    return items


def read_json(path: Path):
    """A JSON file's content, or a ValueError naming the file and what is wrong (never a traceback)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})") from error
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text (byte {error.start})") from error
    except OSError as error:
        raise ValueError(f"{path}: cannot be read ({error.strerror or type(error).__name__})") from error


def _choices(value: str | None, known, option: str, default) -> list[str]:
    if value is None:
        return list(default)
    chosen = [v.strip() for v in value.split("+") if v.strip()]
    unknown = [v for v in chosen if v not in known]
    if unknown or not chosen:
        raise ValueError(f"{option}: unknown {', '.join(map(repr, unknown)) or 'empty value'}; known: {'+'.join(known)}")
    return list(dict.fromkeys(chosen))


def _inside(folder: Path, name, where: str) -> Path:
    """An image path from a dataset file, which must stay inside the dataset's image folder."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{where}: image must be a file name, got {short(name)}")
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise ValueError(f"{where}: image {name!r} must be a path inside {folder}")
    path = folder / relative
    if not path.is_file():
        raise ValueError(f"{where}: image {path} is missing")
    return path


def _mm_safetybench(path: Path, options: dict, problems) -> Iterator[Item]:
    root = next((p for p in (path, path / "data") if (p / "processed_questions").is_dir()), None)
    if root is None:
        raise ValueError(f"{path}: no processed_questions/ folder here or in data/ ({EXPECTS['mm-safetybench']})")
    kinds = _choices(options.get("kinds"), list(MMSB_KINDS), "mm-safetybench kinds", MMSB_KINDS)
    files = sorted((root / "processed_questions").glob("*.json"))
    if not files:
        raise ValueError(f"{root / 'processed_questions'}: no <scenario>.json files")
    for file in files:
        scenario = file.stem
        try:
            questions = read_json(file)
            if not isinstance(questions, dict) or not all(isinstance(q, dict) for q in questions.values()):
                raise ValueError(f"{file}: expected an object of questions by id ({{\"0\": {{\"Question\": ...}}, ...}}), "
                                 f"got {type(questions).__name__}" + ("" if not isinstance(questions, dict) else
                                                                       " with a value that is not an object"))
        except ValueError as error:
            report(problems, str(error))
            continue
        usable = []
        for kind in kinds:
            folder = MMSB_KINDS[kind][1]
            if folder and not (root / "imgs" / scenario / folder).is_dir():
                report(problems, f"{root / 'imgs' / scenario / folder}: missing, so the {len(questions)} {kind} items "
                                 f"of {scenario} are skipped")
            else:
                usable.append(kind)
        for qid, question in questions.items():
            for kind in usable:
                field, folder = MMSB_KINDS[kind]
                try:
                    prompt = checked_prompt(question.get(field), f"{file}: question {qid}: {field!r}")
                    image = _inside(root / "imgs" / scenario / folder, f"{qid}.jpg",
                                    f"{file}: question {qid} ({kind})") if folder else None
                except ValueError as error:
                    report(problems, str(error))
                    continue
                yield Item(f"mmsb-{scenario}-{qid}-{kind}", prompt, scenario, True, image_path=image,
                           scenario=scenario, attack=kind)


def _find(path: Path, name: str, adapter: str) -> Path:
    for candidate in (path, path / name, path / "data" / name):
        if candidate.is_file():
            return candidate
    raise ValueError(f"{path}: no {name} here or in data/ ({EXPECTS[adapter]})")


def _rows(file: Path, what: str) -> list:
    rows = read_json(file)
    if not isinstance(rows, list):
        raise ValueError(f"{file}: expected a list of {what}, got {type(rows).__name__}")
    return rows


def _siuo(path: Path, options: dict, problems) -> Iterator[Item]:
    file = _find(path, "siuo_gen.json", "siuo")
    rows = _rows(file, "questions")
    if any(isinstance(row, dict) and "options" in row for row in rows):
        raise ValueError(f"{file}: this is SIUO's multiple-choice file; the audit reads siuo_gen.json (open generation)")
    images = Path(options["images"]).expanduser() if "images" in options else file.parent / "images"
    if not images.is_dir():
        raise ValueError(f"{images}: no such folder (unzip SIUO-images.zip there, or give #images=DIR)")
    for number, row in enumerate(rows, start=1):
        where = f"{file}: question {number}"
        try:
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected an object, got {short(row)}")
            missing = [key for key in ("question_id", "image", "question", "category") if key not in row]
            if missing:
                raise ValueError(f"{where}: missing {', '.join(missing)}")
            where = f"{file}: question_id {row['question_id']}"
            prompt = checked_prompt(row["question"], f"{where}: question")
            category = checked_prompt(row["category"], f"{where}: category")
            image = _inside(images, row["image"], where)
        except ValueError as error:
            report(problems, str(error))
            continue
        reference = row.get("reference_answer")
        yield Item(f"siuo-{row['question_id']}", prompt, category, True, image_path=image,
                   reference=reference if isinstance(reference, str) else None, scenario=category, attack="siuo")


def _vlguard(path: Path, options: dict, problems) -> Iterator[Item]:
    file = _find(path, "test.json", "vlguard")
    rows = _rows(file, "images")
    subsets = _choices(options.get("subsets"), VLGUARD_SUBSETS, "vlguard subsets", VLGUARD_SUBSETS)
    if "images" in options:
        images = Path(options["images"]).expanduser()
    else:
        images = file.parent / "test" if (file.parent / "test").is_dir() else file.parent
    if not images.is_dir():
        raise ValueError(f"{images}: no such folder (unzip VLGuard's test.zip there, or give #images=DIR)")
    for number, row in enumerate(rows, start=1):
        where = f"{file}: entry {number}"
        try:
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected an object, got {short(row)}")
            missing = [key for key in ("id", "image", "safe", "instr-resp") if key not in row]
            if missing:
                raise ValueError(f"{where}: missing {', '.join(missing)}")
            where = f"{file}: id {row['id']}"
            if not isinstance(row["safe"], bool):
                raise ValueError(f"{where}: safe must be true or false, got {short(row['safe'])}")
            pairs = row["instr-resp"]
            if not isinstance(pairs, list) or not pairs or not all(isinstance(p, dict) for p in pairs):
                raise ValueError(f"{where}: instr-resp must be a list of objects, got {short(pairs)}")
            wanted = [s for s in subsets if (s == "unsafes") != row["safe"]]
            image = _inside(images, row["image"], where) if wanted else None
        except ValueError as error:
            report(problems, str(error))
            continue
        for subset in wanted:
            key = {"unsafes": "instruction", "safe_unsafes": "unsafe_instruction", "safe_safes": "safe_instruction"}[subset]
            pair = pairs[0] if subset == "unsafes" else next((p for p in pairs if key in p), {})
            try:
                prompt = checked_prompt(pair.get(key), f"{where}: {key!r}")
            except ValueError as error:
                report(problems, str(error))
                continue
            category = (str(row.get("harmful_category") or "unsafe image") if subset == "unsafes" else
                        "safe image, unsafe instruction" if subset == "safe_unsafes" else "safe image, safe instruction")
            response = pair.get("response")
            yield Item(f"vlguard-{row['id']}-{subset}", prompt, category, subset != "safe_safes", image_path=image,
                       reference=response if isinstance(response, str) else None, scenario=category, attack=subset)


ADAPTERS = {"mm-safetybench": _mm_safetybench, "siuo": _siuo, "vlguard": _vlguard, "hf": hf_adapter.load}
OPTIONS = {"mm-safetybench": {"kinds"}, "siuo": {"images"}, "vlguard": {"subsets", "images"}, "hf": hf_adapter.OPTIONS}
EXPECTS = {
    "mm-safetybench": "MM-SafetyBench's data folder: processed_questions/<scenario>.json, imgs/<scenario>/SD|SD_TYPO|TYPO/<id>.jpg",
    "siuo": "SIUO's data/siuo_gen.json with the images in data/images/",
    "vlguard": "VLGuard's test.json with the images of test.zip in test/ beside it",
    "hf": "a folder saved by datasets' save_to_disk, a .parquet file or a folder of them",
}
