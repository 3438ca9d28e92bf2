"""The exact planner: a mixed-integer program over candidate (batch, queue delay, share)
configurations, built, solved and read back in separate stages.

- ``configs``: each demand's candidate configurations with their GPU-time budgets, and dominance.
- ``data``: ``prepare``, from a problem (and a start) to ``MipData`` in named steps.
- ``model``: ``build_model``, one ``add_<family>_constraints`` per constraint family.
- ``highs``: ``solve_model``, HiGHS with a watchdog; outcomes mapped to ``SolveStatus``.
- ``extract``: the solution as a packing, and the one fallback policy.
- ``compact``: the compact model as a planner (loosened for a true bound, HiGHS checked).
- ``pieces``, ``items``, ``columns``, ``heuristic``, ``pricing``, ``lp``, ``master``, ``colgen``:
  the set-partitioning formulation (a column is one GPU's configuration) by column generation;
  ``setpart`` runs it as a planner (price-and-branch).
- ``claims``: status, bound and gap of the returned plan, the same for both formulations.

``solve`` chooses the formulation (``choose_formulation``): the compact model for small instances
in which greedy splits no workload (it proves those fastest), set partitioning otherwise (its
master chooses how each workload is split, and its LP bound does not collapse at scale).

In the compact model, demands are the greedy planner's (a workload too large for one GPU is split
the same way); in both, the greedy plan is the start and the plan to beat. Replanning (``igniter_opt.replan.exact``)
passes a ``Migration``: the first GPU slots stand for the running GPUs, each running placement
that could survive becomes a ``KeepOption``, and the objective adds the migration cost per
running placement not kept.
"""

from __future__ import annotations

import time

from igniter_opt.domain import Plan, PlanningProblem
from igniter_opt.errors import ProblemError
from igniter_opt.placement import Packing, assemble_plan, verify_plan
from igniter_opt.planner import greedy
from igniter_opt.planner.exact.claims import PLANNER_NAME, claim
from igniter_opt.planner.exact.compact import solve_compact
from igniter_opt.planner.exact.configs import Config, ConfigTable, batch_range, config_table
from igniter_opt.planner.exact.data import (
    DEFAULT_MAX_ASSIGN_VARS,
    KeepOption,
    Migration,
    MipData,
    MipDemand,
    prepare,
    slot_allowed,
)
from igniter_opt.planner.exact.extract import assignment_packing, choose_plan, extract_packing, extract_slots
from igniter_opt.planner.exact.highs import greedy_instead, highs_or_fallback, require_highs, solve_model
from igniter_opt.planner.exact.model import INSTALL_HINT, build_model, set_warm_start
from igniter_opt.planner.exact.setpart import solve_by_columns
from igniter_opt.solver import SolveOptions, SolveOutcome, SolveStatus

__all__ = [
    "COMPACT_MAX_DEMANDS", "DEFAULT_MAX_ASSIGN_VARS", "FORMULATIONS", "INSTALL_HINT", "PLANNER_NAME", "Config",
    "ConfigTable", "KeepOption", "Migration", "MipData", "MipDemand", "assignment_packing", "batch_range",
    "build_model", "choose_formulation", "choose_plan", "config_table", "extract_packing", "extract_slots",
    "greedy_instead", "highs_or_fallback", "prepare", "require_highs", "set_warm_start", "slot_allowed", "solve",
    "solve_model",
]


# The compact model is chosen up to this many demands (and only when greedy splits no workload).
COMPACT_MAX_DEMANDS = 12
FORMULATIONS = ("compact", "columns")


def choose_formulation(problem: PlanningProblem, start: Packing) -> str:
    """``compact`` for a small instance in which greedy splits no workload, else ``columns``.

    The compact model's bound holds for greedy's split only, so it is used only where greedy
    splits nothing (its scope is then "each workload on one server", ``pieces.compact_scope_text``);
    it proves such small instances optimal fastest (docs/exact.md).
    """
    split = len(start.demands) != len(problem.workloads)
    return "compact" if not split and len(start.demands) <= COMPACT_MAX_DEMANDS else "columns"


def solve(problem: PlanningProblem, options: SolveOptions | None = None, *, formulation: str | None = None) -> Plan:
    """Plan ``problem`` with a certified bound, within ``options.time_limit_s`` for the whole call.

    ``formulation``: ``compact`` or ``columns`` to force one (default: ``choose_formulation``).
    Raises ``ProblemError`` for a time limit <= 0 or a workload that fits nowhere, and
    ``SolverUnavailableError`` without HiGHS (unless ``options.fallback_greedy``: greedy's plan then).
    """
    options = options or SolveOptions()
    t0 = options.started()
    if not options.time_limit_s > 0:
        raise ProblemError(f"time limit {options.time_limit_s:g} s: it must be > 0 (e.g. --time-limit 60)")
    missing = highs_or_fallback(options)
    start = greedy.place(problem.perf_model, greedy.initial_demands(problem))
    use = formulation or choose_formulation(problem, start)
    if use not in FORMULATIONS:
        raise ProblemError(f"unknown formulation '{use}': choose one of {', '.join(FORMULATIONS)}")
    start_plan = assemble_plan(problem, start, greedy.PLANNER_NAME, SolveOutcome(SolveStatus.HEURISTIC))
    if missing is not None:
        return greedy_instead(start_plan, PLANNER_NAME, missing, start_plan.cost_per_hour, time.perf_counter() - t0)
    if use == "compact":
        plan, ev, failed = solve_compact(problem, options, t0, start)
    else:
        if verify_plan(start_plan, problem):  # greedy's plan must meet the model to be the start
            if formulation is not None:
                _no_start()
            plan, ev, failed = solve_compact(problem, options, t0, start)  # it repairs the start
        else:
            plan, ev, failed = solve_by_columns(problem, options, t0, start, start_plan)
    return claim(plan, ev, time.perf_counter() - t0, failed)


def _no_start() -> None:
    raise ProblemError("the greedy plan violates the exact model, so column generation has no start: "
                       "use the default formulation")
