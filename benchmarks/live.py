"""Live validation of plans on a real GPU: plan one-GPU mixes, apply them with Triton under MPS, measure.

Three steps, so that plans are made (and committed) where the planners run and only applying
needs the GPU:

``python benchmarks/live.py plan [--mixes I] [--serving-overhead-ms 3.5] [--max-utilization 1 0.8] [-o DIR]``
    Anywhere. Plans each mix (3 to 5 zoo workloads with SLOs and rates) with the greedy and the
    exact planner under both latency budgets, with the paper's model (``<mix>_<planner>_<budget>.json``)
    and with each serving overhead and utilization (``..._o<ms>[_u<u>].json``).

``python benchmarks/live.py run PLANS... [--duration 60] [--work DIR] [-o benchmarks/results]``
    On the GPU. Applies each plan with ``igniter-opt apply`` (Poisson arrivals), one after the
    other, and appends one row per workload to ``live_<gpu>.csv`` (a run already in the file is
    skipped, so a cut-off batch resumes). Each run's summary.json and latency.png are kept under
    ``--work``.

``python benchmarks/live.py overhead [--model resnet50] [--rate 100] [-o DIR]``
    On the GPU. The executor's own cost: the zoo runner called directly (host input -> host
    output, batch 1, full GPU, no MPS) against the same model served at batch 1 and 100 % share
    at a low constant rate, where requests never wait for each other: per-request latency,
    Triton's time per execution, the model's time inside it, and server start times.

Columns of ``live_<gpu>.csv``: ``run,planner,budget,workload,model,batch,share,rate_rps,slo_ms,
requests,within_slo,p50_ms,p99_ms,predicted_ms,measured_mean_ms`` then ``e2e_mean_ms,
executed_batch,model_ms,queue_ms,achieved_rps,failed,send_lag_p99_ms,server_ready_s,gpu``.
``predicted_ms`` is the plan's predicted inference latency of a batch and ``measured_mean_ms``
its measured counterpart: Triton's mean time per execution of the model (inputs to outputs,
Python backend included); ``model_ms`` is the part spent in the zoo runner; ``e2e_mean_ms`` is
the mean client-side latency (send to receive) that the SLO is about.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from igniter_opt.domain import LatencyBudget, PlanningProblem, Workload
from igniter_opt.perfmodel import load_profile
from igniter_opt.planio import read_plan, write_plan
from igniter_opt.planner import run_planner
from igniter_opt.solver import SolveOptions

RESULTS = HERE / "results"
PLANS = RESULTS / "live_plans"
# name, model, SLO ms, rate req/s. An H100 serves many thousands of requests per second of these
# models; the load generator (Python gRPC clients with 300 KB images, on the same 16-core host as
# the servers) keeps about 2000 req/s, so the SLOs are tight enough that these rates fill most of
# the GPU once the serving overhead is planned for.
MIXES: dict[str, list[tuple[str, str, float, float]]] = {
    "I": [("res", "resnet50", 12, 667), ("vgg", "vgg19", 15, 667), ("bert", "bert_base", 15, 667)],
    "J": [("res", "resnet50", 12, 500), ("vgg", "vgg19", 15, 500), ("bert", "bert_base", 15, 500)],
    "H": [("res", "resnet50", 15, 667), ("vgg", "vgg19", 20, 333), ("bert", "bert_base", 20, 667),
          ("vit", "vit_b_16", 20, 333)],
}
FIELDS = ["run", "planner", "budget", "workload", "model", "batch", "share", "rate_rps", "slo_ms", "requests",
          "within_slo", "p50_ms", "p99_ms", "predicted_ms", "measured_mean_ms", "e2e_mean_ms", "executed_batch",
          "model_ms", "queue_ms", "achieved_rps", "failed", "send_lag_p99_ms", "server_ready_s", "gpu"]


# ---- plan ----------------------------------------------------------------------------------------
def _workloads(mix: str) -> tuple[Workload, ...]:
    return tuple(Workload(n, m, float(slo), float(rate)) for n, m, slo, rate in MIXES[mix])


def cmd_plan(args: argparse.Namespace) -> None:
    base = load_profile(args.profile)
    args.out.mkdir(parents=True, exist_ok=True)
    for mix in args.mixes.split(","):
        serving = [(None, None)] + [(o, u) for o in args.serving_overhead_ms for u in args.max_utilization]
        for overhead, util in serving:
            perf = base.with_serving_overhead(overhead, util)
            for budget in (LatencyBudget.IGNITER, LatencyBudget.FULL):
                problem = PlanningProblem(_workloads(mix), perf, budget, margin=args.margin)
                for planner in ("greedy", "exact"):
                    out = run_planner(problem, planner, SolveOptions(time_limit_s=args.time_limit, threads=1))
                    if out.violations:
                        raise SystemExit(f"{mix} {planner} {budget}: the plan violates the model: {out.violations[0]}")
                    suffix = "" if overhead is None else f"_o{overhead:g}" + ("" if util == 1 else f"_u{util:g}")
                    path = write_plan(out.plan, args.out / f"{mix}_{planner}_{budget.value}{suffix}.json")
                    p = out.plan
                    print(f"{path.name}: {p.num_gpus} GPU(s), {p.total_share_pct:.1f} % share, "
                          f"{sum(q.rate_rps for _, q in p.placements()):.0f} req/s, solver {p.solver.status}, "
                          + ", ".join(f"{q.workload} b{q.batch}@{q.share_pct:.1f}%" for _, q in p.placements()))


# ---- run -----------------------------------------------------------------------------------------
def _done_runs(csv_path: Path) -> set[str]:
    if not csv_path.exists():
        return set()
    with csv_path.open(newline="") as fh:
        return {r["run"] for r in csv.DictReader(fh)}


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "" if not math.isfinite(v) else round(v, 4)
    return v


def apply_one(plan_path: Path, work: Path, duration_s: float, seed: int) -> tuple[Any, Any]:
    """Apply one plan for ``duration_s`` (Poisson); returns (deployment, result)."""
    from igniter_opt.apply import ApplyOptions, apply_plan, build_deployment

    shutil.rmtree(work, ignore_errors=True)
    options = ApplyOptions(out_dir=work, duration_s=duration_s, arrival="poisson", seed=seed)
    dep = build_deployment(read_plan(plan_path), options)
    result = apply_plan(dep, progress=lambda m: print(f"  {m}", flush=True))
    return dep, result


def cmd_run(args: argparse.Namespace) -> None:
    from igniter_opt.apply import render_result
    from igniter_opt.apply.gpus import nvml_gpus

    args.work.mkdir(parents=True, exist_ok=True)
    gpus = nvml_gpus()
    if not gpus:
        raise SystemExit("no NVIDIA GPU visible through NVML: run this on the GPU machine")
    gpu = gpus[0].name
    csv_path = args.out / f"live_{gpu_slug(gpu)}.csv"
    for plan_path in args.plans:
        run = plan_path.stem + args.tag
        plan = read_plan(plan_path)
        if plan.num_gpus > len(gpus):
            print(f"{run}: skipped, needs {plan.num_gpus} GPUs and this machine has {len(gpus)}")
            continue
        if run in _done_runs(csv_path):
            print(f"{run}: already in {csv_path}, skipped")
            continue
        print(f"{run}: applying for {args.duration:g} s", flush=True)
        t0 = time.monotonic()
        dep, result = apply_one(plan_path, args.work / run, args.duration, args.seed)
        gpu = next(iter(dep.gpu_names.values()), gpu)
        print(render_result(result))
        if result.errors or result.interrupted:
            print(f"{run}: errors {result.errors} interrupted {result.interrupted}")
        ready = max(result.ready_s.values(), default=math.nan)
        new = not csv_path.exists()
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        with csv_path.open("a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=FIELDS)
            if new:
                w.writeheader()
            for r in result.results:
                w.writerow({k: _fmt(v) for k, v in {
                    "run": run, "planner": plan.planner, "budget": plan.latency_budget, "workload": r.workload,
                    "model": r.model, "batch": r.batch, "share": r.share_pct, "rate_rps": r.rate_rps,
                    "slo_ms": r.slo_ms, "requests": r.requests, "within_slo": r.within_slo, "p50_ms": r.p50_ms,
                    "p99_ms": r.p99_ms, "predicted_ms": r.predicted_ms, "measured_mean_ms": r.server_infer_ms,
                    "e2e_mean_ms": r.mean_ms, "executed_batch": r.executed_batch, "model_ms": r.model_ms,
                    "queue_ms": r.server_queue_ms, "achieved_rps": r.achieved_rps, "failed": r.failed,
                    "send_lag_p99_ms": r.generator_lag_p99_ms, "server_ready_s": ready, "gpu": gpu,
                }.items()})
        keep = args.out / "live_runs" / run
        keep.mkdir(parents=True, exist_ok=True)
        for f in ("summary.json", "latency.png", "deployment.json"):
            if (args.work / run / f).exists():
                shutil.copy2(args.work / run / f, keep / f)
        print(f"{run}: done in {time.monotonic() - t0:.0f} s -> {csv_path}", flush=True)


def gpu_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'h100'."""
    for token in name.lower().replace("-", " ").split():
        if token[:1] in "ahlvbt" and any(c.isdigit() for c in token):
            return token
    return "gpu"


