"""Box pricing (``planner.exact.boxes``): its kappa is never below a feasible configuration's worth
(brute force with the kernel's own check) however early it stops, the configurations it returns are
ones the kernel accepts, it tightens as it runs, and column generation prices with it."""

from __future__ import annotations

import dataclasses
import math
import time
from collections import deque
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("highspy", reason="the exact planner needs highspy")

from _procs import live_processes, proof_workers

from igniter_opt.planner.exact import boxes, colgen, proofworker
from igniter_opt.planner.exact.columns import column_worth, evaluate
from igniter_opt.planner.exact.master import LpSolution, Master, MasterMip
from igniter_opt.planner.exact.pricing import PricingResult


def _trials(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.random(n) for _ in range(6)] + [rng.random(n) * (rng.random(n) < 0.5) for _ in range(4)]


def _assert_kappa_covers_every_column(setup: colgen.ColgenSetup, columns: list, trials: list[np.ndarray]) -> None:
    """Stopped after 1, 40 or 300 boxes, kappa is finite and at least every column's worth."""
    for duals in trials:
        best = max(column_worth(c, duals) for c in columns)
        for nodes in (1, 40, 300):
            res = boxes.box_kappa(setup.boxes, duals, 1.0, time.perf_counter() + 30.0, max_nodes=nodes)
            assert math.isfinite(res.kappa)
            assert res.kappa >= best * (1 - 1e-12), (nodes, res.kappa, best)


def test_kappa_is_never_below_a_feasible_configuration_however_early_it_stops(pricing_mix) -> None:
    setup, columns = pricing_mix
    assert max(len(c.slots) for c in columns) >= 3  # company was enumerated
    _assert_kappa_covers_every_column(setup, columns, _trials(len(setup.pieces)))


def test_the_configurations_it_returns_are_accepted_by_the_kernel_and_worth_what_it_says(pricing_mix) -> None:
    setup, _ = pricing_mix
    seen = 0
    for duals in _trials(len(setup.pieces)):
        res = boxes.box_kappa(setup.boxes, duals, 0.0, time.perf_counter() + 30.0, max_nodes=200)
        cols = evaluate(setup.space, [setup.boxes.slots(m) for _, m in res.candidates])
        for (worth, _), col in zip(res.candidates, cols, strict=True):
            assert col is not None
            assert column_worth(col, duals) == pytest.approx(worth, rel=1e-9)
            assert worth <= res.kappa
            seen += 1
    assert seen >= 10


def test_kappa_tightens_as_it_runs_and_closes_near_the_best_it_finds(pricing_mix) -> None:
    """With room to run, every box closes at a target 5 % above the best configuration found, below the
    first boxes' bound."""
    setup, _ = pricing_mix
    for duals in _trials(len(setup.pieces))[:3]:
        first = boxes.box_kappa(setup.boxes, duals, 0.0, time.perf_counter() + 30.0, max_nodes=1).kappa
        found = boxes.box_kappa(setup.boxes, duals, 0.0, time.perf_counter() + 30.0, max_nodes=400)
        best = found.candidates[0][0]
        full = boxes.box_kappa(setup.boxes, duals, 1.05 * best, time.perf_counter() + 60.0)
        assert full.proven
        assert full.kappa <= min(first, 1.05 * best * (1 + 1e-9))


def test_with_every_box_of_one_member_count_a_leaf_kappa_stays_valid(pricing_mix, monkeypatch) -> None:
    """Leaves (knapsack MIPs) close boxes in place of splits; the bound still covers every configuration."""
    setup, columns = pricing_mix
    monkeypatch.setattr(boxes, "LEAF_WIDTH", math.inf)
    _assert_kappa_covers_every_column(setup, columns, _trials(len(setup.pieces))[::2])


