"""Summaries, the comparison of strategies, and the job's output files."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from igniter_opt.ioutil import atomic_write_bytes, atomic_write_json, atomic_write_text
from igniter_opt.replan.trace.records import STEP_COLUMNS, StepRecord, StrategySummary, TraceJob

log = logging.getLogger(__name__)



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
        "| strategy | GPU-hours | cost | mean GPUs | max GPUs | restarts | changed placements "
        "| predicted SLO misses | solve s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s, v in cmp["strategies"].items():
        lines.append(f"| {s} | {v['gpu_hours']:.2f} | {v['cost']:.2f} | {v['mean_gpus']:.2f} | {v['max_gpus']} | "
                     f"{v['restarts']} | {v['changed']} | {v['predicted_misses']} | {v['solve_s']:.1f} |")
    lines.append("")
    if "replan_saving_vs_peak_pct" in cmp:
        lines.append(f"- replan costs {cmp['replan_saving_vs_peak_pct']:.1f} % less "
                     "than provisioning once for the peaks")
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
