"""The ``igniter-opt`` command line: thin commands over library functions.

Heavy libraries (scipy and scikit-learn for fitting, Pyomo and HiGHS for the exact planner,
matplotlib, the executor) are imported inside the commands that use them, so that ``--help`` and
a greedy ``solve`` start fast.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from igniter_opt import __version__
from igniter_opt.domain import DEFAULT_ATTAINMENT, DEFAULT_MARGIN, LatencyBudget
from igniter_opt.errors import IgniterOptError, PlanError, ProfileError
from igniter_opt.solver import DEFAULT_MIGRATION_COST, DEFAULT_TIME_LIMIT_S

if TYPE_CHECKING:
    from igniter_opt.domain import Plan, Workload
    from igniter_opt.placement import Violation
    from igniter_opt.problems import BudgetChoice
    from igniter_opt.solver import SolveOptions

DEFAULT_PROFILE = os.environ.get("IGNITER_OPT_PROFILE", "h200")
# solve and compare plan for each request (the tail budget held live on the H200: docs/live-tail.md); the
# paper's budget stays one option away, and the other commands keep theirs until they are proven live.
DEFAULT_PLAN_BUDGET = "tail"
PLANNER_NAMES = ("greedy", "exact", "ffd", "gpulet")
REPLANNER_NAMES = ("greedy", "exact", "columns")
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
# Violations that make a plan unusable whatever it is used for: refused by predict too.
STRUCTURAL = ("share", "model", "batch")


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the library's user-facing errors into a one-line message and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except IgniterOptError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


def format_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True,
        help="How to print the result.",
    )(fn)


def profile_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--profile", "-p", default=DEFAULT_PROFILE, show_default=True,
        help="Profile name (a folder under profiles/) or path (profile folder or raw profile file).",
    )(fn)


def budget_options(default_budget: str | None = "igniter") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--latency-budget, --attainment, --margin, --serving-overhead-ms, --max-utilization, --max-batch.

    ``default_budget`` None: every option defaults to what the plan at hand was made with.
    """
    from_plan = default_budget is None

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn = click.option(
            "--max-batch", type=click.IntRange(min=1), default=None,
            help="Largest batch a plan may use. Default: the largest the profile measured (beyond it the fit "
                 "extrapolates, which this option allows).",
        )(fn)
        fn = click.option(
            "--max-utilization", "max_utilization", type=click.FloatRange(0, 1, min_open=True), default=None,
            help="igniter/full budgets with the serial-server model: plan each server to at most this fraction of "
                 "its capacity. Implies --serving-overhead-ms 0 when that is not given.",
        )(fn)
        fn = click.option(
            "--serving-overhead-ms", "serving_overhead", type=click.FloatRange(min=0), default=None,
            help="Per-batch overhead of the serving stack (ms). tail: replaces the profile's measured one; igniter/"
                 "full: plan for servers that run one batch at a time with this overhead (latency t_inf + o, "
                 "throughput b / (t_inf + o)). " + ("Default: the plan's." if from_plan else
                                                   "Default: the profile's (tail), the paper's model (others)."),
        )(fn)
        fn = click.option(
            "--margin", type=click.FloatRange(0, 1, max_open=True), default=None if from_plan else DEFAULT_MARGIN,
            show_default=not from_plan, help="full budget: batch formation + inference <= SLO * (1 - margin).",
        )(fn)
        fn = click.option(
            "--attainment", type=click.FloatRange(0, 1, min_open=True, max_open=True),
            default=None if from_plan else DEFAULT_ATTAINMENT, show_default=not from_plan,
            help="tail budget: the fraction of each workload's requests that must be within its SLO.",
        )(fn)
        return click.option(
            "--latency-budget", "budget", type=click.Choice([b.value for b in LatencyBudget]), default=default_budget,
            show_default=not from_plan,
            help="igniter: inference <= SLO/2 (the paper's rule); full: batch formation + inference <= SLO; tail: "
                 "each request's latency under random arrivals within the SLO for --attainment of the requests."
                 + (" Default: the plan's." if from_plan else ""),
        )(fn)

    return deco


def solver_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--fallback-greedy", is_flag=True,
                      help="Exact planners: when the HiGHS solver cannot be loaded, return the greedy plan (status "
                           "error, the reason in its note) instead of stopping with an error.")(fn)
    fn = click.option("--quiet", is_flag=True,
                      help="No progress lines on stderr while the exact planner runs.")(fn)
    fn = click.option("--threads", type=click.IntRange(min=1), default=None, help="Solver threads (exact).")(fn)
    fn = click.option("--gap", type=click.FloatRange(min=0), default=None,
                      help="Relative MIP gap at which the exact planner stops.")(fn)
    return click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=None,
                        help=f"Seconds the exact planner may take in all (the problem checks and building the "
                             f"model included); with --fleet, the fleet greedy's local search too. "
                             f"[default: {DEFAULT_TIME_LIMIT_S:g}; $IGNITER_OPT_TIME_LIMIT_S]")(fn)


def solver_progress(quiet: bool) -> Callable[[str], None] | None:
    """Where the exact planner's progress lines go: stderr, or nowhere with --quiet."""
    return None if quiet else (lambda line: click.echo(line, err=True))


def solve_options(time_limit: float | None, gap: float | None, threads: int | None, fallback_greedy: bool,
                  quiet: bool, migration_cost: float | None = None) -> SolveOptions:
    """``solver_options``' values (and a replanner's migration cost) over the environment's defaults; progress
    lines on stderr unless ``quiet``."""
    from igniter_opt.solver import SolveOptions

    return SolveOptions.from_env(time_limit_s=time_limit, mip_rel_gap=gap, threads=threads,
                                 migration_cost=migration_cost, fallback_greedy=fallback_greedy,
                                 progress=solver_progress(quiet))


def emit(text: str) -> None:
    click.echo(text)


