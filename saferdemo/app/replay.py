"""Replay an exported comparison: read its bundle, check every part of it against the app's limits, run its
turns again and list where the new run differs.

A bundle is input from anyone (a page mailed around, a file from the web), so nothing in it is trusted: the
file's size, its one bundle element, the JSON's shape, every turn's text, images (size, pixels, shape, decoded
once and kept at the app's size) and settings pass `saferdemo.limits` exactly as a chat turn does, and all of
it is checked before the first model runs. A refusal is a `BundleError` naming the turn and the field.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from saferdemo import limits as checks
from saferdemo.app.export import BUNDLE_TAG, FORMAT
from saferdemo.images import InputError
from saferdemo.limits import DEFAULT, Limits


class BundleError(ValueError):
    """The file is not a usable bundle; the message says where and why."""


@dataclass
class ReplayTurn:
    text: str
    images: list[Image.Image]
    params: object  # GenerationParams
    loops: dict
    results: dict[str, dict]


def read_bundle(path: Path, limits: Limits = DEFAULT) -> dict:
    """A bundle from an exported page or a bundle.json: a regular file within `bundle_mb`, exactly one bundle
    element (a page holding a second one, a decoy, is refused), JSON in the bundle's format, at least one turn."""
    try:
        checks.file_size(Path(path), limits.bundle_mb, "a bundle")
        text = Path(path).read_bytes().decode("utf-8")
    except InputError as error:
        raise BundleError(str(error)) from None
    except OSError as error:
        raise BundleError(f"{path} cannot be read ({error.strerror or type(error).__name__})") from None
    except UnicodeDecodeError:
        raise BundleError(f"{path} is not text (UTF-8): not an exported page or a bundle.json") from None
    tags = text.count(BUNDLE_TAG)
    if tags > 1:
        raise BundleError(f"{path} holds {tags} bundle elements; an exported page holds one")
    if tags == 1:
        text = text.split(BUNDLE_TAG, 1)[1]
        if "</script>" not in text:
            raise BundleError(f"{path}: the bundle element is never closed")
        text = text.split("</script>", 1)[0]
    try:
        bundle = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise BundleError(f"{path} is not a saferdemo bundle ({FORMAT}): not JSON ({type(error).__name__})") from None
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        raise BundleError(f"{path} is not a saferdemo bundle ({FORMAT})")
    turns = bundle.get("turns")
    if not isinstance(turns, list) or not turns:
        raise BundleError(f"{path} holds no turns to replay")
    return bundle


def checked_turns(bundle: dict, columns, limits: Limits = DEFAULT) -> list[ReplayTurn]:
    """Every turn of the bundle, checked as the app checks a chat turn, its images decoded once."""
    from saferdemo.engines.base import GenerationParams
    from saferdemo.safety_loop import LoopConfig

    turns, held = [], 0
    for number, turn in enumerate(bundle["turns"], start=1):
        where = f"turn {number}"
        try:
            if not isinstance(turn, dict):
                raise BundleError(f"{where} is not an object")
            text, encoded = turn.get("text"), turn.get("images") or []
            if not isinstance(text, str) or not isinstance(encoded, list):
                raise BundleError(f"{where}: text must be a string and images a list")
            checks.turn(text, len(encoded), held, number - 1, limits)
            checks.turn(text, len(encoded), held, number - 1, limits, checks.tokens(columns, text))
            images = [checks.image(_decoded(data, f"{where} image {i + 1}", limits), limits, f"image {i + 1}")
                      for i, data in enumerate(encoded)]
            held += len(images)
            settings = turn.get("settings")
            params, loops = settings.get("params"), settings.get("loops")
            temperature, top_p, max_new_tokens, _ = checks.settings(
                params.get("temperature"), params.get("top_p"), params.get("max_new_tokens"), 0.5, limits)
            seed = checks.seed(-1 if params.get("seed") is None else params.get("seed"), limits)
            configs = {}
            for name, config in loops.items():
                if name not in columns or not isinstance(config.get("enabled"), bool):
                    raise BundleError(f"{where}: the loop settings of {checks.short(name)} are not usable")
                configs[name] = LoopConfig(enabled=config["enabled"], threshold=checks.number(
                    config.get("threshold"), "The reflection threshold", limits.threshold))
            results = turn.get("results")
            if (not isinstance(results, dict) or not results or set(results) - set(columns)
                    or not all(isinstance(r, dict) for r in results.values())):
                raise BundleError(f"{where}: results must hold each column's turn ({', '.join(columns)})")
        except InputError as error:
            raise BundleError(f"{where}: {error}") from None
        except (AttributeError, TypeError):
            raise BundleError(f"{where}: settings must hold params and loops objects") from None
        turns.append(ReplayTurn(text, images, GenerationParams(max_new_tokens, temperature, top_p, seed), configs,
                                results))
    return turns


