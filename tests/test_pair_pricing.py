"""Pair pricing (``planner.exact.pairs``): its screen never rejects a pair the kernel accepts, the pair it
keeps per pair of piece types is one the kernel accepts and has the fewest units, and at any duals
the first pair it returns is worth as much as the best two-member configuration (brute force with the
kernel); column generation's heuristic round now prices pairs too."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

pytest.importorskip("highspy", reason="the exact planner needs highspy")

from igniter_opt.planner.exact import colgen
from igniter_opt.planner.exact.columns import column_worth, evaluate
from igniter_opt.planner.exact.pricing import DUAL_EPS

ITEMS_PER_BATCH = 3  # per piece type and batch: its fewest units and the next ones, for the brute force


@pytest.fixture(scope="module")
def mix(pricing_mix_setup: colgen.ColgenSetup) -> tuple[colgen.ColgenSetup, list]:
    """A mix's setup and every pair of a sample of its items that the kernel accepts."""
    setup = pricing_mix_setup
    tab = setup.items.table
    sample: list[int] = []
    for idx in setup.items.by_piece:
        for b in np.unique(tab.batch[idx]):
            mine = idx[tab.batch[idx] == b]
            sample.extend(int(k) for k in mine[np.argsort(tab.units[mine], kind="stable")][:ITEMS_PER_BATCH])
    pairs = [(i, j) for i, j in itertools.combinations_with_replacement(sample, 2)
             if tab.units[i] + tab.units[j] <= setup.space.cap_units
             and (tab.piece[i] != tab.piece[j] or setup.pieces[int(tab.piece[i])].count >= 2)
             and (i != j or tab.copies[i] >= 2)]
    cols = evaluate(setup.space, [[tab.slot(i), tab.slot(j)] for i, j in pairs])
    accepted = [(p, c) for p, c in zip(pairs, cols, strict=True) if c is not None]
    return setup, accepted


def _types(setup: colgen.ColgenSetup, i: int, j: int) -> tuple[int, int]:
    s, t = int(setup.items.table.piece[i]), int(setup.items.table.piece[j])
    return min(s, t), max(s, t)


def test_the_screen_keeps_every_pair_the_kernel_accepts(mix) -> None:
    setup, accepted = mix
    assert len(accepted) > 20  # company was enumerated
    for (i, j), _ in accepted:
        assert setup.pairs.fit(*_types(setup, i, j)) is not None, (i, j)


def test_the_kept_pair_is_accepted_by_the_kernel_and_has_the_fewest_units(mix) -> None:
    setup, accepted = mix
    tab = setup.items.table
    fewest: dict[tuple[int, int], int] = {}
    for (i, j), _ in accepted:
        key = _types(setup, i, j)
        fewest[key] = min(fewest.get(key, 10**9), int(tab.units[i] + tab.units[j]))
    for key, units in fewest.items():
        i, j = setup.pairs.fit(*key)
        assert evaluate(setup.space, [[tab.slot(i), tab.slot(j)]])[0] is not None
        assert tab.units[i] + tab.units[j] <= units


def test_pair_pricing_is_exact_over_pairs(mix) -> None:
    setup, accepted = mix
    n = len(setup.pieces)
    rng = np.random.default_rng(1)
    for duals in [rng.random(n) for _ in range(15)] + [rng.random(n) * (rng.random(n) < 0.5) for _ in range(15)]:
        best = setup.pairs.best(duals, 0.0, 5)
        if best.size == 0:
            assert all(column_worth(c, duals) == 0.0 for _, c in accepted)
            continue
        first = duals[setup.items.table.piece[best[0]]].sum()
        assert first >= max(column_worth(c, duals) for _, c in accepted) - 1e-12
        worths = [duals[setup.items.table.piece[p]].sum() for p in best]
        assert worths == sorted(worths, reverse=True) and min(worths) > 0.0
        above = setup.pairs.best(duals, 0.9, 1000)
        assert all(duals[setup.items.table.piece[p]].sum() > 0.9 for p in above)


def test_the_heuristic_round_prices_the_best_pair(mix) -> None:
    """At duals where the best configuration is a pair, kernel pricing returns a column worth as much."""
    setup, accepted = mix
    n = len(setup.pieces)
    rng = np.random.default_rng(2)
    for _ in range(10):
        duals = rng.random(n)
        best_pair = max(column_worth(c, duals) for _, c in accepted)
        found = max(column_worth(c, duals) for c in colgen.kernel_columns(setup, duals))
        assert found >= best_pair - 1e-12
        assert math.isfinite(found)


def test_a_pair_of_one_type_needs_an_option_of_two(mix) -> None:
    """Two pieces of one type are a pair only where its split option needs two of them."""
    setup, _ = mix
    tab = setup.items.table
    duals = np.ones(len(setup.pieces))
    found = setup.pairs.best(duals, 0.0, 10_000)
    same = [(i, j) for i, j in found if tab.piece[i] == tab.piece[j]]
    assert all(setup.pieces[int(tab.piece[i])].count >= 2 for i, _ in same)
    twos = {t for t, p in enumerate(setup.pieces) if p.count >= 2}
    assert twos and {int(tab.piece[i]) for i, _ in same} <= twos


def _best_by_sorting_every_pair(setup: colgen.ColgenSetup, duals: np.ndarray, threshold: float, max_pairs: int
                                ) -> list[tuple[int, int]]:
    """``PairTable.best`` as specified, by sorting every pair of piece types: most worth first, ties in the order
    of the types sorted by dual (stably), the fitting ones' pairs of fewest units."""
    pairs = setup.pairs
    live = [int(t) for t in np.argsort(-duals, kind="stable")
            if duals[t] > DUAL_EPS and setup.items.by_piece[t].size]
    ranked = sorted((-(duals[s] + duals[t]), a, b) for a, s in enumerate(live) for b, t in enumerate(live)
                    if b > a or (b == a and setup.pieces[s].count >= 2))
    out = []
    for neg, a, b in ranked:
        if -neg <= threshold or len(out) == max_pairs:
            break
        fit = pairs.fit(min(live[a], live[b]), max(live[a], live[b]))
        if fit is not None:
            out.append(fit)
    return out


@pytest.mark.parametrize("first_chunk", [3, 64, 4096])
def test_pairs_come_in_order_of_worth_whatever_the_chunks(mix, monkeypatch, first_chunk: int) -> None:
    """The chunked walk (``PairTable._ranked``: a first chunk of about ``FIRST_RANKED`` pairs, then doubling) returns
    exactly what sorting every pair would, at ties (duals of one decimal, or all equal) and thresholds."""
    from igniter_opt.planner.exact import pairs as pairs_module

    monkeypatch.setattr(pairs_module, "FIRST_RANKED", first_chunk)
    setup, _ = mix
    n = len(setup.pieces)
    rng = np.random.default_rng(3)
    cases = [rng.random(n), np.round(rng.random(n), 1), np.ones(n) * (rng.random(n) < 0.6),
             rng.random(n) * (rng.random(n) < 0.3)]
    for duals in cases:
        for threshold, max_pairs in [(0.0, 7), (0.0, 10_000), (0.9, 40), (1.5, 3)]:
            got = [tuple(int(v) for v in row) for row in setup.pairs.best(duals, threshold, max_pairs)]
            assert got == _best_by_sorting_every_pair(setup, duals, threshold, max_pairs), (threshold, max_pairs)
