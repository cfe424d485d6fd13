"""The package's layering, read from the source: imports (lazy ones included) point one way, no cycles."""

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "fastvision"
CORE = (
    "fastvision.data",
    "fastvision.learner",
    "fastvision.callback",
    "fastvision.checkpoint",
    "fastvision.inference",
)


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(mod: str, is_pkg: bool, level: int, target: str | None) -> str:
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([target] if target else []))


def import_graph() -> dict[str, set[str]]:
    """Every fastvision module -> the fastvision modules it imports anywhere in its body."""
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_pkg, node.level, node.module) if node.level else node.module
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for t in targets:
                while t and t not in files:  # fastvision.x.y.name -> the module that defines it
                    t = t.rpartition(".")[0]
                if t and t != mod and t.startswith("fastvision"):
                    graph[mod].add(t)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(m: str) -> None:
        state[m], _ = 1, stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                found.append(stack[stack.index(n) :] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return found


def test_the_generic_core_imports_nothing_from_vision():
    graph = import_graph()
    bad = sorted(
        f"{m} -> {t}"
        for m, ts in graph.items()
        for t in ts
        if m.startswith(CORE) and t.startswith("fastvision.vision")
    )
    assert bad == [], "the generic core must not import fastvision.vision:\n" + "\n".join(bad)


def test_no_import_cycles_lazy_imports_included():
    cycles = _cycles(import_graph())
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_graph_sees_lazy_imports():
    # the checker must be able to fail: a function-level import is an edge too
    graph = import_graph()
    assert "fastvision.data.deferred" in graph["fastvision.data.collate"]
    assert "fastvision.vision.show" in graph["fastvision.vision"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_importing_the_data_layer_loads_no_vision_module():
    code = (
        "import sys, fastvision.data.load, fastvision.data.block, fastvision.data.summary; "
        "print([m for m in sys.modules if m.startswith('fastvision.vision')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
