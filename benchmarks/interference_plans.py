"""What the interference form changes in plans (issue 16, item 5): the paper's form against kernel-delay.

``python benchmarks/interference_plans.py [--seeds 1,2,3,4,5] [--workloads 20] [-o benchmarks/results]``

For the shipped H100 and H200 profiles, each form is the shipped profile where it ships that form,
else refitted from the same raw profile with the profile's serving measurements: the H200 ships the
kernel-delay form (kappas from its own 36 co-location runs), so its paper form is refitted; the H100
ships the paper's form, so its kernel-delay form is refitted (pair runs only: kappa 1, no H100
co-location runs outside its accuracy mixes). The paper's 12-workload mix
and seeded random mixes (``benchmarks.instances.random_mix``, drawn on the paper-form profile) are
planned by greedy under ``igniter`` and ``tail`` with both forms. Writes ``interference_plans.csv``
and ``.md``: GPUs and total share per plan. Predictions only: nothing here ran on a GPU.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.instances import random_mix  # noqa: E402
from igniter_opt.domain import LatencyBudget, Workload  # noqa: E402
from igniter_opt.errors import IgniterOptError  # noqa: E402
from igniter_opt.ioutil import atomic_write_csv, atomic_write_text  # noqa: E402
from igniter_opt.perfmodel import PerformanceModel, fit_profile, load_profile, load_raw, write_profile  # noqa: E402
from igniter_opt.perfmodel.fit import record_interference  # noqa: E402
from igniter_opt.perfmodel.store import interference_form  # noqa: E402
from igniter_opt.planio import read_workloads  # noqa: E402
from igniter_opt.planner import run_planner  # noqa: E402
from igniter_opt.problems import BudgetChoice, make_problem  # noqa: E402

REPO = HERE.parent
FIELDS = ["gpu", "mix", "budget", "form", "gpus", "total_share_pct", "message"]


def form_profile(name: str, form: str, work: Path) -> PerformanceModel:
    """The shipped profile ``name`` under the interference ``form``: itself where it ships that form,
    else refitted from its raw profile with that form, with its serving measurements."""
    shipped = load_profile(name)
    if interference_form(shipped) == form:
        return shipped
    src = REPO / "profiles" / name
    raw = load_raw(src)
    model = fit_profile(raw, name=f"{name}-{form}", interference_form=form)
    out = work / f"{name}-{form}"
    write_profile(record_interference(raw, model), model, out)
    shutil.copy(src / "serving.json", out / "serving.json")
    return load_profile(out)


def _row(gpu: str, mix: str, budget: str, form: str, ws: tuple[Workload, ...], perf: PerformanceModel
         ) -> dict[str, object]:
    try:
        out = run_planner(make_problem(ws, perf, BudgetChoice(LatencyBudget(budget))), "greedy")
    except IgniterOptError as exc:
        return {"gpu": gpu, "mix": mix, "budget": budget, "form": form, "gpus": "", "total_share_pct": "",
                "message": str(exc)}
    assert not out.violations
    return {"gpu": gpu, "mix": mix, "budget": budget, "form": form, "gpus": out.plan.num_gpus,
            "total_share_pct": round(out.plan.total_share_pct, 2), "message": ""}


def _report(rows: list[dict[str, object]]) -> str:
    lines = ["# Plans under the paper's interference form and kernel-delay (greedy)", "",
             "GPUs (total share %) per plan; `benchmarks/interference_plans.py`, `interference_plans.csv`. "
             "Predictions of each form's own model: which form holds on the GPU is `interference_study_<gpu>.md`'s "
             "question.", "",
             "| GPU | budget | mix | paper form | kernel-delay |", "|---|---|---|---|---|"]
    keys = dict.fromkeys((str(r["gpu"]), str(r["budget"]), str(r["mix"])) for r in rows)
    fewer = more = 0
    for gpu, budget, mix in keys:
        cell = {}
        for form in ("paper", "kernel-delay"):
            r = next(r for r in rows if (r["gpu"], r["budget"], r["mix"], r["form"]) == (gpu, budget, mix, form))
            cell[form] = "no plan" if r["gpus"] == "" else f"{r['gpus']} ({r['total_share_pct']} %)"
            cell[form + "_n"] = r["gpus"]
        if cell["paper_n"] != "" and cell["kernel-delay_n"] != "":
            fewer += int(cell["kernel-delay_n"]) < int(cell["paper_n"])  # type: ignore[arg-type]
            more += int(cell["kernel-delay_n"]) > int(cell["paper_n"])  # type: ignore[arg-type]
        lines.append(f"| {gpu} | {budget} | {mix} | {cell['paper']} | {cell['kernel-delay']} |")
    lines += ["", f"Kernel-delay plans used fewer GPUs in {fewer} and more in {more} of {len(keys)} instances."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="1,2,3,4,5")
    ap.add_argument("--workloads", type=int, default=20)
    ap.add_argument("-o", "--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for gpu in ("h100", "h200"):
            paper = form_profile(gpu, "igniter", Path(tmp))
            forms = {"paper": paper, "kernel-delay": form_profile(gpu, "kernel-delay", Path(tmp))}
            mixes = {"paper": read_workloads(REPO / "examples" / "paper-table3.csv")}
            mixes |= {f"random{s}": random_mix(paper, args.workloads, int(s)) for s in args.seeds.split(",")}
            for budget in ("igniter", "tail"):
                for mix, ws in mixes.items():
                    for form, perf in forms.items():
                        rows.append(_row(gpu, mix, budget, form, ws, perf))
                        print(rows[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(args.out / "interference_plans.csv", FIELDS, rows)
    atomic_write_text(args.out / "interference_plans.md", _report(rows))
    print(_report(rows))


if __name__ == "__main__":
    main()
