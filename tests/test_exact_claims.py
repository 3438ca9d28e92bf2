"""The exact planner's claims (issue 13's audit, one test per finding): a bound is a lower bound of
what it says it bounds, ``optimal`` means bound == objective, and every output shows one set of
numbers. Also the set-partitioning formulation, the automatic choice, progress and time limits."""

from __future__ import annotations

import json
import math
import re
import time

import numpy as np
import pytest

pytest.importorskip("pyomo.environ", reason="the exact planner needs pyomo")
pytest.importorskip("highspy", reason="the exact planner needs highspy")

from igniter_opt.domain import LatencyBudget, PlanningProblem, Workload
from igniter_opt.errors import ProblemError
from igniter_opt.perfmodel import PerformanceModel
from igniter_opt.placement import verify_plan
from igniter_opt.placement.serving import serving_model_for
from igniter_opt.planio import plan_from_dict, plan_to_dict
from igniter_opt.planner import exact, greedy
from igniter_opt.planner.exact import boxes, colgen, compact, model
from igniter_opt.planner.exact.boxes import BoxResult
from igniter_opt.planner.exact.relaxed import RelaxedBound
from igniter_opt.report import render_plan
from igniter_opt.solver import SolveOptions, SolveOutcome, SolveStatus

# The paper's budget: these commands default to tail since it held live (docs/live-tail.md).
IGNITER = ["--latency-budget", "igniter"]

# random_mix(V100, 8, seed 0) of benchmarks/instances.py: HiGHS (1.16, presolve on, greedy's start)
# reported 4 GPUs for the integer master's solution of 5 (below the certified bound 4.75).
MIX8 = [("vgg19", 23.5, 57.0), ("ssd", 40.3, 260.0), ("vgg19", 37.2, 400.0), ("resnet50", 10.1, 763.0),
        ("vgg19", 11.7, 325.0), ("vgg19", 53.2, 279.0), ("alexnet", 25.0, 192.0), ("resnet50", 16.2, 421.0)]


def _problem(perf: PerformanceModel, rows, budget: LatencyBudget = LatencyBudget.IGNITER,
             margin: float = 0.1) -> PlanningProblem:
    ws = tuple(Workload(f"w{i}", m, float(slo), float(rate)) for i, (m, slo, rate) in enumerate(rows))
    return PlanningProblem(ws, perf, budget, margin)


def _check_claim(plan, problem) -> None:
    """What every exact plan must satisfy: verified, bound <= objective == cost, optimal iff equal."""
    s = plan.solver
    assert verify_plan(plan, problem) == []
    assert s.objective == pytest.approx(plan.cost_per_hour)
    assert s.bound is not None and s.bound <= plan.cost_per_hour + 1e-9
    assert (s.status == SolveStatus.OPTIMAL) == math.isclose(s.bound, s.objective, abs_tol=1e-9)
    assert s.trivial_bound is not None and s.trivial_bound <= s.bound + 1e-9


# ---- audit bullet 1: a split workload voids the claim -------------------------------------------
@pytest.mark.parametrize(("rows", "budget", "margin"), [
    ([("vgg19", 40, 1098)], LatencyBudget.IGNITER, 0.1),
    ([("vgg19", 40, 753), ("resnet50", 40, 500)], LatencyBudget.FULL, 0.0),
])
def test_the_master_chooses_the_split_and_finds_the_two_gpu_plans(v100_model, rows, budget, margin) -> None:
    """Greedy splits these into 3 GPUs and the compact model "proved" 3 optimal; 2 GPUs verify."""
    problem = _problem(v100_model, rows, budget, margin)
    assert greedy.solve(problem).num_gpus == 3
    plan = exact.solve(problem, SolveOptions(time_limit_s=30))
    assert plan.num_gpus == 2
    assert plan.solver.status == SolveStatus.OPTIMAL and plan.solver.bound == pytest.approx(2.0)
    assert "equal replicas" in plan.solver.message  # the claim says what it is a bound of
    _check_claim(plan, problem)


def test_the_compact_model_is_chosen_only_where_greedy_splits_nothing(v100_model, paper_workloads) -> None:
    split = _problem(v100_model, [("vgg19", 40, 1098)])
    start = greedy.place(v100_model, greedy.initial_demands(split))
    assert exact.choose_formulation(split, start) == "columns"
    small = _problem(v100_model, [("resnet50", 30, 200), ("alexnet", 20, 300)])
    start = greedy.place(v100_model, greedy.initial_demands(small))
    assert exact.choose_formulation(small, start) == "compact"
    forced = exact.solve(split, SolveOptions(time_limit_s=20), formulation="compact")
    assert "split as the greedy planner splits it" in forced.solver.message  # its scope, said


# ---- audit bullet 2: HiGHS contradicted itself ---------------------------------------------------
def test_an_integer_master_objective_is_recomputed_and_a_contradiction_re_solved(v100_model) -> None:
    problem = _problem(v100_model, MIX8)
    start = greedy.place(v100_model, greedy.initial_demands(problem))
    setup = colgen.prepare_colgen(problem, serving_model_for(problem), start)
    state = colgen.ColgenState(colgen.initial_master(setup, 1))
    colgen.generate(setup, state, time.perf_counter() + 20, len(start.gpus))
    sol = state.master.solve_integer(20, colgen.start_solution(setup, state.master), setup.start_choice, 1e-6)
    assert sol.result.objective == pytest.approx(sol.cost)  # what HiGHS says is what it handed back
    assert sol.cost >= state.bound_gpus
    plan = exact.solve(problem, SolveOptions(time_limit_s=30), formulation="columns")
    _check_claim(plan, problem)


