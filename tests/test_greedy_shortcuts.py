"""The greedy planner's shortcuts give exactly the plan without them (issue 12, performance).

Each shortcut skips work whose outcome is known: GPUs that AllocGPU treats alike are tried once,
the tail budget's limits are asked for in the order the serving model's curves serve, and shares
are searched only where there is a limit. These tests pin down that nothing else changes: a
shortcut keyed on too little would give a different plan here.
"""

from __future__ import annotations

import numpy as np
import pytest

from igniter_opt.domain import LatencyBudget, Workload
from igniter_opt.perfmodel import PerformanceModel
from igniter_opt.placement import Demand, lower_share_units, queueing, serving_model_for
from igniter_opt.placement.alloc import ConfigTerms, blank_constants
from igniter_opt.placement.packing import Slot
from igniter_opt.placement.place import OpenGpus
from igniter_opt.planner import greedy
from igniter_opt.problems import BudgetChoice, make_problem

SMALL = queueing.QueueingParams(client_ms=1.2, service_cv=0.1, n_requests=4000)  # statistics do not matter here


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("IGNITER_OPT_CACHE", str(tmp_path / "cache"))
    queueing.clear_memory_cache()
    yield
    queueing.clear_memory_cache()


def _gpus(packing) -> list[list[tuple[int, int]]]:
    return [[(s.demand, s.units) for s in g.slots] for g in packing.gpus]


def test_gpus_that_differ_only_in_constants_are_both_tried(h100_model: PerformanceModel, monkeypatch) -> None:
    """Two SSD servers, same batch and share, one with a tight latency limit and one with twice
    that: a newcomer beside the tight one forces a raise, beside the loose one it fits as it is,
    so Algorithm 1 puts it on the second GPU. Treating the two GPUs as alike (a kind keyed on
    model, batch and units only) would try the first alone and put it there."""
    perf = h100_model
    tight = 5.5
    units = lower_share_units(perf, "ssd", 8, tight)
    assert units is not None and units > perf.max_units // 2  # one of them per GPU
    demands = [Demand(Workload("tight", "ssd", 2 * tight, 100.0), 100.0, 8, units, tight),
               Demand(Workload("loose", "ssd", 4 * tight, 100.0), 100.0, 8, units, 2 * tight),
               Demand(Workload("new", "alexnet", 60.0, 50.0), 50.0, 2, 1, 30.0)]
    got = greedy.place(perf, demands)
    assert _gpus(got) == [[(0, units)], [(1, units), (2, 1)]]
    monkeypatch.setattr(OpenGpus, "distinct_rows", lambda self, rows: rows)  # every GPU tried
    assert greedy.place(perf, demands) == got


def test_equal_replicas_are_tried_once_and_the_next_one_stands_in(h100_model: PerformanceModel) -> None:
    perf = h100_model
    cap = perf.max_units
    terms = ConfigTerms(perf, 8, cap)
    table = OpenGpus(terms)
    const = blank_constants((1, 1))[0, 0]
    other = const.copy()
    other[2] = 50.0  # another rate: the same model, batch and units, not alike
    cfg = terms.index(0, 4, 10)
    for i, k in enumerate((const, const, const, other)):
        table.open_gpu(Slot(i, 10, 4), cfg, 10.0, k)
    rows = np.arange(4)
    np.testing.assert_array_equal(table.distinct_rows(rows), [0, 3])
    # GPU 0 takes a second server: it is alike no more, and GPU 1 stands for the rest of its kind
    table.append_slot(0, Slot(4, 5, 2), terms.index(1, 2, 5), 5.0, const)
    np.testing.assert_array_equal(table.distinct_rows(rows), [0, 1, 3])
    table.append_slot(2, Slot(5, 5, 2), terms.index(1, 2, 5), 5.0, const)
    np.testing.assert_array_equal(table.distinct_rows(rows), [0, 1, 2, 3])
    # a full GPU is never a candidate again: it has a kind of its own
    full = table.open_gpu(Slot(6, cap, 4), terms.index(0, 4, cap), float(cap), const)
    table.open_gpu(Slot(7, cap, 4), terms.index(0, 4, cap), float(cap), const)
    np.testing.assert_array_equal(table.distinct_rows(np.array([full, full + 1])), [full, full + 1])


