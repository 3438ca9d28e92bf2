"""The fleet master's certified bound (``planner.exact.fleetmaster``) against LPs solved over every column."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

pytest.importorskip("highspy", reason="the fleet master needs highspy")

from igniter_opt.planner.exact.columns import ColSlot, Column  # noqa: E402
from igniter_opt.planner.exact.fleetmaster import (  # noqa: E402
    FleetMaster,
    lagrangian_bound,
    round_to_prices,
    type_blocks,
)
from igniter_opt.planner.exact.pieces import PieceType  # noqa: E402


def _instance(seed: int, limits: tuple[int | None, int | None]) -> tuple[FleetMaster, list[list[Column]]]:
    """Two types, three workloads (each on type 0 in one piece, on type 1 in one or two replicas) and
    every configuration of up to three pieces of a type as a column, all in the master."""
    rng = random.Random(seed)
    pieces = ((PieceType(0, 0, 10.0, 1), PieceType(1, 0, 10.0, 1), PieceType(2, 0, 10.0, 1)),
              (PieceType(0, 0, 10.0, 1), PieceType(1, 0, 5.0, 2), PieceType(1, 1, 10.0, 1), PieceType(2, 0, 10.0, 1)))
    prices = (1.0, rng.choice((0.6, 1.25, 1.6)))
    blocks = type_blocks(pieces, [(0, 1, 2), (0, 1, 2)], prices, limits)
    master = FleetMaster(blocks, 3)
    cols: list[list[Column]] = [[], []]
    for t, ps in enumerate(pieces):
        for size in (1, 2, 3):
            for combo in itertools.combinations_with_replacement(range(len(ps)), size):
                if rng.random() < 0.5 and size > 1:  # some configurations do not fit
                    continue
                slots = tuple(ColSlot(p, 1, 10) for p in combo)
                worth: dict[int, float] = {}
                for p in combo:
                    worth[p] = min(worth.get(p, 0.0) + 1.0, ps[p].requirement)
                cols[t].append(Column(slots, tuple(sorted(worth.items())), (1.0,) * size))
        master.add(t, cols[t])
    return master, cols


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("limits", [(None, None), (1, None), (None, 1), (2, 1)])
def test_the_lagrangian_bound_is_below_the_lp_over_every_column_at_any_duals(seed: int, limits) -> None:
    """With kappa_t the most any column of type t is worth, f(s) at any duals pi >= 0 is at most the
    master LP over all columns (weak duality); at the LP's own duals it reaches the LP value."""
    master, cols = _instance(seed, limits)
    lp = master.solve_lp(10.0)
    if lp.objective is None:  # the limits leave the instance infeasible: nothing to bound
        assert lp.status == "Infeasible"
        return
    rng = np.random.default_rng(seed)
    prices = [b.price_per_gpu_hour for b in master.blocks]
    for _ in range(20):
        duals = [rng.uniform(0, 1.5, len(b.pieces)) for b in master.blocks]
        kappa = [max(sum(duals[t][p] * a for p, a in c.coef) for c in cols[t]) for t in range(2)]
        bound = lagrangian_bound(master.dual_value(duals), kappa, prices, list(limits))
        assert bound <= lp.objective + 1e-9
    kappa = [max(sum(lp.duals[t][p] * a for p, a in c.coef) for c in cols[t]) for t in range(2)]
    at_lp = lagrangian_bound(master.dual_value(lp.duals), kappa, prices, list(limits))
    assert at_lp == pytest.approx(lp.objective, rel=1e-6)


def test_the_bound_is_farleys_for_one_type_of_price_one() -> None:
    assert lagrangian_bound(6.0, [1.5], [1.0], [None]) == pytest.approx(4.0)
    assert lagrangian_bound(6.0, [1.5], [2.0], [None]) == pytest.approx(8.0)  # price 2: duals go as far as 2 / 1.5
    assert lagrangian_bound(6.0, [math.inf], [1.0], [None]) == 0.0  # a type whose worth is not bounded
    assert lagrangian_bound(0.0, [1.0], [1.0], [None]) == 0.0


def test_a_count_limit_lets_the_duals_go_further_at_a_price() -> None:
    """f(s) = 6 s - 2 max(0, 3 s - 1): rising to s = 1/3 (2.0), then with slope 0."""
    assert lagrangian_bound(6.0, [3.0], [1.0], [2]) == pytest.approx(2.0)
    # a second, unlimited type caps s at its price / kappa = 0.25: f = 1.5
    assert lagrangian_bound(6.0, [3.0, 4.0], [1.0, 1.0], [2, None]) == pytest.approx(1.5)


@pytest.mark.parametrize(("value", "prices", "limits", "rounded"), [
    (1.01, [1.0, 1.25], [None, None], 1.25),
    (1.0, [1.0, 1.25], [None, None], 1.0),
    (2.1, [1.0, 1.25], [1, None], 2.25),
    (2.1, [1.0, 1.6], [None, None], 2.6),
    (3.3, [1.0, 1.6], [1, 1], 3.3),  # nothing within the limits reaches it: left as it is
    (0.0, [1.0], [None], 0.0),
])
def test_a_bound_rounds_up_to_a_cost_whole_gpus_can_have(value: float, prices, limits, rounded: float) -> None:
    assert round_to_prices(value, prices, limits) == pytest.approx(rounded)
