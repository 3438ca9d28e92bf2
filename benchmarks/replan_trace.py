"""Replanning over the shipped diurnal trace: greedy and exact, with and without a migration cost.

Runs ``igniter-opt replan-trace``'s job (``igniter_opt.replan.trace.run_trace_job``) on
``examples/trace_paper_mix.csv`` with the shipped H100 profile, replanning every hour for the
hour's peak rates:

- greedy and exact, each at migration cost 0.25 (with the resolve-from-scratch and peak strategies)
  and at 0 (the replan strategy only: the other two do not depend on the cost);
- exact with ``--time-limit`` seconds per step (default 5) and one HiGHS thread; with
  ``--long-time-limit S`` also the exact replan at cost 0.25 with S seconds per step (about
  24 x S seconds more), to see what more solver time buys.

Each run's job folder goes under ``--work`` (default ``build/replan_trace``, git-ignored; a run
cut off resumes there). Writes ``benchmarks/results/replan_trace_<profile>.csv`` (one row per run,
strategy and step), ``.md`` (the totals and the two headline figures) and ``.png`` (GPUs and
cumulative restarts over the day).

    python benchmarks/replan_trace.py
    python benchmarks/replan_trace.py --time-limit 10 --fresh
    python benchmarks/replan_trace.py --long-time-limit 30     # the committed results
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from igniter_opt.ioutil import atomic_write_bytes, atomic_write_text
from igniter_opt.perfmodel import load_profile
from igniter_opt.replan.trace import STEP_COLUMNS, TraceJob, file_sha256, read_trace, run_trace_job
from igniter_opt.solver import SolveOptions

TRACE = HERE.parent / "examples" / "trace_paper_mix.csv"
RESULTS = HERE / "results"
EVERY_S = 3600.0
# (planner, migration cost, strategies, time limit per step or None: --time-limit)
RUNS: list[tuple[str, float, tuple[str, ...], float | None]] = [
    ("greedy", 0.25, ("replan", "resolve", "peak"), None),
    ("greedy", 0.0, ("replan",), None),
    ("exact", 0.25, ("replan", "resolve", "peak"), None),
    ("exact", 0.0, ("replan",), None),
]


def run(profile: str, time_limit_s: float, work: Path, fresh: bool, long_time_limit_s: float = 0.0) -> None:
    perf = load_profile(profile)
    trace = read_trace(TRACE)
    rows: list[dict[str, object]] = []
    totals: list[dict[str, object]] = []
    runs = list(RUNS)
    if long_time_limit_s > 0:
        runs.append(("exact", 0.25, ("replan",), long_time_limit_s))
    for planner, cost, strategies, limit in runs:
        limit = time_limit_s if limit is None else limit
        out = work / (f"{planner}_c{cost:g}" + (f"_t{limit:g}" if planner == "exact" and limit != time_limit_s else ""))
        if fresh and out.exists():
            shutil.rmtree(out)
        options = SolveOptions(time_limit_s=limit, threads=1, migration_cost=cost)
        job = TraceJob(trace, perf, planner, options, EVERY_S, "peak", strategies=strategies,
                       trace_sha256=file_sha256(TRACE))
        t0 = time.perf_counter()
        res = run_trace_job(job, out, progress=True)
        wall = time.perf_counter() - t0
        print(f"{planner} C={cost:g}: {wall:.1f} s ({res.resumed_steps} step(s) resumed)", file=sys.stderr)
        tl = limit if planner == "exact" else None
        better = sum(1 for r in res.steps["replan"] if r.planner == "exact" and _beat_greedy(out, r.step))
        for strategy, recs in res.steps.items():
            for r in recs:
                rows.append({"planner": planner, "migration_cost": cost, "strategy": strategy, "time_limit_s": tl,
                             **r.row()})
            s = res.summaries[strategy]
            totals.append({"planner": planner, "migration_cost": cost if strategy == "replan" else None,
                           "strategy": strategy, "time_limit_s": tl,
                           "beat_greedy_steps": better if planner == "exact" and strategy == "replan" else None,
                           **{k: getattr(s, k) for k in (
                               "gpu_hours", "cost", "mean_gpus", "max_gpus", "restarts", "changed",
                               "predicted_misses", "solve_s")}})
    name = f"replan_trace_{perf.name}"
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["planner", "migration_cost", "strategy", "time_limit_s", *STEP_COLUMNS],
                       lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(RESULTS / f"{name}.csv", buf.getvalue())
    atomic_write_text(RESULTS / f"{name}.md", render_md(totals, perf.name, time_limit_s))
    print(render_md(totals, perf.name, time_limit_s))
    atomic_write_bytes(RESULTS / f"{name}.png", plot(rows, trace.end_s, perf.name))
    atomic_write_text(RESULTS / f"{name}.json", json.dumps({"totals": totals, "machine": machine(),
                                                             "time_limit_s": time_limit_s}, indent=2) + "\n")


def _beat_greedy(out: Path, step: int) -> bool:
    """Whether the exact replanner's plan at ``step`` beat its greedy start (its solver message says)."""
    plan = json.loads((out / "replan" / f"step_{step:04d}.plan.json").read_text())
    message = str(plan["solver"].get("message", ""))
    return message.startswith(("better than the greedy replan", "as cheap as the greedy"))