def note(text: str) -> None:
    """A remark on stderr (after the result, so that the result's first lines stay where they are)."""
    click.echo(f"note: {text}", err=True)


def _choice(budget: str, margin: float | None, attainment: float | None, serving_overhead: float | None,
            max_utilization: float | None, max_batch: int | None) -> BudgetChoice:
    from igniter_opt.problems import BudgetChoice

    return BudgetChoice(LatencyBudget(budget), DEFAULT_MARGIN if margin is None else margin,
                        DEFAULT_ATTAINMENT if attainment is None else attainment, serving_overhead, max_utilization,
                        max_batch)


def _workloads(path: Path | None) -> tuple[Any, str | None]:
    """The workloads of --workloads, or the paper's mix with a note saying so."""
    from igniter_opt.planio import EXAMPLE_WORKLOADS, read_workloads

    if path is not None:
        return read_workloads(path), None
    return read_workloads(EXAMPLE_WORKLOADS), ("no --workloads given: planned the paper's 12-workload mix "
                                               f"({EXAMPLE_WORKLOADS.name})")


def _violations_error(what: str, violations: tuple[Violation, ...] | list[Violation]) -> click.ClickException:
    n_w = len({v.workload for v in violations if v.workload})
    where = f"{len(violations)} place(s)" + (f" of {n_w} workload(s)" if n_w else "")
    return click.ClickException(f"{what} violates the exact model in {where}: {violations[0].message}")


def read_runnable_plan(path: Path) -> Plan:
    """A plan to run: one marked as failing verification ("verified": false) is refused."""
    from igniter_opt.planio import read_plan

    plan = read_plan(path)
    if plan.verified is False:
        raise PlanError(f"{path}: the plan failed verification when it was written (\"verified\": false); "
                        "fix it, or re-plan and write it without --write-failing")
    return plan


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "--version", prog_name="igniter-opt")
def cli() -> None:
    """Interference-aware GPU provisioning for DNN inference serving (iGniter and beyond).

    Plan how many GPUs to use, which workloads share each GPU, and what MPS share and batch size
    each gets, so that every workload meets its latency SLO at its request rate at the lowest cost.
    """