def test_a_compact_run_whose_objective_disagrees_with_its_solution_is_re_solved(any_model, monkeypatch) -> None:
    problem = _problem(any_model, [("resnet50", 30, 200), ("alexnet", 20, 300), ("vgg19", 40, 100)])
    calls: list[bool] = []
    real = compact.solve_model

    def lying(m, options, *, presolve: bool = True, **kw):
        calls.append(presolve)
        out = real(m, options, presolve=presolve, **kw)
        if presolve and out.objective is not None:  # the contradiction seen: a lower objective than loaded
            return SolveOutcome(out.status, objective=out.objective - 1.0, bound=out.objective - 1.0,
                                termination_raw=out.termination_raw, solver_name=out.solver_name)
        return out

    monkeypatch.setattr(compact, "solve_model", lying)
    plan = exact.solve(problem, SolveOptions(time_limit_s=20), formulation="compact")
    assert calls == [True, False]
    assert "re-solved without presolve" in plan.solver.message
    _check_claim(plan, problem)


# ---- audit bullet 3: the tightened model's bound was used as the problem's ----------------------
def test_the_bounds_model_is_loosened_not_tightened(any_model, monkeypatch) -> None:
    """The compact model the planner solves widens every budget (its bound is then a bound of the
    problem); the plan-making safety margin tightens them."""
    built = []
    real = compact.build_model

    def spy(data, **kw):
        built.append(real(data, **kw))
        return built[-1]

    monkeypatch.setattr(compact, "build_model", spy)
    rows = [("resnet50", 30, 300), ("alexnet", 20, 400), ("vgg19", 40, 150), ("ssd", 50, 60)]
    exact.solve(_problem(any_model, rows), SolveOptions(time_limit_s=20), formulation="compact")
    (m,) = built
    assert m.loosened
    assert model.budget_shift(10.0, True) > 0 > model.budget_shift(10.0, False)
    tight = real(m.data)
    from pyomo.repn import generate_standard_repn

    def rhs(c) -> float:  # the row as "variables <= rhs"
        return c.upper() - generate_standard_repn(c.body).constant

    rows_l = {k: rhs(c) for k, c in m.gpu_time_budget.items()}
    rows_t = {k: rhs(c) for k, c in tight.gpu_time_budget.items()}
    assert rows_l and all(rows_l[k] > rows_t[k] for k in rows_t)


# ---- audit bullet 4: at 50 workloads the bound was the trivial bound ----------------------------
def test_the_trivial_bound_is_reported_beside_the_bound(any_model) -> None:
    problem = _problem(any_model, MIX8)
    plan = exact.solve(problem, SolveOptions(time_limit_s=20), formulation="columns")
    s = plan.solver
    assert s.columns is not None and s.columns > len(MIX8)  # columns were generated
    assert s.trivial_bound is not None and s.bound >= s.trivial_bound
    _check_claim(plan, problem)


# ---- audit bullet 5: the note showed HiGHS's raw numbers ----------------------------------------
@pytest.mark.parametrize("formulation", ["compact", "columns"])
def test_table_note_and_json_show_one_objective_bound_and_gap(any_model, formulation) -> None:
    rows = [("resnet50", 30, 300), ("alexnet", 20, 400), ("vgg19", 40, 150), ("ssd", 50, 60)]
    problem = _problem(any_model, rows)
    plan = exact.solve(problem, SolveOptions(time_limit_s=20), formulation=formulation)
    s = plan.solver
    text = render_plan(plan, [], "table")
    assert f"bound {s.bound:g}, gap {100 * s.gap:.2f} %" in text
    d = json.loads(json.dumps(plan_to_dict(plan)))
    assert (d["solver"]["objective"], d["solver"]["bound"]) == (pytest.approx(s.objective), pytest.approx(s.bound))
    back = plan_from_dict(d).solver
    assert (back.columns, back.trivial_bound) == (s.columns, pytest.approx(s.trivial_bound))
    # every other GPU count in the note is labelled as the solver's
    for clause in s.message.split("; "):
        if re.search(r"GPU cost|its bound", clause):
            assert clause.startswith(("HiGHS", "solver's")), clause


# ---- time limits, progress, bad input ----------------------------------------------------------
def test_a_time_limit_at_or_below_zero_is_refused(any_model) -> None:
    with pytest.raises(ProblemError, match="time limit"):
        exact.solve(_problem(any_model, MIX8), SolveOptions(time_limit_s=0))


def _mix40(model, monkeypatch) -> PlanningProblem:
    """The benchmark's random mix of 40 workloads, seed 1: large enough for column generation."""
    monkeypatch.syspath_prepend("benchmarks")
    from instances import random_mix

    return PlanningProblem(random_mix(model, 40, 1), model, LatencyBudget.IGNITER, 0.1)


