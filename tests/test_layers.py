"""The package is layered: no import cycles (function-local imports included) and a few arrows that never point up.

Pure `ast` over tlkit/ (no TensorFlow, nothing imported), the same analysis as the import-cycle tool: every
`import` / `from ... import` of a tlkit module anywhere in a file is an edge, `from tlkit import x` is an edge to
the facade `tlkit` (tlkit/__init__.py) and to tlkit.x, and imports under `if TYPE_CHECKING:` are not edges.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tlkit"


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.AST) -> set:
    return {id(sub) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for sub in ast.walk(node)}


def import_graph(package: Path = PACKAGE) -> dict:
    """{module: {imported tlkit module: first line}} over every .py file of `package`."""
    files = {_module(p): p for p in package.rglob("*.py")}
    graph = {name: {} for name in files}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        skip = _type_checking_only(tree)
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                parts = target.split(".")
                while parts and ".".join(parts) not in files:  # the longest prefix that is a module
                    parts.pop()
                if parts and ".".join(parts) != name:
                    graph[name].setdefault(".".join(parts), node.lineno)
    return graph


def cycles(graph: dict) -> list:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter = counter + 1
        stack.append(root), on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter = counter + 1
                stack.append(child), on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


GRAPH = import_graph()


def _within(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _violations(lower, higher) -> list:
    return sorted(f"{module} -> {target} (line {line})" for module, targets in GRAPH.items() if _within(module, lower)
                  for target, line in targets.items() if _within(target, higher))


def test_the_graph_sees_the_package():
    assert len(GRAPH) > 50 and "tlkit.cli.main" in GRAPH and "tlkit.config.validate" in GRAPH
    assert "tlkit.config.schema" in GRAPH["tlkit.config.validate"]  # edges are found


def test_no_import_cycles():
    assert cycles(GRAPH) == []


def test_cycle_finder_finds_one():
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]


def test_nothing_inside_the_package_imports_its_facade():
    assert sorted(f"{module} (line {targets['tlkit']})" for module, targets in GRAPH.items() if "tlkit" in targets) == []


POST_TRAINING = ["tlkit.tools.evaluate", "tlkit.tools.predict", "tlkit.tools.export", "tlkit.cli.reproduce", "tlkit.tools.sweep", "tlkit.tools.tta",
                 "tlkit.tools.explain", "tlkit.tools.gradcam", "tlkit.tools.multilabel_report"]
ENTRY = ["tlkit.cli.main", "tlkit.cli.tool_commands", "tlkit.cli.train_command", "tlkit.cli.compose"]  # the top: command lines, Hydra


@pytest.mark.parametrize("lower, higher", [
    # the bottom: errors, util, config schema and checks, backbones
    (["tlkit.errors", "tlkit.fileio", "tlkit.version", "tlkit.config", "tlkit.backbones"],
     ["tlkit.data", "tlkit.recipe.auto", "tlkit.recipe.facts", "tlkit.recipe.preflight", "tlkit.training.stages", "tlkit.doctor",
      "tlkit.training.run_setup", "tlkit.training.trainer", "tlkit.training.rundir", "tlkit.training.lr_find", "tlkit.cli.runner", *ENTRY, *POST_TRAINING]),
    # the data layer knows nothing of training, the run directory or the tools
    (["tlkit.data"], ["tlkit.recipe.preflight", "tlkit.doctor", "tlkit.training.run_setup", "tlkit.training.trainer", "tlkit.training.rundir",
                      "tlkit.training.lr_find", "tlkit.cli.runner", *ENTRY, *POST_TRAINING]),
    # the recipe and the doctor run before training
    (["tlkit.recipe.auto", "tlkit.recipe.facts", "tlkit.doctor", "tlkit.recipe.preflight"],
     ["tlkit.training.run_setup", "tlkit.training.trainer", "tlkit.training.lr_find", "tlkit.cli.runner", *ENTRY, *POST_TRAINING]),
    # training knows nothing of the tools that read its run directory: tlkit.cli.runner hands them in
    (["tlkit.training.run_setup", "tlkit.training.trainer", "tlkit.training.feature_cache", "tlkit.training.callbacks", "tlkit.training.checkpoint",
      "tlkit.training.metrics_record", "tlkit.training.run_results", "tlkit.training.rundir", "tlkit.training.lr_find"],
     ["tlkit.cli.runner", *ENTRY, *POST_TRAINING]),
    # nothing below the command lines imports them (the tools get composing passed in)
    (["tlkit.training.trainer", "tlkit.training.run_setup", "tlkit.training.lr_find", "tlkit.cli.runner", *POST_TRAINING], ENTRY),
])
def test_layers_point_down(lower, higher):
    assert _violations(lower, higher) == []


def test_only_the_entry_points_import_the_cli():
    assert sorted(module for module, targets in GRAPH.items() if "tlkit.cli.main" in targets) == ["tlkit.__main__"]
    assert sorted(module for module, targets in GRAPH.items() if "tlkit.cli.train_command" in targets) == ["tlkit.cli.main"]