def interference_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--interference-form and --co-runs, shared by 'fit' and 'profile'."""
    fn = click.option("--co-runs", type=click.Path(dir_okay=False, path_type=Path), default=None,
                      help="kernel-delay only: measured co-locations of different models (the JSON lines of "
                           "'benchmarks/accuracy.py run') to fit the cache scale kappa on; without them kappa "
                           "is the one the raw profile records, else 1.")(fn)
    return click.option("--interference-form", type=click.Choice(["igniter", "kernel-delay"]), default=None,
                        help="Co-location interference form: the paper's (igniter) or a per-kernel delay plus a "
                             "scaled cache term (kernel-delay, docs/interference.md). Default: the one the raw "
                             "profile records, else igniter.")(fn)


def _co_runs(path: Path | None, raw: Any) -> Any:
    """The co-location runs of --co-runs, read before any fitting (or measuring)."""
    if path is None:
        return ()
    from igniter_opt.perfmodel.interference import load_co_runs

    return load_co_runs(path, gpu=raw.gpu.get("name") if raw is not None else None)


def interference_summary(model: Any) -> str:
    """One line: the interference form a fitted model predicts with, and its coefficients."""
    fit = model.gpu.get("fit", {})
    form = fit.get("interference_form", "igniter")
    if form == "igniter":
        return "interference: igniter (the paper's form)"
    b = fit["interference"]
    return (f"interference: {form}, delta_co={b['co_kernel_delay_ms'] * 1e3:.4g} us per kernel, "
            f"kappa={b['cache_scale']:.4g} ({b['cache_scale_source']})")


@cli.command()
@click.argument("raw", type=click.Path(dir_okay=True, path_type=Path))
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Profile folder to write (raw.json and coefficients.json).")
@click.option("--name", default=None, help="Profile name recorded in the coefficients (default: folder name).")
@interference_options
@handle_errors
def fit(raw: Path, out_dir: Path, name: str | None, interference_form: str | None, co_runs: Path | None) -> None:
    """Fit the performance model's coefficients from a raw profile.

    RAW is a raw profile in the project's format (raw.json, or a profile folder) or in the format
    the iGniter authors published (JSON lines). The result is a profile folder that --profile takes.

    Example: igniter-opt fit profiles/h100/raw.json -o profiles/h100-refit

    Example: igniter-opt fit profiles/h200 -o profiles/h200-kd --interference-form kernel-delay
    --co-runs benchmarks/results/accuracy_h200_train_runs.jsonl
    """
    from igniter_opt.perfmodel import fit_profile, load_raw, write_profile
    from igniter_opt.perfmodel.fit import record_interference
    from igniter_opt.report import render_table

    raw_profile = load_raw(raw)
    runs = _co_runs(co_runs, raw_profile)
    model = fit_profile(raw_profile, name=name or out_dir.name, interference_form=interference_form,
                        co_runs=runs, co_runs_source=co_runs.name if co_runs else None)
    write_profile(record_interference(raw_profile, model), model, out_dir)
    rows = [[m, *(f"{x:.6g}" for x in (*c.k, c.alpha_c, c.beta_c, c.alpha_p, c.beta_p, c.alpha_cache))]
            for m, c in sorted(model.models.items())]
    headers = ["model", "k1", "k2", "k3", "k4", "k5", "alpha_c", "beta_c", "alpha_p", "beta_p", "alpha_cache"]
    emit(render_table(headers, rows, align="l" + "r" * (len(headers) - 1)))
    hw = model.hardware
    emit(f"\nhardware: F={hw.max_clock_mhz:g} MHz, P_max={hw.max_power_w:g} W, alpha_f={hw.alpha_f:.6g}, "
         f"alpha_sch={hw.alpha_sch:.6g}, beta_sch={hw.beta_sch:.6g}, unit={hw.share_unit_pct:g} %")
    emit(interference_summary(model))
    emit(f"wrote {out_dir}/raw.json and {out_dir}/coefficients.json")


def _plan_profile(plan: Plan, profile: str | None, what: str) -> Any:
    """The profile a plan is judged with: --profile, else the one the plan names."""
    from igniter_opt.perfmodel import load_profile

    name = profile or plan.profile
    if not name:
        raise PlanError(f"{what}: the plan names no profile; pass --profile")
    return load_profile(name)


@cli.command()
@click.argument("plan_file", metavar="PLAN.json", type=click.Path(path_type=Path))
@click.option("--profile", "-p", default=None, help="Profile name or path. Default: the one the plan names.")
@click.option("--serving-overhead-ms", "serving_overhead", type=click.FloatRange(min=0), default=None,
              help="Per-batch serving overhead for the per-request predictions, where neither the plan nor the "
                   "profile has serving measurements (or to replace theirs).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the plan with every 'predicted' block filled in.")
@format_option
@handle_errors
def predict(plan_file: Path, profile: str | None, serving_overhead: float | None, output: Path | None,
            fmt: str) -> None:
    """Predict every placement of a plan: batch latency and throughput, and each request's p50, p99
    and fraction within the SLO under random arrivals (with serving measurements).

    Works for any plan, whatever budget or planner made it (by hand too); a placement without
    queue_delay_ms is predicted with the queue delay apply would configure. Judged under the plan's
    own budget: GPUs over 100 % (and other broken placements) are refused, placements over their
    limit are flagged.

    Example: igniter-opt predict plan.json -o predicted.json
    """
    from igniter_opt.placement import plan_problem, predict_plan, verify_plan
    from igniter_opt.placement.serving import configure_serving
    from igniter_opt.planio import read_plan, write_plan
    from igniter_opt.report import group_violations, plan_table, render_plan

    plan = read_plan(plan_file)
    perf = _plan_profile(plan, profile, str(plan_file))
    if plan.serving is not None and serving_overhead is None:
        perf = perf.with_serving(plan.serving)
    perf = configure_serving(perf, LatencyBudget.IGNITER, serving_overhead)  # serving measurements only
    base = perf.with_serving_overhead(plan.serving_overhead_ms, plan.serving_max_utilization,
                                      plan.serving_overhead_per_request_ms, plan.serving_model_overheads)
    predicted = predict_plan(plan, base, perf.serving)
    known = [v for v in verify_plan(predicted, plan_problem(predicted, perf)) if v.kind != "coverage"]
    broken = [v for v in known if v.kind in STRUCTURAL]
    if broken:
        raise _violations_error(str(plan_file), broken)
    if output is not None:
        write_plan(predicted, output)
    emit(plan_table(predicted) if fmt == "table" else render_plan(predicted, [], fmt))
    if known and fmt == "table":
        emit("\nover their limit (under the plan's own budget):\n" + "\n".join(group_violations(known)))


def _write_plan_or_refuse(outcome: Any, output: Path | None, write_failing: bool, what: str) -> None:
    """Write the plan when it verifies; a failing plan only with --write-failing, marked unverified."""
    from dataclasses import replace

    from igniter_opt.planio import write_plan

    if output is None:
        return
    if not outcome.violations:
        write_plan(replace(outcome.plan, verified=True), output)
    elif write_failing:
        write_plan(replace(outcome.plan, verified=False), output)
        note(f"wrote {output} although {what} fails verification (--write-failing); it says \"verified\": false "
             "and apply refuses it")
    else:
        note(f"{output} not written: {what} fails verification (--write-failing writes it, marked "
             "\"verified\": false, which apply refuses)")


def _split_notes(plan: Plan, batch_limit: int | None) -> list[str]:
    """A note for every workload split over several servers, saying what stops one GPU carrying it."""
    from collections import Counter

    counts = Counter(p.workload for _, p in plan.placements())
    why = "within its SLO"
    if batch_limit is not None:
        why += f" at batch <= {batch_limit} (the largest the profile measured, or --max-batch)"
    cap = plan.serving_max_utilization
    if cap is not None and cap < 1.0:
        why += f" and utilization <= {cap:g} (--max-utilization)"
    rate_cap = plan.serving.max_server_rate_rps if plan.serving is not None else None
    if rate_cap is not None:
        why += f", or its rate is above the profile's {rate_cap:g} req/s per server (max_server_rate_rps)"
    return [f"workload {w} is split over {n} servers: one GPU cannot carry its rate {why}" for w, n
            in counts.items() if n > 1]


@cli.command()
@click.option("--workloads", "-w", type=click.Path(path_type=Path), default=None,
              help="Workloads CSV (name,model,slo_ms,rate_rps). Default: the paper's 12-workload mix.")
@profile_option
@click.option("--planner", type=click.Choice(PLANNER_NAMES), default="greedy", show_default=True,
              help="Which planner to run.")
@budget_options(DEFAULT_PLAN_BUDGET)
@solver_options
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the plan JSON here (atomically); only a plan that verifies is written.")
@click.option("--write-failing", is_flag=True,
              help="Write the plan even when it fails verification (it then says \"verified\": false; apply "
                   "refuses it).")
@click.option("--fleet", default=None, metavar="TYPE:PRICE[:MAX],...|FILE.csv",
              help="Plan over several GPU types with prices per GPU-hour instead of one --profile (TYPE: a profile; "
                   "MAX: most GPUs of the type). -o PLAN.json then writes one plan per type, PLAN.<type>.json, and "
                   "the fleet's summary (docs/fleet.md).")
@click.option("--skip-unservable", is_flag=True,
              help="--fleet: leave out the workloads no type can serve (named in a note and the summary's "
                   "'unserved') and plan the rest, instead of stopping with an error.")
@format_option
@handle_errors
def solve(workloads: Path | None, profile: str, planner: str, budget: str, margin: float, attainment: float,
          serving_overhead: float | None, max_utilization: float | None, max_batch: int | None,
          time_limit: float | None, gap: float | None, threads: int | None, quiet: bool, fallback_greedy: bool,
          output: Path | None, write_failing: bool, fleet: str | None, skip_unservable: bool, fmt: str) -> None:
    """Plan GPUs, co-location, MPS shares and batch sizes for a set of workloads.

    Prints the plan (GPU, workload, model, batch, share, predicted latency against its limit,
    throughput against the rate) and re-verifies it with the exact performance model; a plan that
    fails is not written (see --write-failing) and the command exits 1.

    Example: igniter-opt solve --workloads examples/paper-table3.csv --profile h100 -o plan.json

    Example: igniter-opt solve -w examples/paper-table3.csv --latency-budget tail --attainment 0.99 -o plan.json

    Example: igniter-opt solve --fleet h100:2.5,h200:3.4:4 -o plan.json
    """
    from igniter_opt.planner import run_planner
    from igniter_opt.problems import make_problem
    from igniter_opt.report import render_plan

    ws, default_note = _workloads(workloads)
    choice = _choice(budget, margin, attainment, serving_overhead, max_utilization, max_batch)
    options = solve_options(time_limit, gap, threads, fallback_greedy, quiet)
    if fleet is not None:
        _refuse_profile_with_fleet()
        return _solve_fleet(ws, fleet, choice, planner, options, output, fmt, skip_unservable, default_note)
    if skip_unservable:
        from igniter_opt.errors import InputError

        raise InputError("--skip-unservable goes with --fleet (a single type names what it cannot serve; remove "
                         "those workloads)")
    problem = make_problem(ws, profile, choice)
    outcome = run_planner(problem, planner, options)
    _write_plan_or_refuse(outcome, output, write_failing, f"the {planner} plan")
    emit(render_plan(outcome.plan, outcome.violations, fmt))
    if fmt == "table":  # machine-readable output stays clean
        for text in ([default_note] if default_note else []) + _split_notes(outcome.plan, problem.batch_limit):
            note(text)
    if outcome.violations:
        raise _violations_error(f"the {planner} plan", outcome.violations)


def _refuse_profile_with_fleet() -> None:
    if click.get_current_context().get_parameter_source("profile") is not click.core.ParameterSource.DEFAULT:
        from igniter_opt.errors import InputError

        raise InputError("--fleet and --profile exclude each other: a fleet names its types' profiles")


def _compare_fleet(ws: tuple[Workload, ...], spec: str, choice: BudgetChoice, planners: list[str],
                   options: SolveOptions, fmt: str) -> None:
    """compare --fleet: the fleet plan of each planner, then every type alone (the first planner)."""
    from igniter_opt.fleet import parse_fleet
    from igniter_opt.planner.fleet import compare_fleet
    from igniter_opt.report import render_fleet_comparison

    emit(render_fleet_comparison(compare_fleet(ws, parse_fleet(spec), choice, planners, options), fmt))


def _solve_fleet(ws: tuple[Workload, ...], spec: str, choice: BudgetChoice, planner: str, options: SolveOptions,
                 output: Path | None, fmt: str, skip_unservable: bool = False, default_note: str | None = None
                 ) -> None:
    """solve --fleet: every type's part printed, then the fleet's cost; the parts and summary written
    (``default_note``: that the example workloads were planned, said like the single-type solve says it)."""
    from igniter_opt.fleet import parse_fleet
    from igniter_opt.planner.fleet import fleet_plan_to_dict, solve_fleet, write_fleet_plan
    from igniter_opt.report import render_plan

    fp = solve_fleet(ws, parse_fleet(spec), choice, planner, options, skip_unservable=skip_unservable)
    if output is not None:
        write_fleet_plan(fp, output)
    if fp.unserved:
        note(f"left out, no type of the fleet can serve them: {', '.join(fp.unserved)}")
    if default_note and fmt == "table":  # machine-readable output stays clean
        note(default_note)
    for text in fp.notes:
        note(text)
    if fmt == "json":
        emit(json.dumps(fleet_plan_to_dict(fp, output or Path("plan.json")), indent=2))
        return
    for part in fp.parts:
        emit(f"== {part.gpu_type.name}: {part.plan.num_gpus} GPU(s) at {part.gpu_type.price_per_gpu_hour:g}/h")
        emit(render_plan(part.plan, (), fmt))
    if fmt == "table":
        by_type = ", ".join(f"{n} x {t}" for t, n in fp.gpus_by_type().items())
        how = ("heuristic" if fp.bound is None else
               f"{fp.status}, bound {fp.bound.cost_per_hour:.2f}/h, gap {100 * (fp.gap or 0.0):.2f} %")
        emit(f"fleet: {fp.num_gpus} GPU(s) ({by_type}), cost {fp.cost_per_hour:.2f}/h; planner fleet-{planner} "
             f"({how}, {fp.wall_s:.3f} s); every part verified by its type's model")
        if fp.bound is not None:
            note(f"the fleet's {fp.bound.scope}: the larger of the fleet master's bound (columns of every type) and "
                 "each workload's least share alone on each type, rounded up to a cost of whole GPUs")


@cli.command()
@click.option("--workloads", "-w", type=click.Path(path_type=Path), default=None,
              help="Workloads CSV (name,model,slo_ms,rate_rps). Default: the paper's 12-workload mix.")
@profile_option
@click.option("--planners", default="greedy,exact,ffd,gpulet", show_default=True,
              help="Comma-separated planners to run, in this order.")
@click.option("--fleet", default=None, metavar="TYPE:PRICE[:MAX],...|FILE.csv",
              help="Compare over a fleet of GPU types instead (docs/fleet.md): the fleet plan of each planner "
                   "beside every type alone.")
@budget_options(DEFAULT_PLAN_BUDGET)
@solver_options
@format_option
@handle_errors
def compare(workloads: Path | None, profile: str, planners: str, fleet: str | None, budget: str, margin: float,
            attainment: float, serving_overhead: float | None, max_utilization: float | None, max_batch: int | None,
            time_limit: float | None, gap: float | None, threads: int | None, quiet: bool, fallback_greedy: bool,
            fmt: str) -> None:
    """Run several planners on the same workloads and compare their plans.

    One row per planner: GPUs, cost per hour, total share, workloads predicted to miss their SLO
    under the exact model, the proven lower bound on cost and the gap to it (exact planner), and
    the wall time. Heuristic plans that miss SLOs are listed, not rejected.

    Example: igniter-opt compare --workloads examples/paper-table3.csv --profile h100 --planners greedy,exact,ffd,gpulet
    """
    from igniter_opt.planner.compare import compare_planners, parse_planners
    from igniter_opt.problems import make_problem
    from igniter_opt.report import render_comparison

    names = parse_planners(planners)
    ws, default_note = _workloads(workloads)
    choice = _choice(budget, margin, attainment, serving_overhead, max_utilization, max_batch)
    options = solve_options(time_limit, gap, threads, fallback_greedy, quiet)
    if fleet is not None:
        _refuse_profile_with_fleet()
        return _compare_fleet(ws, fleet, choice, names, options, fmt)
    problem = make_problem(ws, profile, choice)
    rows, _ = compare_planners(problem, names, options)
    emit(render_comparison(rows, fmt))
    if default_note and fmt == "table":
        note(default_note)


@cli.command()
@click.argument("plan_file", metavar="PLAN.json", type=click.Path(path_type=Path))
@click.option("--workloads", "-w", type=click.Path(path_type=Path), default=None,
              help="The workloads CSV to check against. Default: the plan's own workloads and rates.")
@click.option("--profile", "-p", default=None, help="Profile name or path. Default: the one the plan names.")
@budget_options(None)
@handle_errors
def verify(plan_file: Path, workloads: Path | None, profile: str | None, budget: str | None, margin: float | None,
           attainment: float | None, serving_overhead: float | None, max_utilization: float | None,
           max_batch: int | None) -> None:
    """Re-check a plan with the exact model; exit 1 on any violation.

    By default under the plan's own budget, margin, attainment and serving model, against the
    plan's own workloads; each option overrides one of them.

    Example: igniter-opt verify plan.json --workloads examples/paper-table3.csv
    """
    from dataclasses import replace

    from igniter_opt.placement import plan_problem, verify_plan
    from igniter_opt.placement.serving import configure_serving
    from igniter_opt.planio import read_plan, read_workloads
    from igniter_opt.report import group_violations

    plan = read_plan(plan_file)
    perf = _plan_profile(plan, profile, str(plan_file))
    problem = plan_problem(plan, perf, read_workloads(workloads) if workloads is not None else None)
    if any(x is not None for x in (budget, serving_overhead, max_utilization)):
        b = LatencyBudget(budget or plan.latency_budget)
        overhead = serving_overhead if serving_overhead is not None or max_utilization is not None else (
            plan.serving_overhead_ms if b is not LatencyBudget.TAIL else None)
        problem = replace(problem, latency_budget=b, perf_model=configure_serving(perf, b, overhead, max_utilization))
    problem = replace(problem, margin=problem.margin if margin is None else margin,
                      attainment=problem.attainment if attainment is None else attainment, max_batch=max_batch)
    violations = verify_plan(plan, problem)
    if violations:
        emit("\n".join(group_violations(violations)))
        raise click.ClickException(f"{len(violations)} violation(s) under the exact model")
    emit(f"ok: {plan.num_gpus} GPU(s), every placement meets its limit and rate under the exact model "
         f"(budget {problem.latency_budget})")


@cli.command()
@click.argument("plan_file", metavar="[PLAN.json]", type=click.Path(path_type=Path), required=False)
@click.option("--diff", "diff_files", nargs=2, type=click.Path(path_type=Path), default=None,
              metavar="OLD.json NEW.json",
              help="Apply a plan change under load instead: run OLD, step the rates to NEW's at --step-at, "
                   "start NEW's changed servers next to the old ones, switch clients when they are ready, "
                   "then stop the old ones.")
@click.option("--step-at", type=click.FloatRange(min=0, min_open=True), default=None,
              help="With --diff: seconds into the run when the rates change and the change begins. "
                   "Default: a third of --duration.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="Seconds of load per workload.")
@click.option("--arrival", type=click.Choice(["poisson", "constant"]), default="poisson", show_default=True,
              help="Inter-arrival times of the requests.")
@click.option("--tritonserver", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Server binary. Default: tritonserver on PATH, else the one in the nvidia-pytriton wheel.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("apply-out"),
              show_default=True, help="Folder for the model repositories, server logs and results.")
@click.option("--gpus", default=None,
              help="Map plan GPUs to this machine's, by UUID or index: gpu0=GPU-<uuid>,gpu1=1. "
                   "Default: in order.")
@click.option("--base-port", type=click.IntRange(1024, 65535), default=None,
              help="Use ports BASE, BASE+1, ... (HTTP, gRPC, metrics per server) on 127.0.0.1. "
                   "Default: free ports.")
@click.option("--ready-timeout", type=click.FloatRange(min=0, min_open=True), default=180.0,
              show_default=True, help="Seconds to wait for every server to be ready.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the arrival times.")
@click.option("--echo-ms", type=click.FloatRange(min=0), default=None,
              help="Serve a numpy-free stand-in on CPU that returns its input after this many ms per batch "
                   "(no GPU, no MPS): tests the serving and measuring path on any machine.")
@click.option("--max-rps-per-process", type=click.FloatRange(min=1), default=200.0, show_default=True,
              help="A placement with a higher rate is driven by several load-generating processes.")
@click.option("--max-lag-ms", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="A workload's results are valid only if the load generator sent its requests at most this "
                   "late (p99 behind schedule); an invalid one is marked in the table and summary.json.")
@click.option("--load-generator", type=click.Choice(["python", "perf_analyzer"]), default="python",
              show_default=True,
              help="Who sends the requests: igniter-opt's own (one asyncio process per stream) or "
                   "Triton's perf_analyzer (C++, less CPU per request; needs tritonclient 2.51's binary and "
                   "libb64; not with --diff). See docs/executor.md.")
@click.option("--dry-run", is_flag=True,
              help="Print every command, environment and config; start nothing. Works on any machine: what "
                   "only the GPU machine can say (its GPUs, its tritonserver) is assumed and listed.")
@handle_errors
def apply(plan_file: Path | None, diff_files: tuple[Path, Path] | None, step_at: float | None,
          duration: float, arrival: str, tritonserver: Path | None, out_dir: Path, gpus: str | None,
          base_port: int | None, ready_timeout: float, seed: int, echo_ms: float | None,
          max_rps_per_process: float, max_lag_ms: float, load_generator: str, dry_run: bool) -> None:
    """Apply a plan to Triton Inference Servers under MPS, drive it with load, and measure SLO attainment.

    One tritonserver per placement, on its GPU (by UUID) with its MPS share and batch; requests at
    each workload's planned rate; per-request latencies and, per workload, p50/p95/p99, throughput
    and the share of requests within the SLO, written to --out. Ctrl-C stops everything cleanly.

    With --diff OLD.json NEW.json, applies a plan change under load (see --diff); results per
    phase (before, transition, after) in --out, with transition.json.

    Example: igniter-opt apply plan.json --duration 60 --out runs/plan1

    Example: igniter-opt apply --diff plan.json new_plan.json --duration 90 --step-at 30 --out runs/change
    """
    from igniter_opt.apply import ApplyOptions, apply_plan, build_deployment, render_dry_run, render_result

    options = ApplyOptions(
        out_dir=out_dir, duration_s=duration, arrival=arrival,
        tritonserver=str(tritonserver) if tritonserver else None, gpus=gpus, base_port=base_port,
        ready_timeout_s=ready_timeout, echo_ms=echo_ms, seed=seed, max_rps_per_process=max_rps_per_process,
        max_lag_ms=max_lag_ms, load_generator=load_generator,
    )
    if (plan_file is None) == (diff_files is None):
        raise click.UsageError("give either PLAN.json or --diff OLD.json NEW.json")
    if diff_files is not None:
        _apply_diff(diff_files, step_at if step_at is not None else duration / 3.0, options, dry_run)
        return
    if step_at is not None:
        raise click.UsageError("--step-at goes with --diff")
    assert plan_file is not None  # exactly one of PLAN.json and --diff, checked above
    dep = build_deployment(read_runnable_plan(plan_file), options, dry_run=dry_run)
    if dry_run:
        emit(render_dry_run(dep))
        return
    result = apply_plan(dep, progress=lambda msg: click.echo(msg, err=True))
    if result.results:
        emit(render_result(result))
    if result.interrupted:
        raise click.ClickException(
            f"interrupted by {result.interrupted}; every server and MPS stopped; "
            f"results so far in {result.out_dir}"
        )
    if result.errors:
        more = f" (+{len(result.errors) - 1} more, see summary.json)" if len(result.errors) > 1 else ""
        raise click.ClickException(f"{result.errors[0]}{more}; every server and MPS stopped")


def _apply_diff(diff_files: tuple[Path, Path], step_s: float, options: Any, dry_run: bool) -> None:
    from igniter_opt.apply.transition import (
        apply_transition,
        build_transition,
        render_transition,
        render_transition_dry_run,
    )

    tr = build_transition(read_runnable_plan(diff_files[0]), read_runnable_plan(diff_files[1]), options, step_s,
                          dry_run=dry_run)
    if dry_run:
        emit(render_transition_dry_run(tr))
        return
    result = apply_transition(tr, progress=lambda msg: click.echo(msg, err=True))
    emit(render_transition(result))
    if result.interrupted:
        raise click.ClickException(
            f"interrupted by {result.interrupted}; every server and MPS stopped; "
            f"results so far in {result.out_dir}")
    if result.errors:
        more = f" (+{len(result.errors) - 1} more, see transition.json)" if len(result.errors) > 1 else ""
        raise click.ClickException(f"{result.errors[0]}{more}; every server and MPS stopped")



def _migration_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--migration-cost", type=click.FloatRange(min=0), default=None,
        help=f"Cost of one changed running placement, in the units of the price per GPU-hour "
             f"(default {DEFAULT_MIGRATION_COST:g}; $IGNITER_OPT_MIGRATION_COST).",
    )(fn)


@cli.command()
@click.option("--current", "current_file", metavar="PLAN.json", type=click.Path(path_type=Path), required=True,
              help="The plan running now.")
@click.option("--workloads", "-w", type=click.Path(path_type=Path), required=True,
              help="The new workloads CSV (name,model,slo_ms,rate_rps); names identify workloads.")
@click.option("--profile", "-p", default=None,
              help="Profile name or path. Default: the current plan's (another one is refused).")
@click.option("--planner", type=click.Choice(REPLANNER_NAMES), default="greedy", show_default=True,
              help="greedy: keep what still works, place the rest; exact: the MIP with a migration cost.")
@_migration_option
@solver_options
@click.option("-o", "--output", metavar="NEW_PLAN.json", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write the new plan here (atomically), and its diff next to it.")
@click.option("--diff-output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the diff (igniter-opt/diff/v1) here. Default: NEW_PLAN.diff.json next to -o.")
@click.option("--fleet", default=None, metavar="TYPE:PRICE[:MAX],...|FILE.csv",
              help="Replan over this fleet (docs/fleet.md). Default, for a fleet plan: the fleet it was planned over.")
@format_option
@handle_errors
def replan(current_file: Path, workloads: Path, profile: str | None, planner: str, migration_cost: float | None,
           time_limit: float | None, gap: float | None, threads: int | None, quiet: bool, fallback_greedy: bool,
           output: Path | None, diff_output: Path | None, fleet: str | None, fmt: str) -> None:
    """Replan a running plan for new rates, changing as few running servers as possible.

    Prints the new plan and its diff against the current one: every placement kept (same GPU,
    share and batch: its server runs on), resized (same GPU, restart), moved, started or stopped,
    and the GPUs opened and released. The latency budget and serving model are the current plan's.
    Writes the plan and the diff (with -o) only when everything succeeded.

    A fleet plan (the summary 'solve --fleet -o' wrote) is replanned over its fleet, or over --fleet:
    running workloads stay on their GPU type, new ones go where they cost least, each type's part is
    replanned (docs/fleet.md).

    Example: igniter-opt replan --current plan.json -w examples/paper-table3-evening.csv --planner exact -o new.json

    Example: igniter-opt replan --current fleet.json -w examples/paper-table3-evening.csv -o new.json
    """
    from igniter_opt.planio import plan_kind

    if fleet is not None or plan_kind(current_file) == "fleet":
        from igniter_opt.errors import InputError

        if profile is not None:
            raise InputError("--profile goes with a single-type plan; a fleet names its types' profiles")
        return _replan_fleet(current_file, workloads, fleet, planner,
                             solve_options(time_limit, gap, threads, fallback_greedy, quiet, migration_cost), output,
                             fmt)
    from igniter_opt.placement import plan_problem
    from igniter_opt.planio import plan_to_dict, read_plan, read_workloads, write_plan
    from igniter_opt.replan import ReplanProblem, check_current_plan, run_replanner
    from igniter_opt.replan.diff import write_diff
    from igniter_opt.report import render_diff, render_plan

    current = read_plan(current_file)
    try:
        perf = _plan_profile(current, profile, str(current_file))
    except ProfileError as exc:
        raise ProfileError(f"the current plan's profile '{current.profile}': {exc}; pass --profile") from None
    check_current_plan(current, perf, str(current_file))
    # the running plan's budget and serving model carry over to the new plan
    problem = plan_problem(current, perf, read_workloads(workloads))
    options = solve_options(time_limit, gap, threads, fallback_greedy, quiet, migration_cost)
    outcome = run_replanner(ReplanProblem(current, problem), planner, options)
    if outcome.violations:
        emit(render_plan(outcome.plan, outcome.violations, "table"))
        raise _violations_error(f"the {planner} replan", outcome.violations)
    if output is not None:
        write_plan(outcome.plan, output)
        write_diff(outcome.diff, diff_output or output.with_name(output.name.removesuffix(".json") + ".diff.json"))
    if fmt == "json":
        emit(json.dumps({"plan": plan_to_dict(outcome.plan), "diff": outcome.diff.to_dict()}, indent=2))
    elif fmt == "csv":
        emit(render_diff(outcome.diff, "csv"))
    else:
        emit(render_plan(outcome.plan, outcome.violations, "table") + "\n\n" + render_diff(outcome.diff))


def _replan_fleet(current_file: Path, workloads: Path, spec: str | None, planner: str, options: Any,
                  output: Path | None, fmt: str) -> None:
    """replan over a fleet: each type's part replanned; the parts, their diffs and the summary written."""
    from igniter_opt.errors import InputError
    from igniter_opt.fleet import parse_fleet
    from igniter_opt.planio import plan_kind, read_plan, read_workloads
    from igniter_opt.planner.fleet import fleet_plan_to_dict, part_path, read_fleet_plan, write_fleet_plan
    from igniter_opt.replan.diff import write_diff
    from igniter_opt.replan.fleet import replan_fleet
    from igniter_opt.report import render_diff, render_plan

    if plan_kind(current_file) == "fleet":
        own, running = read_fleet_plan(current_file)
    else:  # a single-type plan joining a fleet: its type is the fleet type of its profile
        if spec is None:
            raise InputError(f"{current_file}: a single-type plan; --fleet names the fleet to replan it over")
        plan = read_plan(current_file)
        f = parse_fleet(spec)
        name = next((t.name for t, m in zip(f.types, f.models, strict=True) if m.name == plan.profile), plan.profile)
        own, running = spec, {name: plan}
    fleet = parse_fleet(spec or own)
    out = replan_fleet(running, read_workloads(workloads), fleet, planner, options)
    if output is not None:
        write_fleet_plan(out.plan, output)
        for name, outcome in out.outcomes.items():
            write_diff(outcome.diff, part_path(output, name).with_suffix(".diff.json"))
    if fmt == "json":
        emit(json.dumps({"fleet": fleet_plan_to_dict(out.plan, output or Path("plan.json")),
                         "diffs": {n: o.diff.to_dict() for n, o in out.outcomes.items()}}, indent=2))
        return
    for name, outcome in out.outcomes.items():
        emit(f"== {name}: {outcome.plan.num_gpus} GPU(s)")
        if outcome.plan.num_gpus:
            emit(render_plan(outcome.plan, outcome.violations, "table"))
        emit(render_diff(outcome.diff))
    by_type = ", ".join(f"{n} x {t}" for t, n in out.plan.gpus_by_type().items())
    emit(f"fleet: {out.plan.num_gpus} GPU(s) ({by_type}), cost {out.plan.cost_per_hour:.2f}/h (was "
         f"{out.old_cost_per_hour:.2f}/h); "
         f"replanner {planner}; every part verified by its type's model")