# ---- overhead ------------------------------------------------------------------------------------
def cmd_overhead(args: argparse.Namespace) -> None:
    import torch
    from igniter_opt.zoo import ModelRunner

    from igniter_opt.domain import GpuAssignment, Placement, Plan

    runner = ModelRunner(args.model, [1]).build()
    spec_in = runner.spec.inputs[0]
    x = torch.zeros((1, *spec_in.shape), dtype=getattr(torch, spec_in.dtype))
    for _ in range(20):
        runner.infer(x, to_host=True)
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        runner.infer(x, to_host=True)
        times.append(1e3 * (time.perf_counter() - t0))
    direct = {"p50_ms": statistics.median(times), "mean_ms": statistics.fmean(times),
              "p99_ms": sorted(times)[int(0.99 * (len(times) - 1))]}
    del runner
    torch.cuda.empty_cache()

    name = torch.cuda.get_device_name(0)
    plan = Plan("h100", "manual", "igniter", (GpuAssignment("gpu0", name, (
        Placement("W", args.model, 1000.0, args.rate, 1, 100.0),)),))
    args.out.mkdir(parents=True, exist_ok=True)
    plan_path = write_plan(plan, args.work / "overhead_plan.json")
    from igniter_opt.apply import ApplyOptions, apply_plan, build_deployment

    options = ApplyOptions(out_dir=args.work / "overhead", duration_s=args.duration, arrival="constant")
    dep = build_deployment(read_plan(plan_path), options)
    result = apply_plan(dep, progress=lambda m: print(f"  {m}", flush=True))
    (r,) = result.results
    served = {"p50_ms": r.p50_ms, "mean_ms": r.mean_ms, "p99_ms": r.p99_ms, "server_exec_ms": r.server_infer_ms,
              "model_ms": r.model_ms, "backend_ms": r.backend_ms, "queue_ms": r.server_queue_ms,
              "executed_batch": r.executed_batch, "requests": r.requests, "failed": r.failed}
    report = {
        "gpu": name, "model": args.model, "batch": 1, "rate_rps": args.rate, "duration_s": args.duration,
        "direct_runner": direct, "served": served,
        "overhead_per_request_ms": {
            "client_p50_minus_direct_p50": served["p50_ms"] - direct["p50_ms"],
            "server_exec_minus_model": served["server_exec_ms"] - served["model_ms"],
            "client_mean_minus_server_exec": served["mean_ms"] - served["server_exec_ms"],
        },
        "server_ready_s": result.ready_s,
        "errors": result.errors,
    }
    path = args.out / f"live_overhead_{gpu_slug(name)}.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


