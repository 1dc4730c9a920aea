"""The import rule of DESIGN.md "Layout", checked on every `make test`: the
rooms exist, imports point down the list only, delivery/, directory/ and
state/ never import server/ nor each other, nobody imports another
module's private name, and no two files import each other in a circle
(lazy imports inside functions count: a circle is a circle)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Higher may import lower, never the other way (DESIGN.md "Layout").
RANK = {"admin": 5, "server": 4, "delivery": 3, "directory": 3, "state": 3, "util": 2,
        "smtp_states": 1, "sasl": 1, "headers": 1, "signing": 1}
SIBLINGS = {"delivery", "directory", "state"}
SANS_IO = {"smtp_states", "sasl", "headers", "signing"}


def _modules() -> dict[str, ast.Module]:
    out = {}
    for room in RANK:
        for path in sorted((ROOT / room).glob("*.py")):
            out[f"{room}.{path.stem}"] = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return out


MODULES = _modules()


def _imports(module: str, tree: ast.Module) -> list[tuple[str, str | None]]:
    """(target module, imported name or None) of every import in `module`."""
    room = module.split(".")[0]
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = room if node.level == 1 else "" if node.level else None
            target = node.module if base is None else (f"{base}.{node.module}" if node.module else base)
            for alias in node.names:
                # `from package import module` names a module, not a value
                sub = f"{target}.{alias.name}"
                found.append((sub, None) if sub in MODULES else (target, alias.name))
    return found


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, tree in MODULES.items():
        for target, _ in _imports(module, tree):
            if target in MODULES and target != module:
                edges[module].add(target)
    return edges


def test_every_room_exists():  # DESIGN.md "Layout"
    assert all((ROOT / room / "__init__.py").is_file() for room in RANK)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_list(module):  # DESIGN.md "Layout"
    room = module.split(".")[0]
    for target, _name in _imports(module, MODULES[module]):
        top = target.split(".")[0]
        if top not in RANK or top == room:
            continue
        assert RANK[top] <= RANK[room], f"{module} imports {target}: an arrow up"
        assert not (room in SIBLINGS and top in SIBLINGS), f"{module} imports {target}: siblings"
        assert not (room in SANS_IO and top == "util"), f"{module} imports {target}: the core does no I/O"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_name_of_another_module_is_imported(module):  # DESIGN.md "Layout"
    for target, name in _imports(module, MODULES[module]):
        if target == module:
            continue
        last = target.rsplit(".", 1)[-1]
        assert not last.startswith("_") or last == "__future__", f"{module} imports the private module {target}"
        assert name is None or not name.startswith("_"), f"{module} imports {target}.{name}"


def test_no_two_files_import_each_other_in_a_circle():  # DESIGN.md "Layout"
    edges = _edges()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    circles: list[list[str]] = []

    def strong(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in edges:
        if v not in index:
            strong(v)
    assert circles == []


def test_the_check_itself_sees_an_arrow_up_and_a_circle(tmp_path):  # the test can fail
    assert RANK["server"] > RANK["delivery"]
    fake = {"delivery.a": ast.parse("from server import session\nfrom . import b"),
            "delivery.b": ast.parse("from . import a")}
    saved = dict(MODULES)
    try:
        MODULES.update(fake)
        assert ("server.session", None) in _imports("delivery.a", fake["delivery.a"]) or any(
            t.startswith("server") for t, _ in _imports("delivery.a", fake["delivery.a"]))
        edges = _edges()
        assert "delivery.b" in edges["delivery.a"] and "delivery.a" in edges["delivery.b"]
    finally:
        MODULES.clear()
        MODULES.update(saved)
