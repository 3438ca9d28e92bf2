"""The exact planner over a fleet of GPU types: the fleet master (``fleetmaster``) by column generation
and price-and-branch (``fleetcolgen``), from the fleet greedy's plan, within the time limit.

``solve_exact_fleet`` returns, per type, the plan of the workloads the integer master gave it (each
re-verified by the kernel under that type's profile, and within its count limit), or the fleet
greedy's plan when nothing cheaper was found; the certified bound (cost per hour, over the split
options of ``pieces.scope_text`` on each type, rounded up to a cost whole GPUs can have); and each
workload's least share per type (for the share relaxation, ``planner.fleet.fleet_bound``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from igniter_opt.domain import Plan, PlanningProblem, Workload
from igniter_opt.placement import Packing, assemble_plan, verify_plan
from igniter_opt.planner import greedy
from igniter_opt.planner.exact.colgen import ROUND_EPS, least_units
from igniter_opt.planner.exact.fleetcolgen import FleetColgen, FleetTypeInput, prepare_fleet, solve_fleet_columns
from igniter_opt.planner.exact.setpart import EXTRACT_RESERVE_S, GENERATE_SHARE, MIN_ROUND_S
from igniter_opt.solver import SolveOptions, SolveOutcome, SolveStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FleetTypeSpec:
    """One GPU type of the fleet: its price and count limit."""

    price_per_gpu_hour: float
    max_count: int | None


# The planning problem of some workloads on fleet type t (its profile, the fleet's budget and options).
ProblemOf = Callable[[int, tuple[Workload, ...]], PlanningProblem]


@dataclass(frozen=True)
class ExactFleetResult:
    """What the fleet master found (see the module docstring). ``plans`` is None when the fleet greedy's
    plan stands; else one entry per type (None: no GPU of it)."""

    plans: tuple[Plan | None, ...] | None
    bound_per_hour: float
    need: list[list[float]] | None  # per workload and type: least GPUs of the type it needs alone (inf: cannot)
    message: str
    notes: tuple[str, ...]


def _inputs(ws: tuple[Workload, ...], types: Sequence[FleetTypeSpec], problem_of: ProblemOf,
            servable: list[list[bool]], members: Sequence[Sequence[int]]) -> tuple[list[int], list[FleetTypeInput]]:
    """The types that can serve some workload, and each as column generation sees it."""
    used, inputs = [], []
    for t, spec in enumerate(types):
        mine = tuple(j for j in range(len(ws)) if servable[j][t])
        if not mine:
            continue
        start = None
        if members[t]:
            part = problem_of(t, tuple(ws[j] for j in members[t]))
            start = greedy.place(part.perf_model, greedy.initial_demands(part))  # the fleet greedy's part
        inputs.append(FleetTypeInput(problem_of(t, tuple(ws[j] for j in mine)), mine,
                                     spec.price_per_gpu_hour, spec.max_count, start))
        used.append(t)
    return used, inputs


def _need(fc: FleetColgen, used: list[int], n_workloads: int, n_types: int) -> list[list[float]]:
    need = [[math.inf] * n_types for _ in range(n_workloads)]
    for t, x, s in zip(used, fc.inputs, fc.setups, strict=True):
        for i, u in least_units(s.pieces, s.items).items():
            need[x.workloads[i]][t] = u / x.problem.perf_model.max_units
    return need


def _plan_of(ws: tuple[Workload, ...], t: int, x: FleetTypeInput, problem_of: ProblemOf, chosen: list[int],
             packing: Packing) -> tuple[Plan | None, str]:
    """The packing as a plan of the workloads ``chosen`` for type t, verified; None with the reason."""
    problem = problem_of(t, tuple(ws[j] for j in chosen))
    plan = assemble_plan(problem, packing, "exact", SolveOutcome(SolveStatus.FEASIBLE))
    bad = verify_plan(plan, problem)
    if bad:
        return None, f"violates the exact model ({bad[0].message})"
    if x.max_count is not None and plan.num_gpus > x.max_count:
        return None, f"uses {plan.num_gpus} GPUs over the limit {x.max_count}"
    return plan, ""


def _plans(ws: tuple[Workload, ...], fc: FleetColgen, used: list[int], n_types: int, problem_of: ProblemOf
           ) -> tuple[tuple[Plan | None, ...] | None, str]:
    """The incumbent's packings as verified plans per fleet type, or None with the reason."""
    assert fc.inc.packings is not None
    out: list[Plan | None] = [None] * n_types
    for k, (t, x, packing) in enumerate(zip(used, fc.inputs, fc.inc.packings, strict=True)):
        if packing is None:
            continue
        chosen = sorted(w for w, (u, _) in fc.inc.chosen.items() if u == k)
        plan, why = _plan_of(ws, t, x, problem_of, chosen, packing)
        if plan is None:
            return None, f"the fleet master's plan on type {t + 1} {why}; please report it"
        out[t] = plan
    return tuple(out), ""


