"""How `soundmind/`'s areas stand on each other, read from the source's own imports (lazy ones too).

Each area (`api`, `data`, `reward`, `serve`, `train`, `eval`, ... and the small shared modules at the
top: `errors`, `names`, `prompt`, `annotations`) may use areas below it, never one that uses it back:
a fact two areas share lives in the lower one, or in a small module both use. And the library has
one error module: every `SoundMindError` subclass is defined in `soundmind/errors.py`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "soundmind"


def _area(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "soundmind" and len(parts) > 1 else None


def _imports(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def area_graph() -> dict[str, dict[str, set[str]]]:
    """area -> {area it imports: the files that do}."""
    graph: dict[str, dict[str, set[str]]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        source = _area("soundmind." + ".".join(path.relative_to(ROOT).with_suffix("").parts))
        for module in _imports(path):
            target = _area(module)
            if source and target and target != source and (ROOT / target).exists() | (ROOT / f"{target}.py").exists():
                graph.setdefault(source, {}).setdefault(target, set()).add(str(path.relative_to(ROOT.parent)))
    return graph


def test_no_two_areas_import_each_other():
    graph = area_graph()
    circles = [
        f"{a} -> {b} ({', '.join(sorted(graph[a][b]))}) and {b} -> {a} ({', '.join(sorted(graph[b][a]))})"
        for a in graph
        for b in graph[a]
        if a < b and a in graph.get(b, {})
    ]
    assert not circles, circles


def test_the_areas_form_no_circle_at_all():
    graph = {area: set(targets) for area, targets in area_graph().items()}
    done: set[str] = set()

    def visit(area: str, path: tuple[str, ...]) -> None:
        if area in path:
            pytest.fail("circle: " + " -> ".join((*path[path.index(area) :], area)))
        if area not in done:
            for target in sorted(graph.get(area, ())):
                visit(target, (*path, area))
            done.add(area)

    for area in sorted(graph):
        visit(area, ())


def test_every_error_type_is_defined_in_soundmind_errors():
    defined_elsewhere = []
    for path in sorted(ROOT.rglob("*.py")):
        if path == ROOT / "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                getattr(base, "id", getattr(base, "attr", "")).endswith("Error") for base in node.bases
            ):
                bases = [ast.unparse(base) for base in node.bases]
                if any(base.split(".")[-1] in _soundmind_errors() for base in bases):
                    defined_elsewhere.append(f"{path.relative_to(ROOT.parent)}: {node.name}({', '.join(bases)})")
    assert not defined_elsewhere, defined_elsewhere


def _soundmind_errors() -> set[str]:
    tree = ast.parse((ROOT / "errors.py").read_text())
    return {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
