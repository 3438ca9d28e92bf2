"""Greedy vs exact (and the ffd / gpulet baselines) on the paper's mix and seeded random mixes.

Writes ``benchmarks/results/greedy_vs_exact.csv`` (one row per instance and planner, appended as
it goes, so an interrupted run resumes where it stopped) and ``greedy_vs_exact.png`` (cost
relative to the exact planner's proven lower bound, per size), and prints a summary.

    python benchmarks/greedy_vs_exact.py                 # every suite
    python benchmarks/greedy_vs_exact.py --suites paper,random-10 --fresh
"""

from __future__ import annotations

import argparse
import csv
import logging
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from instances import PROFILE_GENERATORS as GENERATORS
from instances import SUITES

from igniter_opt.domain import PlanningProblem
from igniter_opt.perfmodel import load_profile
from igniter_opt.planner import run_planner
from igniter_opt.solver import SolveOptions

PROFILE = HERE.parent.parent / "shared" / "data" / "igniter_v100_profile.jsonl"
RESULTS = HERE / "results"
PLANNERS = ("greedy", "exact", "ffd", "gpulet")
FIELDS = ["suite", "size", "seed", "budget", "margin", "planner", "status", "gpus", "cost", "share_pct",
          "slo_misses", "violations", "bound", "gap", "wall_s", "build_s", "solve_s", "time_limit_s",
          "columns", "trivial_bound", "peak_rss_mb", "worker_peak_rss_mb", "message"]

log = logging.getLogger("greedy_vs_exact")


def _key(r: dict[str, str]) -> tuple[str, ...]:
    return (r["suite"], str(r["size"]), str(r["seed"]), r["budget"], str(r["margin"]), r["planner"])


def run(suites: list[str], out_csv: Path, threads: int, profile: Path, seeds: list[int] | None = None) -> None:
    perf = load_profile(profile)
    done: set[tuple[str, ...]] = set()
    if out_csv.exists():
        with out_csv.open() as f:
            done = {_key(r) for r in csv.DictReader(f)}
    new_file = not out_csv.exists()
    fields = FIELDS
    if not new_file:  # resume with the file's own columns (one written before a column was added lacks it)
        with out_csv.open() as f:
            fields = next(csv.reader(f), FIELDS)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with out_csv.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if new_file:
            writer.writeheader()
        for suite, gen, sizes, seeds_of_suite, budgets, limit in SUITES:
            if suites and suite not in suites:
                continue
            for size in sizes:
                for seed in [s for s in seeds_of_suite if seeds is None or s in seeds]:
                    workloads = GENERATORS[gen](perf, size, seed)
                    for budget, margin in budgets:
                        problem = PlanningProblem(workloads, perf, budget, margin)
                        for planner in PLANNERS:
                            key = (suite, str(size), str(seed), str(budget), str(margin), planner)
                            if key in done:
                                continue
                            opts = SolveOptions(time_limit_s=limit, threads=threads)
                            t0 = time.perf_counter()
                            outcome = run_planner(problem, planner, opts)
                            wall = time.perf_counter() - t0
                            plan, s = outcome.plan, outcome.plan.solver
                            # process-wide peak so far (Linux: KiB); the exact planner's proof worker is a child
                            # process: the largest child's peak so far (its memory is on top of this process's)
                            extra = {"columns": "" if s.columns is None else s.columns,
                                     "trivial_bound": "" if s.trivial_bound is None else s.trivial_bound,
                                     "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                                     "worker_peak_rss_mb":
                                         round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)}
                            row = {
                                "suite": suite, "size": len(workloads), "seed": seed, "budget": str(budget),
                                "margin": margin, "planner": planner, "status": s.status, "gpus": plan.num_gpus,
                                "cost": plan.cost_per_hour, "share_pct": round(plan.total_share_pct, 4),
                                "slo_misses": len({v.workload for v in outcome.violations
                                                   if v.kind in ("latency", "throughput")}),
                                "violations": len(outcome.violations),
                                "bound": "" if s.bound is None else s.bound,
                                "gap": "" if s.gap is None else round(s.gap, 6),
                                "wall_s": round(wall, 3),
                                "build_s": "" if s.build_s is None else round(s.build_s, 3),
                                "solve_s": "" if s.solve_s is None else round(s.solve_s, 3),
                                "time_limit_s": limit if planner == "exact" else "",
                                "message": s.message or "", **extra,
                            }
                            writer.writerow(row)
                            f.flush()
                            log.info("%s n=%s seed=%s %s m=%s %-6s %s GPUs=%s share=%s bound=%s gap=%s %.1fs",
                                     suite, len(workloads), seed, budget, margin, planner, s.status,
                                     plan.num_gpus, row["share_pct"], row["bound"], row["gap"], wall)