def test_progress_lines_while_it_runs_and_the_limit_bounds_the_whole_call(any_model, monkeypatch) -> None:
    problem = _mix40(any_model, monkeypatch)
    lines: list[str] = []
    t0 = time.perf_counter()
    plan = exact.solve(problem, SolveOptions(time_limit_s=8, progress=lines.append))
    wall = time.perf_counter() - t0
    assert wall < 8 + 2.5, wall
    assert lines and all(re.search(r"columns.*bound \d+ GPU.*incumbent \d+ GPU", ln) for ln in lines)
    assert plan.num_gpus <= greedy.solve(problem).num_gpus
    _check_claim(plan, problem)


def test_with_a_core_to_spare_proof_rounds_run_there_within_the_limit_and_leave_no_process(any_model,
                                                                                          monkeypatch) -> None:
    """At a limit of at least ``proofworker.MIN_TIME_LIMIT_S`` on two cores the proof rounds (and box pricing
    where no proof can help) run in the worker process: the call still ends in its limit, the claim holds,
    the message says where they ran, and no worker process is left; ``IGNITER_OPT_PROOF_WORKER=0`` keeps
    them in the solving process."""
    from _procs import proof_workers

    from igniter_opt.planner.exact import proofworker

    problem = _mix40(any_model, monkeypatch)
    monkeypatch.setattr(proofworker.os, "sched_getaffinity", lambda _pid: {0, 1})
    limit = proofworker.MIN_TIME_LIMIT_S + 2.0
    t0 = time.perf_counter()
    plan = exact.solve(problem, SolveOptions(time_limit_s=limit))
    wall = time.perf_counter() - t0
    assert wall < limit + 2.5, wall
    _check_claim(plan, problem)
    assert re.search(r"proof round\(s\) in [\d.]+ s on a second core", plan.solver.message)
    assert "box pricing round(s) on that core" in plan.solver.message
    assert proof_workers() == []
    monkeypatch.setenv(proofworker.ENV_SWITCH, "0")
    alone = exact.solve(problem, SolveOptions(time_limit_s=limit))
    assert "second core" not in alone.solver.message
    _check_claim(alone, problem)


def test_a_copy_of_the_integer_master_runs_on_the_second_core_and_its_plan_counts(v100_model, monkeypatch) -> None:
    """Where GPUs hold few members (the V100), each integer master has a copy on the worker's core with another
    HiGHS seed: with this process's master finding nothing (as when HiGHS's search runs long), the copy's plan is
    the one returned, verified, the note says so, the call ends in its limit and no worker is left."""
    from _procs import proof_workers

    from igniter_opt.planner.exact import master, proofworker
    from igniter_opt.planner.exact.lp import RunResult

    problem = _mix40(v100_model, monkeypatch)
    monkeypatch.setattr(proofworker.os, "sched_getaffinity", lambda _pid: {0, 1})
    monkeypatch.setattr(master.Master, "solve_integer",
                        lambda self, *_a: master.IntegerSolution(RunResult("Time limit reached", None, None, False),
                                                                 {}, {}))
    limit = 20.0
    t0 = time.perf_counter()
    plan = exact.solve(problem, SolveOptions(time_limit_s=limit))
    assert time.perf_counter() - t0 < limit + 2.5
    _check_claim(plan, problem)
    found = re.search(r"(\d+) integer master run\(s\)(?: \([^)]*\))?, (\d+) of them with a copy on the second core "
                      r"\(HiGHS random seed 1; (\d+) answered, (\d+) found the better plan\)", plan.solver.message)
    assert found, plan.solver.message
    runs, copies, answered, won = (int(g) for g in found.groups())
    assert runs >= copies == answered >= won >= 1
    assert plan.num_gpus < greedy.solve(problem).num_gpus  # the copy's plan: this process's masters found none
    assert proof_workers() == []


def test_no_copy_of_the_integer_master_where_gpus_hold_many_members(h100_model, monkeypatch) -> None:
    """On the H100 (7-10 members a GPU) HiGHS proves its masters in about a second: the worker keeps to the bound."""
    from igniter_opt.planner.exact import proofworker

    problem = _mix40(h100_model, monkeypatch)
    monkeypatch.setattr(proofworker.os, "sched_getaffinity", lambda _pid: {0, 1})
    plan = exact.solve(problem, SolveOptions(time_limit_s=proofworker.MIN_TIME_LIMIT_S + 2.0))
    _check_claim(plan, problem)
    assert "second core" in plan.solver.message and "copy on the second core" not in plan.solver.message


# ---- the limit comes while preparing or in the kernel heuristic (2026-12-03) ----------------------
def _slowed(monkeypatch, owner, name: str, seconds: float) -> list[int]:
    """Make ``owner.name`` sleep ``seconds`` before each call; returns a list counting the calls."""
    real = getattr(owner, name)
    calls: list[int] = []

    def slow(*args, **kwargs):
        calls.append(1)
        time.sleep(seconds)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, slow)
    return calls


@pytest.mark.parametrize(("owner", "slow_step", "trivial_known"),
                         [("items", "piece_table", False), ("items", "prune", True), ("relaxed", "_least_cache", True)])
