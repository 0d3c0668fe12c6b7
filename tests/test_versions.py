"""The supported-versions promise: pyproject.toml, requirements.txt and README's table say the same thing, and
every upper bound is the newest release the suite passed on (README: Supported versions)."""

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# README's table names -> the distribution whose pin it documents
TABLE_NAMES = {"transformers": "transformers", "TRL": "trl", "torch": "torch", "peft": "peft",
               "accelerate": "accelerate", "datasets (extra `training`)": "datasets", "gradio": "gradio"}


def requirements() -> dict[str, Requirement]:
    listed = PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["training"]
    return {Requirement(line).name: Requirement(line) for line in listed}


def readme_table() -> dict[str, tuple[str, str]]:
    section = (ROOT / "README.md").read_text().split("## Supported versions", 1)[1]
    rows = re.findall(r"^\| (.+?) \| (\S+) \| (\S+) \|", section, flags=re.M)
    return {TABLE_NAMES[name]: (oldest, newest) for name, oldest, newest in rows if name in TABLE_NAMES}


def next_minor(version: str) -> str:
    v = Version(version)
    return f"{v.major}.{v.minor + 1}.0"


def test_every_runtime_dependency_has_an_upper_bound():
    unbounded = [str(r) for r in requirements().values() if not any(s.operator in ("<", "<=", "==") for s in r.specifier)]
    assert not unbounded, f"no upper bound: {unbounded}"


def test_readme_table_and_pins_agree():
    table, pins = readme_table(), requirements()
    assert set(table) == set(TABLE_NAMES.values())
    for name, (oldest, newest) in table.items():
        spec = pins[name].specifier
        assert spec.contains(newest) and spec.contains(oldest), (name, str(spec))
        assert not spec.contains(next_minor(newest)), f"{name} {spec} allows {next_minor(newest)}, which was never tested"


def test_the_space_installs_the_same_pins():
    """requirements.txt (what a Space installs) repeats pyproject's pins."""
    pins = requirements()
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and Requirement(line).name != "spaces":
            assert str(pins[Requirement(line).name]) == str(Requirement(line)), line


def test_the_ci_oldest_run_uses_the_tables_oldest_versions():
    ci = (ROOT / ".ci" / "run").read_text()
    table = readme_table()
    assert f'"transformers=={table["transformers"][0]}"' in ci and f'"trl=={table["trl"][0]}"' in ci
