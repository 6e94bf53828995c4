"""The house rules of docs/ARCHITECTURE.md, kept by a test so that they stay kept.

- Rooms stay small: no file in attnviz/ or app.py over 500 lines, no function or method over 60
  lines (decorators and docstring included); bench/ and tests/ files under 700 lines.
- Imports run one way: the ground floor (blocks/, render/, inputs, preprocess) imports nothing
  above it; nothing in attnviz/ imports app.py; the library never imports the app_* modules; no
  import cycles between attnviz modules at import time.
- One hook mechanism per concern: forward hooks on models are registered only in the modules
  named in HOOK_OWNERS.

No exceptions list: a file that crosses a bound fails here.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "attnviz"

MAX_PACKAGE_FILE_LINES = 500
MAX_FUNCTION_LINES = 60
MAX_SCRIPT_FILE_LINES = 700  # bench/ and tests/

#: The ground floor: may import only from itself (and the modules listed with it).
GROUND_FLOOR = {
    "attnviz.blocks": {"attnviz.blocks"},
    "attnviz.render": {"attnviz.render"},
    "attnviz.inputs": {"attnviz.inputs"},
    "attnviz.preprocess": {"attnviz.preprocess", "attnviz.inputs"},
}

#: Where ``register_forward_hook`` may be called: gate capture, Grad-CAM's layer hook, the
#: interventions' gate replacement, and capture's on-demand block input/output reading.
HOOK_OWNERS = {"attnviz/capture.py", "attnviz/gradcam.py", "attnviz/intervene.py"}


def _package_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py")) + [ROOT / "app.py"]


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _line_count(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def _long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([d.lineno for d in node.decorator_list] + [node.lineno])
            length = node.end_lineno - start + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{path.relative_to(ROOT)}:{start} {node.name} ({length} lines)")
    return found


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """attnviz modules that ``path`` imports (resolved relative imports, submodule-precise)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # `if TYPE_CHECKING:` blocks never run: they are not imports
        nodes = [n for n in nodes if not (isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test))]
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)
    known = {_module_name(p) for p in _package_files()}
    return {name for name in found if name in known}


def test_package_files_and_app_stay_under_500_lines():
    too_long = [f"{p.relative_to(ROOT)} ({n} lines)" for p in _package_files()
                if (n := _line_count(p)) > MAX_PACKAGE_FILE_LINES]
    assert not too_long, f"split these where their concerns part: {too_long}"


def test_bench_and_test_files_stay_under_700_lines():
    files = sorted((ROOT / "bench").rglob("*.py")) + sorted((ROOT / "tests").rglob("*.py"))
    too_long = [f"{p.relative_to(ROOT)} ({n} lines)" for p in files if (n := _line_count(p)) > MAX_SCRIPT_FILE_LINES]
    assert not too_long, too_long


def test_no_function_over_60_lines():
    too_long = [f for p in _package_files() for f in _long_functions(p)]
    assert not too_long, f"split these where the work divides: {too_long}"


@pytest.mark.parametrize("floor", sorted(GROUND_FLOOR))
def test_ground_floor_imports_nothing_above_it(floor):
    allowed = GROUND_FLOOR[floor]
    files = [p for p in _package_files() if _module_name(p) == floor or _module_name(p).startswith(floor + ".")]
    assert files, f"{floor} is missing: update GROUND_FLOOR with the house"
    upward = {f"{p.relative_to(ROOT)} -> {name}" for p in files for name in _imports(p, top_level_only=False)
              if name != "attnviz" and not any(name == a or name.startswith(a + ".") for a in allowed)}
    assert not upward, sorted(upward)


def test_library_never_imports_the_app():
    library = [p for p in PACKAGE.rglob("*.py") if not p.name.startswith("app_")]
    upward = {f"{p.relative_to(ROOT)} -> {name}" for p in library for name in _imports(p, top_level_only=False)
              if name == "app" or name.rpartition(".")[2].startswith("app_")}
    assert not upward, sorted(upward)


def test_no_import_cycles_at_import_time():
    graph = {_module_name(p): _imports(p, top_level_only=True) for p in _package_files()}
    # a package's __init__ importing its own submodules is how packages are assembled, not a cycle
    for name, deps in graph.items():
        graph[name] = {d for d in deps if not d.startswith(name + ".")}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_forward_hooks_only_where_the_house_says():
    owners = {str(p.relative_to(ROOT)) for p in _package_files()
              if "register_forward_hook" in p.read_text(encoding="utf-8")}
    assert owners <= HOOK_OWNERS, f"hooks registered outside {sorted(HOOK_OWNERS)}: {sorted(owners - HOOK_OWNERS)}"