def test_a_limit_that_comes_while_preparing_returns_greedys_plan_in_time(v100_model, monkeypatch, owner: str,
                                                                         slow_step: str, trivial_known: bool) -> None:
    """Preparing column generation took 10 s at 2000 workloads and was not interruptible: a 3 s limit
    ended at 10.5 s. Slowed here (every piece type's table, its pruning, or its table of the pricing
    relaxation, 50 ms; the last took 1.5-2.1 s at 2000 workloads uncut, and a sweep's 8 s run ended at
    8.90 s), the run ends within its limit with greedy's plan and the trivial bound when it was known by
    then, else one GPU."""
    import importlib

    problem = _mix40(v100_model, monkeypatch)
    start = greedy.place(v100_model, greedy.initial_demands(problem))
    setup = colgen.prepare_colgen(problem, serving_model_for(problem), start)
    trivial = setup.trivial_gpus
    every = len(setup.pieces) + (len(problem.workloads) if slow_step == "piece_table" else 0)  # calls of a full run
    calls = _slowed(monkeypatch, importlib.import_module(f"igniter_opt.planner.exact.{owner}"), slow_step, 0.05)
    t0 = time.perf_counter()
    plan = exact.solve(problem, SolveOptions(time_limit_s=1.5), formulation="columns")
    wall = time.perf_counter() - t0
    assert wall <= 1.5 + 0.1, wall
    assert 5 <= len(calls) < every  # stopped part-way
    s = plan.solver
    assert plan.num_gpus == greedy.solve(problem).num_gpus and verify_plan(plan, problem) == []
    price = plan.cost_per_hour / plan.num_gpus
    assert s.bound == pytest.approx(price * (trivial if trivial_known else 1))
    assert s.trivial_bound == (pytest.approx(price * trivial) if trivial_known else None)
    assert "time limit (1.5 s) came while preparing" in s.message and s.columns == 0
    assert s.status == SolveStatus.FEASIBLE and s.gap is not None and s.gap > 0


def test_the_problem_checks_count_against_the_time_limit(v100_model, monkeypatch) -> None:
    """``run_planner`` starts the limit's clock before its problem checks: at 2000 workloads they took 0.49 s
    outside the limit, and 3 / 8 / 20 s runs ended at 3.09 / 8.11 / 20.13 s. Checks slowed past a 1.5 s limit
    leave the planner no time, so it returns greedy's plan at once; a clock started by the caller is kept."""
    from igniter_opt import planner as planner_mod

    problem = _mix40(v100_model, monkeypatch)
    _slowed(monkeypatch, planner_mod.checks, "check_problem", 2.0)
    t0 = time.perf_counter()
    out = planner_mod.run_planner(problem, "exact", SolveOptions(time_limit_s=1.5))
    wall = time.perf_counter() - t0
    assert wall < 2.0 + 0.5, wall  # the checks' 2 s, then greedy's plan at once
    assert "time limit (1.5 s) came while preparing" in out.plan.solver.message and out.violations == ()
    assert out.plan.num_gpus == greedy.solve(problem).num_gpus
    assert out.plan.solver.wall_s >= 2.0  # the solve time reported is the limit's: the checks are in it
    started = SolveOptions(clock_start=12.5)
    assert started.clocked() is started and started.started() == 12.5
    part = started.within(4.0)  # a fleet part's share: its own clock, started when its run_planner starts it
    assert part.time_limit_s == 4.0 and part.clock_start is None and part.clocked().started() > 12.5


def test_the_kernel_heuristic_and_pair_pricing_stop_at_their_deadline(v100_model, monkeypatch) -> None:
    """The first pair-pricing round screens pairs of piece types on first use (6.5 s at 2000 workloads)
    and once ended a 10 s run at 17 s. Screening slowed to 50 ms a pair here, a round given 0.4 s ends
    by then with the columns found so far, each one the kernel accepts."""
    from igniter_opt.planner.exact.columns import evaluate
    from igniter_opt.planner.exact.pairs import PairTable

    problem = _mix40(v100_model, monkeypatch)
    start = greedy.place(v100_model, greedy.initial_demands(problem))
    setup = colgen.prepare_colgen(problem, serving_model_for(problem), start)
    duals = np.linspace(0.05, 0.5, len(setup.pieces))
    screened = _slowed(monkeypatch, PairTable, "_screen", 0.05)
    t0 = time.perf_counter()
    cols = colgen.kernel_columns(setup, duals, t0 + 0.4)
    assert time.perf_counter() - t0 <= 0.4 + 0.15
    assert cols and all(c is not None for c in evaluate(setup.space, [list(c.slots) for c in cols]))
    stopped_at = len(screened)
    colgen.kernel_columns(setup, duals)  # no deadline: it screens many more pairs
    assert len(screened) - stopped_at >= 3 * stopped_at


def test_growing_stops_at_its_deadline_with_configurations_that_fit(v100_model, monkeypatch) -> None:
    """Grown until a deadline already past, each configuration is its seed: nothing is added after it."""
    from igniter_opt.planner.exact.heuristic import grow

    problem = _mix40(v100_model, monkeypatch)
    start = greedy.place(v100_model, greedy.initial_demands(problem))
    setup = colgen.prepare_colgen(problem, serving_model_for(problem), start)
    duals = np.linspace(0.05, 0.5, len(setup.pieces))
    cut = grow(setup.space, setup.entries, setup.terms, duals, deadline=time.perf_counter())
    full = grow(setup.space, setup.entries, setup.terms, duals)
    assert len(cut) == len(full) and all(len(c) == 1 for c in cut)
    assert max(len(c) for c in full) >= 3


