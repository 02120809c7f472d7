"""The package by stage (issue 30): every module's imports, those inside functions included, form no circle, and a
stage imports only from the stages below it (comp/__init__.py's docstring draws the layers)."""
from __future__ import annotations

import ast
from pathlib import Path

COMP = Path(__file__).resolve().parents[1] / "comp"
# Bottom to top. A module may import from its own package and from any layer below its own.
LAYERS = [
    {"comp.io", "comp.progress", "comp.version", "comp.labels", "comp.weights", "comp.runs", "comp.ensemble"},
    {"comp.prepare"},
    {"comp.models"},
    {"comp.train"},
    {"comp.blend"},
    {"comp.tune", "comp.deploy"},
    {"comp", "comp.cli", "comp.demo", "comp.__main__"},
]


def module_names() -> dict[str, Path]:
    names = {}
    for path in COMP.rglob("*.py"):
        name = ".".join(path.relative_to(COMP.parent).with_suffix("").parts)
        names[name.removesuffix(".__init__")] = path
    return names


def import_graph() -> dict[str, set[str]]:
    """module -> the comp modules it imports, at any depth of its code."""
    names = module_names()
    graph = {}
    for name, path in names.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                found = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in names]
                targets.update(found or ([base] if base in names else []))
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name in names)
        graph[name] = targets - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One circle of imports (its modules in order, the first repeated at the end), or []."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def layer(name: str) -> tuple[int, str]:
    """(layer, unit): the unit is the sub-package for modules inside one, else the module itself."""
    for depth in (2, 1):
        unit = ".".join(name.split(".")[:depth])
        for i, units in enumerate(LAYERS):
            if unit in units:
                return i, unit
    raise AssertionError(f"{name}: in no layer of tests/test_imports.py's LAYERS; place it there")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for name, targets in graph.items():
        level, unit = layer(name)
        for target in targets:
            their_level, their_unit = layer(target)
            if their_unit != unit and their_level >= level and 0 < level < len(LAYERS) - 1:  # the top: any
                wrong.append(f"{name} -> {target}")
            if level == 0 and their_level > 0:
                wrong.append(f"{name} -> {target}")
    return sorted(wrong)


def test_no_module_imports_in_a_circle():
    cycle = find_cycle(import_graph())
    assert not cycle, "import circle: " + " -> ".join(cycle)


def test_each_stage_imports_only_from_the_stages_below_it():
    wrong = upward_imports(import_graph())
    assert not wrong, "imports from a stage above: " + "; ".join(wrong)


def test_the_checks_catch_a_planted_circle_and_an_upward_import():
    graph = import_graph()
    assert graph["comp.train.trainer"] >= {"comp.train.budget", "comp.prepare.folds", "comp.io"}  # the parse works
    planted = {**graph, "comp.prepare.folds": graph["comp.prepare.folds"] | {"comp.train.trainer"}}
    cycle = find_cycle(planted)
    assert cycle[0] == cycle[-1] and "comp.prepare.folds" in cycle and "comp.train.trainer" in cycle
    assert upward_imports(planted) == ["comp.prepare.folds -> comp.train.trainer"]
