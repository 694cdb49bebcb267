"""The arrows between the project's modules point one way (shared/ARCHITECTURE.md):
ray_jobs/, serving/, benchmarks/ → the CLI and recsys.stages → the task modules of recsys/.

The test reads every module's imports with `ast` (lazy imports inside functions included) and
fails on a backward arrow or a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOP_PACKAGES = ("recsys", "serving", "ray_jobs", "benchmarks")
# Task modules: the library proper. They may not import the orchestration or the CLI.
TASK_PACKAGES = ("recsys.data", "recsys.models", "recsys.train", "recsys.eval", "recsys.index", "recsys.search",
                 "recsys.forecast", "recsys.online", "recsys.k8s")
ORCHESTRATION = ("recsys.stages", "recsys.cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for top in TOP_PACKAGES for p in (REPO / top).rglob("*.py")}


def imports_of(path: Path, name: str, modules: dict[str, Path]) -> list[tuple[str, bool]]:
    """(imported project module, at module level?) for every import in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = {id(node) for node in tree.body}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # `from pkg import mod` imports the submodule when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of a function/class: its module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.append((target, id(node) in top_level))
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, list[tuple[str, bool]]]:
    modules = project_modules()
    return {name: imports_of(path, name, modules) for name, path in modules.items()}


def _under(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_the_walk_sees_the_known_arrows(graph):
    """Guard against a walk that finds nothing (the other tests would pass vacuously)."""
    assert ("recsys.online.engine", True) in graph["serving.recommender"]
    assert any(t == "recsys.train.trainer" for t, _ in graph["recsys.stages"])  # a lazy import counts
    assert len(graph) > 60


def test_the_library_never_imports_the_app(graph):
    backward = [f"{m} → {t}" for m, targets in graph.items() if m.startswith("recsys")
                for t, _ in targets if _under(t, ("serving", "ray_jobs", "benchmarks"))]
    assert not backward, "recsys/ must not import serving/, ray_jobs/ or benchmarks/: " + "; ".join(backward)


def test_task_modules_never_import_the_orchestration_or_the_cli(graph):
    backward = [f"{m} → {t}" for m, targets in graph.items() if _under(m, TASK_PACKAGES)
                for t, _ in targets if _under(t, ORCHESTRATION)]
    assert not backward, "task modules must not import recsys.stages or recsys.cli: " + "; ".join(backward)


def test_no_import_cycle(graph):
    """Lazy imports count: `recsys.cli` importing the demo lazily while the demo imported the CLI
    was a cycle all the same."""
    edges = {m: {t for t, _ in targets} for m, targets in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state and (cycle := visit(t)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state and (cycle := visit(m)):
            pytest.fail("import cycle: " + " → ".join(cycle))


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "benchmarks").glob("*.py") if p.stem != "__init__"))
def test_every_benchmark_imports(name):
    """A benchmark runs for minutes on real data: a moved import should fail here, in seconds."""
    import importlib

    importlib.import_module(f"benchmarks.{name}")
