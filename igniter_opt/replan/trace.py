"""Replaying a rate trace: replan at every step and compare with re-solving and peak provisioning.

Trace (CSV): one row per (time, workload) with header ``time_s,workload,rate_rps`` and, optionally,
``model,slo_ms``. A row sets the workload's rate from ``time_s`` on, until its next row (a step
function); before its first row a workload is absent, and a rate of 0 stops it. Rows must be in
time order (``time_s`` never decreasing), at most one per (time, workload); rates must be numbers
>= 0. The workloads' models and SLOs come from a workloads CSV (``name,model,slo_ms``, any
``rate_rps`` column is ignored) or from the trace's own ``model`` and ``slo_ms`` columns (needed on
each workload's first row; later rows may leave them empty or must repeat them). The trace ends
one sampling period (the median gap between its times) after its last time.

Steps: every distinct time of the trace, or with ``every_s`` the times t0, t0 + every, ... before
the end. A step provisions for the highest rate of each workload during its interval
(``plan_for='peak'``, the default: no plan is ever below the trace) or for the rate at its start
(``'start'``: what a purely reactive job sees).

Strategies, each step from the previous step's plan of the same strategy:
- ``replan``: the migration-aware replanner (``run_replanner``) with the chosen planner and cost;
- ``resolve``: the chosen planner from scratch (``run_planner``), GPUs renamed after the previous
  plan's (``relabel_gpus``) so that what happens to coincide counts as kept: the cheapest plan
  at each step, with the most restarts;
- ``peak``: one plan, made once for every workload's peak rate over the whole trace.

Per step and strategy: cost per hour, GPUs, the diff against the previous plan (kept, resized,
moved, started, stopped; restarts = resized + moved) and predicted SLO misses: the number of
(workload, trace time) pairs in the step's interval at which the exact model says the step's plan
misses the workload's latency limit or rate (the rate split over its placements in proportion).
Totals: GPU-hours and cost integrated over the trace, restarts after the first step, misses.

Outputs (``out_dir``): ``job.json`` (the arguments; a later run with other arguments is refused),
per strategy and step ``<strategy>/step_NNNN.plan.json`` and ``step_NNNN.json`` (the step record,
written last: a step counts as done once it exists, so an interrupted job resumes after its last
completed step), ``steps.csv`` (the replan strategy), ``strategies_steps.csv`` (every strategy),
``comparison.json``, ``comparison.md`` and ``cost_gpus.png``. Every file is written atomically.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from igniter_opt import __version__
from igniter_opt.checks import check_problem
from igniter_opt.domain import LatencyBudget, Placement, Plan, PlanningProblem, Workload
from igniter_opt.errors import InputError, PlanError
from igniter_opt.ioutil import atomic_write_bytes, atomic_write_json, atomic_write_text
from igniter_opt.perfmodel.model import PerformanceModel
from igniter_opt.planio import plan_from_dict, plan_to_dict
from igniter_opt.planner import run_planner
from igniter_opt.placement import violates
from igniter_opt.placement.feasibility import predict_gpu
from igniter_opt.placement.serving import ServingModel, serving_model_for
from igniter_opt.replan import ReplanProblem, empty_plan, run_replanner
from igniter_opt.replan.diff import PlanDiff, diff_plans, relabel_gpus
from igniter_opt.solver import SolveOptions

log = logging.getLogger(__name__)

JOB_SCHEMA = "igniter-opt/replan-trace/v1"
STEP_SCHEMA = "igniter-opt/trace-step/v1"
STRATEGIES = ("replan", "resolve", "peak")
PLAN_FOR = ("peak", "start")
STEP_COLUMNS = ["step", "time_s", "planner", "cost", "gpus", "kept", "resized", "moved", "started", "stopped",
                "restarts", "predicted_misses", "solve_s", "duration_s", "status", "objective"]


# ---- the trace ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Trace:
    """Rates over time: ``rates[t, w]`` is workload w's rate (req/s) from ``times_s[t]`` on.

    ``workloads`` carry their model and SLO; their ``rate_rps`` is the peak over the trace.
    """

    workloads: tuple[Workload, ...]
    times_s: tuple[float, ...]
    rates: np.ndarray = field(repr=False)
    end_s: float
    source: str = "<trace>"

    def rates_at(self, t_s: float) -> np.ndarray:
        """Every workload's rate at time ``t_s`` (zeros before the trace starts)."""
        i = int(np.searchsorted(np.asarray(self.times_s), t_s, side="right")) - 1
        return np.zeros(len(self.workloads)) if i < 0 else self.rates[i]

    def change_times(self, start_s: float, end_s: float) -> list[float]:
        """Trace times in [start_s, end_s), with start_s first."""
        return [start_s] + [t for t in self.times_s if start_s < t < end_s]