@cli.command("replan-trace")
@click.option("--trace", "trace_file", metavar="RATES.csv", type=click.Path(path_type=Path), required=True,
              help="CSV time_s,workload,rate_rps[,model,slo_ms]: each row sets a workload's rate from then on.")
@click.option("--workloads", "-w", type=click.Path(path_type=Path), default=None,
              help="Models and SLOs (CSV name,model,slo_ms), if the trace has no model,slo_ms columns.")
@profile_option
@click.option("--every", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Replan every S seconds (default: at every time of the trace).")
@click.option("--planner", type=click.Choice(REPLANNER_NAMES), default="greedy", show_default=True,
              help="Planner of the replan and re-solve strategies and of the peak plan.")
@_migration_option
@click.option("--plan-for", type=click.Choice(["peak", "start"]), default="peak", show_default=True,
              help="Provision each step for its interval's peak rate, or for the rate at its start.")
@budget_options()
@solver_options
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("replan-trace-out"), show_default=True,
              help="Output folder; a job there with the same arguments resumes after its last completed step.")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr (default: on a terminal).")
@click.option("--fleet", default=None, metavar="TYPE:PRICE[:MAX],...|FILE.csv",
              help="Replay over a fleet of GPU types instead of one --profile (docs/fleet.md); such a job does not "
                   "resume.")
