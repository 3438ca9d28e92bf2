"""Ejection chains (``planner.exact.eject``): from a plan in hand, plans of fewer GPUs whose every GPU the kernel
accepts, serving the same pieces; the search stops at its floor and by its deadline, repeats itself from its seed,
and the set-partitioning planner uses it where its integer master and dives find nothing."""

from __future__ import annotations

import random
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
from igniter_opt.planner.exact.eject import (
    FLOOR_POLL_MOVES,
    EjectResult,
    eject_search,
    eject_text,
    search_entries,
    search_of,
)
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


def _finding_nothing(given: list[float]):
    """A stand-in for ``eject_search`` that finds nothing and reports it used all it was given (into ``given``)."""

    def nothing(space, items, terms, gpus, floor, deadline, seed=0, raised_floor=None):
        given.append(deadline - time.perf_counter())
        return EjectResult(None, 0, 0, given[-1])

    return nothing


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


def test_a_floor_raised_while_it_runs_ends_it_there(eight_on_h100) -> None:
    start = _one_per_gpu(eight_on_h100)
    args = (eight_on_h100.space, eight_on_h100.items, eight_on_h100.terms, start)
    asked: list[int] = []

    def five() -> int:
        asked.append(5)
        return 5

    res = eject_search(*args, floor=1, deadline=time.perf_counter() + 30.0, raised_floor=five)
    assert asked and res.gpus is not None and len(res.gpus) == 5  # not the 2 it finds with floor 1
    # raised to the plan in hand: it stops within a poll
    res = eject_search(*args, floor=1, deadline=time.perf_counter() + 30.0, raised_floor=lambda: len(start))
    assert res.gpus is None and res.moves <= FLOOR_POLL_MOVES


def test_pieces_it_could_not_place_go_on_a_gpu_of_their_own_only_where_they_fit_on_one(eight_on_h100) -> None:
    s = eight_on_h100
    start = _one_per_gpu(s)
    search = search_of(s.space, s.items, s.terms, start, random.Random(0))
    first = int(search.ent.piece[search.member[0, 0]])
    back = search.without(0).opened([first])
    assert back is not None and back.member.shape[0] == len(start)
    row = back.member[-1][back.member[-1] >= 0]
    assert [int(search.ent.piece[e]) for e in row] == [first]
    assert back.used()[-1] == search.least[first]  # alone it needs no more than its fewest units
    assert all(c is not None for c in evaluate(s.space, back.slots()))
    # every piece on one GPU does not fit (greedy needs two, and so does every plan: the planner's test below)
    assert search.opened([int(search.ent.piece[e]) for e in search.member[:, 0]]) is None


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
    monkeypatch.setattr(setpart, "eject_search", _finding_nothing(given))
    limit_s = 30.0
    plan, ev, failed = setpart.solve_by_columns(problem, SolveOptions(time_limit_s=limit_s), time.perf_counter(),
                                                start, start_plan)
    assert failed is None and plan.num_gpus == start_plan.num_gpus
    assert given, ev.notes
    assert sum(given) <= setpart.EJECT_BUDGET_SHARE * limit_s + 1e-6
    assert min(given) >= setpart.MIN_EJECT_S - 0.1
    assert f"{len(given)} ejection search(es)" in ev.notes[-1]


def test_where_gpus_hold_many_members_a_search_from_greedys_plan_runs_first_with_the_larger_budget(
        eight_on_h100, monkeypatch) -> None:
    """The start of one demand per GPU counts as many members with ``MANY_MEMBERS`` at 1: the first search runs
    before any generation, from the start, and finds the 2-GPU plan there; stubbed to find nothing, the searches get
    ``EJECT_BUDGET_SHARE_MANY`` of the limit in all, the first of them all of it."""
    setup = eight_on_h100
    problem = setup.space.problem
    start, start_plan = _one_demand_per_gpu(problem)
    monkeypatch.setattr(setpart, "MANY_MEMBERS", 1.0)
    at_rounds: list[tuple[int, int]] = []
    rounds = setpart._rounds

    def recorded(problem, setup, state, run, *a):
        at_rounds.append((len(run.ejections), run.inc.plan.num_gpus))
        return rounds(problem, setup, state, run, *a)

    monkeypatch.setattr(setpart, "_rounds", recorded)
    plan, ev, failed = setpart.solve_by_columns(problem, SolveOptions(time_limit_s=30), time.perf_counter(), start,
                                                start_plan)
    assert failed is None and verify_plan(plan, problem) == []
    assert at_rounds == [(1, 2)] and plan.num_gpus == ev.bound_gpus == 2

    given: list[float] = []
    monkeypatch.setattr(setpart, "eject_search", _finding_nothing(given))
    limit_s = 30.0
    setpart.solve_by_columns(problem, SolveOptions(time_limit_s=limit_s), time.perf_counter(), start, start_plan)
    assert given[0] >= setpart.EJECT_BUDGET_SHARE_MANY * limit_s - 0.5
    assert sum(given) <= setpart.EJECT_BUDGET_SHARE_MANY * limit_s + 1e-6