def _decoded(data, where: str, limits: Limits) -> bytes:
    """An image's base64 text as bytes; the text's length is checked before decoding."""
    if not isinstance(data, str):
        raise BundleError(f"{where} must be base64 text")
    if len(data) > (checks.IMAGE_FILE_MB * 2**20) * 4 // 3 + 4:
        raise BundleError(f"{where} is over {checks.IMAGE_FILE_MB} MB; the limit is {checks.IMAGE_FILE_MB} MB")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BundleError(f"{where} is not base64") from None


COMPARED = (("draft", "think"), ("draft", "answer"), ("reflected",), ("revision", "reflection"),
            ("revision", "answer"), ("draft_judgement", "judgement"), ("final_judgement", "judgement"),
            ("final_answer",), ("verdict", "strip"))


def model_differences(bundle: dict, columns: dict, judge) -> list[dict]:
    """The models that are not the bundle's: their weight fingerprints differ (turn None)."""
    from saferdemo.audit.runner import fingerprint

    found = []
    engines = {name: column.engine for name, column in columns.items()} | ({"grm": judge.engine} if judge else {})
    recorded = dict(bundle.get("models") or {}) | ({"grm": bundle["judge"]} if bundle.get("judge") else {})
    for name, engine in engines.items():
        before = (recorded.get(name) or {}).get("fingerprint") if isinstance(recorded.get(name), dict) else None
        after = fingerprint(engine)
        if before != after:
            found.append({"turn": None, "column": name, "field": "model.fingerprint", "before": before, "after": after})
    return found


def replay(bundle: dict, columns: dict, judge, limits: Limits = DEFAULT) -> list[dict]:
    """Run every turn of the bundle again (each in its recorded context) and list where the new run differs,
    the models' fingerprints first. Raises BundleError before any model runs if a turn is not usable."""
    from saferdemo.app.session import Comparison, Exchange

    turns = checked_turns(bundle, columns, limits)
    comparison = Comparison([columns[name] for name in ("base", "aligned")], judge)
    history, differences = [], model_differences(bundle, columns, judge)
    for number, turn in enumerate(turns, start=1):
        final = {}
        for name, snapshot in comparison.run(history, turn.text, turn.images, turn.params, loops=turn.loops):
            final[name] = snapshot
        for name, old in turn.results.items():
            differences += _differences(number, name, old, final[name].as_dict())
        answers = {n: r.get("final_answer") if isinstance(r.get("final_answer"), str) else ""
                   for n, r in turn.results.items()}
        history.append(Exchange(turn.text, turn.images, answers))
    return differences


def _differences(number: int, column: str, old: dict, new: dict) -> list[dict]:
    found = []
    for path in COMPARED:
        if path[0] not in old:  # a field bundles from before did not record
            continue
        before, after = _get(old, path), _get(new, path)
        if before != after:
            found.append({"turn": number, "column": column, "field": ".".join(path), "before": before, "after": after})
    return found


def _get(data: dict, path: tuple):
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    return data
