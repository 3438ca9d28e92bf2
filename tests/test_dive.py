"""Price-and-dive (``planner.exact.dive``) and the switch to it (``generate``'s ``until_settled``): a dive lifts its
fixings, adds only configurations the kernel accepts, ends at a whole LP solution that is a verified plan, at once
where the LP cannot beat the incumbent, and by its deadline; generation stops once its LP, rounded up, is at the
certified bound, and only then."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

pytest.importorskip("highspy", reason="the exact planner needs highspy")

from conftest import EIGHT_ON_H100 as MIX

from igniter_opt.placement import GpuPacking, Packing, Slot, assemble_plan, verify_plan
from igniter_opt.planner import greedy
from igniter_opt.planner.exact import colgen, setpart
from igniter_opt.planner.exact.columns import evaluate
from igniter_opt.planner.exact.dive import DiveResult, dive, dive_text
from igniter_opt.planner.exact.eject import EjectResult
from igniter_opt.solver import SolveOptions, SolveOutcome, SolveStatus


@pytest.fixture
def setup(eight_on_h100) -> colgen.ColgenSetup:
    """The eight workloads of ``EIGHT_ON_H100``: the dive makes a few fixings (3 when written)."""
    return eight_on_h100


def _lowers(master) -> np.ndarray:
    return np.asarray(master.h.getLp().col_lower_, float)


def test_a_dive_to_the_end_is_a_verified_plan_and_leaves_the_master_as_it_was_but_for_kernel_checked_columns(
        setup) -> None:
    master = colgen.initial_master(setup, 1)
    root = master.solve_lp(10.0).objective
    first = len(master.columns)
    res = dive(setup, master, incumbent_gpus=10_000, deadline=time.perf_counter() + 30.0)  # nothing prunes it
    assert res.counts, f"the dive should end at a whole LP solution, it ended at {res.ended}"
    assert res.fixings >= 1 and res.added == len(master.columns) - first
    packing = colgen.packing_of(setup, master.columns, res.counts, res.chosen)
    assert packing is not None and packing.num_gpus <= res.gpus
    problem = setup.space.problem
    assert verify_plan(assemble_plan(problem, packing, "exact", SolveOutcome(SolveStatus.FEASIBLE)), problem) == []
    # the fixings are lifted: every lower bound is 0 again, and the LP is the master's over its columns
    assert not _lowers(master).any()
    fresh = colgen.initial_master(setup, 1)
    fresh.add(master.columns[len(fresh.columns):])
    lp = master.solve_lp(10.0).objective
    assert lp == pytest.approx(fresh.solve_lp(10.0).objective, abs=1e-9)
    assert lp <= root + 1e-9 and res.gpus >= math.ceil(lp - 1e-6)  # a whole solution over these columns
    # every column it added is a configuration the kernel accepts as it stands
    added = master.columns[first:]
    assert all(c is not None for c in evaluate(setup.space, [c.slots for c in added]))
    assert "a whole LP solution of" in dive_text([res])


def test_a_dive_ends_at_once_where_its_lp_cannot_beat_the_incumbent(setup) -> None:
    master = colgen.initial_master(setup, 1)
    res = dive(setup, master, incumbent_gpus=1, deadline=time.perf_counter() + 30.0)
    assert not res.counts and res.fixings == 0
    assert "no better than the plan" in res.ended
    assert not _lowers(master).any()


def test_a_dive_ends_by_its_deadline_with_its_fixings_lifted(setup) -> None:
    master = colgen.initial_master(setup, 1)
    t0 = time.perf_counter()
    res = dive(setup, master, incumbent_gpus=10_000, deadline=t0 + 0.05, rounds=1_000)
    assert time.perf_counter() - t0 < 2.0  # a kernel round and an LP solve past the deadline at most
    assert not res.counts and res.ended == "the time limit"
    assert not _lowers(master).any()


def test_generation_stops_once_its_lp_rounded_up_is_at_the_bound_and_not_before(setup) -> None:
    # a certified bound above the LP (as the member-class bound may bring): generation cannot raise it further
    state = colgen.ColgenState(colgen.initial_master(setup, 1), stabilize=False)  # (capped LPs never stop it)
    state.bound = 9.5
    colgen.generate(setup, state, time.perf_counter() + 30.0, target_gpus=100, until_settled=True)
    assert state.settled and state.iterations == 1
    # without the bound there, or without asking, generation goes on
    state = colgen.ColgenState(colgen.initial_master(setup, 1), stabilize=False)
    colgen.generate(setup, state, time.perf_counter() + 3.0, target_gpus=100)
    assert not state.settled and state.iterations > 1


def test_once_generation_has_settled_a_dive_finds_the_plan_the_integer_master_did_not(setup, monkeypatch) -> None:
    # the start: every demand on a GPU of its own (8 GPUs, where 2 do); the integer master finds nothing
    problem = setup.space.problem
    demands = greedy.initial_demands(problem)
    start = Packing(tuple(demands), tuple(GpuPacking((Slot(i, d.lower_units, d.batch, d.queue_delay_ms),))
                                          for i, d in enumerate(demands)))
    start_plan = assemble_plan(problem, start, "greedy", SolveOutcome(SolveStatus.HEURISTIC))
    assert verify_plan(start_plan, problem) == [] and start_plan.num_gpus == len(MIX)
    monkeypatch.setattr(setpart, "_improve", lambda problem, setup, state, inc, *a: inc)
    monkeypatch.setattr(setpart, "eject_search", lambda *a, **k: EjectResult(None, 0, 0, 0.0))  # it finds 2 too
    lines: list[str] = []
    plan, ev, failed = setpart.solve_by_columns(problem, SolveOptions(time_limit_s=30, progress=lines.append),
                                                time.perf_counter(), start, start_plan)
    assert failed is None and verify_plan(plan, problem) == []
    assert plan.num_gpus == ev.bound_gpus == 2  # proven: the dive found a plan at the bound
    assert "1 dive(s)" in ev.notes[-1] and "a whole LP solution of 2 GPU(s)" in ev.notes[-1]
    assert any("incumbent 8 GPU(s)" in line for line in lines) and "incumbent 2 GPU(s)" in lines[-1]


def test_a_plan_search_turn_that_finds_nothing_is_followed_by_more_generation(setup, monkeypatch) -> None:
    """Where generation settled (the LP at the bound) and a turn of the plan search found nothing (no better plan
    from the integer master, a dive that added no column), generation goes on past the settled LP: its columns may
    hold a better plan. The search still ends, and the note says so."""
    problem = setup.space.problem
    demands = greedy.initial_demands(problem)
    start = Packing(tuple(demands), tuple(GpuPacking((Slot(i, d.lower_units, d.batch, d.queue_delay_ms),))
                                          for i, d in enumerate(demands)))
    start_plan = assemble_plan(problem, start, "greedy", SolveOutcome(SolveStatus.HEURISTIC))
    monkeypatch.setattr(setpart, "_improve", lambda problem, setup, state, inc, *a: inc)
    monkeypatch.setattr(setpart, "dive", lambda *a, **k: DiveResult({}, {}, "stubbed: nothing found", 0, 0, 0.0))
    monkeypatch.setattr(setpart, "eject_search", lambda *a, **k: EjectResult(None, 0, 0, 0.0))
    settled_at: list[int] = []
    more: list[int] = []
    real_generate = setpart.generate

    def watched(setup_, state, *args, **kwargs):
        if state.settled:
            more.append(len(state.master.columns))
        out = real_generate(setup_, state, *args, **kwargs)
        if state.settled and not settled_at:
            settled_at.append(len(state.master.columns))
        return out

    monkeypatch.setattr(setpart, "generate", watched)
    plan, ev, failed = setpart.solve_by_columns(problem, SolveOptions(time_limit_s=8), time.perf_counter(), start,
                                                start_plan)
    assert failed is None and verify_plan(plan, problem) == [] and plan.num_gpus == len(MIX)
    assert settled_at and more  # it settled, and generated again after the turn that found nothing
    assert "generation went on past the settled LP" in ev.notes[-1]
