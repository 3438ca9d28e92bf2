"""The exact planner's extract stage: the loaded solution as a packing, and the choice between
the solver's plan and the start (one fallback policy for the planner and the replanner)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from igniter_opt.domain import Plan
from igniter_opt.placement import Demand, GpuPacking, Packing, Slot
from igniter_opt.planner.exact.data import MipData
from igniter_opt.solver import SolveOutcome, SolveStatus

if TYPE_CHECKING:
    from pyomo.environ import ConcreteModel

log = logging.getLogger(__name__)


def extract_slots(m: ConcreteModel) -> dict[int, list[tuple[int, int]]]:
    """Per used GPU slot: (demand position, chosen config index) pairs in demand order, from the loaded solution."""
    gpus: dict[int, list[tuple[int, int]]] = {}
    for (d, g, k), var in m.x.items():
        v = var.value
        if v is not None and v > 0.5:
            gpus.setdefault(g, []).append((d, k))
    return {g: sorted(dk) for g, dk in gpus.items()}


def assignment_packing(data: MipData, by_slot: dict[int, list[tuple[int, int]]], slots: list[int]) -> Packing:
    """The chosen configurations of ``slots`` (in that order) as a packing: one demand per placement,
    with its configuration's batch, share and queue delay."""
    demands: list[Demand] = []
    gpus = []
    for g in slots:
        placed = []
        for d, k in by_slot[g]:
            md = data.demands[d]
            c = md.configs[k]
            demands.append(replace(md.demand, batch=c.batch, lower_units=c.units, queue_delay_ms=c.queue_delay_ms))
            placed.append(Slot(len(demands) - 1, c.units, c.batch, c.queue_delay_ms))
        gpus.append(GpuPacking(tuple(placed)))
    return Packing(tuple(demands), tuple(gpus))


def extract_packing(m: ConcreteModel) -> Packing:
    """The loaded solution's used GPUs, in slot order, as a packing."""
    by_slot = extract_slots(m)
    return assignment_packing(m.data, by_slot, sorted(by_slot))


@dataclass(frozen=True)
class Choice:
    """The plan a solve returns, why, and whether it is the solver's."""

    plan: Plan
    message: str
    from_solver: bool


def no_solution_reason(report: SolveOutcome, start_name: str) -> str:
    if report.status is SolveStatus.INFEASIBLE:
        log.error("the MIP was declared infeasible although its start satisfies it")
        return (f"returned the {start_name}: the MIP was declared infeasible although the {start_name} "
                "satisfies it (a defect; please report it)")
    return f"returned the {start_name}: the solver ended with '{report.status}' and no incumbent"


def choose_plan(report: SolveOutcome, start: Plan, start_name: str, extract: Callable[[], Plan],
                verify: Callable[[Plan], list], key: Callable[[Plan], tuple], *, start_proved: bool = False) -> Choice:
    """The solver's plan if it has one that meets the exact model and beats the start by ``key``
    (lexicographic: cost or migration objective, then changes, then share), else the start with
    the reason (``start_proved``: the bound shows the start is optimal). The one fallback policy
    of the exact planner and the exact replanner."""
    if not report.status.has_solution:
        return Choice(start, no_solution_reason(report, start_name), False)
    plan = extract()
    violations = verify(plan)
    if violations:
        log.error("DEFECT: the MIP plan violates the exact model: %s", violations[0].message)
        return Choice(start, f"returned the {start_name}: the MIP plan violates the exact model "
                             f"({violations[0].message}); please report it", False)
    if key(plan) >= key(start):
        what = "proved it optimal" if start_proved else "found nothing better"
        return Choice(start, f"returned the {start_name}: the exact planner {what}", False)
    return Choice(plan, "", True)
