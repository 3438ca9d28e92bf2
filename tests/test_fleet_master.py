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
    COUNT_MAX_TYPES,
    CountCut,
    FleetMaster,
    cheapest_counts,
    count_bound,
    count_vector_master,
    lagrangian_bound,
    round_to_prices,
    type_blocks,
    type_sets,
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


# ---- the count bound: each set of types in use by its own cuts -----------------------------------
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("limits", [(None, None), (1, None), (None, 1), (2, 1)])
def test_the_count_bound_is_below_the_integer_optimum_over_every_column_at_any_duals(seed: int, limits) -> None:
    """Cuts filed at random duals (kappa_t: the most any column of type t is worth) for every set of types
    never bound above the cheapest integer plan over all columns; at the LP's duals the count bound is at
    least the LP value (whole GPUs per set, each set by its own D_S)."""
    master, cols = _instance(seed, limits)
    best = master.solve_integer(10.0, None, None, 0.0)
    if not best.counts:  # the limits leave the instance infeasible: nothing to bound
        return
    assert best.result.status == "Optimal"
    optimum = master.cost(best.counts)
    prices = [b.price_per_gpu_hour for b in master.blocks]
    sets = type_sets(2, [frozenset({0, 1})] * 3)
    cuts: dict[frozenset[int], list[CountCut]] = {s: [] for s in sets}
    rng = np.random.default_rng(seed)
    for _ in range(20):
        duals = [rng.uniform(0, 1.5, len(b.pieces)) for b in master.blocks]
        kappa = tuple(max(sum(duals[t][p] * a for p, a in c.coef) for c in cols[t]) for t in range(2))
        for types in sets:
            cuts[types].append(CountCut(kappa, master.dual_value(duals, types)))
        assert count_bound(cuts, prices, list(limits)) <= optimum + 1e-9
    lp = master.solve_lp(10.0)
    assert lp.objective is not None
    kappa = tuple(max(sum(lp.duals[t][p] * a for p, a in c.coef) for c in cols[t]) for t in range(2))
    at_lp = {s: [CountCut(kappa, master.dual_value(lp.duals, s))] for s in sets}
    assert lp.objective - 1e-6 <= count_bound(at_lp, prices, list(limits)) <= optimum + 1e-9


def test_the_count_bound_is_the_cheapest_set_of_types_its_cuts_leave() -> None:
    """Two types at 1.0 and 1.25 per GPU: the cheapest counts each set of types in use allows."""
    prices, free = [1.0, 1.25], [None, None]
    alone = {0: CountCut((1.0, 0.0), 2.0)}  # type 0 alone needs 2 GPUs
    cuts = {frozenset({0}): [alone[0]], frozenset({1}): [], frozenset({0, 1}): []}
    assert count_bound(cuts, prices, free) == pytest.approx(1.25)  # one GPU of type 1
    assert cheapest_counts(cuts, prices, free).counts == {1: 1}
    cuts[frozenset({1})].append(CountCut((0.0, 1.0), 1.2))  # type 1 alone needs 2
    assert count_bound(cuts, prices, free) == pytest.approx(2.0)  # two of type 0
    assert cheapest_counts(cuts, prices, free).counts == {0: 2}
    cuts[frozenset({0})].append(CountCut((1.0, 0.0), 2.5))  # now 3 of type 0
    assert count_bound(cuts, prices, free) == pytest.approx(2.25)  # one of each
    assert cheapest_counts(cuts, prices, free).counts == {0: 1, 1: 1}
    cuts[frozenset({0, 1})].append(CountCut((1.0, 1.0), 2.5))  # three GPUs in all when mixed
    assert count_bound(cuts, prices, free) == pytest.approx(2.5)  # two of type 1
    assert cheapest_counts(cuts, prices, free).counts == {1: 2}
    assert count_bound(cuts, prices, [None, 1]) == pytest.approx(3.0)  # one of type 1 at most: three of type 0
    assert cheapest_counts(cuts, prices, [None, 1]).counts == {0: 3}
    assert count_bound({frozenset({0}): [CountCut((1.0, 0.0), 2.0)]}, prices, [1, None]) == 0.0  # none left
    assert cheapest_counts({frozenset({0}): [CountCut((1.0, 0.0), 2.0)]}, prices, [1, None]).counts == {}


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("counts", [{0: 1, 1: 1}, {0: 2, 1: 1}, {0: 1}, {1: 2}, {0: 2, 1: 2}])
def test_a_count_vectors_lp_is_how_many_gpus_short_and_its_duals_rule_it_out_exactly_then(seed: int, counts) -> None:
    """The LP of a count vector G (prices 0, count rows capped at G with a slack at cost 1, only G's types):
    0 exactly when the fleet master with G as its limits is feasible; above 0, the certificate at its duals
    with kappa_t the most a column of type t is worth, D_S(pi) > sum_t kappa_t G_t, rules G out (and never
    when it is feasible)."""
    master, cols = _instance(seed, (None, None))
    pieces = [b.pieces for b in master.blocks]
    workloads = [b.workloads for b in master.blocks]
    vm = count_vector_master(master.blocks, 3, counts)
    for t in counts:
        vm.add(t, cols[t])
    lp = vm.solve_lp(10.0)
    assert lp.objective is not None and lp.objective >= -1e-9
    capped = FleetMaster(type_blocks([ps if t in counts else () for t, ps in enumerate(pieces)], workloads,
                                     [1.0, 1.0], [counts.get(t, 0) for t in range(2)]), 3)
    for t in counts:
        capped.add(t, cols[t])
    feasible = capped.solve_lp(10.0).objective is not None
    assert feasible == (lp.objective <= 1e-9)
    duals = [d if t in counts else np.zeros(len(pieces[t])) for t, d in enumerate(lp.duals)]
    kappa = {t: max(sum(duals[t][p] * a for p, a in c.coef) for c in cols[t]) for t in counts}
    margin = master.dual_value(duals, frozenset(counts)) - sum(kappa[t] * g for t, g in counts.items())
    assert margin == pytest.approx(max(lp.objective, 0.0), abs=1e-7)  # strong duality: the LP value
    with pytest.raises(ValueError, match="no integer master"):
        vm.solve_integer(1.0, None, None, 0.0)


def test_the_sets_of_types_in_use_are_those_that_serve_every_workload() -> None:
    only_first, both = frozenset({0}), frozenset({0, 1})
    assert type_sets(2, [both, only_first]) == [frozenset({0}), frozenset({0, 1})]
    assert frozenset({2}) not in type_sets(3, [both]) and len(type_sets(3, [both])) == 6
    assert len(type_sets(3, [frozenset({0, 1, 2})])) == 7
    assert type_sets(COUNT_MAX_TYPES + 1, [frozenset({0})]) == []  # too many types: the count bound is off
