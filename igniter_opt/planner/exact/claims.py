"""What the exact planner claims about a plan, the same way for both formulations.

One function, ``claim``, turns a verified plan and a certified bound (in GPUs, over a stated
scope) into the plan's solver block: ``objective`` is the returned plan's cost, ``bound`` the
certified bound's cost, ``gap`` between the two, and the status is ``optimal`` exactly when they
are equal. The same three numbers are what the table, the ``note:`` line and the JSON show; a
solver's own numbers go into the message labelled as the solver's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from igniter_opt.domain import Plan
from igniter_opt.solver import SolveOutcome, SolveStatus, relative_gap

log = logging.getLogger(__name__)

PLANNER_NAME = "exact"


@dataclass
class Evidence:
    """What a solve found, besides the plan: the certified bound in GPUs (over ``scope``), the
    trivial bound, what happened (``message``), the solver's own word and numbers (``notes``)."""

    bound_gpus: int
    trivial_gpus: int | None  # None: not computed (the time limit came first)
    scope: str
    message: str
    formulation: str
    notes: list[str] = field(default_factory=list)
    termination_raw: str = ""
    solver_name: str = "highs"
    columns: int | None = None
    build_s: float | None = None
    solve_s: float | None = None
    share_pct: float | None = None
    share_bound_pct: float | None = None


def claim(plan: Plan, ev: Evidence, wall_s: float, failed: SolveStatus | None = None) -> Plan:
    """``plan`` (verified) with its solver block filled from ``ev`` (see the module docstring).

    ``failed``: the solver's status when it ended without a plan of its own (``error``,
    ``no_solution``, ``infeasible``); it is kept unless the bound proves the plan optimal anyway.
    A bound above the verified plan's GPUs is a defect: it is logged, said, and replaced by the
    smaller of the trivial bound and the plan's GPUs, so that no false bound is ever reported.
    """
    price = plan.cost_per_hour / plan.num_gpus if plan.num_gpus else 0.0
    notes = list(ev.notes)
    bound_gpus = ev.bound_gpus
    if bound_gpus > plan.num_gpus:
        log.error("DEFECT: certified bound %d GPUs above a verified plan of %d", bound_gpus, plan.num_gpus)
        notes.append(f"DEFECT: the bound ({bound_gpus} GPUs) exceeded a verified plan ({plan.num_gpus}); reported "
                     "the trivial bound instead (please report it)")
        bound_gpus = min(ev.trivial_gpus if ev.trivial_gpus is not None else 1, plan.num_gpus)
    cost = plan.cost_per_hour
    bound = bound_gpus * price if plan.num_gpus else 0.0
    proven = plan.num_gpus <= bound_gpus
    status = SolveStatus.OPTIMAL if proven else (failed or SolveStatus.FEASIBLE)
    text = "; ".join(x for x in [ev.message, ev.scope, *notes] if x)
    info = SolveOutcome(status, objective=cost, bound=bound, gap=relative_gap(cost, bound), wall_s=wall_s,
                        build_s=ev.build_s, solve_s=ev.solve_s, message=text, termination_raw=ev.termination_raw,
                        solver_name=ev.solver_name, share_pct=ev.share_pct, share_bound_pct=ev.share_bound_pct,
                        columns=ev.columns,
                        trivial_bound=None if ev.trivial_gpus is None else ev.trivial_gpus * price)
    return replace(plan, planner=PLANNER_NAME, solver=info)


def progress_line(elapsed_s: float, columns: int, bound_gpus: int, incumbent_gpus: int, lp: float | None) -> str:
    """One progress line for stderr: columns, bound, incumbent and gap so far."""
    gap = relative_gap(float(incumbent_gpus), float(bound_gpus))
    lp_text = "" if lp is None else f", master LP {lp:.4f}"
    gap_text = "" if gap is None else f", gap {100 * gap:.2f} %"
    return (f"exact: {elapsed_s:6.1f} s, {columns} columns{lp_text}, bound {bound_gpus} GPU(s), "
            f"incumbent {incumbent_gpus} GPU(s){gap_text}")
