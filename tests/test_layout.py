"""The code's shape: the method apart from the miniature world, one path for it, small modules, no loops."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("saferdemo", "training")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path) -> set[str]:
    """Project modules a file imports (at any depth of the file: lazy imports count too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    known = modules()
    return {name for name in names if name in known}


def test_only_the_miniature_folder_imports_the_world():
    """The method (curate, grpo, rewards, safer, recipes) runs on any checkpoint without the toy world; the
    command dispatcher reaches the world's commands through their own module only."""
    for name, path in modules().items():
        if name.startswith("training.miniature"):
            continue
        allowed = {"training.miniature.commands", "training.miniature"} if name == "training.__main__" else set()
        assert not {i for i in imports(path) if i.startswith("training.miniature")} - allowed, name


def test_the_library_never_imports_training():
    for name, path in modules().items():
        if name.startswith("saferdemo"):
            assert not any(i.startswith("training") for i in imports(path)), name


def test_no_module_is_over_300_lines():
    for name, path in modules().items():
        assert len(path.read_text().splitlines()) <= 300, name


def test_no_import_loops():
    graph = {name: {i for i in imports(path) if i != name} for name, path in modules().items()}

    def visit(node, trail):
        assert node not in trail, " -> ".join([*trail, node])
        for nxt in graph.get(node, ()):
            if not nxt.startswith(node + "."):  # a package importing its own submodule is not a loop
                visit(nxt, [*trail, node])

    for name in graph:
        visit(name, [])


def calls(path: Path) -> set[str]:
    """Names a module uses (called, or passed on to be called)."""
    return {node.id for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Name)}


def test_one_curate_then_grpo_path():
    """The miniature build and `python -m training safer` both run safer.curate_and_train, the only caller
    of the curation and GRPO stages."""
    found = modules()
    assert "curate_and_train" in calls(found["training.miniature.build"])
    assert "curate_and_train" in calls(found["training.safer"])
    for stage in ("train_safer", "save_merged"):
        callers = {name for name, path in found.items() if stage in calls(path)}
        assert callers == {"training.safer"}, (stage, callers)


def test_one_parser_and_one_judge_client():
    definitions, judging_classes = {}, []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                definitions.setdefault(node.name, []).append(name)
            if isinstance(node, ast.ClassDef):
                methods = {item.name for item in node.body if isinstance(item, ast.FunctionDef)}
                if methods & {"judge", "judge_batch"}:
                    judging_classes.append(f"{name}.{node.name}")
    assert definitions["split_think"] == definitions["parse"] == ["saferdemo.segments"]
    assert definitions["parse_judgement"] == ["saferdemo.judgement"]
    assert judging_classes == ["saferdemo.judge.GRMClient"]


def test_every_folder_says_what_it_holds():
    for package in ("saferdemo", "saferdemo/engines", "saferdemo/app", "saferdemo/audit", "training",
                    "training/miniature"):
        docstring = ast.get_docstring(ast.parse((ROOT / package / "__init__.py").read_text()))
        assert docstring and len(docstring) > 100, package
