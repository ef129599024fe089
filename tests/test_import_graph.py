"""The package's import graph has no circles: imports of toonlab modules always point one way (cli →
train/infer/eval → models → nn/losses → ops). Checked twice: what importing a module runs (module-level imports, with
the packages on the way), and every import including those inside functions (made lazily for start-up speed, but a
circle through them — trainer → eval hook → experiment → trainer — still tangles the rooms)."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(lazy: bool = False) -> dict[str, set[str]]:
    """toonlab module → the toonlab modules its module-level statements import (``from a import b`` counts the
    submodule ``a.b`` when it is one, else ``a``; a package's ``__init__`` is imported on the way to a submodule).
    ``lazy``: every import statement, inside functions too, module to module (no package edges)."""
    modules = {_module_name(p): p for p in (SRC / "toonlab").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        deps: set[str] = set()
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree) if lazy else tree.body:
            if isinstance(node, ast.If) and not lazy:  # e.g. `if TYPE_CHECKING:` blocks are not run
                continue
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[:len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                parts = target.split(".")
                for i in range(len(parts) if lazy else 1, len(parts) + 1):  # the packages on the way too
                    prefix = ".".join(parts[:i])
                    if prefix in modules and prefix != name and not name.startswith(prefix + "."):
                        deps.add(prefix)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of ``graph`` as [a, b, …, a], or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_finder_sees_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_toonlab_imports_have_no_circles():
    eager, lazy = import_graph(), import_graph(lazy=True)
    assert "toonlab.train.logging" in eager["toonlab.train.trainer"]  # module level
    assert "toonlab.train.eval_hook" in lazy["toonlab.train.trainer"]  # inside a method
    assert "toonlab.train.eval_hook" not in eager["toonlab.train.trainer"]
    for graph in (eager, lazy):
        cycle = find_cycle(graph)
        assert cycle is None, " → ".join(cycle)