def machine() -> dict[str, object]:
    from importlib.metadata import version

    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "highspy": version("highspy"), "processor": platform.processor() or platform.machine()}


def _get(totals: list[dict[str, object]], planner: str, strategy: str, cost: float | None = None,
         time_limit_s: float | None = None) -> dict[str, object]:
    return next(t for t in totals if t["planner"] == planner and t["strategy"] == strategy
                and (cost is None or t["migration_cost"] == cost)
                and (planner != "exact" or time_limit_s is None or t["time_limit_s"] == time_limit_s))


def render_md(totals: list[dict[str, object]], profile: str, time_limit_s: float) -> str:
    m = machine()
    setup = (f"`examples/trace_paper_mix.csv` (the paper's 12-workload mix over 24 h, seeded), profile "
             f"`{profile}`, a step every {EVERY_S:g} s provisioning for the hour's peak rates, budget `igniter`; "
             f"exact: {time_limit_s:g} s time limit per step, 1 HiGHS thread. Machine: {m['platform']}, "
             f"{m['cpus']} CPUs, Python {m['python']}, highspy {m['highspy']} (no GPU: everything here is the "
             "performance model's prediction).")
    header = ("| planner | time limit s | strategy | migration cost | GPU-hours | mean GPUs | max GPUs | restarts | "
              "changed | predicted SLO misses | exact beat its greedy start | solve s |")
    lines = [f"# Replanning over the shipped diurnal trace ({profile})", "", setup, "", header,
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for t in totals:
        c = "-" if t["migration_cost"] is None else f"{t['migration_cost']:g}"
        tl = "-" if t["time_limit_s"] is None else f"{t['time_limit_s']:g}"
        beat = "-" if t["beat_greedy_steps"] is None else f"{t['beat_greedy_steps']} of 24 steps"
        lines.append(f"| {t['planner']} | {tl} | {t['strategy']} | {c} | {t['gpu_hours']:.0f} | {t['mean_gpus']:.2f} | "
                     f"{t['max_gpus']} | {t['restarts']} | {t['changed']} | {t['predicted_misses']} | {beat} | "
                     f"{t['solve_s']:.1f} |")
    lines += ["", ("Restarts: running servers restarted (resized or moved) after the first step; changed also "
                   "counts placements started and stopped. GPU-hours = cost (price 1 per GPU-hour). Solve s: the "
                   "strategy's planning time summed over the steps (exact: time limit per step, plus model "
                   "building)."), ""]
    def against(planner: str, rep: dict[str, Any]) -> tuple[float, int, float, dict[str, Any]]:
        """(% saved vs peak provisioning, restarts avoided vs re-solving, % extra cost vs re-solving, re-solve row)."""
        peak = _get(totals, planner, "peak", time_limit_s=time_limit_s)
        res = _get(totals, planner, "resolve", time_limit_s=time_limit_s)
        return (100.0 * (1.0 - float(rep["cost"]) / float(peak["cost"])),
                int(res["restarts"]) - int(rep["restarts"]),
                100.0 * (float(rep["cost"]) / float(res["cost"]) - 1.0), res)

    for planner in ("greedy", "exact"):
        for cost in (0.25, 0.0):
            rep = _get(totals, planner, "replan", cost, time_limit_s)
            saving, avoided, extra, res = against(planner, rep)
            lines.append(f"- {planner}, migration cost {cost:g}: replanning costs {saving:.1f} % less than "
                         f"provisioning once for the peaks; {avoided} restarts "
                         f"fewer than re-solving from scratch every hour ({rep['restarts']} vs {res['restarts']}), "
                         f"at {extra:+.1f} % cost")
    for t in totals:
        if t["planner"] == "exact" and t["strategy"] == "replan" and t["time_limit_s"] != time_limit_s:
            saving, avoided, extra, res = against("exact", t)
            lines.append(f"- exact with {t['time_limit_s']:g} s per step, migration cost {t['migration_cost']:g}: "
                         f"{saving:.1f} % less than peak provisioning; {avoided} "
                         f"restarts fewer than re-solving ({t['restarts']} vs {res['restarts']}), at {extra:+.1f} % "
                         f"cost; it beat its greedy start at {t['beat_greedy_steps']} of 24 steps")
    return "\n".join(lines) + "\n"


STYLE = {
    ("exact", 0.25, "replan"): ("tab:blue", "-", "replan exact, C=0.25"),
    ("exact", 0.0, "replan"): ("tab:green", "-", "replan exact, C=0"),
    ("greedy", 0.25, "replan"): ("tab:purple", "-.", "replan greedy, C=0.25"),
    ("exact", 0.25, "resolve"): ("tab:orange", "--", "re-solve exact every hour"),
    ("exact", 0.25, "peak"): ("tab:gray", ":", "peak provisioning (exact)"),
}


def plot(rows: list[dict[str, object]], end_s: float, profile: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_g, ax_r) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    short = min((float(r["time_limit_s"]) for r in rows if r["time_limit_s"] is not None), default=None)
    for (planner, cost, strategy), (color, ls, label) in STYLE.items():
        sel = [r for r in rows if r["planner"] == planner and r["migration_cost"] == cost and r["strategy"] == strategy
               and (r["time_limit_s"] is None or float(r["time_limit_s"]) == short)]
        if not sel:
            continue
        t = [float(r["time_s"]) / 3600.0 for r in sel] + [end_s / 3600.0]
        gpus = [int(r["gpus"]) for r in sel]
        ax_g.step(t, gpus + gpus[-1:], where="post", color=color, linestyle=ls, label=label)
        cum, total = [], 0
        for k, r in enumerate(sel):
            total += int(r["restarts"]) if k else 0
            cum.append(total)
        ax_r.step(t, cum + cum[-1:], where="post", color=color, linestyle=ls, label=label)
    ax_g.set_ylabel("GPUs")
    ax_r.set_ylabel("restarts so far")
    ax_r.set_xlabel("time of day (h)")
    ax_g.set_ylim(bottom=0)
    ax_g.legend(fontsize=8, loc="upper left")
    ax_g.grid(alpha=0.3)
    ax_r.grid(alpha=0.3)
    ax_g.set_title(f"Replanning the paper's mix over a day ({profile}, hourly steps)", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=str(HERE.parent / "profiles" / "h100"))
    ap.add_argument("--time-limit", type=float, default=5.0, help="exact planner, seconds per step")
    ap.add_argument("--work", type=Path, default=HERE.parent / "build" / "replan_trace")
    ap.add_argument("--long-time-limit", type=float, default=0.0,
                    help="also the exact replan (cost 0.25) with this many seconds per step")
    ap.add_argument("--fresh", action="store_true", help="start every run afresh")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    run(args.profile, args.time_limit, args.work, args.fresh, args.long_time_limit)


if __name__ == "__main__":
    main()
