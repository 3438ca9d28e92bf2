"""Point pricing (``planner.exact.points``): the configurations it returns are ones the kernel accepts at
the worth it states, it finds at least what brute force over sampled items finds on the pricing mixes,
it keeps to its deadline, and column generation adds only what it finds worth more than a GPU."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("highspy", reason="the exact planner needs highspy")

from igniter_opt.planner.exact import colgen, points
from igniter_opt.planner.exact.columns import column_worth, evaluate


def _trials(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [rng.random(n) for _ in range(8)] + [rng.random(n) * (rng.random(n) < 0.5) for _ in range(4)]


def test_what_it_returns_the_kernel_accepts_at_the_stated_worth(pricing_mix) -> None:
    setup, _ = pricing_mix
    seen = 0
    for duals in _trials(len(setup.pieces)):
        found = points.point_candidates(setup.boxes, duals, 0.0, time.perf_counter() + 30.0)
        cols = evaluate(setup.space, [setup.boxes.slots(m) for _, m in found])
        for (worth, members), col in zip(found, cols, strict=True):
            assert col is not None, members
            assert column_worth(col, duals) == pytest.approx(worth, rel=1e-9)
            assert col.units <= setup.space.cap_units
            seen += 1
        assert [w for w, _ in found] == sorted((w for w, _ in found), reverse=True)
    assert seen > 20


def test_it_finds_what_brute_force_over_sampled_items_finds(pricing_mix) -> None:
    """On the pricing mixes, its best configuration is worth at least the best of every multiset of up to
    four sampled items the kernel accepts (of two or more members: one member is priced exactly elsewhere)."""
    setup, columns = pricing_mix
    company = [c for c in columns if len(c.slots) >= 2]
    for duals in _trials(len(setup.pieces)):
        best = max(column_worth(c, duals) for c in company)
        found = points.point_candidates(setup.boxes, duals, 0.0, time.perf_counter() + 30.0)
        assert found and found[0][0] >= best * (1 - 1e-9), (found[:1], best)


def test_it_keeps_to_its_deadline(pricing_mix) -> None:
    setup, _ = pricing_mix
    duals = np.ones(len(setup.pieces))
    assert points.point_candidates(setup.boxes, duals, 0.0, time.perf_counter()) == []
    full = points.points(points.BoxSearch(setup.boxes, duals))
    assert len({b.n_lo for b in full}) == min(setup.boxes.max_members, points.MAX_MEMBERS) - 1
    # a pass over the member counts comes first: a search cut short has tried every count
    counts = len({b.n_lo for b in full})
    assert {b.n_lo for b in full[:counts]} == {b.n_lo for b in full}


def test_column_generation_adds_only_columns_worth_more_than_a_gpu(pricing_mix) -> None:
    setup, _ = pricing_mix
    for duals in _trials(len(setup.pieces))[:4]:
        state = colgen.ColgenState(colgen.initial_master(setup, 1))
        before = len(state.master.columns)
        added = colgen._point_round(setup, state, duals, time.perf_counter() + 10.0)
        new = state.master.columns[before:]
        assert added == len(new) and state.point_rounds == 1
        assert all(column_worth(c, duals) > 1.0 for c in new)
        found = colgen.point_columns(setup, duals, time.perf_counter() + 10.0)
        assert len(new) == len({c.slots for c in found if column_worth(c, duals) > 1.0 + colgen.IMPROVE_EPS}
                               - {c.slots for c in state.master.columns[:before]})