def test_a_leaf_is_no_looser_than_its_multipliers_and_its_multiset_keeps_the_resource_rows(pricing_mix) -> None:
    setup, _ = pricing_mix
    tab = setup.items.table
    solved = 0
    for duals in _trials(len(setup.pieces))[:6]:
        s = boxes.BoxSearch(setup.boxes, duals)
        for box in s.roots():
            if box.n_lo != box.n_hi:
                continue
            lagrangian, _, _ = s.best_multiplier(box, 0.0, 0.0, root=True)
            bound, members = s.leaf(box, 30.0)
            assert bound is not None and bound <= lagrangian * (1 + 1e-6) + 1e-9
            if members:
                k = list(members)
                assert len(k) == box.n_lo and tab.units[k].sum() <= setup.space.cap_units
                assert tab.cache[k].sum() <= box.c_hi * (1 + 1e-9) + 1e-9
                assert float(np.sum(duals[tab.piece[k]])) <= bound
                solved += 1
    assert solved > 5


def test_three_pieces_of_one_type_are_bounded_where_a_gpu_can_hold_three(pricing_mix) -> None:
    """A piece type of 3 replicas whose item fits three times: the knapsack bounds 3 of it on one GPU (it
    once stopped at two of a type, which would have let a bound miss such a configuration)."""
    setup, _ = pricing_mix
    tab = setup.items.table
    alone = boxes.BoxSearch(setup.boxes, np.ones(len(setup.pieces)))
    box = boxes.Box(3, 3, 0.0, setup.boxes.c_top, 0.0, setup.boxes.q_top)
    fits = alone.live[alone.eligible(box) & (3 * alone.units <= setup.space.cap_units)]
    if fits.size == 0:
        pytest.skip("no item of this mix fits three times at three members")
    t = int(tab.piece[fits[0]])
    items = dataclasses.replace(setup.items, table=dataclasses.replace(tab, copies=np.maximum(tab.copies, 3)))
    bp = boxes.BoxPricing(setup.space, items)
    bp.count = bp.count.copy()
    bp.count[t] = 3
    duals = np.zeros(len(setup.pieces))
    duals[t] = 1.0
    bound, _, _ = boxes.BoxSearch(bp, duals).knapsack(box, np.zeros(1), np.zeros(1))
    assert bound[0] >= 3.0 - 1e-9


def test_a_box_narrowed_to_a_point_is_a_leaf(pricing_mix) -> None:
    """Splitting a box of no width only copies it (the Lagrangian bound cannot fall there): it is solved instead."""
    setup, _ = pricing_mix
    s = boxes.BoxSearch(setup.boxes, np.ones(len(setup.pieces)))
    assert s.is_leaf(boxes.Box(3, 3, 10.0, 10.0, 5.0, 5.0))
    assert not s.is_leaf(boxes.Box(3, 4, 10.0, 10.0, 5.0, 5.0))
    assert not s.is_leaf(boxes.Box(3, 3, 0.0, setup.boxes.c_top, 0.0, setup.boxes.q_top))


def test_an_item_alone_is_priced_exactly(pricing_mix) -> None:
    setup, _ = pricing_mix
    n = len(setup.pieces)
    one = np.zeros(n)
    one[0] = 2.5
    res = boxes.box_kappa(setup.boxes, one, 0.0, time.perf_counter() + 30.0)
    assert 2.5 <= res.kappa <= 2.5 * setup.pieces[0].count * (1 + 1e-6)
    assert boxes.box_kappa(setup.boxes, np.zeros(n), 0.0, time.perf_counter() + 30.0).kappa == pytest.approx(0.0)


def _round_calls(setup: colgen.ColgenSetup, monkeypatch, mip_proves: bool) -> list[str]:
    """Which pricings one exact round runs, the MIP stubbed (it proves its optimum, or runs out of time)."""
    calls: list[str] = []

    def mip(*args, **kwargs):
        calls.append("mip")
        return PricingResult(None, 0.0, 1.5 if mip_proves else math.inf, mip_proves)

    real_boxes = boxes.box_kappa

    def box(*args, **kwargs):
        calls.append("boxes")
        return real_boxes(*args, **kwargs)

    monkeypatch.setattr(colgen, "price_mip", mip)
    monkeypatch.setattr(colgen, "box_kappa", box)
    state = colgen.ColgenState(colgen.initial_master(setup, 1))
    duals = np.full(len(setup.pieces), 0.6)
    colgen._exact_round(setup, state, duals, 2.0, 1)
    assert state.pricing_rounds == 1 and state.bound > 0
    return calls


