"""Replaying a rate trace over a fleet of GPU types (``replan-trace --fleet``, issue 15).

The same steps, rates and strategies as the single-type job (this package's docstring), with fleet
plans: ``replan`` replans the previous step's fleet plan (``replan.fleet.replan_fleet``: running
workloads stay on their type, each type's part replanned), its first step planned from scratch;
``resolve`` plans the fleet from scratch at every step (``planner.fleet.solve_fleet``; each type's
GPUs renamed after the previous step's, so what happens to coincide counts as kept); ``peak`` plans
once for every workload's peak. Per step and strategy: the cost per hour at the fleet's prices, GPUs
per type, the diff summed over the types (a workload that changes type is stopped on one and
started on the other) and the predicted SLO misses, each part judged by its own type's model.

Written into ``out_dir`` (which must be empty or absent: this job does not resume): per strategy and
step the fleet plan (``<strategy>/step_NNNN.json`` and its parts beside it), ``steps.csv``,
``comparison.json`` and ``comparison.md``; every file atomically.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from igniter_opt.domain import Plan, Workload
from igniter_opt.errors import InputError
from igniter_opt.fleet import Fleet
from igniter_opt.ioutil import atomic_write_json, atomic_write_text
from igniter_opt.placement import plan_problem
from igniter_opt.placement.serving import serving_model_for
from igniter_opt.planner.fleet import FleetPlan, solve_fleet, write_fleet_plan
from igniter_opt.problems import BudgetChoice
from igniter_opt.replan import SCRATCH_PLANNER
from igniter_opt.replan.diff import diff_plans, relabel_gpus
from igniter_opt.replan.fleet import replan_fleet
from igniter_opt.replan.problem import empty_plan
from igniter_opt.replan.trace.evaluate import predicted_misses
from igniter_opt.replan.trace.parse import Trace, step_rates, step_times
from igniter_opt.solver import SolveOptions

FLEET_STRATEGIES = ("replan", "resolve", "peak")
COUNTS = ("kept", "resized", "moved", "started", "stopped")


@dataclass(frozen=True)
class FleetStep:
    """One strategy's step over the fleet."""

    strategy: str
    step: int
    time_s: float
    duration_s: float
    cost_per_hour: float
    gpus: int
    gpus_by_type: str
    kept: int
    resized: int
    moved: int
    started: int
    stopped: int
    restarts: int
    predicted_misses: int
    solve_s: float


def _workloads(trace: Trace, start_s: float, end_s: float, plan_for: str) -> tuple[Workload, ...]:
    rates = step_rates(trace, start_s, end_s, plan_for)
    return tuple(replace(w, rate_rps=float(r)) for w, r in zip(trace.workloads, rates, strict=True) if r > 0)


def _parts(fp: FleetPlan) -> dict[str, Plan]:
    return {p.gpu_type.name: p.plan for p in fp.parts}


def _diff_counts(fleet: Fleet, old: dict[str, Plan], new: dict[str, Plan], relabel: bool) -> dict[str, int]:
    """Placement changes summed over the fleet's types (an absent part is an empty plan)."""
    out = dict.fromkeys((*COUNTS, "restarts"), 0)
    for ft, perf in zip(fleet.types, fleet.models, strict=True):
        before = old.get(ft.name) or empty_plan(perf)
        after = new.get(ft.name) or empty_plan(perf)
        if relabel and after.gpus:
            after = relabel_gpus(after, before)
        d = diff_plans(before, after)
        for k in COUNTS:
            out[k] += d.count(k)
        out["restarts"] += d.restarts
    return out


def _misses(fleet: Fleet, parts: dict[str, Plan], samples: list[dict[str, float]]) -> int:
    """Predicted misses of the step's fleet plan: each part judged by its type's model at the trace's rates;
    a workload with a rate and no placement on any type misses."""
    total = 0
    placed: set[str] = set()
    for name, plan in parts.items():
        perf = fleet.models[fleet.type_names().index(name)]
        mine = {p.workload for _, p in plan.placements()}
        placed |= mine
        problem = plan_problem(plan, perf)
        total += predicted_misses(plan, serving_model_for(problem), problem.perf_model,
                                  [{n: r for n, r in s.items() if n in mine} for s in samples])
    return total + sum(1 for s in samples for n, r in s.items() if r > 0 and n not in placed)