# ---- report --------------------------------------------------------------------------------------
def cmd_report(args: argparse.Namespace) -> None:
    """live_<gpu>.md (one row per run and workload) and live_<gpu>.png (share within SLO) from the CSV."""
    with args.csv.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise SystemExit(f"{args.csv}: no rows")
    lines = [f"# Live validation: {rows[0]['gpu']} ({args.csv.name})", "",
             ("| run | call | workload | model | batch | share % | rate | SLO ms | within SLO | p50 ms | p99 ms | "
              "predicted ms | measured ms | model ms | ran batch |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def num(r: dict[str, str], k: str, d: int = 2) -> str:
        return "-" if r[k] in ("", "nan") else f"{float(r[k]):.{d}f}"

    for r in rows:
        within = "-" if r["within_slo"] == "" else f"{100 * float(r['within_slo']):.2f} %"
        lines.append(f"| {r['run']} | {r.get('device_call', '')} | {r['workload']} | {r['model']} | {r['batch']} | "
                     f"{float(r['share']):.1f} | {float(r['rate_rps']):.0f} | {num(r, 'slo_ms', 0)} | {within} | "
                     + " | ".join(num(r, k) for k in ("p50_ms", "p99_ms", "predicted_ms", "measured_mean_ms",
                                                       "model_ms", "executed_batch")) + " |")
    out_md = args.csv.with_suffix(".md")
    out_md.write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = list(dict.fromkeys(r["run"] for r in rows))
    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(runs)), 4))
    width = 0.8 / len(workloads)
    for j, w in enumerate(workloads):
        xs, ys = [], []
        for i, run in enumerate(runs):
            hit = [r for r in rows if r["run"] == run and r["workload"] == w and r["within_slo"] != ""]
            if hit:
                xs.append(i + j * width)
                ys.append(100 * float(hit[0]["within_slo"]))
        ax.bar(xs, ys, width, label=w)
    ax.axhline(99, color="black", linestyle="--", linewidth=1, label="target 99 %")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(runs))], runs, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("requests within SLO (%)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8, ncol=len(workloads) + 1, loc="lower left")
    ax.set_title(f"Plans applied on {rows[0]['gpu']} for 60 s each (Poisson arrivals)", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.csv.with_suffix(".png"), dpi=100)
    print(f"wrote {out_md} and {args.csv.with_suffix('.png')}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plan", help="plan the mixes (anywhere)")
    p.add_argument("--mixes", default="I")
    p.add_argument("--serving-overhead-ms", type=float, nargs="*", default=[3.5],
                   help="also plan with these serving overheads (ms per batch execution)")
    p.add_argument("--max-utilization", type=float, nargs="+", default=[1.0, 0.8],
                   help="with each serving overhead, plan servers to these utilizations")
    p.add_argument("--profile", default="profiles/h100")
    p.add_argument("--margin", type=float, default=0.1)
    p.add_argument("--time-limit", type=float, default=60.0, help="exact planner, seconds")
    p.add_argument("-o", "--out", type=Path, default=PLANS)
    p.set_defaults(fn=cmd_plan)
    r = sub.add_parser("run", help="apply plans on the GPU and record live_<gpu>.csv")
    r.add_argument("plans", type=Path, nargs="+")
    r.add_argument("--duration", type=float, default=60.0)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--tag", default="", help="appended to each run's name (the plan file's stem)")
    r.add_argument("--work", type=Path, default=Path("/tmp/live-work"))
    r.add_argument("-o", "--out", type=Path, default=RESULTS)
    r.set_defaults(fn=cmd_run)
    o = sub.add_parser("overhead", help="the executor's own overhead (on the GPU)")
    o.add_argument("--model", default="resnet50")
    o.add_argument("--rate", type=float, default=100.0)
    o.add_argument("--duration", type=float, default=20.0)
    o.add_argument("--iters", type=int, default=1000)
    o.add_argument("--work", type=Path, default=Path("/tmp/live-work"))
    o.add_argument("-o", "--out", type=Path, default=RESULTS)
    o.set_defaults(fn=cmd_overhead)
    rep = sub.add_parser("report", help="markdown table and PNG from live_<gpu>.csv (anywhere)")
    rep.add_argument("csv", type=Path, nargs="?", default=RESULTS / "live_h100.csv")
    rep.set_defaults(fn=cmd_report)
    args = ap.parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main()
