"""The exact planner's solve stage: HiGHS through Pyomo's APPSI interface, with a watchdog.

Solver outcomes are mapped once to ``SolveStatus``; solver trouble is a status, never an
exception. The objective and bound reported here are the solver's own, of the model it solved.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from igniter_opt.errors import SolverUnavailableError
from igniter_opt.planner.exact.model import INSTALL_HINT, set_warm_start, solver_module
from igniter_opt.solver import SolveOptions, SolveOutcome, SolveStatus, highs_options, relative_gap

if TYPE_CHECKING:
    from pyomo.environ import ConcreteModel

    from igniter_opt.domain import Plan

log = logging.getLogger(__name__)

SOLVER_NAME = "appsi_highs"
# Seconds past the time limit after which a HiGHS run is cancelled (it can overrun in a cut round).
WATCHDOG_GRACE_S = 2.0


def require_highs() -> tuple[Any, Any]:
    """Import highspy and Pyomo's APPSI HiGHS interface, or raise SolverUnavailableError."""
    highspy, appsi = solver_module("highspy"), solver_module("pyomo.contrib.appsi.solvers")
    opt = appsi.Highs()
    if not opt.available():
        raise SolverUnavailableError(f"{INSTALL_HINT} (Pyomo cannot load highspy)")
    return highspy, opt


def highs_or_fallback(options: SolveOptions) -> str | None:
    """None when HiGHS can be loaded. When it cannot: the reason, where ``options.fallback_greedy`` asks
    for the greedy plan instead (``greedy_instead``); else ``SolverUnavailableError`` with the install hint."""
    try:
        require_highs()
    except SolverUnavailableError as exc:
        if not options.fallback_greedy:
            raise
        return str(exc)
    return None


def greedy_instead(plan: Plan, planner: str, reason: str, objective: float, wall_s: float) -> Plan:
    """A greedy ``plan`` as ``planner``'s answer when HiGHS could not be loaded (``reason``) and a fallback
    was asked for: status ``error``, no bound (nothing was solved), ``objective`` the plan's as the planner
    counts it, the reason in the message."""
    info = SolveOutcome(SolveStatus.ERROR, objective=objective, wall_s=wall_s,
                        message=f"{reason}; returned the greedy plan (a fallback was asked for: --fallback-greedy)")
    return replace(plan, planner=planner, solver=info)


def _map_termination(tc: object, has_solution: bool) -> SolveStatus:
    name = getattr(tc, "name", str(tc))
    table = {
        "optimal": SolveStatus.OPTIMAL,
        "infeasible": SolveStatus.INFEASIBLE,
        "infeasibleOrUnbounded": SolveStatus.INFEASIBLE,
        "error": SolveStatus.ERROR,
        "unknown": SolveStatus.UNKNOWN,
    }
    if name in ("maxTimeLimit", "maxIterations", "objectiveLimit", "interrupted", "minStepLength"):
        return SolveStatus.FEASIBLE if has_solution else SolveStatus.NO_SOLUTION
    return table.get(name, SolveStatus.UNKNOWN)


class _TimeLimitHit:
    """Termination of a run stopped by ``_run``'s watchdog (HiGHS overran its own time limit)."""

    name = "maxTimeLimit"


def _run(opt: Any, m: ConcreteModel, options: SolveOptions, warm_start: bool, presolve: bool = True
         ) -> tuple[object, float | None, float | None]:
    """One HiGHS run: (termination condition, incumbent objective or None, bound or None).

    HiGHS checks its time limit between phases; a long root-node cut round can overrun it by a
    minute on a 40 000-binary model. A watchdog thread cancels the run (``cancelSolve``, which
    HiGHS polls inside every LP) ``WATCHDOG_GRACE_S`` after the limit; the incumbent and bound
    found so far are kept and the run counts as a time limit.
    """
    opt.config.warmstart = bool(warm_start)
    opt.highs_options = {**highs_options(options), **({} if presolve else {"presolve": "off"})}
    highs: Any = getattr(opt, "_solver_model", None)
    fired = threading.Event()

    def cancel() -> None:
        fired.set()
        log.warning("HiGHS overran its time limit of %.1f s; cancelling the run", options.time_limit_s)
        highs.cancelSolve()

    timer = None
    if highs is not None and hasattr(highs, "cancelSolve"):
        timer = threading.Timer(options.time_limit_s + WATCHDOG_GRACE_S, cancel)
        timer.daemon = True
        timer.start()
    try:
        res = opt.solve(m)
    finally:
        if timer is not None:
            timer.cancel()
    tc = res.termination_condition
    obj = res.best_feasible_objective
    bound = res.best_objective_bound
    if fired.is_set() and getattr(tc, "name", "") not in ("optimal", "infeasible"):
        tc = _TimeLimitHit()
        info = highs.getInfo()
        sol = highs.getSolution()
        obj = info.objective_function_value if sol.value_valid else None
        bound = info.mip_dual_bound
    has_sol = obj is not None and math.isfinite(obj)
    if has_sol:
        opt.load_vars()
    bound = float(bound) if bound is not None and math.isfinite(bound) else None
    return tc, (float(obj) if has_sol else None), bound


