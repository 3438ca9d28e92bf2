"""Greedy planning time and peak memory for 10 .. 10000 workloads (seeded), and a check that the
vectorised planner returns exactly the plan of a plain port of the paper's algorithm.

    python benchmarks/greedy_scale.py --profile ../shared/data/igniter_v100_profile.jsonl [--budgets igniter,tail]

``--budgets``: the latency budgets to time, one row each per size. ``tail`` plans to 99 % of the
requests within the SLO with the serving model; a profile without serving measurements (the
paper's V100) gets ``--serving-overhead-ms`` (default 1.57, the H100's measured overhead) and the
documented client cost and variance. The plain port is the paper's algorithm (igniter budget only).

Writes benchmarks/results/greedy_scale.csv (``--append``: adds its rows to the file's). Timings are
wall-clock, best of --repeats, in one process on whatever machine runs it (recorded in the CSV, with
the code's commit and the machine's load average when the row started: on a shared machine other
work slows every row).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.instances import GENERATORS
from igniter_opt.domain import LatencyBudget
from igniter_opt.ioutil import atomic_write_text
from igniter_opt.perfmodel import load_profile
from igniter_opt.placement import verify_plan
from igniter_opt.planner import greedy
from igniter_opt.planner.greedy_reference import reference_igniter_demands, reference_place
from igniter_opt.problems import BudgetChoice, make_problem

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_V100 = Path(__file__).resolve().parents[2] / "shared" / "data" / "igniter_v100_profile.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=str(DEFAULT_V100))
    ap.add_argument("--sizes", default="10,100,1000,5000,10000")
    ap.add_argument("--seed", type=int, default=2023)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--reference-up-to", type=int, default=10000,
                    help="run the plain port (slow) for sizes up to this, to check the plans are identical")
    ap.add_argument("--generator", default="paper_like", choices=sorted(GENERATORS))
    ap.add_argument("--budgets", default="igniter", help="comma-separated latency budgets to time")
    ap.add_argument("--serving-overhead-ms", type=float, default=1.57,
                    help="tail budget on a profile without serving measurements: the per-batch overhead")
    ap.add_argument("-o", "--output", default=str(RESULTS / "greedy_scale.csv"))
    ap.add_argument("--append", action="store_true", help="add the rows to those already in --output")
    args = ap.parse_args()

    base = load_profile(args.profile)
    rows = []
    for n, budget in ((int(s), LatencyBudget(b)) for s in args.sizes.split(",") for b in args.budgets.split(",")):
        ws = GENERATORS[args.generator](n, args.seed)
        load = os.getloadavg()[0]
        overhead = args.serving_overhead_ms if budget is LatencyBudget.TAIL and base.serving is None else None
        problem = make_problem(ws, base, BudgetChoice(budget, serving_overhead_ms=overhead))
        perf = problem.perf_model
        times, init_times = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            demands = greedy.initial_demands(problem)
            t1 = time.perf_counter()
            gpus = greedy.place(perf, demands)
            t2 = time.perf_counter()
            times.append(t2 - t0)
            init_times.append(t1 - t0)
        tracemalloc.start()
        greedy.place(perf, greedy.initial_demands(problem))
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        plan = greedy.solve(problem)
        violations = len(verify_plan(plan, problem))
        ref_s, same = float("nan"), None
        if n <= args.reference_up_to and budget is LatencyBudget.IGNITER:
            t0 = time.perf_counter()
            ref_demands = [d for w in ws for d in reference_igniter_demands(problem, w)]
            ref = reference_place(perf, ref_demands)
            ref_s = time.perf_counter() - t0
            same = ref_demands == demands and ref == gpus
        rows.append({
            "workloads": n, "budget": str(budget), "seed": args.seed, "demands": len(demands),
            "gpus": gpus.num_gpus, "total_share_pct": plan.total_share_pct,
            "plan_s_best": min(times), "plan_s_median": float(np.median(times)),
            "init_s_best": min(init_times), "peak_mib": round(peak, 2), "violations": violations,
            "plain_port_s": ref_s, "same_plan_as_plain_port": same,
            "machine": f"{platform.machine()} {os.cpu_count()} cpu", "python": platform.python_version(),
            "numpy": np.__version__, "profile": perf.name, "code": _commit(), "load_1min": round(load, 2),
        })
        r = rows[-1]
        print(f"{n:>6} workloads {str(budget):>7} -> {r['gpus']:>6} GPUs"
              f"  best {r['plan_s_best']:.3f} s  median {r['plan_s_median']:.3f} s"
              f"  peak {r['peak_mib']:.1f} MiB  plain port {ref_s:.2f} s  same plan: {same}", flush=True)
    df = pd.DataFrame(rows)
    if args.append and Path(args.output).is_file():
        df = pd.concat([pd.read_csv(args.output), df], ignore_index=True)
    atomic_write_text(args.output, df.to_csv(index=False, float_format="%.4f"))
    print(f"wrote {args.output}")


def _commit() -> str:
    """The commit of the code measured (with "+" when the working tree differs from it)."""
    here = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+" if dirty else "")


if __name__ == "__main__":
    main()
