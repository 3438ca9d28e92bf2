"""The columns replanner: the exact planner's set partitioning with running GPUs as anchors."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from igniter_opt.domain import Plan, PlanningProblem, Workload
from igniter_opt.perfmodel import PerformanceModel, load_profile
from igniter_opt.planio import read_workloads
from igniter_opt.planner import run_planner
from igniter_opt.replan import SCRATCH_PLANNER, ReplanProblem, run_replanner
from igniter_opt.replan.diff import ChangeKind
from igniter_opt.solver import SolveOptions

pytest.importorskip("highspy")

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "examples" / "paper-table3.csv"
SMALL = ("W1", "W4", "W5", "W7", "W8", "W12")


@pytest.fixture(scope="module")
def h100() -> PerformanceModel:
    return load_profile(REPO / "profiles" / "h100")


def _paper(scale: float, names: tuple[str, ...] = SMALL) -> tuple[Workload, ...]:
    return tuple(replace(w, rate_rps=w.rate_rps * scale) for w in read_workloads(PAPER) if w.name in names)


@pytest.fixture(scope="module")
def small_current(h100: PerformanceModel) -> Plan:
    plan = run_planner(PlanningProblem(_paper(6.0), h100), "greedy").plan
    assert plan.num_gpus == 3
    return plan


def _objective(out, cost: float) -> float:
    return out.plan.cost_per_hour + cost * out.diff.old_not_kept


def test_a_high_migration_cost_keeps_the_running_plan(h100, small_current) -> None:
    problem = PlanningProblem(_paper(1.0), h100)  # one GPU would do, from scratch
    out = run_replanner(ReplanProblem(small_current, problem), "columns",
                        SolveOptions(time_limit_s=8, migration_cost=10.0))
    assert out.violations == ()
    assert out.diff.counts["kept"] == 6 and out.plan.num_gpus == 3
    assert out.plan.solver.objective == pytest.approx(3.0)
    assert out.plan.solver.bound is not None and out.plan.solver.bound <= out.plan.solver.objective


def test_at_no_migration_cost_it_reaches_the_from_scratch_gpu_count(h100, small_current) -> None:
    problem = PlanningProblem(_paper(1.0), h100)
    options = SolveOptions(time_limit_s=8, migration_cost=0.0)
    out = run_replanner(ReplanProblem(small_current, problem), "columns", options)
    assert out.violations == ()
    assert out.plan.num_gpus == run_planner(problem, "exact", options).plan.num_gpus == 1
    assert out.plan.solver.status == "optimal"  # 1 GPU meets the bound


def test_never_worse_than_the_greedy_replan_and_its_numbers_agree(h100, small_current) -> None:
    rp = ReplanProblem(small_current, PlanningProblem(_paper(1.0), h100))
    for cost in (0.1, 0.25):
        options = SolveOptions(time_limit_s=8, migration_cost=cost)
        col = run_replanner(rp, "columns", options)
        gr = run_replanner(rp, "greedy", options)
        assert col.violations == ()
        assert _objective(col, cost) == pytest.approx(col.plan.solver.objective)
        assert _objective(col, cost) <= _objective(gr, cost) + 1e-9
        assert col.plan.solver.bound <= col.plan.solver.objective + 1e-9
        assert _objective(col, cost) < 3.0  # keeping everything costs 3 GPUs: at these costs moving pays


def test_a_grown_workload_is_re_split_around_its_running_server(h100) -> None:
    """W7 runs on one server; at three times its rate one server cannot carry it, so it is re-split:
    its running server is kept (at a rate it can carry) and the rest goes to a new server."""
    ws = (Workload("W7", "vgg19", 30.0, 700.0), Workload("W1", "alexnet", 20.0, 300.0))
    current = run_planner(PlanningProblem(ws, h100), "greedy").plan
    assert sum(p.workload == "W7" for _, p in current.placements()) == 1
    grown = tuple(replace(w, rate_rps=3 * w.rate_rps) if w.name == "W7" else w for w in ws)
    out = run_replanner(ReplanProblem(current, PlanningProblem(grown, h100)), "columns",
                        SolveOptions(time_limit_s=8, migration_cost=1.0))
    assert out.violations == ()
    w7 = [c for c in out.diff.changes if c.workload == "W7"]
    assert len([c for c in w7 if c.new_gpu is not None]) >= 2
    assert any(c.kind is ChangeKind.KEPT for c in w7)


def test_a_trace_job_plans_from_scratch_with_the_exact_planner() -> None:
    assert SCRATCH_PLANNER == {"greedy": "greedy", "exact": "exact", "columns": "exact"}


def test_a_limit_that_comes_while_preparing_returns_the_greedy_replan_in_time(h100, small_current, monkeypatch) -> None:
    """Preparing column generation is cut at the deadline (a 1000-workload replan with a 5 s limit took
    81 s): slowed here, the run ends by its limit with the greedy replan and says why."""
    import time

    from igniter_opt.planner.exact import items

    real = items.piece_table

    def slow(*args, **kwargs):
        time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(items, "piece_table", slow)
    rp = ReplanProblem(small_current, PlanningProblem(_paper(1.0), h100))
    t0 = time.perf_counter()
    out = run_replanner(rp, "columns", SolveOptions(time_limit_s=1.0, migration_cost=0.1))
    assert time.perf_counter() - t0 < 1.0 + 0.5
    greedy = run_replanner(rp, "greedy", SolveOptions(migration_cost=0.1))
    assert out.violations == () and out.plan.num_gpus == greedy.plan.num_gpus
    assert "came while preparing column generation" in out.plan.solver.message
    s = out.plan.solver
    assert s.bound is None or s.bound <= s.objective + 1e-9


def test_anchored_columns_stop_at_their_deadline(h100, small_current) -> None:
    import time

    import numpy as np

    from igniter_opt.placement.serving import serving_model_for
    from igniter_opt.planner.exact.colgen import prepare_colgen
    from igniter_opt.replan import greedy as rgreedy
    from igniter_opt.replan.columns import anchored_columns

    rp = ReplanProblem(small_current, PlanningProblem(_paper(1.0), h100))
    start = rgreedy.replan_greedy(rp, 0.1).packing
    setup = prepare_colgen(rp.problem, serving_model_for(rp.problem), start)
    duals = np.full(len(setup.pieces), 0.5)
    assert anchored_columns(setup, rp, duals)  # running GPUs give anchored columns
    assert anchored_columns(setup, rp, duals, deadline=time.perf_counter()) == []


def test_with_a_core_to_spare_its_generation_runs_proof_rounds_there_and_leaves_no_process(h100, small_current,
                                                                                          monkeypatch) -> None:
    """The columns replanner's generation uses the proof worker as the exact planner's does
    (``colgen.proofs_on_a_second_core``): started for a long enough limit on two cores, closed after."""
    from _procs import proof_workers

    from igniter_opt.planner.exact import colgen, proofworker

    started: list[proofworker.ProofWorker] = []

    class Counted(proofworker.ProofWorker):
        def __init__(self, boxes, first=None) -> None:
            super().__init__(boxes, first)
            started.append(self)

    monkeypatch.setattr(colgen, "ProofWorker", Counted)
    monkeypatch.setattr(proofworker.os, "sched_getaffinity", lambda _pid: {0, 1})
    rp = ReplanProblem(small_current, PlanningProblem(_paper(1.0), h100))
    options = SolveOptions(time_limit_s=proofworker.MIN_TIME_LIMIT_S, migration_cost=0.1)
    col = run_replanner(rp, "columns", options)
    assert len(started) == 1 and started[0].failed == "closed"
    assert col.violations == ()
    assert _objective(col, 0.1) <= _objective(run_replanner(rp, "greedy", options), 0.1) + 1e-9
    assert proof_workers() == []