def test_small_instances_price_by_mip_first_and_large_ones_by_boxes_only(pricing_mix, monkeypatch) -> None:
    setup, _ = pricing_mix
    assert len(setup.items.table) <= colgen.MIP_MAX_ITEMS
    assert _round_calls(setup, monkeypatch, mip_proves=True) == ["mip"]  # solved: the boxes add nothing
    assert _round_calls(setup, monkeypatch, mip_proves=False) == ["mip", "boxes"]
    monkeypatch.setattr(colgen, "MIP_MAX_ITEMS", 0)
    assert _round_calls(setup, monkeypatch, mip_proves=True) == ["boxes"]


def test_a_search_for_a_proof_never_claims_one_below_the_best_configuration(pricing_mix) -> None:
    """Boxes close as soon as one multiplier pair bounds them by the target (``best_multiplier``): at a
    target just below the best configuration enumerated, the search finds no proof and its kappa still
    covers that configuration."""
    setup, columns = pricing_mix
    for duals in _trials(len(setup.pieces))[:5]:
        best = max(column_worth(c, duals) for c in columns)
        res = boxes.box_kappa(setup.boxes, duals, best * (1 - 1e-6), time.perf_counter() + 30.0, max_nodes=400,
                              enough=1)
        assert not res.proven
        assert res.kappa >= best * (1 - 1e-12)


@pytest.fixture(scope="module")
def converged_h200() -> tuple[colgen.ColgenSetup, colgen.ColgenState]:
    """Column generation run on an H200 mix needing about 2.7 GPUs (the bound there reaches its LP)."""
    from conftest import H200_PROFILE

    from igniter_opt.domain import LatencyBudget, PlanningProblem, Workload
    from igniter_opt.perfmodel import load_profile
    from igniter_opt.placement.serving import serving_model_for
    from igniter_opt.planner import greedy

    perf = load_profile(H200_PROFILE)
    rows = [("ssd", 50, 4000), ("bert_base", 40, 3000), ("vit_b_16", 30, 5000)]
    problem = PlanningProblem(tuple(Workload(f"w{i}", m, float(s), float(r)) for i, (m, s, r) in enumerate(rows)),
                              perf, LatencyBudget.IGNITER, 0.1)
    start = greedy.place(perf, greedy.initial_demands(problem))
    setup = colgen.prepare_colgen(problem, serving_model_for(problem), start)
    state = colgen.ColgenState(colgen.initial_master(setup, 1))
    colgen.generate(setup, state, time.perf_counter() + 60.0, None)
    return setup, state


def _with_one_gpu_trivial(converged) -> tuple[colgen.ColgenSetup, colgen.ColgenSetup, LpSolution, Master]:
    """(the setup, the same with its trivial bound taken as one GPU, the master LP re-solved now: proof
    rounds add columns to the shared master, that master)."""
    setup, done = converged
    return setup, dataclasses.replace(setup, trivial_gpus=1), done.master.solve_lp(10.0), done.master


