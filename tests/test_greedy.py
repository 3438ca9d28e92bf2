"""The greedy planner: the paper's plan, equivalence with the plain algorithm, feasibility."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from igniter_opt.domain import LatencyBudget, PlanningProblem, Workload
from igniter_opt.errors import ProblemError
from igniter_opt.perfmodel import PerformanceModel
from igniter_opt.placement import verify_plan
from igniter_opt.planner import greedy, run_planner
from igniter_opt.planner.greedy_reference import reference_igniter_demands, reference_place

PAPER_SHARES = dict(zip([f"W{i}" for i in range(1, 13)], [20, 7.5, 12.5, 32.5, 45, 15, 60, 75, 37.5, 60, 15, 92.5],
                        strict=True))
PAPER_BATCHES = dict(zip([f"W{i}" for i in range(1, 13)], [6, 3, 8, 4, 9, 4, 3, 6, 4, 2, 1, 8], strict=True))
PAPER_RANGES = {"alexnet": (10, 20), "resnet50": (20, 40), "vgg19": (20, 40), "ssd": (25, 55)}


def random_workloads(seed: int, n: int, max_rate: int = 1200) -> tuple[Workload, ...]:
    rng = np.random.default_rng(seed)
    models = list(PAPER_RANGES)
    out = []
    for i in range(n):
        m = models[rng.integers(len(models))]
        lo, hi = PAPER_RANGES[m]
        out.append(Workload(f"w{i}", m, float(rng.integers(lo, hi + 1)), float(rng.integers(50, max_rate + 1))))
    return tuple(out)


def test_paper_mix_gives_the_papers_plan(v100_model: PerformanceModel, paper_workloads) -> None:
    plan = greedy.solve(PlanningProblem(paper_workloads, v100_model))
    assert plan.num_gpus == 6
    got = {p.workload: p for _, p in plan.placements()}
    assert {w: p.share_pct for w, p in got.items()} == PAPER_SHARES
    assert {w: p.batch for w, p in got.items()} == PAPER_BATCHES
    groups = sorted(sorted(p.workload for p in g.placements) for g in plan.gpus)
    assert groups == sorted([["W12"], ["W6", "W8"], ["W4", "W7"], ["W10", "W9"], ["W1", "W11", "W5"], ["W2", "W3"]])
    assert verify_plan(plan, PlanningProblem(paper_workloads, v100_model)) == []


@pytest.mark.parametrize(("seed", "n"), [(1, 40), (2, 150), (3, 400)])
def test_vectorised_planner_equals_plain_algorithm(any_model: PerformanceModel, seed: int, n: int) -> None:
    """Pruning, lookup tables and vectorisation change nothing: same GPUs, members and shares."""
    scale = 1 if any_model.name == "v100" else 4  # the H100 is about 4x the V100: as many GPUs' worth of load
    ws = random_workloads(seed, n, max_rate=2000 * scale)
    demands = greedy.initial_demands(PlanningProblem(ws, any_model))
    assert demands == [d for w in ws for d in reference_igniter_demands(PlanningProblem(ws, any_model), w)]
    assert greedy.place(any_model, demands) == reference_place(any_model, demands)


def test_workload_too_large_for_one_gpu_is_split(any_model: PerformanceModel) -> None:
    v100_model = any_model
    w = Workload("heavy", "vgg19", 20.0, 3000.0 if any_model.name == "v100" else 12000.0)
    problem = PlanningProblem((w,), v100_model)
    plan = greedy.solve(problem)
    parts = [p for _, p in plan.placements()]
    dedicated = [p for p in parts if p.share_pct == round(v100_model.max_units * v100_model.unit_pct, 6)]
    assert len(parts) >= 3 and len(dedicated) >= 2
    assert sum(p.rate_rps for p in parts) == pytest.approx(w.rate_rps)
    # every dedicated replica serves 90 % of its predicted throughput alone at 100 %
    for p in dedicated[:-1]:
        assert p.rate_rps == pytest.approx(0.9 * v100_model.solo("vgg19", p.batch, p.share_pct)[1])
    assert verify_plan(plan, problem) == []


def test_slo_no_share_can_meet_names_workload_and_smallest_slo(any_model: PerformanceModel) -> None:
    v100_model = any_model
    slo = 6.0 if any_model.name == "v100" else 1.0
    w = Workload("tight", "ssd", slo, 100.0)
    # the smallest SLO that works, rounded up so that the SLO the message names does work
    best = math.ceil(200 * v100_model.solo("ssd", 1, v100_model.max_units * v100_model.unit_pct)[0]) / 100
    with pytest.raises(ProblemError, match=rf"workload 'tight' \(ssd\): SLO {slo:g} ms cannot be met.*{best:.2f} ms"):
        run_planner(PlanningProblem((w,), v100_model), "greedy")


def test_full_budget_greedy_is_feasible(any_model: PerformanceModel, paper_workloads) -> None:
    v100_model = any_model
    for margin in (0.0, 0.1):
        problem = PlanningProblem(paper_workloads, v100_model, LatencyBudget.FULL, margin)
        outcome = run_planner(problem, "greedy")
        assert outcome.violations == ()
        assert outcome.plan.margin == margin
        # batch formation + inference within the SLO, for every placement
        for _, p in outcome.plan.placements():
            assert 1000 * (p.batch - 1) / p.rate_rps + p.predicted.latency_ms <= p.slo_ms * (1 - margin) + 1e-9


workload_strategy = st.lists(
    st.tuples(
        st.sampled_from(sorted(PAPER_RANGES)),
        st.integers(min_value=0, max_value=100),
        st.floats(min_value=5.0, max_value=2500.0, allow_nan=False),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=workload_strategy, budget=st.sampled_from([LatencyBudget.IGNITER, LatencyBudget.FULL]))
def test_every_greedy_plan_is_feasible(any_model: PerformanceModel, rows, budget: LatencyBudget) -> None:
    """Property: whatever the mix, the plan meets every limit and rate, and no GPU exceeds 100 %."""
    v100_model = any_model
    ws = []
    for i, (m, q, rate) in enumerate(rows):
        lo, hi = PAPER_RANGES[m]
        ws.append(Workload(f"w{i}", m, lo + (hi - lo) * q / 100.0, rate))
    problem = PlanningProblem(tuple(ws), v100_model, budget, 0.1)
    outcome = run_planner(problem, "greedy")
    assert outcome.violations == ()
    assert all(g.total_share_pct <= 100.0 + 1e-9 for g in outcome.plan.gpus)
    assert all(p.share_pct > 0 and p.batch >= 1 for _, p in outcome.plan.placements())
