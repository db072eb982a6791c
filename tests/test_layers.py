"""The layers of docs/architecture.md hold: the import contract in pyproject.toml, no import cycles,
and function-level imports only where they defer a heavy or optional dependency, each saying so."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
from importlinter import configuration
from importlinter.application.use_cases import lint_imports

import lightcycle

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(lightcycle.__file__).resolve().parent


def test_the_import_contract_holds(capsys):
    configuration.configure()  # what the `lint-imports` command does first
    passed = lint_imports(str(ROOT / "pyproject.toml"), cache_dir=None, no_logo=True)
    report = capsys.readouterr().out
    assert passed, report
    assert "1 kept, 0 broken" in report


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for start in sorted(graph.modules):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            module, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[module] = min(low[module], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[module])
            if low[module] == index[module]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == module:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_no_module_of_lightcycle_imports_itself_through_others():
    graph = grimp.build_graph("lightcycle", cache_dir=None)  # type-checking imports count too
    assert import_cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for name in ("p", "p.a", "p.b", "p.c", "p.d"):
        graph.add_module(name)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.c")
    graph.add_import(importer="p.c", imported="p.a")
    graph.add_import(importer="p.d", imported="p.a")
    assert import_cycles(graph) == [["p.a", "p.b", "p.c"]]


def function_level_imports(path: Path) -> list[tuple[int, str, bool]]:
    """(line, source, says why) of every import inside a function of `path`; the reason is a
    `# deferred: ...` comment on the import's line or the line above it."""
    lines = path.read_text().splitlines()
    found = []
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    line = inner.lineno
                    here, above = lines[line - 1], lines[line - 2] if line > 1 else ""
                    says = "# deferred:" in here or above.strip().startswith("# deferred:")
                    found.append((line, here.strip(), says))
    return found


def test_function_level_imports_outside_the_commands_defer_a_heavy_dependency_and_say_so():
    unexplained = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] == "cli":
            continue
        for line, source, says in function_level_imports(path):
            if not says or "lightcycle" in source.split("import")[0]:
                if path.name == "__init__.py" and path.parent == PACKAGE:  # `lightcycle.Predictor` on first use
                    continue
                unexplained.append(f"{path.relative_to(PACKAGE)}:{line}: {source}")
    assert unexplained == []


def test_the_import_check_sees_an_unexplained_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "def f():\n    import json\n\n\ndef g():\n    # deferred: onnx is optional\n    import onnx\n"
    )
    assert [(line, says) for line, _, says in function_level_imports(module)] == [(2, False), (7, True)]