# ---- the command line: the limit's default in --help, progress on stderr, --quiet ---------------
def test_help_shows_the_time_limit_default_and_quiet() -> None:
    from click.testing import CliRunner

    from igniter_opt.cli import cli

    for command in ("solve", "compare", "replan", "replan-trace"):
        out = " ".join(CliRunner().invoke(cli, [command, "--help"]).output.split())  # however click wraps it
        assert "--time-limit" in out and "[default: 60;" in out and "--quiet" in out, command


def test_progress_goes_to_stderr_and_quiet_silences_it(any_profile_path, tmp_path) -> None:
    from click.testing import CliRunner

    from igniter_opt.cli import cli

    wl = tmp_path / "w.csv"
    wl.write_text("name,model,slo_ms,rate_rps\nbig,vgg19,40,1098\n")
    args = ["solve", *IGNITER, "-w", str(wl), "--profile", str(any_profile_path), "--planner", "exact", "--time-limit",
            "20", "--format", "json"]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    plan = json.loads(res.stdout)  # stdout stays clean JSON
    gpus = plan["cost"]["gpus"]  # 2 on the V100 (the audit's split case), 1 on the H100
    assert plan["solver"]["status"] == "optimal" and plan["solver"]["objective"] == gpus
    assert re.search(rf"exact: .*bound {gpus} GPU\(s\), incumbent {gpus} GPU\(s\)", res.stderr)
    quiet = CliRunner().invoke(cli, [*args, "--quiet"], catch_exceptions=False)
    assert quiet.exit_code == 0 and "exact:" not in quiet.stderr


def test_highs_failing_in_column_generation_returns_greedy_with_the_reason(v100_model, monkeypatch) -> None:
    def exploding(*args, **kwargs):
        raise RuntimeError("HiGHS exploded")

    monkeypatch.setattr(colgen, "price_mip", exploding)
    monkeypatch.setattr(colgen, "relaxed_bound", lambda *a: RelaxedBound(math.inf, 0))  # it would prove the plan
    monkeypatch.setattr(colgen, "box_kappa", lambda *a, **k: BoxResult(math.inf, [], 0, False))  # so would the boxes
    # and no bound at all, else generation ends before exact pricing: its LP, rounded up, would meet the bound
    monkeypatch.setattr(colgen, "trivial_bound", lambda *a: 0)
    monkeypatch.setattr(colgen, "class_bound", lambda *a, **k: None)
    monkeypatch.setenv("IGNITER_OPT_PROOF_WORKER", "0")  # (the worker's class bound is out of monkeypatch's reach)
    problem = _problem(v100_model, [("vgg19", 40, 1098)])
    plan = exact.solve(problem, SolveOptions(time_limit_s=20), formulation="columns")
    assert plan.solver.status == SolveStatus.ERROR and "HiGHS exploded" in plan.solver.message
    assert plan.num_gpus == greedy.solve(problem).num_gpus
    assert verify_plan(plan, problem) == []
    assert plan.solver.bound is not None and plan.solver.bound <= plan.cost_per_hour


def test_exact_pricing_keeps_the_largest_overrun_in_reserve() -> None:
    """A pricing run that ends past its limit (HiGHS checks it between phases only) makes the next turn
    shorter by as much, and no turn starts that could not end by the deadline."""
    limits: list[float] = []

    def late(limit_s: float) -> bool:  # runs 0.3 s past its limit, finds nothing
        limits.append(limit_s)
        time.sleep(limit_s + 0.3)
        return False

    clock = colgen.PricingClock(overrun_s=0.0)
    deadline = time.perf_counter() + 2.0
    assert colgen.exact_pricing_turn(late, deadline, False, lambda: False, clock) is True
    assert clock.overrun_s >= 0.3
    left = deadline - time.perf_counter()
    turn = colgen.exact_pricing_turn(late, deadline, True, lambda: False, clock)
    assert turn is None and limits[1] <= left - 0.3 + 1e-6
    assert time.perf_counter() <= deadline + 0.05  # the second turn ended by the deadline
    assert colgen.exact_pricing_turn(late, time.perf_counter() + 0.3, True, lambda: False, clock) is None
    assert len(limits) == 2  # too little time for a run plus the reserve: none was started