def test_a_proof_round_lifts_the_bound_past_the_next_gpu_and_never_past_a_plan(converged_h200) -> None:
    """With the trivial bound taken as one GPU, a proof round at the LP's duals aims at kappa <= D / 1 and
    lifts the bound to at least 2 GPUs, never above the greedy plan's (a plan is an upper bound); at a
    bound where the next GPU would need kappa <= 1 it does not run."""
    setup, low, lp, master = _with_one_gpu_trivial(converged_h200)
    assert lp.objective is not None and lp.objective > 2.0
    state = colgen.ColgenState(master)
    assert colgen._proof_round(low, state, lp.duals, time.perf_counter() + 30.0, found=0.0)
    assert 2 <= state.bound_gpus <= sum(n for _, n in setup.start_columns)
    assert state.bound <= lp.objective * (1 + 1e-9)
    assert (state.proof_rounds, state.proof_won) == (1, 1)
    state.bound = math.ceil(lp.objective)  # the next GPU is out of reach: D / (its count) < 1
    assert not colgen._proof_round(low, state, lp.duals, time.perf_counter() + 30.0, found=0.0)
    assert state.proof_rounds == 1


def test_a_proof_round_bounds_at_the_mean_of_the_recent_duals(converged_h200) -> None:
    """The proof's duals are the mean of the recent LPs' (``PROOF_AVERAGE``): a mean equal to the LP's duals
    proves as they do; a mean of zero duals (D = 0, nothing to prove) runs no round."""
    _, low, lp, master = _with_one_gpu_trivial(converged_h200)
    state = colgen.ColgenState(master, recent_duals=deque([0.5 * lp.duals, 1.5 * lp.duals]))
    assert colgen._proof_round(low, state, lp.duals, time.perf_counter() + 30.0, found=0.0)
    assert state.bound_gpus >= 2
    zero = colgen.ColgenState(master, recent_duals=deque([np.zeros_like(lp.duals)]))
    assert not colgen._proof_round(low, zero, lp.duals, time.perf_counter() + 30.0, found=0.0)
    assert zero.proof_rounds == 0


def test_no_proof_round_where_a_configuration_found_is_worth_its_target(converged_h200) -> None:
    """A configuration the heuristic found worth at least the target shows kappa above it: no round runs."""
    setup, low, lp, master = _with_one_gpu_trivial(converged_h200)
    state = colgen.ColgenState(master)
    value = colgen.dual_value(setup.pieces, lp.duals)
    assert not colgen._proof_round(low, state, lp.duals, time.perf_counter() + 30.0, found=value)
    assert state.proof_rounds == 0 and state.bound == 0.0


def test_the_first_proof_round_runs_at_most_its_first_limit(converged_h200, monkeypatch) -> None:
    """Before any proof round the roots' time is unknown: the first runs at most ``PROOF_FIRST_S``, later ones
    half the time left; none after a round whose roots did not all end in its limit."""
    _, low, lp, master = _with_one_gpu_trivial(converged_h200)
    limits: list[float] = []
    kappa = [50.0]

    def fake(bp, duals, target, deadline, max_nodes=100_000, enough=None):
        limits.append(deadline - time.perf_counter())
        return boxes.BoxResult(kappa[0], [], 1, False, roots_s=2.0)

    monkeypatch.setattr(colgen, "box_kappa", fake)
    state = colgen.ColgenState(master)
    assert not colgen._proof_round(low, state, lp.duals, time.perf_counter() + 100.0, found=0.0)
    state.proof_after = 0.0
    assert not colgen._proof_round(low, state, lp.duals, time.perf_counter() + 100.0, found=0.0)
    assert limits[0] <= colgen.PROOF_FIRST_S and limits[1] > 40.0
    assert state.proof_roots_s == 2.0 and state.proof_rounds == 2
    # a round whose roots did not all end (no kappa) is the last
    kappa[0] = math.inf
    state.proof_after = 0.0
    assert not colgen._proof_round(low, state, lp.duals, time.perf_counter() + 100.0, found=0.0)
    state.proof_after = 0.0
    assert not colgen._proof_round(low, state, lp.duals, time.perf_counter() + 100.0, found=0.0)
    assert state.proof_rounds == 3 and len(limits) == 3


