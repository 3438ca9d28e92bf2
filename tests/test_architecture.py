"""The layering of the package (issue 11): planners above one placement kernel above the performance
model, nothing reaching around it; every import, lazy ones inside functions too, read from the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "igniter_opt"

# Lower layers never import higher ones. A module's layer is that of its longest matching prefix.
LAYERS = {
    "igniter_opt.errors": 0, "igniter_opt.ioutil": 0, "igniter_opt.solver": 0, "igniter_opt.domain": 0,
    "igniter_opt.procgroup": 0, "igniter_opt.__init__": 0,
    "igniter_opt.perfmodel": 1, "igniter_opt.planio": 1, "igniter_opt.zoo": 1, "igniter_opt.gpu": 1,
    "igniter_opt.fleet": 1,
    "igniter_opt.placement": 2,
    "igniter_opt.planner": 3, "igniter_opt.checks": 3,
    "igniter_opt.replan": 4, "igniter_opt.report": 4, "igniter_opt.problems": 4,
    # plans over GPU types by building one problem per type (problems) and running a planner on each
    "igniter_opt.planner.fleet": 4,
    "igniter_opt.apply": 5, "igniter_opt.profiling": 5, "igniter_opt.export": 5,
    "igniter_opt.cli": 6, "igniter_opt.__main__": 6,
}


def _layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len, default=None)
    assert best is not None, f"{module}: no layer; add it to LAYERS"
    return LAYERS[best]


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 2:
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (imports for annotations only)."""
    out, todo = [], [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        out.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return out


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("igniter_opt"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("igniter_opt"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    known = _modules()
    # keep the longest known module of each import (a name imported from a package is not a module)
    out = set()
    for name in found:
        while name not in known and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in known and name != module:
            out.add(name)
    return out


GRAPH = {m: _imports(p, m) for m, p in _modules().items()}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_module_imports_a_higher_layer(module: str) -> None:
    higher = sorted(d for d in GRAPH[module] if _layer(d) > _layer(module))
    assert higher == [], f"{module} (layer {_layer(module)}) imports higher layers: {higher}"


def test_planners_reach_the_performance_model_only_through_its_model_class() -> None:
    """Planners and replanners use the kernel to decide feasibility; of the performance model they
    may name the ``PerformanceModel`` class (its predictors), never fitting or profile I/O."""
    for module, deps in GRAPH.items():
        if module.startswith(("igniter_opt.planner", "igniter_opt.replan")):
            bad = sorted(d for d in deps
                         if d.startswith("igniter_opt.perfmodel") and d != "igniter_opt.perfmodel.model")
            assert bad == [], f"{module} reaches around the kernel into {bad}"


def test_the_kernel_is_the_only_place_that_decides_feasibility() -> None:
    """No module outside the kernel defines its own tolerance for latency limits or rates."""
    offenders = []
    for module, path in _modules().items():
        if module.startswith("igniter_opt.placement"):
            continue
        text = path.read_text(encoding="utf-8")
        for needle in ("REL_TOL =", "* (1 + 1e-9)", "* (1 - 1e-9)", "inference_limit_ms"):
            if needle in text:
                offenders.append(f"{module}: {needle}")
    assert offenders == []