@handle_errors
def replan_trace(trace_file: Path, workloads: Path | None, profile: str, every: float | None, planner: str,
                 migration_cost: float | None, plan_for: str, budget: str, margin: float, attainment: float,
                 serving_overhead: float | None, max_utilization: float | None, max_batch: int | None,
                 time_limit: float | None, gap: float | None, threads: int | None, quiet: bool,
                 fallback_greedy: bool, out_dir: Path, progress: bool | None, fleet: str | None) -> None:
    """Replay a rate trace: replan at every step, against re-solving from scratch and peak provisioning.

    Per step: cost, GPUs, placements kept, resized, moved, started and stopped, restarts and
    predicted SLO misses, for three strategies: replan (migration-aware, from the previous step's
    plan), resolve (the planner from scratch at each step) and peak (one plan for every workload's
    peak rate). Writes, into -o, every step's plan and record (an interrupted job run again with the
    same arguments resumes there), steps.csv, strategies_steps.csv, comparison.json / .md and
    cost_gpus.png, and prints the comparison.

    Example: igniter-opt replan-trace --trace examples/trace_paper_mix.csv --profile h100 --every 3600 -o runs/trace

    Example: igniter-opt replan-trace --trace examples/trace_paper_mix.csv --fleet h100:2.5,h200:3.4 -o runs/fleet
    """
    if fleet is not None:
        _refuse_profile_with_fleet()
        return _replan_trace_fleet(trace_file, workloads, fleet, every, planner, plan_for, _choice(
            budget, margin, attainment, serving_overhead, max_utilization, max_batch), time_limit, gap, threads,
            migration_cost, quiet, out_dir, fallback_greedy)
    from igniter_opt.problems import make_problem
    from igniter_opt.replan.trace import TraceJob, comparison, file_sha256, read_trace, run_trace_job
    from igniter_opt.report import render_trace_comparison

    trace = read_trace(trace_file, workloads, every_s=every)
    # the solver's lines would break the progress bar: they go to stderr only without one
    options = solve_options(time_limit, gap, threads, fallback_greedy, quiet or progress is not False, migration_cost)
    peak = make_problem(trace.workloads, profile, _choice(budget, margin, attainment, serving_overhead,
                                                          max_utilization, max_batch))
    job = TraceJob(trace, peak.perf_model, planner, options, every, plan_for, peak.latency_budget, peak.margin,
                   trace_sha256=file_sha256(trace_file),
                   workloads_sha256=file_sha256(workloads) if workloads is not None else None,
                   attainment=peak.attainment, max_batch=max_batch)
    result = run_trace_job(job, out_dir, progress=progress)
    emit(render_trace_comparison(comparison(job, result.summaries)))
    resumed = f" (resumed: {result.resumed_steps} step(s) read back)" if result.resumed_steps else ""
    emit(f"\nwrote {out_dir}/: steps.csv, strategies_steps.csv, comparison.json, comparison.md, cost_gpus.png, "
         f"and per step replan/, resolve/, peak/ plans{resumed}")