def test_no_proof_round_whose_roots_took_more_than_their_share_of_the_time_left(converged_h200) -> None:
    """The last round's roots took 10 s: with 30 s left (a quarter: 7.5 s) no round; after 1 s roots, one."""
    _, low, lp, master = _with_one_gpu_trivial(converged_h200)
    state = colgen.ColgenState(master, proof_roots_s=10.0)
    assert not colgen._proof_round(low, state, lp.duals, time.perf_counter() + 30.0, found=0.0)
    assert state.proof_rounds == 0
    state.proof_roots_s = 1.0  # 30 s left: a quarter is 7.5 s
    assert colgen._proof_round(low, state, lp.duals, time.perf_counter() + 30.0, found=0.0)


def test_a_proof_round_on_the_worker_proves_what_one_in_this_process_proves(converged_h200) -> None:
    """The same proof round handed to the worker (another process, ``proofworker``) comes back through
    ``collect_proof`` with the same bound as run here, counted the same; nothing waits for it meanwhile."""
    _, low, lp, master = _with_one_gpu_trivial(converged_h200)
    here = colgen.ColgenState(master)
    assert colgen._proof_round(low, here, lp.duals, time.perf_counter() + 30.0, found=0.0)
    with proofworker.ProofWorker(low.boxes) as worker:
        assert worker.ready(30.0)
        there = colgen.ColgenState(master, proofs=worker, proof_end=time.perf_counter() + 30.0)
        t0 = time.perf_counter()
        assert not colgen._proof_round(low, there, lp.duals, time.perf_counter() + 30.0, found=0.0)
        assert worker.busy and time.perf_counter() - t0 < 1.0  # handed over, not run here
        assert colgen.collect_proof(low, there, wait_s=30.0)
    assert there.bound == here.bound and there.bound_gpus >= 2
    assert (there.proof_rounds, there.proof_won) == (1, 1)
    assert not colgen.collect_proof(low, there)  # nothing pending


@pytest.fixture(scope="module")
def h100_boxes(h100_model) -> tuple[colgen.ColgenSetup, np.ndarray]:
    """An H100 mix whose box search, aimed at a tiny target and never stopped early, runs to its deadline;
    its least-share duals."""
    from conftest import PRICING_MIXES

    from igniter_opt.domain import LatencyBudget, PlanningProblem, Workload
    from igniter_opt.placement.serving import serving_model_for
    from igniter_opt.planner import greedy

    ws = tuple(Workload(f"w{i}", m, float(s), float(r)) for i, (m, s, r) in enumerate(PRICING_MIXES["h100"] * 2))
    problem = PlanningProblem(ws, h100_model, LatencyBudget.IGNITER, 0.1)
    setup = colgen.prepare_colgen(problem, serving_model_for(problem), greedy.place(h100_model,
                                                                                   greedy.initial_demands(problem)))
    return setup, colgen.least_fraction(setup)


def test_closing_the_worker_ends_its_process_at_once_even_mid_round(h100_boxes) -> None:
    """``close`` while the child is still starting, and while a long round runs: the child is gone in
    seconds, and no process running the worker's program is left."""
    setup, duals = h100_boxes
    fresh = proofworker.ProofWorker(setup.boxes)
    fresh.close()
    worker = proofworker.ProofWorker(setup.boxes)
    assert worker.ready(30.0) and worker.submit(duals, 1.0, 1e-6, time.perf_counter() + 120.0, None)
    assert worker.busy and worker.poll(1.0) is None  # target 1e-6, never stopped early: a round of 2 minutes
    t0 = time.perf_counter()
    worker.close()
    assert time.perf_counter() - t0 < proofworker.STOP_WAIT_S + 1.0
    assert proof_workers() == []
    assert not worker.submit(duals, 1.0, 1.0, time.perf_counter() + 1.0, 1)  # closed: nothing sent