def test_no_exact_pricing_turn_is_begun_shorter_than_box_pricings_root_boxes(any_model, monkeypatch) -> None:
    """Box pricing's kappa needs every root box bounded; they can take longer than a turn's limit (24-73 s on
    the V100 at 200 workloads: a run ended 16 s past its time limit). Past its deadline it stops after one root,
    with no kappa and the time all of them would take, the shortest limit a later turn gets."""
    problem = _mix40(any_model, monkeypatch)
    setup = colgen.prepare_colgen(problem, serving_model_for(problem), greedy.place(
        problem.perf_model, greedy.initial_demands(problem)))
    state = colgen.ColgenState(colgen.initial_master(setup, 1))
    duals = np.full(len(setup.pieces), 0.6)
    whole = boxes.box_kappa(setup.boxes, duals, 0.0, time.perf_counter() + 600, max_nodes=0)  # the roots only
    assert math.isfinite(whole.kappa) and whole.roots_s > 0
    t0 = time.perf_counter()
    cut = boxes.box_kappa(setup.boxes, duals, 0.0, t0 + whole.roots_s / 4)  # a deadline before the roots end
    assert math.isinf(cut.kappa) and not cut.candidates and not cut.proven
    assert time.perf_counter() - t0 < whole.roots_s * 0.75
    assert whole.roots_s / 3 <= cut.roots_s <= whole.roots_s * 3  # the estimate of them all
    monkeypatch.setattr(colgen, "box_kappa", lambda *a, **k: BoxResult(5.0, [], 9, False, roots_s=2.5))
    colgen._box_pricing(setup, state, duals, time.perf_counter() + 0.1, math.inf)
    assert state.clock.least_s == 2.5
    ran: list[float] = []

    def run(limit_s: float) -> bool:
        ran.append(limit_s)
        return False

    assert colgen.exact_pricing_turn(run, time.perf_counter() + 3.0, False, lambda: False, state.clock) is None
    assert ran == []  # 2 s left after the 1 s reserve: less than the roots take, not begun
    colgen.exact_pricing_turn(run, time.perf_counter() + 4.0, False, lambda: False, state.clock)
    assert len(ran) == 1 and 2.5 <= ran[0] <= 3.0  # 40 % of 4 s is less: it gets what the roots take


def test_a_contradicted_integer_master_is_re_solved_only_with_time_for_it(monkeypatch) -> None:
    """HiGHS's contradiction (an objective below the solution it returned) is re-solved without presolve,
    but not when a retry could end past the limit: then the solution returned stands. The start goes only to
    the run without presolve (HiGHS 1.16 maps a start through presolve wrongly)."""
    from igniter_opt.planner.exact import master
    from igniter_opt.planner.exact.lp import RunResult

    calls: list[tuple[bool, float, object, object]] = []

    def lying(h, options, threads, start, chosen, gap, limit_s, presolve):
        calls.append((presolve, limit_s, start, chosen))
        return master.IntegerSolution(RunResult("Optimal", 2.0 if presolve else 3.0, 2.0, False), {0: 3}, {})

    monkeypatch.setattr(master, "_integer_run", lying)
    cost = lambda counts: float(sum(counts.values()))  # noqa: E731
    start, chosen = {0: 3}, {0: 1}
    sol = master.solve_integer_master(None, [], 1, 10.0, start, chosen, 0.0, cost)
    assert [p for p, *_ in calls] == [True, False] and calls[1][1] <= 10.0 - master.WATCHDOG_GRACE_S
    assert calls[0][2:] == (None, None) and calls[1][2:] == (start, chosen)
    assert "re-solved without presolve" in sol.note
    calls.clear()
    sol = master.solve_integer_master(None, [], 1, master.MIN_RETRY_S / 2, start, chosen, 0.0, cost)
    assert [p for p, *_ in calls] == [True]
    assert sol.counts == {0: 3} and "too little time left" in sol.note


def test_the_integer_master_agrees_with_highs_and_is_no_worse_than_its_start(v100_model, monkeypatch) -> None:
    """On a real master where HiGHS 1.16, given the start under presolve, declares 13 for the start's 19 (three runs
    of a one-off script, 818-837 columns), the integer master's objective is its solution's cost, with no
    contradiction to report, and it is no worse than the start."""
    problem = _mix40(v100_model, monkeypatch)
    start = greedy.place(v100_model, greedy.initial_demands(problem))
    setup = colgen.prepare_colgen(problem, serving_model_for(problem), start)
    state = colgen.generate(setup, colgen.ColgenState(colgen.initial_master(setup, 1)), time.perf_counter() + 3, None)
    m = state.master
    incumbent = colgen.start_solution(setup, m)
    sol = m.solve_integer(20.0, incumbent, setup.start_choice, 0.0)
    assert sol.note == "" and sol.counts
    assert sol.result.objective == pytest.approx(sol.cost)
    assert sol.cost <= sum(incumbent.values())


class _Event:
    """A stand-in for highspy's callback event: the solution, its reported objective, an interrupt flag."""

    def __init__(self, x: list[float], reported: float) -> None:
        self.data_out = type("Out", (), {"mip_solution": np.array(x), "objective_function_value": reported})()
        self.stopped = False

    def interrupt(self) -> None:
        self.stopped = True


def test_the_objective_check_flags_a_reported_objective_that_is_not_the_solutions() -> None:
    from igniter_opt.planner.exact.master import _ObjectiveCheck

    check = _ObjectiveCheck(np.array([0.0, 1.0, 1.0]))
    check.improving(_Event([1.0, 3.0, 2.0], 5.0))
    tick = _Event([], 0.0)
    check.interrupt(tick)
    assert not check.mismatch and not tick.stopped
    check.improving(_Event([1.0, 3.0, 2.0], 4.0))  # HiGHS 1.16: 76 reported for the start's 82
    check.interrupt(tick)
    assert check.mismatch and tick.stopped