def run_fleet_trace(trace: Trace, fleet: Fleet, choice: BudgetChoice, planner: str, options: SolveOptions,
                    every_s: float | None, plan_for: str, out_dir: Path,
                    on_step: Callable[[FleetStep], None] | None = None) -> dict[str, list[FleetStep]]:
    """Replay ``trace`` over ``fleet`` with every strategy (see the module docstring)."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} is not empty: a fleet trace job does not resume; pass an empty or new -o")
    times = step_times(trace, every_s)
    ends = [*times[1:], trace.end_s]
    samples = [[dict(zip([w.name for w in trace.workloads], trace.rates_at(c).tolist(), strict=True))
                for c in trace.change_times(t, e)] for t, e in zip(times, ends, strict=True)]
    steps: dict[str, list[FleetStep]] = {s: [] for s in FLEET_STRATEGIES}
    prev: dict[str, dict[str, Plan]] = {s: {} for s in FLEET_STRATEGIES}
    peak = None
    for k, (t, e) in enumerate(zip(times, ends, strict=True)):
        ws = _workloads(trace, t, e, plan_for)
        for strategy in FLEET_STRATEGIES:
            t0 = time.perf_counter()
            if strategy == "peak":
                if peak is None:
                    peak = solve_fleet(trace.workloads, fleet, choice, SCRATCH_PLANNER[planner], options)
                fp = peak
            elif not ws:
                fp = FleetPlan((), planner)
            elif strategy == "replan" and prev["replan"]:
                fp = replan_fleet(prev["replan"], ws, fleet, planner, options).plan
            else:
                fp = solve_fleet(ws, fleet, choice, SCRATCH_PLANNER[planner], options)
            solve_s = time.perf_counter() - t0
            parts = _parts(fp)
            counts = _diff_counts(fleet, prev[strategy], parts, relabel=strategy == "resolve")
            rec = FleetStep(strategy, k, t, e - t, round(fp.cost_per_hour, 6), fp.num_gpus,
                            " ".join(f"{n}:{g}" for n, g in fp.gpus_by_type().items()),
                            kept=counts["kept"], resized=counts["resized"], moved=counts["moved"],
                            started=counts["started"], stopped=counts["stopped"], restarts=counts["restarts"],
                            predicted_misses=_misses(fleet, parts, samples[k]), solve_s=round(solve_s, 4))
            if fp.parts:
                write_fleet_plan(fp, out / strategy / f"step_{k:04d}.json")
            steps[strategy].append(rec)
            prev[strategy] = parts
            if on_step is not None:
                on_step(rec)
    write_fleet_outputs(out, steps)
    return steps


def summarise_fleet(recs: list[FleetStep]) -> dict[str, float | int]:
    """Cost integrated over the trace (per-hour cost x hours), mean GPUs, restarts after the first step,
    changes, misses and planning time."""
    hours = sum(r.duration_s for r in recs) / 3600.0
    return {
        "cost": round(sum(r.cost_per_hour * r.duration_s / 3600.0 for r in recs), 6),
        "mean_cost_per_hour": round(sum(r.cost_per_hour * r.duration_s for r in recs) / max(1e-9, 3600 * hours), 6),
        "mean_gpus": round(sum(r.gpus * r.duration_s for r in recs) / max(1e-9, 3600 * hours), 4),
        "max_gpus": max((r.gpus for r in recs), default=0),
        "restarts": sum(r.restarts for r in recs[1:]),
        "changed": sum(r.resized + r.moved + r.started + r.stopped for r in recs[1:]),
        "predicted_misses": sum(r.predicted_misses for r in recs),
        "solve_s": round(sum(r.solve_s for r in recs), 3),
    }


def write_fleet_outputs(out: Path, steps: dict[str, list[FleetStep]]) -> None:
    rows = [asdict(r) for recs in steps.values() for r in recs]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(FleetStep.__dataclass_fields__))
    w.writeheader()
    w.writerows(rows)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "steps.csv", buf.getvalue())
    totals = {s: summarise_fleet(recs) for s, recs in steps.items() if recs}
    atomic_write_json(out / "comparison.json", {"schema": "igniter-opt/fleet-trace/v1", "strategies": totals})
    atomic_write_text(out / "comparison.md", render_fleet_trace(totals))


def render_fleet_trace(totals: dict[str, dict[str, float | int]]) -> str:
    head = ["strategy", "cost", "mean cost/h", "mean GPUs", "max GPUs", "restarts", "changed", "predicted misses",
            "solve s"]
    keys = ["cost", "mean_cost_per_hour", "mean_gpus", "max_gpus", "restarts", "changed", "predicted_misses", "solve_s"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    lines += [f"| {s} | " + " | ".join(f"{t[k]:g}" for k in keys) + " |" for s, t in totals.items()]
    return "\n".join(lines) + "\n"


__all__ = ["FLEET_STRATEGIES", "FleetStep", "render_fleet_trace", "run_fleet_trace", "summarise_fleet",
           "write_fleet_outputs"]