def _market_split(seed: int = 0) -> MasterMip:
    """A market-split feasibility MIP (4 rows, 30 binaries, each row's sum at half its coefficients'): HiGHS searches
    it for minutes (Cornuéjols and Dawande's hard instances), so only a cancel ends it early."""
    rng = np.random.default_rng(seed)
    m, n = 4, 30
    a = rng.integers(0, 100, (m, n)).astype(float)
    rhs = np.floor(a.sum(1) / 2)
    return MasterMip(np.zeros(n), np.zeros(n), np.ones(n), rhs, rhs, np.arange(0, m * n + 1, m),
                     np.tile(np.arange(m), n), a.T.ravel())


def test_a_master_copy_preempts_the_running_round_and_a_cancel_ends_it(h100_boxes) -> None:
    """A copy of the integer master sent while a long box round runs: the round ends within a second or two with
    a bound that is still valid (finite here, its roots done), then the copy runs; a cancel ends the copy at once
    (no solution: none found), and the worker takes rounds again."""
    setup, duals = h100_boxes
    with proofworker.ProofWorker(setup.boxes) as worker:
        assert worker.ready(30.0) and worker.submit(duals, 1.0, 1e-6, time.perf_counter() + 120.0, None)
        assert worker.poll(3.0) is None  # a round of 2 minutes (its roots done by now)
        t0 = time.perf_counter()
        assert worker.submit_master(_market_split(), 1, time.perf_counter() + 120.0, 0.0)
        assert not worker.submit_master(_market_split(), 1, time.perf_counter() + 120.0, 0.0)  # one at a time
        first = worker.poll(10.0)
        assert isinstance(first, proofworker.ProofDone) and time.perf_counter() - t0 < 3.0 and first.preempted
        assert math.isfinite(first.result.kappa) and first.result.kappa > 0
        assert worker.running_master and worker.poll(2.0) is None  # the copy runs: HiGHS is far from done
        worker.cancel_master()
        t1 = time.perf_counter()
        done = worker.poll(10.0)
        assert isinstance(done, proofworker.MasterDone) and time.perf_counter() - t1 < 2.0
        assert done.x is None and done.task.seed == 1
        assert not worker.busy and worker.submit(duals, 1.0, 1.0, time.perf_counter() + 5.0, 1)
    assert proof_workers() == []


def test_a_round_preempted_before_its_roots_ended_does_not_stop_later_rounds(pricing_mix) -> None:
    """A proof or pricing round without kappa because its roots did not end in its time stops later rounds (they
    would not end either); one without kappa because a master copy preempted it does not."""
    setup, _ = pricing_mix
    duals = _trials(len(setup.pieces))[0]
    cut = boxes.BoxResult(math.inf, [], 0, False, 5.0)
    for kind in ("proof", "pricing"):
        for preempted, roots_s in ((True, 0.0), (False, math.inf)):
            state = colgen.ColgenState(colgen.initial_master(setup, 1), proofs=None)
            task = proofworker.ProofTask(kind, duals, 1.0, 1.0, time.perf_counter() + 5.0, None)
            done = proofworker.ProofDone(task, cut, 1.0, preempted)

            class _Done:
                def poll(self, _wait_s, done=done):
                    return done

            state.proofs = _Done()  # type: ignore[assignment]
            colgen.collect_proof(setup, state)
            assert state.proof_roots_s == roots_s, (kind, preempted)


def test_a_cancel_sent_with_the_copy_ends_it_before_it_runs_its_time(pricing_mix) -> None:
    """The member-class bound running as the worker's first task, a copy sent and cancelled at once: the bound's
    task ends (its final result, the best of its passes so far, valid or none) and then the copy, both in
    seconds although each had a minute or more."""
    setup, _ = pricing_mix
    task = proofworker.ClassTask(colgen.piece_rows(setup.pieces), time.perf_counter() + 60.0, 10**6)
    with proofworker.ProofWorker(setup.boxes, task) as worker:
        assert worker.ready(30.0)
        t0 = time.perf_counter()
        assert worker.submit_master(_market_split(1), 2, time.perf_counter() + 120.0, 0.0)
        worker.cancel_master()
        got = []
        while worker.busy and time.perf_counter() - t0 < 20.0:
            done = worker.poll(1.0)
            if done is not None:
                got.append(done)
        assert [type(d).__name__ for d in got if not isinstance(d, proofworker.ClassDone) or d.final] == [
            "ClassDone", "MasterDone"]
        assert time.perf_counter() - t0 < 8.0
        assert got[-1].x is None and got[-1].result.status != "Time limit reached"


