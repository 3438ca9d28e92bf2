"""Running a trace job step by step, resumably: every step's plan and record written atomically."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from igniter_opt import __version__
from igniter_opt.checks import check_problem
from igniter_opt.domain import Plan, PlanningProblem
from igniter_opt.errors import InputError, PlanError
from igniter_opt.ioutil import atomic_write_json
from igniter_opt.placement.serving import serving_model_for
from igniter_opt.planio import plan_from_dict, plan_to_dict
from igniter_opt.planner import run_planner
from igniter_opt.replan import ReplanProblem, empty_plan, run_replanner
from igniter_opt.replan.diff import PlanDiff, diff_plans, relabel_gpus

log = logging.getLogger(__name__)


from igniter_opt.replan.trace.evaluate import predicted_misses
from igniter_opt.replan.trace.parse import step_rates, step_times
from igniter_opt.replan.trace.records import JOB_SCHEMA, STEP_SCHEMA, StepRecord, TraceJob, TraceResult
from igniter_opt.replan.trace.report import summarise, write_outputs


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
    return PlanningProblem(wl, job.perf, job.budget, job.margin, job.attainment, job.max_batch)


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


