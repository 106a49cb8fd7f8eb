"""The rooms and their doors: imports point one way (the README's "What is inside" picture).

Every module under ``platform/medmask``, ``envs/`` and ``experiments/`` is parsed with ``ast``;
module-level and function-level imports both count. A first-party import inside a function is
allowed only with a ``# defer: <third-party module>`` comment naming the heavy dependency it
defers (never to hide a cycle).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = (ROOT / "platform" / "medmask", ROOT / "envs", ROOT / "experiments")
FIRST_PARTY = ("medmask", "envs", "experiments", "_common", "_mim")
LEAF_MODULES = ("medmask", "medmask.columns", "medmask.keyed", "medmask.registry",
                "medmask.console")

# room -> the rooms it may import (the leaf vocabulary is open to every room)
ALLOWED: dict[str, set[str]] = {
    "leaf": set(),
    "data": {"leaf"},
    "masking": {"leaf"},
    "segmentation": {"leaf"},
    "models": {"leaf", "masking"},
    "preprocess": {"leaf", "data", "masking", "segmentation"},
    "tracking": {"leaf"},
    "eval": {"leaf", "masking", "models", "segmentation", "data"},
    "envs": {"leaf", "data", "masking", "models"},
    "rl": {"leaf", "masking", "models", "envs"},
    "methods": {"leaf", "masking", "models", "segmentation", "data"},
    "train": {"leaf", "data", "preprocess", "masking", "segmentation", "models", "methods",
              "eval", "rl", "envs", "tracking"},
    "tune": {"leaf", "preprocess", "masking", "models", "train", "tracking", "eval"},
    "experiments": {"leaf", "data", "preprocess", "masking", "segmentation", "models",
                    "methods", "eval", "rl", "envs", "train", "tune", "tracking"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "platform":
        parts = parts[1:]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def room_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] in ("_common", "_mim"):
        return "experiments"
    if parts[0] != "medmask":
        return parts[0]
    if module in LEAF_MODULES or ".".join(parts[:2]) in LEAF_MODULES:
        return "leaf"
    return parts[1]


def first_party_imports() -> list[tuple[str, str, bool, str, int]]:
    """(module, imported module, inside a function, the import's source line, line number)."""
    found = []
    for source in SOURCES:
        for path in sorted(source.rglob("*.py")):
            text = path.read_text()
            lines = text.splitlines()
            tree = ast.parse(text)
            in_function = {
                id(node)
                for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
                for node in ast.walk(fn) if isinstance(node, ast.Import | ast.ImportFrom)
            }
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    if name.split(".")[0] in FIRST_PARTY:
                        found.append((module_name(path), name, id(node) in in_function,
                                      lines[node.lineno - 1], node.lineno))
    return found


def room_edges() -> dict[tuple[str, str], set[str]]:
    edges: dict[tuple[str, str], set[str]] = {}
    for module, imported, _, _, _ in first_party_imports():
        a, b = room_of(module), room_of(imported)
        if a != b:
            edges.setdefault((a, b), set()).add(module)
    return edges


def test_every_module_belongs_to_a_known_room():
    rooms = {room_of(module) for module, *_ in first_party_imports()}
    assert rooms <= set(ALLOWED), sorted(rooms - set(ALLOWED))


def test_rooms_import_only_along_the_allowed_edges():
    bad = {f"{a} -> {b}": sorted(m) for (a, b), m in room_edges().items()
           if b not in ALLOWED.get(a, set())}
    assert not bad, f"imports against the layout: {bad}"


def test_the_room_graph_is_acyclic():
    graph: dict[str, set[str]] = {}
    for a, b in room_edges():
        graph.setdefault(a, set()).add(b)
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                raise AssertionError(f"import cycle between rooms: {' -> '.join(path + [nxt])}")
            if not state.get(nxt):
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in list(graph):
        if not state.get(node):
            visit(node, [node])


def test_function_level_first_party_imports_name_what_they_defer():
    hidden = [f"{module}:{line_no}: {line.strip()}"
              for module, _, inside, line, line_no in first_party_imports()
              if inside and "# defer:" not in line]
    assert not hidden, "function-level imports of medmask without '# defer: <module>':\n" + (
        "\n".join(hidden))


def test_the_leaf_vocabulary_imports_nothing_of_medmask():
    leaf = [(m, i) for m, i, *_ in first_party_imports() if room_of(m) == "leaf"]
    assert not leaf, leaf


@pytest.mark.parametrize("module", ["medmask.masking", "medmask.segmentation", "medmask.models"])
def test_pure_rooms_load_no_engine(module):
    heavy = ("ray", "pandas", "pyarrow", "mlflow", "hydra", "open_clip", "transformers")
    code = (f"import sys, {module}; "
            f"print(','.join(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "", f"importing {module} loaded {out}"


def test_ray_workers_import_this_clone(ray_session):
    import ray

    @ray.remote
    def where() -> str:
        import medmask

        return medmask.__file__

    path = Path(ray.get(where.remote())).resolve()
    assert path.is_relative_to(ROOT / "platform"), f"a Ray worker imported medmask from {path}"


def test_no_room_imports_another_rooms_private_modules():
    private = []
    for module, imported, _, _, line_no in first_party_imports():
        parts = imported.split(".")
        if (len(parts) > 2 and parts[0] == "medmask" and parts[2].startswith("_")
                and room_of(module) != room_of(imported)):
            private.append(f"{module}:{line_no}: {imported}")
    assert not private, "imports of another room's private modules:\n" + "\n".join(private)
