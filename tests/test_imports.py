"""The import graph of flamewatch's own modules has no circle, and importing the plugin stays
cheap.

A circle between modules works only as long as the imports inside functions or under
``TYPE_CHECKING`` that close it stay where they are, and makes the order in which modules
may be imported something to know. Every ``import`` statement counts here, wherever it is:
a lazy import (the command line's, an optional dependency's) still ties one module to another.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]

#: source folder -> the package it installs as (pyproject.toml's package-dir)
_PACKAGES = {
    "sampler": "flamewatch.sampler",
    "reports": "flamewatch.reports",
    "flask_plugin": "flamewatch.flask_plugin",
    "flask_plugin/flamewatch_pytest": "flamewatch_pytest",
}

#: TEMPORARY: the store modules being restructured (issue 18's Writer and SQL dialect work)
#: still import one another inside functions; remove once that work is merged
_EXCEPTED = frozenset(
    {
        "flamewatch.sampler.store",
        "flamewatch.sampler.store.backfill",
        "flamewatch.sampler.store.connection",
        "flamewatch.sampler.store.postgres",
        "flamewatch.sampler.store.sql",
        "flamewatch.sampler.store.sqlite",
    }
)


def module_files() -> dict[str, Path]:
    """Every flamewatch module by its dotted name."""
    modules: dict[str, Path] = {}
    for folder, package in _PACKAGES.items():
        for path in sorted((_ROOT / folder).rglob("*.py")):
            parts = path.relative_to(_ROOT / folder).with_suffix("").parts
            if folder == "flask_plugin" and parts[0] == "flamewatch_pytest":
                continue  # its own package
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((package, *parts))] = path
    return modules


def _imported_names(module: str, path: Path, modules: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """The dotted names every import statement of a module reaches, with its line."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:  # ``from package import module`` reaches the module
                submodule = f"{base}.{alias.name}"
                yield (submodule if submodule in modules else base), node.lineno


def import_graph() -> dict[str, dict[str, int]]:
    """Module -> the flamewatch modules it imports -> the line of the first such import."""
    modules = module_files()
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        edges: dict[str, int] = {}
        for name, line in _imported_names(module, path, modules):
            target = name
            while target and target not in modules:  # ``from m import a_function`` reaches m
                target = target.rpartition(".")[0]
            if target and target != module:
                edges.setdefault(target, line)
        graph[module] = edges
    return graph


def circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in graph[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    return found


def _described(component: list[str], graph: dict[str, dict[str, int]]) -> str:
    return "\n".join(
        f"  {module}:{line} imports {target}"
        for module in component
        for target, line in sorted(graph[module].items())
        if target in component
    )


def test_every_module_is_found() -> None:
    modules = module_files()
    assert "flamewatch.flask_plugin" in modules
    assert "flamewatch.flask_plugin.hooks" in modules
    assert "flamewatch.reports.cli" in modules
    assert "flamewatch.sampler.store.sqlite" in modules
    assert "flamewatch_pytest" in modules
    assert len(modules) > 60


def test_the_check_finds_a_circle() -> None:
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}
    assert circles(graph) == [["a", "b", "c"]]


def test_relative_imports_resolve_to_modules() -> None:
    graph = import_graph()
    assert "flamewatch.flask_plugin.config" in graph["flamewatch.flask_plugin.agent"]
    assert "flamewatch.sampler.store" in graph["flamewatch.flask_plugin.agent"]
    assert "flamewatch.flask_plugin.extension" in graph["flamewatch.flask_plugin"]


def test_no_import_circles() -> None:
    graph = import_graph()
    for module in _EXCEPTED:
        graph[module] = {t: line for t, line in graph[module].items() if t not in _EXCEPTED}
    found = circles(graph)
    assert not found, "import circles:\n" + "\n".join(_described(c, graph) for c in found)


def test_importing_the_plugin_leaves_the_report_writers_heavy_imports_out() -> None:
    # the dashboard shares the report's page code; plotly (~130 ms to import) is loaded only
    # when plotly.js is served or written, the command line only when Flask's CLI runs
    code = "import sys, flamewatch.flask_plugin; print(' '.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    loaded = set(result.stdout.split())
    assert "flamewatch.flask_plugin.extension" in loaded
    assert not {"plotly", "flamewatch.reports.cli", "flamewatch.reports.demo"} & loaded