def _num(value: str | None) -> float:
    try:
        return float(value) if value is not None and value.strip() != "" else math.nan
    except ValueError:
        return math.nan


def read_workload_specs(path: str | os.PathLike[str]) -> dict[str, tuple[str, float]]:
    """name -> (model, slo_ms) from a CSV with ``name,model,slo_ms`` (other columns ignored)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such workloads file; pass a CSV with header name,model,slo_ms")
    with p.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, skipinitialspace=True)
        cols = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in ("name", "model", "slo_ms") if c not in cols]
        if missing:
            raise InputError(f"{p}: missing column(s) {', '.join(missing)}; the header must include name,model,slo_ms")
        out: dict[str, tuple[str, float]] = {}
        for row, rec in enumerate(reader, start=2):
            rec = {str(k).strip(): (v or "").strip() for k, v in rec.items() if k is not None}
            name, model, slo = rec["name"], rec["model"], _num(rec["slo_ms"])
            if not name or not model:
                raise InputError(f"{p}: row {row}: empty name or model")
            if name in out:
                raise InputError(f"{p}: row {row}: duplicate workload name '{name}'")
            if not math.isfinite(slo) or slo <= 0:
                raise InputError(f"{p}: row {row} ('{name}'): slo_ms must be a positive number, got {rec['slo_ms']!r}")
            out[name] = (model, slo)
    if not out:
        raise InputError(f"{p}: no workloads; add at least one row")
    return out


def read_trace(path: str | os.PathLike[str], workloads: str | os.PathLike[str] | None = None,
               *, every_s: float | None = None) -> Trace:
    """Read and validate a trace (see the module docstring); every error names its row."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such trace file; pass a CSV with header time_s,workload,rate_rps")
    specs = read_workload_specs(workloads) if workloads is not None else None
    with p.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, skipinitialspace=True)
        cols = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in ("time_s", "workload", "rate_rps") if c not in cols]
        if missing:
            raise InputError(f"{p}: missing column(s) {', '.join(missing)}; the header must be "
                             "time_s,workload,rate_rps (and optionally model,slo_ms)")
        rows = [{str(k).strip(): (v or "").strip() for k, v in rec.items() if k is not None} for rec in reader]
    if not rows:
        raise InputError(f"{p}: no rows; a trace needs at least one time_s,workload,rate_rps row")
    known: dict[str, tuple[str, float]] = {}
    order: list[str] = []
    seen: dict[tuple[float, str], int] = {}
    events: list[tuple[float, str, float]] = []
    prev_t, prev_row = -math.inf, 0
    for row, rec in enumerate(rows, start=2):  # row 1 is the header
        name = rec["workload"]
        if not name:
            raise InputError(f"{p}: row {row}: empty workload name")
        t = _num(rec["time_s"])
        if not math.isfinite(t) or t < 0:
            raise InputError(f"{p}: row {row} ('{name}'): time_s must be a number >= 0, got {rec['time_s']!r}")
        if t < prev_t:
            raise InputError(f"{p}: row {row} ('{name}'): time_s {t:g} comes after time_s {prev_t:g} (row {prev_row}); "
                             "rows must be in time order")
        prev_t, prev_row = t, row
        if rec["rate_rps"] == "":
            raise InputError(f"{p}: row {row} ('{name}'): rate_rps is missing; give a rate >= 0 (0 stops it)")
        rate = _num(rec["rate_rps"])
        if not math.isfinite(rate) or rate < 0:
            raise InputError(f"{p}: row {row} ('{name}'): rate_rps must be a number >= 0, got {rec['rate_rps']!r}")
        if (t, name) in seen:
            raise InputError(f"{p}: row {row}: second rate for '{name}' at time_s {t:g} (first at row {seen[t, name]})")
        seen[t, name] = row
        model, slo = rec.get("model", ""), rec.get("slo_ms", "")
        if name not in known:
            if specs is not None:
                if name not in specs:
                    raise InputError(f"{p}: row {row}: unknown workload '{name}'; it is not in {workloads} "
                                     f"(which has: {', '.join(sorted(specs))})")
                known[name] = specs[name]
            elif model and slo:
                s = _num(slo)
                if not math.isfinite(s) or s <= 0:
                    raise InputError(f"{p}: row {row} ('{name}'): slo_ms must be a positive number, got {slo!r}")
                known[name] = (model, s)
            else:
                raise InputError(f"{p}: row {row}: unknown workload '{name}': no model and slo_ms; give them "
                                 "on its first row (columns model,slo_ms) or pass --workloads")
            order.append(name)
        km, ks = known[name]
        if (model and model != km) or (slo and _num(slo) != ks):
            raise InputError(f"{p}: row {row} ('{name}'): model/slo_ms {model or km}/{slo or ks:g} differ from "
                             f"{km}/{ks:g} given before; a workload keeps its model and SLO")
        events.append((t, name, rate))
    times = sorted({t for t, _, _ in events})
    col = {n: j for j, n in enumerate(order)}
    rates = np.zeros((len(times), len(order)))
    ti = {t: i for i, t in enumerate(times)}
    last = np.zeros(len(order))
    by_time: dict[float, list[tuple[str, float]]] = {}
    for t, n, r in events:
        by_time.setdefault(t, []).append((n, r))
    for t in times:
        for n, r in by_time[t]:
            last[col[n]] = r
        rates[ti[t]] = last
    if len(times) > 1:
        period = float(np.median(np.diff(times)))
    elif every_s is not None:
        period = float(every_s)
    else:
        raise InputError(f"{p}: the trace has a single time ({times[0]:g} s); add a later row or pass --every "
                         "to say how long it lasts")
    peak = rates.max(axis=0)
    wl = tuple(Workload(n, known[n][0], known[n][1], float(peak[col[n]])) for n in order)
    return Trace(wl, tuple(times), rates, times[-1] + period, str(p))


