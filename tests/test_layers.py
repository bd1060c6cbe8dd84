"""The package is layered: no import cycles (function-local imports included), and imports that never point up a layer.

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


# The layers, bottom to top: a module may import its own layer and the layers below it, never one above. A module
# is in the layer of its longest prefix listed here, and every module of the package is in one.
LAYERS = [
    ("utilities", ["tlkit.errors", "tlkit.fileio", "tlkit.version", "tlkit.text_table", "tlkit.console",
                   "tlkit.preprocessing_modes", "tlkit.plots"]),
    ("backbone specs", ["tlkit.backbones"]),
    # config validation reads the doctor's catalogue (doctor.silence) and checks trainer.strategy with
    # tlkit.training.distribute: those two sit here, below the rest of their packages
    ("config", ["tlkit.config", "tlkit.conf", "tlkit.doctor.catalogue", "tlkit.training.distribute"]),
    ("data", ["tlkit.data"]),
    ("model", ["tlkit.model"]),
    ("recipe", ["tlkit.recipe"]),  # the default recipe and the pre-flight check: before training
    ("doctor", ["tlkit.doctor"]),
    # training knows nothing of the tools that read its run directory: tlkit.cli.runner hands them in
    ("training", ["tlkit.training"]),
    ("post-training tools", ["tlkit.tools"]),
    ("entry points", ["tlkit.cli"]),
    ("facade", ["tlkit", "tlkit.__main__"]),  # these two exactly: tlkit.train and friends, `python -m tlkit`
]
COMMAND_LINES = ["tlkit.cli.main", "tlkit.cli.train_command", "tlkit.cli.tool_commands", "tlkit.cli.compose"]  # Hydra


def layer_of(module: str):
    """The index in LAYERS of the layer `module` is in (None: in none)."""
    matches = [(len(prefix), index) for index, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes
               if module == prefix or (prefix != "tlkit" and module.startswith(prefix + "."))]
    return max(matches)[1] if matches else None


def test_every_module_is_in_a_layer():
    assert sorted(module for module in GRAPH if layer_of(module) is None) == []
    assert layer_of("tlkit.doctor.catalogue") < layer_of("tlkit.doctor.findings") == layer_of("tlkit.doctor")
    assert layer_of("tlkit.training.distribute") < layer_of("tlkit.recipe.auto") < layer_of("tlkit.training.trainer")


@pytest.mark.parametrize("layer", [name for name, _ in LAYERS])
def test_layers_point_down(layer):
    index = [name for name, _ in LAYERS].index(layer)
    assert sorted(f"{module} -> {target} (line {line})" for module, targets in GRAPH.items()
                  if layer_of(module) == index for target, line in targets.items() if layer_of(target) > index) == []


def test_runner_and_reproduce_import_no_command_line():
    """The composing is passed in (tlkit.cli.reproduce gets cli.compose.compose_config): only the command lines use
    Hydra, and tlkit.train (the runner) loads none of them."""
    assert _violations(["tlkit.cli.runner", "tlkit.cli.reproduce"], COMMAND_LINES) == []


def test_only_the_entry_points_import_the_cli():
    assert sorted(module for module, targets in GRAPH.items() if "tlkit.cli.main" in targets) == ["tlkit.__main__"]
    assert sorted(module for module, targets in GRAPH.items() if "tlkit.cli.train_command" in targets) == ["tlkit.cli.main"]
    assert sorted(module for module, targets in GRAPH.items() if not _within(module, ["tlkit.cli"])
                  and any(_within(target, ["tlkit.cli"]) for target in targets)) == ["tlkit", "tlkit.__main__"]