def test_a_run_that_reports_a_wrong_objective_is_stopped_and_re_solved(v100_model, monkeypatch) -> None:
    """The check is wired into the integer master's HiGHS run: told that the first improving solution
    is wrong, that run is interrupted at HiGHS's next poll (where HiGHS polls again: it may end first, when that
    solution closes the search) and re-solved without presolve, whose answer stands."""
    from igniter_opt.planner.exact import master

    problem = _mix40(v100_model, monkeypatch)
    start = greedy.place(v100_model, greedy.initial_demands(problem))
    setup = colgen.prepare_colgen(problem, serving_model_for(problem), start)
    state = colgen.generate(setup, colgen.ColgenState(colgen.initial_master(setup, 1)), time.perf_counter() + 3, None)
    m = state.master
    checks: list[master._ObjectiveCheck] = []
    real_improving = master._ObjectiveCheck.improving

    def first_run_lies(self, event) -> None:
        if self not in checks:
            checks.append(self)
        real_improving(self, event)
        if self is checks[0]:
            self.mismatch = True

    polled_after_lie: list[bool] = []
    real_interrupt = master._ObjectiveCheck.interrupt

    def spy_interrupt(self, event) -> None:
        if checks and self is checks[0] and self.mismatch:
            polled_after_lie.append(True)
        real_interrupt(self, event)

    statuses: list[str] = []
    real_run = master.run

    def spy_run(h, limit_s, *, mip):
        res = real_run(h, limit_s, mip=mip)
        statuses.append(res.status)
        return res

    monkeypatch.setattr(master._ObjectiveCheck, "improving", first_run_lies)
    monkeypatch.setattr(master._ObjectiveCheck, "interrupt", spy_interrupt)
    monkeypatch.setattr(master, "run", spy_run)
    sol = m.solve_integer(10.0, colgen.start_solution(setup, m), setup.start_choice, 0.0)
    assert checks, "no improving solution reached the check"
    assert len(statuses) == 2 and statuses[1] != "Interrupted by user"
    if polled_after_lie:  # HiGHS polled after the lie: the run must have stopped there
        assert statuses[0] == "Interrupted by user"
    assert "re-solved without presolve" in sol.note
    assert sol.result.objective == pytest.approx(sum(sol.counts.values()))


def test_generation_begins_no_step_that_would_end_past_its_deadline(any_model, monkeypatch) -> None:
    """A master LP step as long as the longest so far is not begun when it would end past the deadline."""
    from igniter_opt.planner.exact.master import Master

    problem = _problem(any_model, MIX8)
    start = greedy.place(any_model, greedy.initial_demands(problem))
    setup = colgen.prepare_colgen(problem, serving_model_for(problem), start)
    state = colgen.ColgenState(colgen.initial_master(setup, 1))
    real = Master.solve_lp

    def slow(self, limit_s):
        time.sleep(0.4)
        return real(self, limit_s)

    monkeypatch.setattr(Master, "solve_lp", slow)
    deadline = time.perf_counter() + 0.6
    colgen.generate(setup, state, deadline, None)
    assert state.iterations == 1 and state.step_max_s >= 0.4
    assert time.perf_counter() <= deadline + 0.3  # the one step's pricing may end a little past it


def test_the_integer_master_gets_only_the_time_left_after_the_skip_check(any_model, monkeypatch) -> None:
    """The check that may skip the integer master re-solves the LP (1.8 s at 1000 workloads); the master's
    limit is what is left after it, so that the run ends by its deadline (it once ended 1.1 s late)."""
    from igniter_opt.planner.exact import setpart
    from igniter_opt.planner.exact.lp import WATCHDOG_GRACE_S

    problem = _mix40(any_model, monkeypatch)
    ends: list[float] = []
    real_improve, real_generate = setpart._improve, setpart.generate

    def short_generate(setup, state, deadline, *args, **kwargs):  # the master runs early on any machine
        return real_generate(setup, state, min(deadline, time.perf_counter() + 0.5), *args, **kwargs)

    def slow_check(state, incumbent_gpus, left_s) -> bool:
        time.sleep(1.5)  # a slow LP re-solve that never skips
        return False

    def improve(problem, setup, state, inc, limit_s, options, notes):
        ends.append(time.perf_counter() + limit_s)
        return real_improve(problem, setup, state, inc, limit_s, options, notes)

    monkeypatch.setattr(setpart, "_master_cannot_improve", slow_check)
    monkeypatch.setattr(setpart, "_improve", improve)
    monkeypatch.setattr(setpart, "generate", short_generate)
    t0 = time.perf_counter()
    exact.solve(problem, SolveOptions(time_limit_s=8), formulation="columns")
    deadline = t0 + 8 - setpart.EXTRACT_RESERVE_S
    assert ends and all(end + WATCHDOG_GRACE_S <= deadline + 0.05 for end in ends), (ends, deadline)


@pytest.mark.parametrize("left_s", [4.0, 5.0])
def test_the_fleet_master_gets_the_time_left_less_the_watchdogs_grace(left_s: float, monkeypatch) -> None:
    """HiGHS's watchdog may cancel the integer master WATCHDOG_GRACE_S past its limit: the fleet's rounds give
    it the time left less that grace, or run none (it once got all the time left, so a run could end a
    second past its deadline)."""
    from types import SimpleNamespace

    from igniter_opt.planner.exact import fleetcolgen
    from igniter_opt.planner.exact.lp import WATCHDOG_GRACE_S

    ends: list[float] = []

    def generate(fc, until: float) -> None:  # generation that uses all it is given
        time.sleep(max(0.0, until - time.perf_counter()))

    def improve(fc, limit_s: float, gap: float) -> None:
        ends.append(time.perf_counter() + limit_s)
        time.sleep(limit_s)

    monkeypatch.setattr(fleetcolgen, "generate", generate)
    monkeypatch.setattr(fleetcolgen, "bound_counts", generate)  # ruling out count vectors: uses all it is given too
    monkeypatch.setattr(fleetcolgen, "improve", improve)
    fc = SimpleNamespace(inc=SimpleNamespace(cost_per_hour=3.0), converged=False, proves=lambda cost: False)
    deadline = time.perf_counter() + left_s
    fleetcolgen.solve_fleet_columns(fc, deadline, 0.2, 1.0, 0.0)  # type: ignore[arg-type]
    assert ends and all(end + WATCHDOG_GRACE_S <= deadline + 0.05 for end in ends), (ends, deadline)


