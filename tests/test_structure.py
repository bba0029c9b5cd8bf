"""The code's shape, checked from its source: no import circle in ``camcore``, no private
name imported from another module, no function longer than a screen, and the dashboard
never imports TensorFlow at import time."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("camcore", "dashboard")
MAX_FUNCTION_LINES = 60


def _modules(package: str) -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, module: str, known: set[str]) -> list[tuple[str, str, int]]:
    """(imported module, imported name or "", line) of every import in ``path``, at any depth
    (a function-level import is an import too). Relative imports are resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, "", node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                target = f"{base}.{alias.name}"
                # "from camcore import precision" imports the module camcore.precision
                found.append((target, "", node.lineno) if target in known else (base, alias.name, node.lineno))
    return found


def _graph(package: str) -> dict[str, set[str]]:
    modules = _modules(package)
    known = set(modules)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, _, _ in _imports(path, name, known):
            if target in known and target != name:
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _without_package_inits(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's ``__init__`` gathers its submodules; a submodule importing a sibling goes
    through it only by Python's mechanics, not by design. Edges *into* a package are kept
    when the importer is outside that package."""
    trimmed = {}
    for node, targets in graph.items():
        trimmed[node] = {t for t in targets if not (node.startswith(t + ".") and t in graph)}
    return trimmed


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_another_that_imports_it_back():
    for package in PACKAGES:
        assert _cycles(_without_package_inits(_graph(package))) == [], package


def test_no_private_name_is_imported_from_another_module():
    offenders = []
    for package in PACKAGES:
        modules = _modules(package)
        for name, path in modules.items():
            for target, imported, line in _imports(path, name, set(modules)):
                if imported.startswith("_") and not imported.startswith("__") and target.split(".")[0] in PACKAGES:
                    offenders.append(f"{path.relative_to(ROOT)}:{line} imports {imported} from {target}")
    assert offenders == []


def test_no_function_is_longer_than_a_screen():
    long = []
    for package in PACKAGES:
        for path in _modules(package).values():
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = node.end_lineno - node.lineno + 1
                    if length > MAX_FUNCTION_LINES:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert long == []


def test_importing_the_dashboard_and_the_data_tools_does_not_import_tensorflow():
    code = (
        "import sys, camcore, camcore.metrics, camcore.backends, camcore.passes, camcore.models, "
        "camcore.autoprecision, dashboard.state, dashboard.components.grid, dashboard.components.charts; "
        "print('tensorflow' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "False", result.stderr