def test_max_service_is_the_same_in_any_order(private_cache) -> None:
    """Each placement's largest service time does not depend on which others are asked with it,
    nor in which order: on-grid delays (a planner's), off-grid ones and batches of one mixed."""
    rng = np.random.default_rng(7)
    n = 600
    batch = rng.integers(1, 7, n).astype(float)
    rate = rng.uniform(50.0, 1500.0, n)
    grid = queueing.queue_delay_candidates(rate, batch)
    delay = grid[np.arange(n), rng.integers(0, grid.shape[1], n)]
    off = rng.random(n) < 0.2
    delay[off] *= rng.uniform(0.1, 0.9, off.sum())
    slo = rng.uniform(5.0, 60.0, n)
    whole = queueing.max_service_ms(rate, batch, delay, slo, 0.99, SMALL)
    assert np.isfinite(whole).any() and np.isneginf(whole).any()  # both kinds of answer are exercised
    order = rng.permutation(n)
    shuffled = queueing.max_service_ms(rate[order], batch[order], delay[order], slo[order], 0.99, SMALL)
    assert whole[order].tobytes() == shuffled.tobytes()
    one_by_one = np.array([queueing.max_service_ms(rate[i], batch[i], delay[i], slo[i], 0.99, SMALL)[()]
                           for i in range(0, n, 7)])
    assert whole[::7].tobytes() == one_by_one.tobytes()


def test_tail_candidates_are_every_batch_and_delay_in_workload_order(h100_model: PerformanceModel) -> None:
    """The candidates (asked for batch by batch) against a plain loop over pieces, batches and
    delays, limit by limit."""
    ws = (Workload("a", "resnet50", 20.0, 300.0), Workload("b", "ssd", 40.0, 90.0),
          Workload("c", "alexnet", 12.0, 1500.0))
    problem = make_problem(ws, h100_model, BudgetChoice(LatencyBudget.TAIL, max_batch=6))
    rule = serving_model_for(problem)
    slo = np.array([w.slo_ms for w in ws])
    rate = np.array([w.rate_rps for w in ws])
    owner, batch, delay, limit = greedy._candidates(problem, rule, slo, rate)
    want = [(j, b, d, rule.limit(slo[j], rate[j], b, d))
            for j in range(len(ws)) for b in range(1, 7)
            for d in rule.queue_delay_candidates(slo[j], rate[j], np.array([b]))[0][: 1 if b == 1 else None]]
    assert owner.tolist() == [w[0] for w in want]
    assert batch.tolist() == [w[1] for w in want]
    assert delay.tobytes() == np.array([w[2] for w in want]).tobytes()
    assert limit.tobytes() == np.array([w[3] for w in want]).tobytes()
    assert np.isfinite(limit).any()


def test_equal_replicas_share_one_demand(h100_model: PerformanceModel) -> None:
    problem = make_problem((Workload("big", "vgg19", 30.0, 9000.0),), h100_model, BudgetChoice(LatencyBudget.TAIL))
    demands = greedy.initial_demands(problem)
    assert len(demands) > 1 and all(d == demands[0] for d in demands) and all(d.dedicated for d in demands)
    assert sum(d.rate_rps for d in demands) == pytest.approx(9000.0)


def test_a_gpu_opened_with_its_slots_is_the_gpu_opened_then_appended_to(h100_model: PerformanceModel) -> None:
    """``open_gpu_with`` (the replanner's tables) leaves what ``open_gpu`` and ``append_slot`` leave: the
    same arrays, and the same GPUs tried."""
    perf = h100_model
    terms = ConfigTerms(perf, 8, perf.max_units)
    const = blank_constants((1, 1))[0, 0]
    gpus = [[(Slot(0, 10, 4), terms.index(0, 4, 10), 10.0)],
            [(Slot(1, 10, 4), terms.index(0, 4, 10), 10.0), (Slot(2, 5, 2, None, 12.5), terms.index(1, 2, 5), 5.0)],
            [(Slot(3, 10, 4), terms.index(0, 4, 10), 10.0)]]
    one, bulk = OpenGpus(terms), OpenGpus(terms)
    for slots in gpus:
        g = one.open_gpu(*slots[0][:3], const)
        for s, c, u in slots[1:]:
            one.append_slot(g, s, c, u, const)
        bulk.open_gpu_with([s for s, _, _ in slots], [c for _, c, _ in slots], [u for _, _, u in slots],
                           [const] * len(slots))
    for name in ("cfg", "units", "const", "frozen", "count", "used", "repeat"):
        np.testing.assert_array_equal(getattr(one, name), getattr(bulk, name), err_msg=name)
    assert one.slots == bulk.slots and one.any_frozen and bulk.any_frozen
    rows = np.arange(3)
    np.testing.assert_array_equal(bulk.distinct_rows(rows), one.distinct_rows(rows))
    np.testing.assert_array_equal(bulk.distinct_rows(rows), [0, 1])  # GPU 2 repeats GPU 0's kind