def solve_exact_fleet(ws: tuple[Workload, ...], types: Sequence[FleetTypeSpec], problem_of: ProblemOf,
                      servable: list[list[bool]], members: Sequence[Sequence[int]], start_cost_per_hour: float,
                      options: SolveOptions, t0: float) -> ExactFleetResult:
    """The fleet master from the fleet greedy's plan (``members[t]``: the workloads it gives type t,
    at ``start_cost_per_hour``), within ``options.time_limit_s`` counted from ``t0``. Raises
    ``ProblemError`` as ``colgen.prepare_colgen`` does; any other failure on the way returns the
    greedy's plan with the reason."""
    deadline = t0 + options.time_limit_s - EXTRACT_RESERVE_S
    used, inputs = _inputs(ws, types, problem_of, servable, members)
    fc = prepare_fleet(tuple(inputs), len(ws), start_cost_per_hour, options.threads, deadline)
    if fc is None:
        return ExactFleetResult(None, 0.0, None, "fleet master: returned the fleet greedy's plan (the time limit "
                                "was spent preparing the types; raise --time-limit)", ())
    failed = []
    try:
        solve_fleet_columns(fc, deadline, GENERATE_SHARE, MIN_ROUND_S, options.mip_rel_gap)
    except Exception as exc:  # noqa: BLE001 - solver trouble returns the best plan so far, with the reason
        log.error("fleet column generation failed: %s: %s", type(exc).__name__, exc)
        failed.append(f"fleet column generation failed ({type(exc).__name__}: {exc}); returned the best plan so far")
    notes = list(dict.fromkeys([*fc.notes, *failed]))  # each note once: rounds can repeat one
    plans, why = (None, "") if fc.inc.packings is None else _plans(ws, fc, used, len(types), problem_of)
    if why:
        log.error("DEFECT: %s", why)
        notes.append(why)
    saved = start_cost_per_hour - fc.inc.cost_per_hour
    message = (f"fleet master: {saved:g} per hour less than the fleet greedy ({start_cost_per_hour:g})" if plans
               else "fleet master: returned the fleet greedy's plan (" + (
                   "its bound proves it optimal)" if fc.proves(start_cost_per_hour)
                   else "its integer master found nothing cheaper)"))
    lp = "" if fc.lp_value is None else f"master LP {fc.lp_value:.4f} per hour over {len(fc.master.columns)} columns, "
    ended = "LP solved" if fc.converged else "LP not solved to the end"
    if fc.alone:
        alone = ", ".join(f"type {used[t] + 1} >= {math.ceil(g - ROUND_EPS)}" for t, g in sorted(fc.alone.items()))
        vectors = (f"; {fc.vectors} cheaper count vector(s) of several types ruled out by their own LP"
                   if fc.vectors else "")
        notes.append(f"bound per set of types in use (GPUs of a type serving every workload alone: {alone}{vectors})")
    notes.append(f"{lp}{ended}, {fc.pricing_rounds} exact pricing round(s), {fc.masters} integer master run(s), "
                 f"{time.perf_counter() - t0:.1f} s")
    return ExactFleetResult(plans, fc.rounded, _need(fc, used, len(ws), len(types)), message, tuple(notes))


__all__ = ["ExactFleetResult", "FleetTypeSpec", "ProblemOf", "solve_exact_fleet"]