def solve_model(m: ConcreteModel, options: SolveOptions, *, warm_start: bool = True, tiebreak: bool = True,
                presolve: bool = True) -> SolveOutcome:
    """Solve with HiGHS through APPSI, GPU cost first, then (GPUs fixed) total share.

    ``options.time_limit_s`` covers both phases. Never raises for solver trouble: it becomes
    ``ERROR`` with the reason in ``message``. ``presolve`` off: HiGHS without its presolve (the
    retry when a run contradicts itself, see ``compact``).
    """
    highspy, opt = require_highs()
    t0 = time.perf_counter()
    # HiGHS fixes its thread count at the first solve of a process; a reset makes this solve's
    # ``threads`` take effect whatever ran before (no process-wide state of our own).
    reset = getattr(highspy.Highs, "resetGlobalScheduler", None)
    if reset is not None:
        reset(True)
    opt.config.load_solution = False
    opt.config.stream_solver = bool(options.log_to_console)
    if warm_start:
        set_warm_start(m, m.data)
    build_s = getattr(m, "build_s", None)
    try:
        opt.set_instance(m)  # Pyomo -> HiGHS translation: counted as build time
        translate_s = time.perf_counter() - t0
        build_s = (build_s or 0.0) + translate_s
        options = replace(options, time_limit_s=max(0.5, options.time_limit_s - translate_s))
        t0 = time.perf_counter()
        tc, obj, bound = _run(opt, m, options, warm_start, presolve)
    except Exception as exc:  # noqa: BLE001 - any solver failure is reported, not raised
        return SolveOutcome(SolveStatus.ERROR, termination_raw=type(exc).__name__, build_s=build_s,
                            solve_s=time.perf_counter() - t0, solver_name=SOLVER_NAME,
                            message=f"HiGHS failed: {type(exc).__name__}: {exc}")
    status = _map_termination(tc, obj is not None)
    if status is SolveStatus.OPTIMAL and obj is None:
        status = SolveStatus.UNKNOWN
    raw = getattr(tc, "name", str(tc))
    share = share_bound = None
    message = None
    gpu_phase_s = time.perf_counter() - t0
    left = options.time_limit_s - gpu_phase_s
    if tiebreak and status is SolveStatus.OPTIMAL and left > 0.05:
        # phase 2 keeps phase 1's GPUs (and, replanning, at least its kept placements)
        for g in m.GPUS:
            if round(m.open[g].value or 0) == 0:
                m.open[g].fix(0)
        for j in getattr(m, "KEEPS", ()):
            m.kept[j].setlb(math.floor((m.kept[j].value or 0) + 1e-6))
        m.gpu_cost.deactivate()
        m.total_share.activate()
        try:
            tc2, share, share_bound = _run(opt, m, replace(options, time_limit_s=left), True, presolve)
            raw = f"{raw}; share phase: {getattr(tc2, 'name', str(tc2))}"
            if share is None:
                message = "the share tie-break found no solution in time; kept the GPU-optimal one"
        except Exception as exc:  # noqa: BLE001
            message = f"the share tie-break failed ({type(exc).__name__}: {exc}); kept the GPU-optimal one"
        finally:
            m.total_share.deactivate()
            m.gpu_cost.activate()
            for g in m.GPUS:
                m.open[g].unfix()
            for j in getattr(m, "KEEPS", ()):
                m.kept[j].setlb(0)
    elif tiebreak and status is SolveStatus.OPTIMAL:
        message = "no time left for the share tie-break"
    return SolveOutcome(
        status=status,
        termination_raw=raw,
        objective=obj,
        bound=bound,
        gap=relative_gap(obj, bound),
        build_s=build_s,
        solve_s=time.perf_counter() - t0,
        solver_name=SOLVER_NAME,
        message="; ".join(x for x in (f"GPU count proven in {gpu_phase_s:.2f} s of solving"
                                      if status is SolveStatus.OPTIMAL else None, message) if x),
        share_pct=share,
        share_bound_pct=share_bound,
    )