def _replan_trace_fleet(trace_file: Path, workloads: Path | None, spec: str, every: float | None, planner: str,
                        plan_for: str, choice: Any, time_limit: float | None, gap: float | None, threads: int | None,
                        migration_cost: float | None, quiet: bool, out_dir: Path, fallback_greedy: bool) -> None:
    """replan-trace --fleet: the three strategies over the fleet, a line per step on stderr."""
    from igniter_opt.fleet import parse_fleet
    from igniter_opt.replan.trace import read_trace
    from igniter_opt.replan.trace.fleet import render_fleet_trace, run_fleet_trace, summarise_fleet

    trace = read_trace(trace_file, workloads, every_s=every)
    options = solve_options(time_limit, gap, threads, fallback_greedy, True, migration_cost)

    def said(rec: Any) -> None:
        if not quiet:
            click.echo(f"step {rec.step} ({rec.time_s / 3600:.2f} h) {rec.strategy}: {rec.gpus_by_type or '-'}, "
                       f"cost {rec.cost_per_hour:g}/h, {rec.restarts} restart(s)", err=True)

    steps = run_fleet_trace(trace, parse_fleet(spec), choice, planner, options, every, plan_for, out_dir, said)
    emit(render_fleet_trace({s: summarise_fleet(r) for s, r in steps.items()}))
    emit(f"wrote {out_dir}/: steps.csv, comparison.json, comparison.md, and per step replan/, resolve/, peak/ fleet "
         "plans")


def _register_command_groups() -> None:
    """Commands that live with their subsystem (profiling, export)."""
    from igniter_opt.export.cli import export
    from igniter_opt.profiling.cli import profile

    cli.add_command(profile)
    cli.add_command(export)


_register_command_groups()


def main() -> None:
    cli(prog_name="igniter-opt")

