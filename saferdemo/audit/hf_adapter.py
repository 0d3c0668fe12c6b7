"""Any Hugging Face `datasets` dataset saved locally, as audit items: `hf:PATH[#MAPPING]`.

PATH is a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` (read with `load_from_disk`),
a .parquet file, or a folder of .parquet files (a Hub snapshot: data/test-00000-of-00001.parquet, ...).
MAPPING names the dataset's columns for our fields, e.g. (the CLI's `--columns` is the same text)

    hf:~/my_set#image=img,prompt=question,harmful=label,category=cat,split=test

    prompt     the request (required; default: a column named "prompt")
    harmful    true/false, 0/1, or harmful/unsafe vs benign/safe; `harmful=true` (or false) with no such
               column marks every row (default: a column named "harmful")
    image      an Image feature, {"bytes", "path"}, raw bytes or a path relative to PATH; missing or null: text only
    category, id, reference, scenario, attack   optional columns (category default: PATH's name; id: NAME-ROW)
    split      which split of a DatasetDict (or which parquet files: those named for it); needed when there are several

A mapped column that does not exist is an error listing the columns; a row with a bad value is named and skipped.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from pathlib import Path

from saferdemo.audit.items import Item, checked_prompt, report, short

FIELDS = ("prompt", "harmful", "image", "category", "id", "reference", "scenario", "attack")
OPTIONS = {*FIELDS, "split"}
TRUE, FALSE = {"true", "1", "yes", "harmful", "unsafe"}, {"false", "0", "no", "benign", "safe"}


def load(path: Path, options: dict[str, str], problems: list[str] | None) -> Iterator[Item]:
    rows, columns, source = _open(path, options.get("split"))
    column = {field: options.get(field, field) for field in FIELDS}
    constant = None
    if column["harmful"] not in columns:
        constant = _flag(options.get("harmful", ""))
        if "harmful" not in options or constant is None:
            raise ValueError(f"{source}: no column {column['harmful']!r} for harmful; columns: {', '.join(columns)} "
                             "(map one with harmful=COLUMN, or harmful=true when every row is harmful)")
    for field in ("prompt", *FIELDS[2:]):
        if column[field] not in columns and (field == "prompt" or field in options):
            raise ValueError(f"{source}: no column {column[field]!r} for {field}; columns: {', '.join(columns)}"
                             + (" (map one with prompt=COLUMN)" if field == "prompt" else ""))
    base = path if path.is_dir() else path.parent
    for number, row in enumerate(rows):
        where = f"{source}: row {number}"
        try:
            yield _item(row, column, columns, constant, base, path.name, number, where)
        except ValueError as error:
            report(problems, str(error))


def _item(row: dict, column: dict, columns: list[str], constant, base: Path, name: str, number: int, where: str) -> Item:
    def value(field):
        return row.get(column[field]) if column[field] in columns else None

    prompt = checked_prompt(value("prompt"), f"{where}: {column['prompt']!r}")
    harmful = constant if constant is not None else _flag(value("harmful"))
    if harmful is None:
        raise ValueError(f"{where}: {column['harmful']!r} must be true/false, 0/1 or harmful/benign, "
                         f"got {short(value('harmful'))}")
    category = value("category") if column["category"] in columns else name
    if category is None or not str(category).strip():
        raise ValueError(f"{where}: {column['category']!r} is empty")
    image_path, image_bytes = _image(value("image"), base, where)
    text = {field: None if value(field) is None else str(value(field)) for field in ("id", "reference", "scenario", "attack")}
    return Item(text["id"] or f"{name}-{number}", prompt, str(category), harmful, image_path=image_path,
                image_bytes=image_bytes, reference=text["reference"], scenario=text["scenario"], attack=text["attack"])


def _flag(value) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        return True if text in TRUE else False if text in FALSE else None
    return None


def _image(value, base: Path, where: str) -> tuple[Path | None, bytes | None]:
    """An image cell as (path, bytes): Image features come as {"bytes", "path"}; strings are paths under `base`."""
    if value is None:
        return None, None
    if isinstance(value, dict) and ("bytes" in value or "path" in value):
        if value.get("bytes") is not None:
            return None, bytes(value["bytes"])
        value = value.get("path")
        if value is None:
            return None, None
    if isinstance(value, (bytes, bytearray)):
        return None, bytes(value)
    if isinstance(value, str):
        path = Path(value) if Path(value).is_absolute() else base / value
        if not path.is_file():
            raise ValueError(f"{where}: image {path} is missing")
        return path, None
    if hasattr(value, "save") and hasattr(value, "size"):  # a decoded PIL image
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return None, buffer.getvalue()
    raise ValueError(f"{where}: image must be an image, bytes or a path, got {type(value).__name__}")


def _open(path: Path, split: str | None) -> tuple[Iterable[dict], list[str], str]:
    """(rows, column names, a name for messages) of a saved dataset or of parquet files."""
    if path.is_dir() and any((path / f).is_file() for f in ("dataset_dict.json", "dataset_info.json", "state.json")):
        return _saved(path, split)
    files = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
    if path.is_file() and path.suffix != ".parquet":
        raise ValueError(f"{path}: not a .parquet file (hf reads a save_to_disk folder or parquet files)")
    if split and path.is_dir():
        files = [f for f in files if split in f.relative_to(path).parts[:-1] or f.name.startswith(f"{split}-")]
    if not files:
        raise ValueError(f"{path}: no dataset saved with save_to_disk and no .parquet files"
                         + (f" for split {split!r}" if split else ""))
    return _parquet(files)


def _saved(path: Path, split: str | None):
    try:
        import datasets
    except ImportError as error:
        raise ValueError("hf: reading a save_to_disk folder needs the datasets package (pip install datasets)") from error
    try:
        data = datasets.load_from_disk(str(path))
    except Exception as error:  # noqa: BLE001 (datasets raises many kinds; the user gets one line)
        raise ValueError(f"{path}: load_from_disk cannot read it ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''})") from error
    source = str(path)
    if isinstance(data, datasets.DatasetDict):
        if split is None and len(data) != 1:
            raise ValueError(f"{path}: has splits {', '.join(data)}; choose one with split=NAME")
        split = split or next(iter(data))
        if split not in data:
            raise ValueError(f"{path}: no split {split!r}; splits: {', '.join(data)}")
        data, source = data[split], f"{path} [{split}]"
    elif split is not None:
        raise ValueError(f"{path}: holds one dataset, not splits; drop split={split}")
    for name, feature in data.features.items():  # images as {"bytes", "path"}: decoded when audited, not now
        if isinstance(feature, datasets.Image):
            data = data.cast_column(name, datasets.Image(decode=False))
    return iter(data), list(data.column_names), source


def _parquet(files: list[Path]):
    import pyarrow.parquet as pq

    tables = []
    for file in files:
        try:
            tables.append(pq.read_table(file))
        except Exception as error:  # noqa: BLE001 (pyarrow's ArrowInvalid, OSError, ...)
            raise ValueError(f"{file}: not a readable parquet file ({type(error).__name__}: "
                             f"{str(error).splitlines()[0] if str(error) else ''})") from error
        if tables[-1].column_names != tables[0].column_names:
            raise ValueError(f"{file}: its columns ({', '.join(tables[-1].column_names)}) differ from {files[0]}'s "
                             f"({', '.join(tables[0].column_names)})")
    source = str(files[0]) if len(files) == 1 else f"{files[0].parent} ({len(files)} parquet files)"
    rows = (row for table in tables for row in table.to_pylist())
    return rows, list(tables[0].column_names), source