def step_times(trace: Trace, every_s: float | None) -> list[float]:
    """Start times of the steps (see the module docstring)."""
    if every_s is None:
        return list(trace.times_s)
    if not every_s > 0:
        raise InputError(f"--every must be > 0 s, got {every_s:g}")
    t0 = trace.times_s[0]
    n = max(1, math.ceil((trace.end_s - t0) / every_s - 1e-9))
    return [t0 + k * every_s for k in range(n)]


def step_rates(trace: Trace, start_s: float, end_s: float, plan_for: str) -> np.ndarray:
    """The rates a step provisions for: the interval's peak, or its rate at the start."""
    if plan_for == "start":
        return trace.rates_at(start_s)
    return np.max([trace.rates_at(t) for t in trace.change_times(start_s, end_s)], axis=0)


# ---- evaluation --------------------------------------------------------------------------------
def predicted_misses(plan: Plan, rule: ServingModel, perf: PerformanceModel,
                     samples: Sequence[dict[str, float]]) -> int:
    """(workload, sample) pairs at which ``plan`` misses the workload's latency limit or rate.

    Each sample is the actual rate of every workload; a workload's placements share its actual rate
    in proportion to their planned rates, and each is judged by the kernel's test at that rate
    (its serving model's limit at the placement's batch and queue delay). A workload with a rate
    and no placement misses.
    """
    preds: dict[str, list[tuple[Placement, float, float]]] = {}
    for g in plan.gpus:
        for p, (lat, thr) in zip(g.placements, predict_gpu(perf, g.placements), strict=True):
            preds.setdefault(p.workload, []).append((p, lat, thr))
    misses = 0
    for sample in samples:
        for name, rate in sample.items():
            if rate <= 0:
                continue
            placed = preds.get(name)
            if not placed:
                misses += 1
                continue
            planned = sum(p.rate_rps for p, _, _ in placed)
            for p, lat, thr in placed:
                r = rate * (p.rate_rps / planned)
                if r > 0 and violates(np.array(lat), np.array(thr),
                                      np.array(rule.limit(p.slo_ms, r, p.batch, p.queue_delay_ms)), np.array(r)):
                    misses += 1
                    break
    return misses


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
    margin: float = 0.1
    strategies: tuple[str, ...] = STRATEGIES
    trace_sha256: str = ""
    workloads_sha256: str | None = None

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
        })


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