def summarise(out_csv: Path, png: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.read_csv(out_csv)
    keys = ["suite", "size", "seed", "budget", "margin"]
    ex = df[df.planner == "exact"].set_index(keys)
    lines = []
    wide = df.pivot_table(index=keys, columns="planner", values="gpus").reset_index()
    wide = wide.join(ex[["bound", "status", "gap", "wall_s", "build_s", "solve_s"]], on=keys)
    for suite, g in wide.groupby("suite", sort=False):
        beats = int((g["exact"] < g["greedy"]).sum())
        saved = (g["greedy"] - g["exact"]).clip(lower=0)
        lines.append(
            f"{suite}: {len(g)} instance(s); exact beats greedy on {beats} "
            f"(GPUs saved: mean {saved.mean():.2f}, max {saved.max():.0f}; "
            f"{100 * (saved / g['greedy']).mean():.1f} % of greedy's GPUs on average); "
            f"optimal {int((g['status'] == 'optimal').sum())}/{len(g)}; "
            f"gap mean {100 * g['gap'].mean():.1f} %, max {100 * g['gap'].max():.1f} %; "
            f"exact time mean {g['wall_s'].mean():.1f} s (build {g['build_s'].mean():.1f} s), "
            f"max {g['wall_s'].max():.1f} s"
        )
    # markdown table per suite (and budget for the paper's mix)
    md = ["| suite | budget | n | instances | GPUs greedy / exact / ffd / gpulet (mean) | exact < greedy | "
          "SLO misses ffd / gpulet (mean) | exact optimal | gap mean / max | exact s mean / max | build s mean |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    misses = df.pivot_table(index=keys, columns="planner", values="slo_misses").reset_index()
    for (suite, budget, margin), g in wide.groupby(["suite", "budget", "margin"], sort=False):
        mm = misses[(misses.suite == suite) & (misses.budget == budget) & (misses.margin == margin)]
        label = budget if budget == "igniter" else f"{budget} (margin {margin:g})"
        md.append(
            f"| {suite} | {label} | {int(g['size'].iloc[0])} | {len(g)} | "
            f"{g['greedy'].mean():.1f} / {g['exact'].mean():.1f} / {g['ffd'].mean():.1f} / {g['gpulet'].mean():.1f} | "
            f"{int((g['exact'] < g['greedy']).sum())}/{len(g)} | {mm['ffd'].mean():.1f} / {mm['gpulet'].mean():.1f} | "
            f"{int((g['status'] == 'optimal').sum())}/{len(g)} | "
            f"{100 * g['gap'].mean():.1f} % / {100 * g['gap'].max():.1f} % | "
            f"{g['wall_s'].mean():.1f} / {g['wall_s'].max():.1f} | {g['build_s'].mean():.1f} |"
        )
    png.with_suffix(".md").write_text("\n".join(md) + "\n")
    fig, ax = plt.subplots(figsize=(7, 4))
    rnd = df[df.suite.str.startswith("random")].copy()
    rnd = rnd.join(ex["bound"].rename("lb"), on=keys)
    rnd["rel"] = rnd["cost"] / rnd["lb"]
    sizes = sorted(rnd["size"].unique())
    colors = dict(zip(PLANNERS, ["tab:blue", "tab:orange", "tab:green", "tab:red"], strict=True))
    for j, planner in enumerate(PLANNERS):
        sub = rnd[rnd.planner == planner]
        means = [sub[sub["size"] == s]["rel"].mean() for s in sizes]
        xs = [i + (j - 1.5) * 0.08 for i in range(len(sizes))]
        ax.plot(xs, means, marker="o", color=colors[planner], label=f"{planner} (mean)")
        for i, s in enumerate(sizes):
            pts = sub[sub["size"] == s]
            ok = pts[pts["slo_misses"] == 0]["rel"]
            bad = pts[pts["slo_misses"] > 0]["rel"]
            ax.scatter([xs[i]] * len(ok), ok, s=10, alpha=0.5, color=colors[planner])
            ax.scatter([xs[i]] * len(bad), bad, s=18, alpha=0.6, marker="x", color=colors[planner])
    ax.scatter([], [], marker="x", color="grey", label="plan predicted to miss SLOs")
    ax.set_xticks(range(len(sizes)), [str(s) for s in sizes])
    ax.set_xlabel("workloads (5 seeds each)")
    ax.set_ylabel("cost / exact lower bound")
    ax.set_title("V100 profile, igniter budget: cost relative to the proven lower bound")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suites", default="", help="comma-separated suite names (default: all)")
    ap.add_argument("--out", type=Path, default=RESULTS / "greedy_vs_exact.csv")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profile", type=Path, default=PROFILE)
    ap.add_argument("--seeds", default="", help="comma-separated seeds to run (default: each suite's)")
    ap.add_argument("--fresh", action="store_true", help="start a new CSV instead of resuming")
    ap.add_argument("--summary-only", action="store_true", help="only redo the summary, table and plot from the CSV")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.fresh and args.out.exists():
        args.out.unlink()
    suites = [s for s in args.suites.split(",") if s]
    if not args.summary_only:
        seeds = [int(s) for s in args.seeds.split(",") if s] or None
        run(suites, args.out, args.threads, args.profile, seeds)
    summary = summarise(args.out, args.out.with_suffix(".png"))
    args.out.with_suffix(".summary.txt").write_text(summary + "\n")
    log.info("summary:\n%s", summary)


if __name__ == "__main__":
    main()
