"""A/B timing of the greedy planner between two checkouts (or two budgets), in CPU time.

    python benchmarks/greedy_ab.py --a /path/to/old/checkout --b . --sizes 1000,10000 --rounds 3
    python benchmarks/greedy_ab.py --a . --b . --budget-b tail --sizes 10000

Each measurement runs in a fresh process that imports the planner from its checkout, plans the
seeded ``paper_like`` mix (``benchmarks/instances.py``) on the V100 profile and reports the best
of ``--repeats`` runs of initial demands + placement, as process CPU time and as wall-clock. A
and B alternate ``--rounds`` times, so both see the same load; CPU time is the figure to compare
on a busy machine (wall-clock is printed beside it). Writes nothing unless ``-o`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

DEFAULT_V100 = Path(__file__).resolve().parents[2] / "shared" / "data" / "igniter_v100_profile.jsonl"

# Runs inside the checkout under test; older checkouts know only the paper's budget (no make_problem).
CHILD = """
import json, sys, time
repo, n, budget, profile, repeats = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
sys.path.insert(0, repo)
from benchmarks.instances import GENERATORS
from igniter_opt.perfmodel import load_profile
from igniter_opt.planner import greedy
perf = load_profile(profile)
ws = GENERATORS["paper_like"](n, 2023)
if budget == "igniter":
    from igniter_opt.domain import PlanningProblem
    problem = PlanningProblem(ws, perf)
else:
    from igniter_opt.domain import LatencyBudget
    from igniter_opt.problems import BudgetChoice, make_problem
    problem = make_problem(ws, perf, BudgetChoice(LatencyBudget(budget),
                                                  serving_overhead_ms=1.57 if perf.serving is None else None))
    perf = problem.perf_model
cpu = wall = float("inf")
for _ in range(repeats):
    c0, w0 = time.process_time(), time.perf_counter()
    gpus = greedy.place(perf, greedy.initial_demands(problem))
    cpu, wall = min(cpu, time.process_time() - c0), min(wall, time.perf_counter() - w0)
n_gpus = gpus.num_gpus if hasattr(gpus, "num_gpus") else len(gpus)
print(json.dumps({"gpus": n_gpus, "cpu_s": cpu, "wall_s": wall}))
"""


def measure(repo: Path, n: int, budget: str, profile: str, repeats: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(repo), str(n), budget, profile, str(repeats)],
                         capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", type=Path, required=True, help="checkout A (its root folder)")
    ap.add_argument("--b", type=Path, required=True, help="checkout B")
    ap.add_argument("--budget-a", default="igniter")
    ap.add_argument("--budget-b", default="igniter")
    ap.add_argument("--profile", default=str(DEFAULT_V100))
    ap.add_argument("--sizes", default="10000")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("-o", "--output", type=Path, default=None, help="also write the rows as JSON lines here")
    args = ap.parse_args()
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        for k in range(args.rounds):
            for side, repo, budget in (("A", args.a, args.budget_a), ("B", args.b, args.budget_b)):
                r = {"side": side, "checkout": str(repo.resolve()), "budget": budget, "workloads": n, "round": k,
                     **measure(repo.resolve(), n, budget, args.profile, args.repeats)}
                rows.append(r)
                print(f"{side} {budget:>7} n={n:>6} gpus={r['gpus']:>6} cpu {r['cpu_s']:.3f} s  "
                      f"wall {r['wall_s']:.3f} s", flush=True)
        for side in ("A", "B"):
            best = min(r["cpu_s"] for r in rows if r["side"] == side and r["workloads"] == n)
            print(f"{side} n={n}: best CPU {best:.3f} s over {args.rounds} rounds")
    if args.output is not None:
        from igniter_opt.ioutil import atomic_write_text

        atomic_write_text(args.output, "".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