def _record(strategy: str, k: int, t: float, dur: float, planner: str, plan: Plan, diff: PlanDiff,
            misses: int, solve_s: float, violations: int) -> StepRecord:
    c = diff.counts
    return StepRecord(strategy, k, t, dur, planner, plan.solver.status, plan.cost_per_hour, plan.num_gpus,
                      c["kept"], c["resized"], c["moved"], c["started"], c["stopped"], diff.restarts, misses,
                      round(solve_s, 4), plan.solver.objective, violations)


def _paths(out_dir: Path, strategy: str, k: int) -> tuple[Path, Path]:
    base = out_dir / strategy / f"step_{k:04d}"
    return base.with_suffix(".plan.json"), base.with_suffix(".json")


def _write_step(out_dir: Path, rec: StepRecord, plan: Plan, diff: PlanDiff) -> None:
    plan_path, rec_path = _paths(out_dir, rec.strategy, rec.step)
    atomic_write_json(plan_path, plan_to_dict(plan))
    atomic_write_json(rec_path, {"schema": STEP_SCHEMA, **asdict(rec), "plan_file": plan_path.name,
                                 "diff": diff.to_dict()})


def _read_step(out_dir: Path, strategy: str, k: int, t: float) -> tuple[StepRecord, Plan] | None:
    """A completed step read back, or None (absent; unreadable ones are redone, with a warning)."""
    plan_path, rec_path = _paths(out_dir, strategy, k)
    if not rec_path.is_file():
        return None
    try:
        d = json.loads(rec_path.read_text(encoding="utf-8"))
        if d.get("schema") != STEP_SCHEMA or d.get("time_s") != t:
            raise ValueError(f"schema {d.get('schema')!r}, time_s {d.get('time_s')!r}")
        names = StepRecord.__dataclass_fields__
        rec = StepRecord(**{k2: d[k2] for k2 in names})
        plan = plan_from_dict(json.loads(plan_path.read_text(encoding="utf-8")), str(plan_path))
    except (OSError, ValueError, KeyError, TypeError, PlanError) as exc:
        log.warning("redoing %s: %s", rec_path, exc)
        return None
    return rec, plan


