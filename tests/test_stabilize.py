"""Dual stabilisation of column generation (``planner.exact.stabilize``, ``Master.cap_duals``): capped duals
stay within their caps, lifting the caps gives back the master exactly (columns added meanwhile included),
a capped LP's value is never reported as the master's, and the LP's optimum is the same with or without."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("highspy", reason="the exact planner needs highspy")

from igniter_opt.domain import LatencyBudget, PlanningProblem, Workload
from igniter_opt.placement.serving import serving_model_for
from igniter_opt.planner import greedy
from igniter_opt.planner.exact import colgen, stabilize
from igniter_opt.planner.exact.columns import column_worth

MIX = [("vgg19", 23.5, 57.0), ("ssd", 40.3, 260.0), ("vgg19", 37.2, 400.0), ("alexnet", 25.0, 192.0)]


@pytest.fixture
def setup(v100_model) -> colgen.ColgenSetup:
    ws = tuple(Workload(f"w{i}", m, slo, rate) for i, (m, slo, rate) in enumerate(MIX))
    problem = PlanningProblem(ws, v100_model, LatencyBudget.IGNITER, 0.1)
    start = greedy.place(v100_model, greedy.initial_demands(problem))
    return colgen.prepare_colgen(problem, serving_model_for(problem), start)


def test_capped_duals_stay_within_the_caps_and_lifting_the_caps_gives_back_the_master(setup) -> None:
    master = colgen.initial_master(setup, 1)
    free = master.solve_lp(10.0)
    caps = 2.0 * colgen.least_fraction(setup)
    master.cap_duals(caps)
    capped = master.solve_lp(10.0)
    assert master.capped and master.caps_bind()
    assert np.all(capped.duals <= caps + 1e-9)
    assert capped.objective < free.objective - 1e-6  # the caps bind: the capped LP is not the master's
    with pytest.raises(RuntimeError, match="capped"):
        master.solve_integer(5.0, None, None, 0.0)
    added = [c for c in colgen.kernel_columns(setup, capped.duals) if column_worth(c, capped.duals) > 1.0 + 1e-7]
    assert added, "the heuristic should find columns at the capped duals"
    master.add(added)
    master.cap_duals(None)
    lifted = master.solve_lp(10.0)
    fresh = colgen.initial_master(setup, 1)
    fresh.add(master.columns[len(fresh.columns):])
    assert [c.slots for c in fresh.columns] == [c.slots for c in master.columns]
    assert lifted.objective == pytest.approx(fresh.solve_lp(10.0).objective, abs=1e-9)
    assert master.lp_solution()[1].size == len(master.columns)
    sol = master.solve_integer(10.0, None, None, 0.0)
    assert sol.counts and max(sol.counts) < len(master.columns)


def test_the_caps_grow_when_pricing_finds_nothing_or_every_few_rounds_and_end_at_a_gpu() -> None:
    caps = stabilize.DualCaps(np.array([0.1, 0.5]))
    assert not caps.after_round(3)  # columns found: alpha waits for GROW_EVERY rounds
    assert caps.after_round(0) and caps.alpha == pytest.approx(stabilize.ALPHA_START * stabilize.ALPHA_GROWTH)
    for _ in range(stabilize.GROW_EVERY - 1):
        assert not caps.after_round(5)
    assert caps.after_round(5)
    assert np.all(caps.caps() <= 1.0)
    while not caps.done:
        caps.after_round(0)
    assert caps.alpha * 0.1 >= 1.0 or caps.alpha >= stabilize.ALPHA_MAX


def test_generation_never_reports_a_capped_value_and_reaches_the_same_optimum(setup) -> None:
    seen: list[tuple[bool, float | None]] = []
    values = {}
    for on in (True, False):
        state = colgen.ColgenState(colgen.initial_master(setup, 1), stabilize=on)
        for _ in range(10):
            colgen.generate(setup, state, time.perf_counter() + 10, None,
                            progress=lambda s: seen.append((s.master.caps_bind(), s.lp_value)))
            assert not state.master.capped  # generate returns with the true master
            if state.converged:
                break
        assert state.lp_value is not None
        values[on] = state.lp_value
    assert any(bind for bind, _ in seen), "the caps should bind in the first rounds"
    assert all(v is None for bind, v in seen if bind)
    assert values[True] == pytest.approx(values[False], abs=1e-6)
