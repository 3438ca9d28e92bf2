"""AllocGPU over rows racing within groups (``placement.alloc.RowRace``): giving up the rows that can no longer
win changes no group's winner, and the kernel heuristic (``heuristic.extend``, which races each configuration's
candidates) grows the same configurations as when every row runs to its end."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("highspy", reason="the exact planner needs highspy")

from igniter_opt.placement import alloc
from igniter_opt.planner.exact import heuristic


def _winners(ok: np.ndarray, units: np.ndarray, race: alloc.RowRace) -> dict[int, tuple[int, float]]:
    """Per group, its best feasible row (highest score, then lowest row) and the score."""
    score = np.where(ok, race.worth / np.maximum(units.sum(axis=1) - race.used, 1e-9), -1.0)
    out = {}
    for g in np.unique(race.group):
        mine = np.flatnonzero(race.group == g)
        r = int(mine[np.argmax(score[mine])])
        out[int(g)] = (r, float(score[r]))
    return out


def test_a_race_keeps_every_groups_winner(pricing_mix_setup) -> None:
    setup = pricing_mix_setup
    ent, terms, cap = setup.entries, setup.terms, setup.space.cap_units
    rng = np.random.default_rng(5)
    gave_up = 0
    for _ in range(20):
        rows, width = 300, 3
        pick = rng.integers(0, ent.cfg.size, size=(rows, width))
        cfg, units, const = ent.cfg[pick], ent.units[pick].astype(float), ent.const[pick]
        cfg[:, 2][rng.random(rows) < 0.5] = terms.empty  # some rows of two members
        units[cfg == terms.empty] = 0.0
        race = alloc.RowRace(rng.integers(0, 12, rows), np.round(rng.random(rows), 1), np.zeros(rows))
        ok, _, units_f = alloc.alloc_rows(terms, cap, cfg, units, const)
        ok_r, _, units_r = alloc.alloc_rows(terms, cap, cfg, units, const, race=race)
        assert _winners(ok_r, units_r, race) == _winners(ok, units_f, race)
        assert (ok_r <= ok).all() and np.array_equal(units_r[ok_r], units_f[ok_r])  # a finished row is as it was
        gave_up += int((ok & ~ok_r).sum())
    assert gave_up > 0  # the race gave rows up


def test_the_heuristic_grows_the_same_configurations_with_the_race(pricing_mix_setup, monkeypatch) -> None:
    setup = pricing_mix_setup
    n = len(setup.pieces)
    rng = np.random.default_rng(6)
    duals = [rng.random(n) for _ in range(6)] + [rng.random(n) * (rng.random(n) < 0.4) for _ in range(6)]
    raced = [heuristic.grow(setup.space, setup.entries, setup.terms, d) for d in duals]
    run_out = alloc.alloc_rows
    monkeypatch.setattr(heuristic, "alloc_rows", lambda *a, race=None, **k: run_out(*a, **k))
    assert [heuristic.grow(setup.space, setup.entries, setup.terms, d) for d in duals] == raced
    assert any(raced)
