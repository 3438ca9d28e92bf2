"""Running a trace job step by step, resumably: every step's plan and record written atomically."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from igniter_opt import __version__
from igniter_opt.checks import check_problem
from igniter_opt.domain import Plan, PlanningProblem
from igniter_opt.errors import InputError, PlanError
from igniter_opt.ioutil import atomic_write_json
from igniter_opt.placement.serving import ServingModel, serving_model_for
from igniter_opt.planio import plan_from_dict, plan_to_dict
from igniter_opt.planner import run_planner
from igniter_opt.replan import SCRATCH_PLANNER, ReplanProblem, empty_plan, run_replanner
from igniter_opt.replan.diff import PlanDiff, diff_plans, relabel_gpus
from igniter_opt.replan.trace.evaluate import predicted_misses
from igniter_opt.replan.trace.parse import step_rates, step_times
from igniter_opt.replan.trace.records import JOB_SCHEMA, STEP_SCHEMA, StepRecord, TraceJob, TraceResult
from igniter_opt.replan.trace.report import summarise, write_outputs

log = logging.getLogger(__name__)



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


@dataclass
class _Replay:
    """One replay's state: the steps' times and samples, the serving model, the plans so far."""

    job: TraceJob
    out: Path
    times: list[float]
    ends: list[float]
    samples: list[list[dict[str, float]]]
    rule: ServingModel
    steps: dict[str, list[StepRecord]] = field(default_factory=dict)
    prev: dict[str, Plan] = field(default_factory=dict)
    peak_plan: Plan | None = None
    resumed: int = 0

    def misses(self, plan: Plan, k: int) -> int:
        return predicted_misses(plan, self.rule, self.job.perf, self.samples[k])

    def empty(self) -> Plan:
        return empty_plan(self.job.perf, self.job.budget)

    def peak(self, peak_problem: PlanningProblem) -> None:
        """The peak strategy's one plan: read back, or made and written as step 0."""
        got = _read_step(self.out, "peak", 0, self.times[0])
        if got is not None:
            self.peak_plan = got[1]
            return
        t0 = time.perf_counter()
        outcome = run_planner(peak_problem, SCRATCH_PLANNER[self.job.planner], self.job.options)
        plan = self.peak_plan = outcome.plan
        diff = diff_plans(self.empty(), plan)
        _write_step(self.out, _record("peak", 0, self.times[0], self.ends[0] - self.times[0], self.job.planner, plan,
                                      diff, self.misses(plan, 0), time.perf_counter() - t0, len(outcome.violations)),
                    plan, diff)

    def plan_for(self, strategy: str, problem: PlanningProblem) -> tuple[Plan, int]:
        """(plan, violations) of one strategy's step."""
        job = self.job
        if strategy == "replan":
            o = run_replanner(ReplanProblem(self.prev[strategy], problem), job.planner, job.options)
            return o.plan, len(o.violations)
        if strategy == "resolve":
            if not problem.workloads:
                return self.empty(), 0
            outcome = run_planner(problem, SCRATCH_PLANNER[job.planner], job.options)
            return relabel_gpus(outcome.plan, self.prev[strategy]), len(outcome.violations)
        assert self.peak_plan is not None
        return self.peak_plan, 0

    def step(self, k: int, strategy: str, problem: PlanningProblem) -> StepRecord:
        """One strategy's step k: read back if done, else planned, recorded and written."""
        t, e = self.times[k], self.ends[k]
        got = _read_step(self.out, strategy, k, t)
        if got is not None:
            rec, plan = got
            self.resumed += strategy == "replan"
        else:
            t0 = time.perf_counter()
            plan, viol = self.plan_for(strategy, problem)
            diff = diff_plans(self.prev[strategy], plan)
            rec = _record(strategy, k, t, e - t, self.job.planner, plan, diff, self.misses(plan, k),
                          time.perf_counter() - t0, viol)
            _write_step(self.out, rec, plan, diff)
        self.steps[strategy].append(rec)
        self.prev[strategy] = plan
        return rec


def _start(job: TraceJob, out: Path) -> tuple[_Replay, PlanningProblem]:
    """Checks (every workload at its peak: models profiled, SLOs reachable), the output folder, the replay."""
    trace = job.trace
    times = step_times(trace, job.every_s)
    ends = [*times[1:], trace.end_s]
    samples = [[dict(zip([w.name for w in trace.workloads], trace.rates_at(c).tolist(), strict=True))
                for c in trace.change_times(t, e)] for t, e in zip(times, ends, strict=True)]
    peak_problem = _problem(job, np.array([w.rate_rps for w in trace.workloads]))
    check_problem(peak_problem, strict=True)
    _check_out_dir(out, job)
    replay = _Replay(job, out, times, ends, samples, serving_model_for(peak_problem),
                     steps={s: [] for s in job.strategies})
    replay.prev = {s: replay.empty() for s in job.strategies}
    return replay, peak_problem


def run_trace_job(job: TraceJob, out_dir: str | os.PathLike[str], *, progress: bool | None = None,
                  stop_after: int | None = None,
                  on_step: Callable[[str, StepRecord], None] | None = None) -> TraceResult:
    """Replay the trace (see the package docstring), resuming what ``out_dir`` already holds.

    ``stop_after``: stop once that many steps are done (a test's stand-in for an interruption).
    ``progress``: a tqdm bar on stderr (None: only on a terminal).
    """
    from tqdm import tqdm

    out = Path(out_dir)
    replay, peak_problem = _start(job, out)
    if "peak" in job.strategies:
        replay.peak(peak_problem)
    bar = tqdm(total=len(replay.times), desc=f"replan-trace ({job.planner})", unit="step", dynamic_ncols=True,
               disable=(None if progress is None else not progress))
    complete = True
    try:
        for k, (t, e) in enumerate(zip(replay.times, replay.ends, strict=True)):
            if stop_after is not None and k >= stop_after:
                complete = False
                break
            problem = _problem(job, step_rates(job.trace, t, e, job.plan_for))
            for strategy in job.strategies:
                rec = replay.step(k, strategy, problem)
                if on_step is not None:
                    on_step(strategy, rec)
            r = replay.steps["replan"][-1]
            bar.set_postfix_str(f"t={t / 3600:.2f} h, {r.gpus} GPU(s), {r.restarts} restart(s)", refresh=False)
            bar.update(1)
    finally:
        bar.close()
    summaries = {s: summarise(s, recs) for s, recs in replay.steps.items() if recs}
    if complete:
        write_outputs(out, job, replay.steps, summaries)
    return TraceResult(out, replay.steps, summaries, complete, replay.resumed)