def test_a_worker_that_dies_mid_round_says_why_and_takes_no_more_rounds(h100_boxes) -> None:
    setup, duals = h100_boxes
    with proofworker.ProofWorker(setup.boxes) as worker:
        assert worker.ready(30.0) and worker.submit(duals, 1.0, 1e-6, time.perf_counter() + 120.0, None)
        worker._proc.kill()
        worker._proc.wait(5.0)
        assert worker.poll(0.1) is None and not worker.alive
        assert not worker.submit(duals, 1.0, 2.0, time.perf_counter() + 5.0, 1)
    assert worker.failed


def test_the_worker_dies_with_the_process_that_started_it() -> None:
    """A parent killed without cleaning up (SIGKILL, ``os._exit``) mid-round leaves no worker behind: the
    child, busy in a round of minutes (not reading the pipe whose close it would notice), asks the kernel for
    SIGTERM when its parent dies (``procgroup.die_with_parent``)."""
    import subprocess
    import sys

    script = """
import os, sys, time
sys.path.insert(0, "tests")
from conftest import H100_PROFILE, PRICING_MIXES
from igniter_opt.domain import LatencyBudget, PlanningProblem, Workload
from igniter_opt.perfmodel import load_profile
from igniter_opt.placement.serving import serving_model_for
from igniter_opt.planner import greedy
from igniter_opt.planner.exact import colgen
from igniter_opt.planner.exact.proofworker import ProofWorker
perf = load_profile(H100_PROFILE)
ws = tuple(Workload(f"w{i}", m, float(s), float(r)) for i, (m, s, r) in enumerate(PRICING_MIXES["h100"] * 2))
problem = PlanningProblem(ws, perf, LatencyBudget.IGNITER, 0.1)
setup = colgen.prepare_colgen(problem, serving_model_for(problem), greedy.place(perf, greedy.initial_demands(problem)))
w = ProofWorker(setup.boxes)
assert w.ready(30.0) and w.submit(colgen.least_fraction(setup), 1.0, 1e-6, time.perf_counter() + 120.0, None)
time.sleep(1.0)
assert w.poll() is None
print(w._proc.pid, flush=True)
os._exit(0)
"""
    # the worker inherits this call's stderr: read the pid, not to the end (that would wait for the worker)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1])
    assert parent.stdout is not None
    child = int(parent.stdout.readline())  # the leader of a process group of its own
    assert parent.wait(60) == 0
    assert live_processes(lambda group, _cmd: group == child, 5.0) == []  # not the round's 120 s


def test_the_worker_runs_only_with_a_core_to_spare_and_a_limit_worth_its_start(monkeypatch) -> None:
    monkeypatch.delenv(proofworker.ENV_SWITCH, raising=False)
    monkeypatch.setattr(proofworker.os, "sched_getaffinity", lambda _pid: {0, 1})
    assert proofworker.worker_wanted(60.0)
    assert not proofworker.worker_wanted(proofworker.MIN_TIME_LIMIT_S / 2)
    monkeypatch.setattr(proofworker.os, "sched_getaffinity", lambda _pid: {0})
    assert not proofworker.worker_wanted(60.0)
    monkeypatch.setattr(proofworker.os, "sched_getaffinity", lambda _pid: {0, 1})
    monkeypatch.setenv(proofworker.ENV_SWITCH, "0")
    assert not proofworker.worker_wanted(60.0)


