"""What a trace job is and what it records: the job's arguments, step records and summaries."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from igniter_opt.domain import DEFAULT_ATTAINMENT, DEFAULT_MARGIN, LatencyBudget
from igniter_opt.errors import InputError
from igniter_opt.perfmodel.model import PerformanceModel
from igniter_opt.replan.trace.parse import Trace
from igniter_opt.solver import SolveOptions

log = logging.getLogger(__name__)


JOB_SCHEMA = "igniter-opt/replan-trace/v1"
STEP_SCHEMA = "igniter-opt/trace-step/v1"
STRATEGIES = ("replan", "resolve", "peak")
PLAN_FOR = ("peak", "start")
STEP_COLUMNS = ["step", "time_s", "planner", "cost", "gpus", "kept", "resized", "moved", "started", "stopped",
                "restarts", "predicted_misses", "solve_s", "duration_s", "status", "objective"]



# ---- the job -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TraceJob:
    """Everything a trace replay depends on; ``fingerprint`` is what a resumed run must match."""

    trace: Trace
    perf: PerformanceModel
    planner: str = "greedy"
    options: SolveOptions = field(default_factory=SolveOptions)
    every_s: float | None = None
    plan_for: str = "peak"
    budget: LatencyBudget = LatencyBudget.IGNITER
    margin: float = DEFAULT_MARGIN
    strategies: tuple[str, ...] = STRATEGIES
    trace_sha256: str = ""
    workloads_sha256: str | None = None
    attainment: float = DEFAULT_ATTAINMENT
    max_batch: int | None = None

    def __post_init__(self) -> None:
        if self.plan_for not in PLAN_FOR:
            raise InputError(f"plan_for must be one of {', '.join(PLAN_FOR)}, got '{self.plan_for}'")
        bad = [s for s in self.strategies if s not in STRATEGIES]
        if bad or "replan" not in self.strategies:
            raise InputError(f"strategies must include 'replan' and be among {', '.join(STRATEGIES)}, got {bad}")
        if self.options.migration_cost < 0 or not math.isfinite(self.options.migration_cost):
            raise InputError(f"the migration cost must be a number >= 0, got {self.options.migration_cost:g}")

    def fingerprint(self) -> dict[str, Any]:
        coef = json.dumps(self.perf.to_dict(), sort_keys=True).encode()
        o = self.options
        return {
            "trace_sha256": self.trace_sha256,
            "workloads_sha256": self.workloads_sha256,
            "profile": self.perf.name,
            "profile_sha256": hashlib.sha256(coef).hexdigest(),
            "planner": self.planner,
            "migration_cost": o.migration_cost,
            "every_s": self.every_s,
            "plan_for": self.plan_for,
            "latency_budget": str(self.budget),
            "margin": self.margin,
            "time_limit_s": o.time_limit_s if self.planner == "exact" else None,
            "mip_rel_gap": o.mip_rel_gap if self.planner == "exact" else None,
            "threads": o.threads if self.planner == "exact" else None,
            "strategies": list(self.strategies),
        } | ({} if self.perf.serving_overhead_ms is None else {
            "serving_overhead_ms": self.perf.serving_overhead_ms,
            "serving_max_utilization": self.perf.serving_max_utilization,
        }) | ({} if self.budget is not LatencyBudget.TAIL else {
            "attainment": self.attainment,
            "serving": None if self.perf.serving is None else asdict(self.perf.serving),
        }) | ({} if self.max_batch is None else {"max_batch": self.max_batch})


def file_sha256(path: str | os.PathLike[str]) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass(frozen=True)
class StepRecord:
    """One strategy's step: what it cost, what it changed, how it did (times in s, cost per hour)."""

    strategy: str
    step: int
    time_s: float
    duration_s: float
    planner: str
    status: str
    cost: float
    gpus: int
    kept: int
    resized: int
    moved: int
    started: int
    stopped: int
    restarts: int
    predicted_misses: int
    solve_s: float
    objective: float | None
    violations: int

    def row(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in STEP_COLUMNS}


@dataclass(frozen=True)
class StrategySummary:
    """Totals of one strategy over the trace (GPU-hours and cost integrated over time)."""

    strategy: str
    gpu_hours: float
    cost: float
    mean_gpus: float
    max_gpus: int
    restarts: int  # after the first step
    changed: int  # resized + moved + started + stopped after the first step
    predicted_misses: int
    solve_s: float


@dataclass(frozen=True)
class TraceResult:
    out_dir: Path
    steps: dict[str, list[StepRecord]]
    summaries: dict[str, StrategySummary]
    complete: bool
    resumed_steps: int = 0


