"""Ejection chains (``planner.exact.eject``): from a plan in hand, plans of fewer GPUs whose every GPU the kernel
accepts, serving the same pieces; the search stops at its floor and by its deadline, repeats itself from its seed,
and the set-partitioning planner uses it where its integer master and dives find nothing."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest

pytest.importorskip("highspy", reason="the exact planner needs highspy")

from conftest import EIGHT_ON_H100

from igniter_opt.domain import Plan, PlanningProblem
from igniter_opt.placement import GpuPacking, Packing, Slot, assemble_plan, verify_plan
from igniter_opt.planner import greedy
from igniter_opt.planner.exact import colgen, setpart
from igniter_opt.planner.exact.columns import ColSlot, evaluate
from igniter_opt.planner.exact.dive import DiveResult
from igniter_opt.planner.exact.eject import EjectResult, eject_search, eject_text, search_entries
from igniter_opt.solver import SolveOptions, SolveOutcome, SolveStatus


def _one_per_gpu(setup: colgen.ColgenSetup) -> list[list[ColSlot]]:
    """Greedy's pieces, each alone on a GPU (alone it fits: company only slows a placement down)."""
    return [[s] for col, k in setup.start_columns for _ in range(k) for s in col.slots]


def _one_demand_per_gpu(problem: PlanningProblem) -> tuple[Packing, Plan]:
    """A start with each of greedy's demands alone on a GPU (8 GPUs, where 2 do), as packing and plan."""
    demands = greedy.initial_demands(problem)
    start = Packing(tuple(demands), tuple(GpuPacking((Slot(i, d.lower_units, d.batch, d.queue_delay_ms),))
                                          for i, d in enumerate(demands)))
    return start, assemble_plan(problem, start, "greedy", SolveOutcome(SolveStatus.HEURISTIC))


def _pieces(gpus: list[list[ColSlot]]) -> Counter:
    return Counter(s.piece for g in gpus for s in g)


def test_from_one_gpu_per_piece_it_finds_fewer_gpus_each_a_configuration_the_kernel_accepts(eight_on_h100) -> None:
    start = _one_per_gpu(eight_on_h100)
    assert len(start) == len(EIGHT_ON_H100)
    res = eject_search(eight_on_h100.space, eight_on_h100.items, eight_on_h100.terms, start, floor=1,
                       deadline=time.perf_counter() + 30.0)
    assert res.gpus is not None
    assert len(res.gpus) == 2  # as greedy's plan; no plan has fewer (the bound of the planner's test below)
    assert res.emptied == len(start) - len(res.gpus) and res.found_s is not None
    found = [c.slots for c in res.gpus]
    assert _pieces(found) == _pieces(start)  # the same pieces, each once
    assert all(c is not None for c in evaluate(eight_on_h100.space, found))
    assert "found a better plan" in eject_text([res])


def test_it_stops_at_its_floor_and_repeats_itself_from_its_seed(eight_on_h100) -> None:
    start = _one_per_gpu(eight_on_h100)
    args = (eight_on_h100.space, eight_on_h100.items, eight_on_h100.terms, start)
    first = eject_search(*args, floor=5, deadline=time.perf_counter() + 30.0, seed=3)
    again = eject_search(*args, floor=5, deadline=time.perf_counter() + 30.0, seed=3)
    assert first.gpus is not None and len(first.gpus) == 5 and first.emptied == 3
    assert first.gpus == again.gpus and first.moves == again.moves
    # a plan already at its floor: nothing to search for
    at_floor = eject_search(*args, floor=len(start), deadline=time.perf_counter() + 30.0)
    assert at_floor.gpus is None and at_floor.moves == 0


def test_it_ends_by_its_deadline(eight_on_h100) -> None:
    t0 = time.perf_counter()
    res = eject_search(eight_on_h100.space, eight_on_h100.items, eight_on_h100.terms, _one_per_gpu(eight_on_h100),
                       floor=1, deadline=t0)
    assert res.gpus is None and res.moves == 0 and time.perf_counter() - t0 < 2.0


def test_a_slot_at_a_batch_no_item_offers_gets_an_entry_of_its_own(eight_on_h100) -> None:
    s = eight_on_h100
    ent, _ = search_entries(s.space, s.items, s.terms, [])
    piece = int(ent.piece[0])
    offered = {int(b) for p, b in zip(ent.piece, ent.batch, strict=True) if p == piece}
    batch = next(b for b in range(1, 200) if b not in offered)
    slot = ColSlot(piece, batch, 40)
    ent2, member = search_entries(s.space, s.items, s.terms, [[slot]])
    e = member[0][0]
    assert e >= len(ent.piece)  # a new entry, after the items' ones
    assert (int(ent2.piece[e]), int(ent2.batch[e]), int(ent2.units[e])) == (piece, batch, 40)
    model = s.space.piece_arrays["model"][piece]
    assert ent2.cfg[e] == s.terms.index(int(model), batch, 40)
    assert np.isnan(ent2.delay[e])


def test_the_planner_finds_a_better_plan_by_ejection_where_the_integer_master_and_the_dive_do_not(
        eight_on_h100, monkeypatch) -> None:
    setup = eight_on_h100
    problem = setup.space.problem
    start, start_plan = _one_demand_per_gpu(problem)
    assert start_plan.num_gpus == len(EIGHT_ON_H100)
    monkeypatch.setattr(setpart, "_improve", lambda problem, setup, state, inc, *a: inc)
    monkeypatch.setattr(setpart, "dive", lambda *a, **k: DiveResult({}, {}, "stubbed: nothing found", 0, 0, 0.0))
    lines: list[str] = []
    plan, ev, failed = setpart.solve_by_columns(problem, SolveOptions(time_limit_s=30, progress=lines.append),
                                                time.perf_counter(), start, start_plan)
    assert failed is None and verify_plan(plan, problem) == []
    assert plan.num_gpus == ev.bound_gpus == 2  # proven: the ejection search found a plan at the bound
    assert "ejection search(es)" in ev.notes[-1] and "found a better plan" in ev.notes[-1]
    assert f"incumbent {plan.num_gpus} GPU(s)" in lines[-1]


def test_the_planners_ejection_searches_keep_within_their_share_of_the_time_limit(eight_on_h100, monkeypatch) -> None:
    """Searches that find nothing (stubbed: each reports it used all it was given) get no more than
    ``EJECT_BUDGET_SHARE`` of the limit in all, and none is begun with less than ``MIN_EJECT_S``."""
    setup = eight_on_h100
    problem = setup.space.problem
    start, start_plan = _one_demand_per_gpu(problem)
    monkeypatch.setattr(setpart, "_improve", lambda problem, setup, state, inc, *a: inc)
    monkeypatch.setattr(setpart, "dive", lambda *a, **k: DiveResult({}, {}, "stubbed: nothing found", 0, 0, 0.0))
    given: list[float] = []

    def nothing(space, items, terms, gpus, floor, deadline, seed=0):
        given.append(deadline - time.perf_counter())
        return EjectResult(None, 0, 0, given[-1])

    monkeypatch.setattr(setpart, "eject_search", nothing)
    limit_s = 30.0
    plan, ev, failed = setpart.solve_by_columns(problem, SolveOptions(time_limit_s=limit_s), time.perf_counter(),
                                                start, start_plan)
    assert failed is None and plan.num_gpus == start_plan.num_gpus
    assert given, ev.notes
    assert sum(given) <= setpart.EJECT_BUDGET_SHARE * limit_s + 1e-6
    assert min(given) >= setpart.MIN_EJECT_S - 0.1
    assert f"{len(given)} ejection search(es)" in ev.notes[-1]