def _table3_replan():
    """The paper's Table 3 mix on the H100, replanned from greedy's plan at three times its rates."""
    from dataclasses import replace as dc_replace
    from pathlib import Path

    from igniter_opt.perfmodel import load_profile
    from igniter_opt.planio import read_workloads
    from igniter_opt.replan import ReplanProblem

    repo = Path(__file__).resolve().parents[1]
    h100 = load_profile(repo / "profiles" / "h100")
    ws = read_workloads(repo / "examples" / "paper-table3.csv")
    current = greedy.solve(PlanningProblem(tuple(dc_replace(w, rate_rps=3 * w.rate_rps) for w in ws), h100))
    return ReplanProblem(current, PlanningProblem(ws, h100))


@pytest.mark.parametrize("limit_s", [2.0, 4.0])
def test_the_replanners_master_gets_the_time_left_less_the_watchdogs_grace(limit_s: float, monkeypatch) -> None:
    """The columns replanner's integer master ends, watchdog included, by its deadline, or does not run and
    the greedy replan stands, verified (it once got all the time left)."""
    from igniter_opt.planner.exact.lp import WATCHDOG_GRACE_S
    from igniter_opt.replan import columns as rcolumns

    rp = _table3_replan()
    problem = rp.problem
    ends: list[float] = []
    real = rcolumns.solve_integer_master

    def master(*args, **kwargs):
        ends.append(time.perf_counter() + args[3])
        return real(*args, **kwargs)

    monkeypatch.setattr(rcolumns, "solve_integer_master", master)
    t0 = time.perf_counter()  # the replanner's own clock starts here (run_replanner's checks come before it)
    plan = rcolumns.solve(rp, SolveOptions(time_limit_s=limit_s, migration_cost=1.0))
    deadline = t0 + limit_s - rcolumns.EXTRACT_RESERVE_S
    assert verify_plan(plan, problem) == []
    assert all(end + WATCHDOG_GRACE_S <= deadline + 0.05 for end in ends), (ends, deadline)
    assert ends or "no time left for the integer master" in plan.solver.message


def test_the_replanners_input_checks_count_against_its_time_limit(monkeypatch) -> None:
    """``run_replanner`` starts the limit's clock before its input checks: slowed to 1.5 s, they leave the columns
    replanner 0.5 s of a 2 s limit, and the call ends within it with the greedy replan, verified (with the
    checks outside the limit it ran 1.1 s after them, to 2.6 s)."""
    from igniter_opt import replan as replan_mod

    rp = _table3_replan()
    replan_mod.run_replanner(rp, "greedy")  # its first call imports scipy (1.4 s), which no limit cuts
    _slowed(monkeypatch, replan_mod, "check_problem", 1.5)
    t0 = time.perf_counter()
    out = replan_mod.run_replanner(rp, "columns", SolveOptions(time_limit_s=2.0, migration_cost=1.0))
    wall = time.perf_counter() - t0
    assert wall <= 2.0 + 0.1, wall
    assert out.violations == () and out.plan.solver.wall_s is not None and out.plan.solver.wall_s >= 1.5


def test_the_integer_master_is_skipped_only_when_its_lp_rounded_up_meets_the_incumbent(v100_model) -> None:
    """The integer master over the columns is at least their LP, rounded up: below that incumbent it runs,
    at it it cannot help (and generation goes on instead)."""
    from igniter_opt.planner.exact import setpart

    problem = _problem(v100_model, MIX8)
    start = greedy.place(v100_model, greedy.initial_demands(problem))
    setup = colgen.prepare_colgen(problem, serving_model_for(problem), start)
    state = colgen.ColgenState(colgen.initial_master(setup, 1))
    colgen.generate(setup, state, time.perf_counter() + 5, None)
    lp = state.master.solve_lp(10).objective
    assert lp is not None and lp > math.floor(lp)  # a fractional LP: ceil(lp) is the least plan it allows
    assert setpart._master_cannot_improve(state, math.ceil(lp), 10.0)
    assert not setpart._master_cannot_improve(state, math.ceil(lp) + 1, 10.0)
    sol = state.master.solve_integer(20, colgen.start_solution(setup, state.master), setup.start_choice, 1e-6)
    assert sol.cost >= math.ceil(lp)  # what the skip relies on
    # after a skip, generation runs on only while the LP rounded up still meets the plan
    before = state.iterations
    colgen.generate(setup, state, time.perf_counter() + 60, None, lp_below=math.ceil(lp) + 1)
    assert state.iterations == before + 1