def test_a_seed_wider_than_the_heuristic_grows_is_kept_as_it_is(pricing_mix) -> None:
    """Box pricing's multisets can have more members than the kernel heuristic grows configurations to
    (``heuristic.GROW_WIDTH``); growing such a seed returns it unchanged instead of failing."""
    from igniter_opt.planner.exact.heuristic import GROW_WIDTH

    setup, _ = pricing_mix
    tab = setup.items.table
    k = int(np.argmin(tab.units))
    wide = np.full((1, GROW_WIDTH + 1), k, np.intp)
    duals = np.ones(len(setup.pieces))
    (grown,) = colgen.grown_slots(setup, duals, wide)
    assert len(grown) == GROW_WIDTH + 1 and all(s == tab.slot(k) for s in grown)


def test_where_no_proof_can_help_the_worker_prices_at_the_lps_duals(pricing_mix) -> None:
    """With a configuration found worth the proof's target (no proof possible), the idle worker runs box
    pricing at the LP's duals instead: what it brings back are columns worth more than a GPU there, and
    the bound it sets is Farley's at those duals, D / kappa with kappa at least the best brute-forced
    configuration's worth."""
    setup, columns = pricing_mix
    duals = _trials(len(setup.pieces))[0]
    best = max(column_worth(c, duals) for c in columns)
    assert best > 1.0  # improving configurations exist at these duals
    master = colgen.initial_master(setup, 1)
    with proofworker.ProofWorker(setup.boxes) as worker:
        assert worker.ready(30.0)
        state = colgen.ColgenState(master, proofs=worker, proof_end=time.perf_counter() + 20.0)
        before = len(master.columns)
        colgen._submit_proof(setup, state, duals, found=math.inf)
        task = worker._busy[0]
        assert worker.busy and task.kind == "pricing" and task.target == 1.0 + colgen.IMPROVE_EPS
        colgen.collect_proof(setup, state, wait_s=20.0)
    assert (state.worker_pricing_rounds, state.proof_rounds) == (1, 0)
    added = master.columns[before:]
    assert added and all(column_worth(c, duals) > 1.0 for c in added)
    assert 0.0 < state.bound <= colgen.dual_value(setup.pieces, duals) / best * (1 + 1e-9)  # kappa >= best


def test_a_worker_that_cannot_be_started_leaves_the_rounds_in_this_process(converged_h200, monkeypatch) -> None:
    setup, done = converged_h200

    def refuse(*_args):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(colgen, "ProofWorker", refuse)
    monkeypatch.setattr(proofworker.os, "sched_getaffinity", lambda _pid: {0, 1})
    state = colgen.ColgenState(done.master)
    with colgen.proofs_on_a_second_core(setup, state, 60.0, 1, time.perf_counter() + 5.0):
        assert state.proofs is None  # _proof_round then runs its rounds itself
    assert any("no proof worker (OSError" in n for n in state.notes)


def test_the_worker_sends_the_class_bound_after_each_pass_and_stays_busy_until_the_last(pricing_mix) -> None:
    """The member-class bound as the worker's first task: the best bound so far comes back after each pass that
    raised it (the worker still busy), then the final result (the worker idle); the interim bounds never fall
    and none is above the final one."""
    setup, _ = pricing_mix
    task = proofworker.ClassTask(colgen.piece_rows(setup.pieces), time.perf_counter() + 60.0, 10**6)
    got: list[proofworker.ClassDone] = []
    with proofworker.ProofWorker(setup.boxes, task) as worker:
        while not got or not got[-1].final:
            done = worker.poll(60.0)
            assert isinstance(done, proofworker.ClassDone) and done.task.deadline == task.deadline
            got.append(done)
            assert worker.busy == (not done.final)
    interim, final = got[:-1], got[-1].result
    assert interim and final is not None
    values = [d.result.value for d in interim if d.result is not None]
    assert len(values) == len(interim) and values == sorted(values) and values[-1] <= final.value + 1e-9
    levels = [d.result.levels for d in interim if d.result is not None]
    assert levels == sorted(set(levels)) and levels[-1] <= final.levels
