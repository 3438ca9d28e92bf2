"""The ffd and gpulet baselines: packing rules, and their violations reported (never hidden)."""

from __future__ import annotations

import pytest

from igniter_opt.domain import LatencyBudget, PlanningProblem
from igniter_opt.perfmodel import PerformanceModel
from igniter_opt.placement import max_units
from igniter_opt.planner import baselines, greedy, run_planner


def test_first_fit_decreasing_packs_largest_first_into_the_first_gpu_with_room() -> None:
    gpus = baselines.first_fit_decreasing([], [10, 30, 20, 20, 15], cap=40)
    assert gpus == [([1, 0], [30, 10]), ([2, 3], [20, 20]), ([4], [15])]


def test_best_fit_with_at_most_two_per_gpu() -> None:
    # 16 goes where it leaves the least room (the GPU holding 22, not the one holding 20)
    gpus = baselines.first_fit_decreasing([], [22, 20, 16, 2, 2], cap=40, max_per_gpu=2, best_fit=True)
    assert gpus == [([0, 2], [22, 16]), ([1, 3], [20, 2]), ([4], [2])]
    assert all(len(m) <= 2 for m, _ in gpus)


@pytest.mark.parametrize(("lower", "expected_pct"), [(1, 10), (4, 10), (5, 20), (9, 40), (17, 50), (21, 60),
                                                    (25, 80), (33, 100), (40, 100)])
def test_gpulet_share_is_the_smallest_allowed_at_least_the_lower_bound(lower: int, expected_pct: float) -> None:
    assert baselines.gpulet_units(2.5, lower, 40) * 2.5 == expected_pct


def test_ffd_uses_lower_bound_shares_and_reports_its_violations(v100_model: PerformanceModel, paper_workloads) -> None:
    problem = PlanningProblem(paper_workloads, v100_model)
    out = run_planner(problem, "ffd")
    plan = out.plan
    demands = {d.workload.name: d for d in greedy.initial_demands(problem)}
    for _, p in plan.placements():
        assert p.share_pct == pytest.approx(demands[p.workload].lower_units * v100_model.unit_pct)
        assert p.batch == demands[p.workload].batch
    assert all(g.total_share_pct <= 100 for g in plan.gpus)
    # blind to interference: packing at the solo lower bounds misses SLOs, and run_planner says so
    assert plan.num_gpus == 5
    assert out.violations and {v.kind for v in out.violations} <= {"latency", "throughput"}
    assert plan.planner == "ffd" and plan.solver.status == "heuristic"


@pytest.mark.parametrize("budget", [LatencyBudget.IGNITER, LatencyBudget.FULL])
def test_gpulet_plan_shape(v100_model: PerformanceModel, paper_workloads, budget: LatencyBudget) -> None:
    problem = PlanningProblem(paper_workloads, v100_model, budget, 0.1)
    out = run_planner(problem, "gpulet")
    allowed = {float(s) for s in baselines.GPULET_SHARES_PCT}
    cap_pct = max_units(v100_model) * v100_model.unit_pct
    for g in out.plan.gpus:
        assert len(g.placements) <= 2
        assert g.total_share_pct <= cap_pct
        assert all(p.share_pct in allowed for p in g.placements)
    assert {p.workload for _, p in out.plan.placements()} == {w.name for w in paper_workloads}
    assert all(v.kind in ("latency", "throughput") for v in out.violations)


def test_paper_mix_gpulet_needs_more_gpus_than_greedy(v100_model: PerformanceModel, paper_workloads) -> None:
    problem = PlanningProblem(paper_workloads, v100_model)
    assert run_planner(problem, "gpulet").plan.num_gpus == 7 > run_planner(problem, "greedy").plan.num_gpus == 6
