"""Solver options and outcomes shared by every planner."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING

from igniter_opt.errors import InputError

if TYPE_CHECKING:
    from igniter_opt.domain import Plan

# Defaults live here and only here; environment variables IGNITER_OPT_* override them, the CLI
# overrides both.
DEFAULT_TIME_LIMIT_S = 60.0
DEFAULT_MIP_REL_GAP = 1e-4
DEFAULT_THREADS = 1
# Replanning: the cost of one changed placement, in the units of the price per GPU-hour (a GPU at
# price 1/h is worth releasing if that changes at most 3 placements at 0.25).
DEFAULT_MIGRATION_COST = 0.25


class SolveStatus(StrEnum):
    OPTIMAL = "optimal"
    FEASIBLE = "feasible"
    INFEASIBLE = "infeasible"
    NO_SOLUTION = "no_solution"
    ERROR = "error"
    UNKNOWN = "unknown"
    HEURISTIC = "heuristic"  # a plan from a heuristic planner: feasible, optimality not claimed

    @property
    def has_solution(self) -> bool:
        return self in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE, SolveStatus.HEURISTIC)


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise InputError(f"environment variable {name}={raw!r} is not a number; set a number or unset it") from None


@dataclass(frozen=True)
class SolveOptions:
    """Options every planner accepts (heuristics ignore what does not apply).

    ``migration_cost`` is read by the replanners only (``igniter_opt.replan``). ``progress``, if
    given, receives one line of text now and then while a long solve runs (the exact planner:
    columns, bound, incumbent, gap); None keeps it quiet. ``fallback_greedy``: the exact planners
    (``exact``, the replanners ``exact`` and ``columns``) return the greedy plan, with status ``error``
    and the reason in its message, when HiGHS cannot be loaded, instead of raising
    ``SolverUnavailableError``. ``clock_start``: the ``time.perf_counter()`` at which the time limit's
    clock started (``run_planner`` and ``run_replanner`` set it before their problem checks, so those
    count against the limit); None: when the planner starts (``started``).
    """

    time_limit_s: float = DEFAULT_TIME_LIMIT_S
    mip_rel_gap: float = DEFAULT_MIP_REL_GAP
    threads: int = DEFAULT_THREADS
    log_to_console: bool = False
    warm_start: Plan | None = None
    migration_cost: float = DEFAULT_MIGRATION_COST
    progress: Callable[[str], None] | None = None
    fallback_greedy: bool = False
    clock_start: float | None = None

    def started(self) -> float:
        """When the time limit's clock started: ``clock_start``, or now where none was set."""
        return time.perf_counter() if self.clock_start is None else self.clock_start

    def clocked(self) -> SolveOptions:
        """These options with the clock started now, unless it already was."""
        return self if self.clock_start is not None else replace(self, clock_start=time.perf_counter())

    def within(self, time_limit_s: float) -> SolveOptions:
        """These options for a part of the work with a limit of its own, ``time_limit_s`` from when that part
        starts (its clock not started: a started one would count the time before it against the part)."""
        return replace(self, time_limit_s=time_limit_s, clock_start=None)

    @classmethod
    def from_env(cls, **overrides: object) -> SolveOptions:
        """Defaults, then IGNITER_OPT_* environment variables, then explicit (non-None) overrides."""
        base: dict[str, object] = {
            "time_limit_s": _env_float("IGNITER_OPT_TIME_LIMIT_S", DEFAULT_TIME_LIMIT_S),
            "mip_rel_gap": _env_float("IGNITER_OPT_MIP_REL_GAP", DEFAULT_MIP_REL_GAP),
            "threads": int(_env_float("IGNITER_OPT_THREADS", DEFAULT_THREADS)),
            "migration_cost": _env_float("IGNITER_OPT_MIGRATION_COST", DEFAULT_MIGRATION_COST),
        }
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SolveOutcome:
    """How a plan was found: every planner's report, mapped once to ``SolveStatus`` (times in s).

    ``objective`` is the plan's cost (with a replanner, its migration objective) and ``bound`` a
    proven lower bound on the optimum of the problem asked (never of a tightened or capped model);
    ``gap`` is ``(objective - bound) / |objective|`` when both exist. A heuristic fills what
    applies. ``termination_raw`` is the solver's own word; ``share_pct`` / ``share_bound_pct``
    report a lexicographic second objective (total share, %) where one was solved. ``columns``:
    GPU configurations column generation produced; ``trivial_bound``: the bound no formulation is
    needed for (every workload's least share alone, summed, over 100 %), for comparison.
    """

    status: SolveStatus
    objective: float | None = None
    bound: float | None = None
    gap: float | None = None
    wall_s: float | None = None
    build_s: float | None = None
    solve_s: float | None = None
    message: str | None = None
    termination_raw: str = ""
    solver_name: str = ""
    share_pct: float | None = None
    share_bound_pct: float | None = None
    columns: int | None = None
    trivial_bound: float | None = None


def status_from_text(text: str) -> SolveStatus:
    """A status read back from a file; an unrecognised one is UNKNOWN."""
    try:
        return SolveStatus(text)
    except ValueError:
        return SolveStatus.UNKNOWN


def relative_gap(objective: float | None, bound: float | None) -> float | None:
    """(incumbent - bound) / |incumbent|, clipped at 0; None when either is missing."""
    if objective is None or bound is None:
        return None
    if objective == 0:
        return 0.0 if bound >= 0 else None
    return max(0.0, (objective - bound) / abs(objective))


def bound_status(objective: float, bound: float | None) -> SolveStatus:
    """``optimal`` exactly when a certified ``bound`` meets ``objective`` (relative 1e-9), else ``feasible``."""
    return (SolveStatus.OPTIMAL if bound is not None and objective <= bound + 1e-9 * max(1.0, abs(objective))
            else SolveStatus.FEASIBLE)


def highs_options(options: SolveOptions) -> dict[str, object]:
    """Translate ``SolveOptions`` into HiGHS option keys: the one place that knows HiGHS's names."""
    out: dict[str, object] = {
        "time_limit": float(options.time_limit_s),
        "mip_rel_gap": float(options.mip_rel_gap),
        "threads": int(options.threads),
        "output_flag": bool(options.log_to_console),
        "log_to_console": bool(options.log_to_console),
    }
    if options.threads > 1:
        out["parallel"] = "on"
    return out
