"""Planning over a fleet of GPU types (issue 15): H100-only, H200-only and mixed fleets at two price ratios.

``python benchmarks/fleet.py [--seeds 1,2,3,4,5] [--workloads 20] [--budgets igniter,tail] [-o benchmarks/results]``

Mixes: the paper's 12 workloads (``examples/paper-table3.csv``) and seeded random mixes of the six zoo
models (SLO 15-60 ms, 50-800 req/s). Fleets: the H100 at 1.0 per GPU-hour; the H200 at 1.25x and 1.6x
that, alone and beside the H100. Planner: the fleet greedy (``igniter_opt.planner.fleet``), with and
without its local search, so the table shows what the search earns; on the mixed fleets also the
exact planner (the fleet master: column generation over every type from the fleet greedy's plan,
``--exact-time-limit`` seconds per instance), with its certified bound and gap. Writes
``fleet.csv`` and ``fleet.md``: GPUs per type, cost per hour, which models went to which type, bound,
gap, wall time.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from igniter_opt.domain import LatencyBudget, Workload
from igniter_opt.errors import IgniterOptError
from igniter_opt.fleet import parse_fleet
from igniter_opt.ioutil import atomic_write_csv, atomic_write_text
from igniter_opt.planio import read_workloads
from igniter_opt.planner.fleet import solve_fleet
from igniter_opt.problems import BudgetChoice
from igniter_opt.solver import SolveOptions

MODELS = ("alexnet", "resnet50", "vgg19", "ssd", "vit_b_16", "bert_base")
FLEETS = {
    "h100": "h100:1.0",
    "h200@1.25": "h200:1.25",
    "h200@1.6": "h200:1.6",
    "mixed@1.25": "h100:1.0,h200:1.25",
    "mixed@1.6": "h100:1.0,h200:1.6",
}
FIELDS = ["mix", "budget", "fleet", "planner", "search", "gpus", "h100_gpus", "h200_gpus", "cost_per_hour", "status",
          "bound_per_hour", "gap_pct", "h100_models", "h200_models", "wall_s"]


def random_mix(seed: int, n: int) -> tuple[Workload, ...]:
    rng = random.Random(seed)
    return tuple(Workload(f"w{i}", rng.choice(MODELS), float(rng.choice((15, 20, 30, 40, 60))),
                          float(rng.randrange(50, 801, 10))) for i in range(n))


def _row(mix: str, budget: str, fleet: str, search: bool, ws: tuple[Workload, ...], planner: str = "greedy",
         time_limit_s: float = 60.0) -> dict[str, object]:
    try:
        fp = solve_fleet(ws, parse_fleet(FLEETS[fleet]), BudgetChoice(LatencyBudget(budget)), planner,
                         SolveOptions(time_limit_s=time_limit_s), search=search)
    except IgniterOptError as exc:  # a type that cannot serve a workload: a row that says so
        return {**dict.fromkeys(FIELDS, ""), "mix": mix, "budget": budget, "fleet": fleet, "planner": planner,
                "search": search, "status": f"no plan: {exc}"}
    by_type = fp.gpus_by_type()
    models = {p.gpu_type.name: sorted({pl.model for _, pl in p.plan.placements()}) for p in fp.parts}
    return {"mix": mix, "budget": budget, "fleet": fleet, "planner": planner, "search": search, "gpus": fp.num_gpus,
            "h100_gpus": by_type.get("h100", 0), "h200_gpus": by_type.get("h200", 0),
            "cost_per_hour": round(fp.cost_per_hour, 4), "status": str(fp.status),
            "bound_per_hour": "" if fp.bound is None else round(fp.bound.cost_per_hour, 4),
            "gap_pct": "" if fp.gap is None else round(100 * fp.gap, 2),
            "h100_models": " ".join(models.get("h100", [])),
            "h200_models": " ".join(models.get("h200", [])), "wall_s": round(fp.wall_s, 3)}


def _report(rows: list[dict[str, object]]) -> str:
    lines = ["# Fleet planning: H100, H200 and mixed fleets (fleet greedy)", "",
             "Cost per hour (H100 = 1.0 per GPU-hour), GPUs as H100 + H200, with the local search; "
             "`benchmarks/fleet.py`, `fleet.csv`.", ""]
    for budget in sorted({str(r["budget"]) for r in rows}):
        lines += [f"## Budget `{budget}`", "", "| mix | " + " | ".join(FLEETS) + " |",
                  "|---|" + "---|" * len(FLEETS)]
        for mix in dict.fromkeys(str(r["mix"]) for r in rows):
            cells = []
            for fleet in FLEETS:
                r = next(r for r in rows if r["mix"] == mix and r["budget"] == budget and r["fleet"] == fleet
                         and r["search"] and r["planner"] == "greedy")
                cells.append("no plan" if r["cost_per_hour"] == "" else
                             f"{r['cost_per_hour']:g} ({r['h100_gpus']}+{r['h200_gpus']})")
            lines.append(f"| {mix} | " + " | ".join(cells) + " |")
        lines.append("")
        mixed = [r for r in rows if r["budget"] == budget and str(r["fleet"]).startswith("mixed")
                 and r["planner"] == "greedy"]
        gains = []
        for r in mixed:
            plain = next(q for q in mixed if q["mix"] == r["mix"] and q["fleet"] == r["fleet"] and not q["search"])
            if r["search"] and r["cost_per_hour"] != "" and plain["cost_per_hour"] != "":
                gains.append(float(plain["cost_per_hour"]) - float(r["cost_per_hour"]))
        lines += [f"Local search (mixed fleets): lowered the cost in {sum(g > 1e-9 for g in gains)} of {len(gains)} "
                  f"instances, by {max(gains, default=0):g} per hour at most; median wall time with it "
                  f"{statistics.median(float(r['wall_s']) for r in mixed if r['search'] and r['wall_s'] != ''):.2f} s.",
                  ""]
        failed = sorted({f"{r['mix']} on {r['fleet']}" for r in rows
                         if r["budget"] == budget and r["cost_per_hour"] == ""})
        if failed:
            lines += [f"No plan (a workload the type cannot serve): {', '.join(failed)}.", ""]
        exact = [r for r in rows if r["budget"] == budget and r["planner"] == "exact"]
        if exact:
            lines += ["Exact over the mixed fleets: cost against greedy's, the certified bound (over plans that serve "
                      "each workload on one type) and the gap.", "",
                      "| mix | fleet | greedy | exact (H100+H200) | bound | gap % | status | wall s |",
                      "|---|---|---|---|---|---|---|---|"]
            for r in (r for r in exact if r["cost_per_hour"] != ""):
                g = next(q for q in mixed if q["mix"] == r["mix"] and q["fleet"] == r["fleet"] and q["search"])
                lines.append(f"| {r['mix']} | {r['fleet']} | {g['cost_per_hour']:g} | {r['cost_per_hour']:g} "
                             f"({r['h100_gpus']}+{r['h200_gpus']}) | {r['bound_per_hour']:g} | {r['gap_pct']:g} | "
                             f"{r['status']} | {r['wall_s']:g} |")
            lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="1,2,3,4,5")
    ap.add_argument("--workloads", type=int, default=20)
    ap.add_argument("--budgets", default="igniter,tail")
    ap.add_argument("--exact-time-limit", type=float, default=20.0, help="seconds per exact instance (0: no exact)")
    ap.add_argument("-o", "--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    mixes = {"paper": read_workloads(HERE.parent / "examples" / "paper-table3.csv")}
    mixes |= {f"random{s}": random_mix(int(s), args.workloads) for s in args.seeds.split(",")}
    rows = []
    for budget in args.budgets.split(","):
        for mix, ws in mixes.items():
            for fleet in FLEETS:
                for search in ((False, True) if fleet.startswith("mixed") else (True,)):
                    rows.append(_row(mix, budget, fleet, search, ws))
                    print(rows[-1], flush=True)
                if fleet.startswith("mixed") and args.exact_time_limit > 0:
                    rows.append(_row(mix, budget, fleet, True, ws, "exact", args.exact_time_limit))
                    print(rows[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(args.out / "fleet.csv", FIELDS, rows)
    atomic_write_text(args.out / "fleet.md", _report(rows))
    print(_report(rows))


if __name__ == "__main__":
    main()