def _check_out_dir(out_dir: Path, job: TraceJob) -> None:
    """Create ``out_dir`` with job.json, or check that the one there has the same arguments."""
    job_file = out_dir / "job.json"
    want = job.fingerprint()
    if job_file.is_file():
        try:
            have = json.loads(job_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            raise InputError(f"{job_file}: not valid JSON; remove {out_dir} or pass another -o") from None
        if not isinstance(have, dict) or have.get("schema") != JOB_SCHEMA:
            raise InputError(f"{job_file}: not a replan-trace job; pass another -o")
        args = have.get("args", {})
        diffs = [k for k in want if args.get(k) != want[k]]
        if diffs:
            k = diffs[0]
            more = f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""
            raise InputError(f"{out_dir} holds a job run with other arguments: {k} was {args.get(k)!r}, now "
                             f"{want[k]!r}{more}; pass another -o to start afresh, or the same arguments to resume")
        return
    if out_dir.exists() and any(out_dir.iterdir()):
        raise InputError(f"{out_dir} is not empty and holds no replan-trace job (no job.json); pass another -o")
    atomic_write_json(job_file, {"schema": JOB_SCHEMA, "version": __version__, "args": want})


def _problem(job: TraceJob, rates: np.ndarray) -> PlanningProblem:
    wl = tuple(replace(w, rate_rps=float(r)) for w, r in zip(job.trace.workloads, rates, strict=True) if r > 0)
    return PlanningProblem(wl, job.perf, job.budget, job.margin)


def run_trace_job(job: TraceJob, out_dir: str | os.PathLike[str], *, progress: bool | None = None,
                  stop_after: int | None = None,
                  on_step: Callable[[str, StepRecord], None] | None = None) -> TraceResult:
    """Replay the trace (see the module docstring), resuming what ``out_dir`` already holds.

    ``stop_after``: stop once that many steps are done (a test's stand-in for an interruption).
    ``progress``: a tqdm bar on stderr (None: only on a terminal).
    """
    out = Path(out_dir)
    trace = job.trace
    times = step_times(trace, job.every_s)
    ends = [*times[1:], trace.end_s]
    samples = [[dict(zip([w.name for w in trace.workloads], trace.rates_at(c).tolist(), strict=True))
                for c in trace.change_times(t, e)] for t, e in zip(times, ends, strict=True)]
    # every workload at its peak: models profiled, SLOs reachable (before anything is written)
    peak_problem = _problem(job, np.array([w.rate_rps for w in trace.workloads]))
    check_problem(peak_problem, strict=True)
    rule = serving_model_for(peak_problem)
    _check_out_dir(out, job)
    options = job.options

    from tqdm import tqdm

    bar = tqdm(total=len(times), desc=f"replan-trace ({job.planner})", unit="step", dynamic_ncols=True,
               disable=(None if progress is None else not progress))
    steps: dict[str, list[StepRecord]] = {s: [] for s in job.strategies}
    resumed = 0

    def misses(plan: Plan, k: int) -> int:
        return predicted_misses(plan, rule, job.perf, samples[k])

    peak_plan: Plan | None = None
    if "peak" in job.strategies:
        got = _read_step(out, "peak", 0, times[0])
        if got is not None:
            peak_plan = got[1]
        else:
            t0 = time.perf_counter()
            outcome = run_planner(peak_problem, job.planner, options)
            peak_plan = outcome.plan
            diff = diff_plans(empty_plan(job.perf, job.budget), peak_plan)
            _write_step(out, _record("peak", 0, times[0], ends[0] - times[0], job.planner, peak_plan, diff,
                                     misses(peak_plan, 0), time.perf_counter() - t0, len(outcome.violations)),
                        peak_plan, diff)
    prev: dict[str, Plan] = {s: empty_plan(job.perf, job.budget) for s in job.strategies}
    complete = True
    try:
        for k, (t, e) in enumerate(zip(times, ends, strict=True)):
            if stop_after is not None and k >= stop_after:
                complete = False
                break
            problem = _problem(job, step_rates(trace, t, e, job.plan_for))
            for strategy in job.strategies:
                got = _read_step(out, strategy, k, t)
                if got is not None:
                    rec, plan = got
                    resumed += strategy == "replan"
                else:
                    t0 = time.perf_counter()
                    if strategy == "replan":
                        o = run_replanner(ReplanProblem(prev[strategy], problem), job.planner, options)
                        plan, viol = o.plan, len(o.violations)
                    elif strategy == "resolve":
                        if problem.workloads:
                            outcome = run_planner(problem, job.planner, options)
                            plan, viol = relabel_gpus(outcome.plan, prev[strategy]), len(outcome.violations)
                        else:
                            plan, viol = empty_plan(job.perf, job.budget), 0
                    else:
                        assert peak_plan is not None
                        plan, viol = peak_plan, 0
                    solve_s = time.perf_counter() - t0
                    diff = diff_plans(prev[strategy], plan)
                    rec = _record(strategy, k, t, e - t, job.planner, plan, diff, misses(plan, k), solve_s, viol)
                    _write_step(out, rec, plan, diff)
                steps[strategy].append(rec)
                prev[strategy] = plan
                if on_step is not None:
                    on_step(strategy, rec)
            r = steps["replan"][-1]
            bar.set_postfix_str(f"t={t / 3600:.2f} h, {r.gpus} GPU(s), {r.restarts} restart(s)", refresh=False)
            bar.update(1)
    finally:
        bar.close()
    summaries = {s: summarise(s, recs) for s, recs in steps.items() if recs}
    if complete:
        write_outputs(out, job, steps, summaries)
    return TraceResult(out, steps, summaries, complete, resumed)


# ---- summary and outputs -------------------------------------------------------------------------
def summarise(strategy: str, recs: Sequence[StepRecord]) -> StrategySummary:
    hours = [r.duration_s / 3600.0 for r in recs]
    total_h = sum(hours)
    gpu_h = sum(r.gpus * h for r, h in zip(recs, hours, strict=True))
    later = recs[1:]
    return StrategySummary(
        strategy=strategy,
        gpu_hours=round(gpu_h, 6),
        cost=round(sum(r.cost * h for r, h in zip(recs, hours, strict=True)), 6),
        mean_gpus=round(gpu_h / total_h, 4) if total_h > 0 else 0.0,
        max_gpus=max(r.gpus for r in recs),
        restarts=sum(r.restarts for r in later),
        changed=sum(r.resized + r.moved + r.started + r.stopped for r in later),
        predicted_misses=sum(r.predicted_misses for r in recs),
        solve_s=round(sum(r.solve_s for r in recs), 3),
    )


def comparison(job: TraceJob, summaries: dict[str, StrategySummary]) -> dict[str, Any]:
    """The comparison summary: per strategy totals, and replan against the other two."""
    rep = summaries["replan"]
    out: dict[str, Any] = {
        "schema": "igniter-opt/replan-comparison/v1",
        "trace": job.trace.source,
        "profile": job.perf.name,
        "planner": job.planner,
        "migration_cost": job.options.migration_cost,
        "every_s": job.every_s,
        "plan_for": job.plan_for,
        "latency_budget": str(job.budget),
        "trace_hours": round((job.trace.end_s - job.trace.times_s[0]) / 3600.0, 4),
        "strategies": {s: asdict(v) for s, v in summaries.items()},
    }
    if "peak" in summaries and summaries["peak"].cost > 0:
        out["replan_saving_vs_peak_pct"] = round(100.0 * (1 - rep.cost / summaries["peak"].cost), 2)
    if "resolve" in summaries:
        res = summaries["resolve"]
        out["restarts_avoided_vs_resolve"] = res.restarts - rep.restarts
        out["replan_extra_cost_vs_resolve_pct"] = (round(100.0 * (rep.cost / res.cost - 1), 2)
                                                   if res.cost > 0 else None)
    return out


def render_comparison_md(cmp: dict[str, Any]) -> str:
    every = f"every {cmp['every_s']:g} s" if cmp["every_s"] else "at every trace time"
    setup = (f"Profile `{cmp['profile']}`, planner `{cmp['planner']}`, migration cost {cmp['migration_cost']:g}, "
             f"steps {every}, provisioning for the {cmp['plan_for']} rate of each step, budget "
             f"`{cmp['latency_budget']}`, {cmp['trace_hours']:g} h of trace.")
    lines = [
        f"# Replanning over `{cmp['trace']}`",
        "",
        setup,
        "",
        "| strategy | GPU-hours | cost | mean GPUs | max GPUs | restarts | changed placements | predicted SLO misses | solve s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s, v in cmp["strategies"].items():
        lines.append(f"| {s} | {v['gpu_hours']:.2f} | {v['cost']:.2f} | {v['mean_gpus']:.2f} | {v['max_gpus']} | "
                     f"{v['restarts']} | {v['changed']} | {v['predicted_misses']} | {v['solve_s']:.1f} |")
    lines.append("")
    if "replan_saving_vs_peak_pct" in cmp:
        lines.append(f"- replan costs {cmp['replan_saving_vs_peak_pct']:.1f} % less than provisioning once for the peaks")
    if "restarts_avoided_vs_resolve" in cmp:
        lines.append(f"- replan restarts {cmp['restarts_avoided_vs_resolve']} fewer servers than re-solving from "
                     f"scratch at every step, at {cmp['replan_extra_cost_vs_resolve_pct']:+.1f} % cost")
    lines.append("")
    lines.append("Restarts: running servers restarted (resized or moved), after the first step. Predicted SLO "
                 "misses: (workload, trace time) pairs at which the exact model says the step's plan misses.")
    return "\n".join(lines) + "\n"


def _csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    return buf.getvalue()


def write_outputs(out: Path, job: TraceJob, steps: dict[str, list[StepRecord]],
                  summaries: dict[str, StrategySummary]) -> None:
    atomic_write_text(out / "steps.csv", _csv([r.row() for r in steps["replan"]], STEP_COLUMNS))
    all_rows = [{"strategy": s, **r.row()} for s, recs in steps.items() for r in recs]
    atomic_write_text(out / "strategies_steps.csv", _csv(all_rows, ["strategy", *STEP_COLUMNS]))
    cmp = comparison(job, summaries)
    atomic_write_json(out / "comparison.json", cmp)
    atomic_write_text(out / "comparison.md", render_comparison_md(cmp))
    from igniter_opt.replan.plots import plot_cost_gpus

    atomic_write_bytes(out / "cost_gpus.png", plot_cost_gpus(steps, job.trace.end_s, title=(
        f"{job.perf.name}, {job.planner}, migration cost {job.options.migration_cost:g}")))
