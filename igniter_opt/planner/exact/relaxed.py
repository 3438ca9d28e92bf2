"""A cheap certified bound on what any one-GPU configuration is worth at the master's duals.

Farley's bound (``colgen``) needs kappa >= sum_t pi_t T_t for EVERY feasible GPU configuration. The
pricing MIP (``pricing``) gives one from HiGHS's dual bound, weak (big-M rows) and slow. This module
gives one from a relaxation of the same rows, by dynamic programming in numpy.

On a GPU with n members, total L2 C and scheduling increment S = D(n), item k (``items``) meets its
budget iff kern_k S + idle_k + a_k (1 + alpha_k (C - c_k)) <= B_k (and a throttling row, which only
tightens: dropped). The relaxation:

- One member: the configuration is one item alone, worth pi_t of its piece type (exact).
- n >= 2: D(n) >= D(2) >= 0 (``items.check_company_never_helps``: alpha_sch >= 0, D(2) >= 0), so every
  member k needs C <= Cmax_k = c_k + (B_k - idle_k - a_k - kern_k D(2)) / (a_k alpha_k) (no limit
  but the reachable L2, ``Bounds.max_cache``, when alpha_k = 0), and C >= c_k. Let gamma = min of
  Cmax_k over the members: it is one of the items' Cmax values. Split those values into levels
  L_0 < L_1 < ...; when gamma is in [L_g, L_g+1), every member has Cmax_k >= L_g and C <= top_g, the
  largest Cmax value below L_g+1. Per level: maximise sum_t pi_t T_t over those items subject to
  sum u_k x_k <= cap units, sum c_k x_k <= top_g, T_t <= count_t, T_t <= items of t chosen. The L2
  row is relaxed with a multiplier mu >= 0 (Lagrange): value <= mu top_g + max sum (pi_t - mu c_k) x_k
  over at most count_t items of each type t within the units, a group knapsack over units solved
  exactly by DP. Any mu gives a bound; the least over a grid of mu is taken per level, then the most
  over levels.

Items are the non-dominated placements; a feasible configuration using a dominated one is as
feasible, and worth as much, with the item dominating it instead (``items``), so the bound covers it.
Budgets and L2 limits are loosened (never tightened) for the kernel's tolerance and float noise, and
the result is raised by ``KAPPA_SAFETY_REL``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from igniter_opt.perfmodel.model import HardwareCoefficients
from igniter_opt.planner.exact.columns import PieceSpace
from igniter_opt.planner.exact.configs import Bounds, busy_power_w, sched_increment_ms
from igniter_opt.planner.exact.items import Items, ItemTable
from igniter_opt.planner.exact.pricing import DUAL_EPS

# Budgets loosened by this (relative; the kernel accepts latencies 1e-9 above their limit) plus
# LOOSEN_ABS_MS, and every L2 limit by CACHE_LOOSEN_REL of the reachable L2: a bound must come from
# rows no tighter than the problem's.
LOOSEN_BUDGET_REL = 1e-7
LOOSEN_ABS_MS = 1e-6
CACHE_LOOSEN_REL = 1e-9
# The worth bound is raised by this relative amount (plus 1e-12) for float noise in the sums.
KAPPA_SAFETY_REL = 1e-9
# Levels of gamma (min Cmax over members) and multipliers of the L2 row tried per level and pass.
N_LEVELS = 24
N_MU = 10
MU_PASSES = 2


@dataclass(frozen=True)
class RelaxedPricing:
    """The duals-independent part of the relaxation. Per level g: its floor L_g and top (the most
    total L2 it allows). Per piece type t with items usable with company: ``least_cache_pct[t]``,
    shape (levels, cap + 1), the least L2 demand of its items usable at level g within U units (inf:
    none; at any multiplier mu >= 0 the best of them is worth pi_t - mu times it), and the units where
    that falls at some level. Per piece type: how many pieces are credited, and whether it has items."""

    level_floor_pct: np.ndarray
    level_top_pct: np.ndarray
    least_cache_pct: dict[int, np.ndarray]
    falls: dict[int, np.ndarray]
    count: np.ndarray
    has_items: np.ndarray
    cap_units: int


def loosened_budget(tab: ItemTable) -> np.ndarray:
    """Each item's GPU-time budget B_k, loosened (never tightened) for the kernel's tolerance."""
    return tab.budget * (1.0 + LOOSEN_BUDGET_REL) + LOOSEN_ABS_MS


def meets_loosened_budget(tab: ItemTable, hw: HardwareCoefficients, budget: np.ndarray, k: np.ndarray, members: int,
                          cache_pct: np.ndarray | float, power_w: np.ndarray | float) -> np.ndarray:
    """Whether items ``k`` meet their loosened budgets (``budget``: ``loosened_budget(tab)``) on a GPU of
    ``members`` members with total L2 ``cache_pct`` and power ``power_w`` (idle and floor included):
    the pricing row kern_k D(n) + idle_k + a_k (1 + alpha_k (C - c_k)) <= B_k min(1, 1 + alpha_f / F (P - P_max))."""
    factor = np.minimum(1.0, 1.0 + hw.alpha_f / hw.max_clock_mhz * (np.asarray(power_w) - hw.max_power_w))
    slowdown = 1.0 + tab.alpha_cache[k] * (cache_pct - tab.cache[k])
    lhs = tab.kernels[k] * sched_increment_ms(hw, members) + tab.idle[k] + tab.active[k] * slowdown
    return lhs <= budget[k] * factor


def cache_limits(tab: ItemTable, hw: HardwareCoefficients, bounds: Bounds, members: int = 2,
                 factor: np.ndarray | float = 1.0) -> np.ndarray:
    """Per item of ``tab``: the most total L2 (%) on a GPU of ``members`` (>= 2) members at which it meets its
    loosened budget, Cmax_k (see the module docstring), capped at the reachable L2 of ``bounds``; with the clock's
    throttling ``factor`` f (per item or one for all) that budget is B_k f."""
    budget = loosened_budget(tab) * factor
    slack = budget - tab.idle - tab.active - tab.kernels * sched_increment_ms(hw, members)
    slope = tab.active * tab.alpha_cache
    reach = bounds.max_cache * (1.0 + CACHE_LOOSEN_REL) + CACHE_LOOSEN_REL
    with np.errstate(divide="ignore", invalid="ignore"):
        limit = np.where(slope > 0, tab.cache + slack / np.where(slope > 0, slope, 1.0), np.inf)
    limit = np.where((slope <= 0) & (slack < 0), -np.inf, limit)  # L2-blind and over budget: never with company
    limit = limit + CACHE_LOOSEN_REL * max(1.0, reach)
    return np.minimum(limit, reach)


def usable_with_company(tab: ItemTable, hw: HardwareCoefficients, bounds: Bounds, cap: int, members: int,
                        cmax: np.ndarray) -> np.ndarray:
    """Per item of ``tab``: whether it could be one of ``members`` (>= 2) on a GPU at all, its Cmax at that count
    ``cmax`` (``cache_limits``): it meets its loosened budget beside ``members`` - 1 of the least L2 and power any
    item has, and its units leave room for ``members`` - 1 of the fewest units."""
    others = members - 1
    room = tab.cache + others * float(tab.cache.min())
    ok = (cmax >= room) & (tab.units + others * int(tab.units.min()) <= cap)
    return ok & meets_loosened_budget(tab, hw, loosened_budget(tab), np.arange(len(tab.units)), members, room,
                                      busy_power_w(hw) + tab.power + others * float(tab.power.min()))


def levels(limits: np.ndarray, n_levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Floors L_g (some of the distinct Cmax values, the least first) and each level's top: the
    largest Cmax value below the next floor (the last: the largest)."""
    distinct = np.unique(limits)
    pick = np.unique(np.round(np.linspace(0, distinct.size - 1, min(n_levels, distinct.size))).astype(int))
    nxt = np.r_[pick[1:], distinct.size]
    return distinct[pick], distinct[nxt - 1]


def _least_cache(units: np.ndarray, cache: np.ndarray, usable: np.ndarray, cap: int) -> np.ndarray:
    """Per level (rows of ``usable``, (levels, items)) and units U: the least L2 of the usable items
    within U units (inf: none)."""
    out = np.full((usable.shape[0], cap + 1), np.inf)
    for u in np.unique(units[units <= cap]):
        at = units == u
        out[:, u] = np.where(usable[:, at], cache[at][None, :], np.inf).min(axis=1)
    return np.minimum.accumulate(out, axis=1)


def prepare_relaxed(space: PieceSpace, items: Items, on_type: Callable[[], None] | None = None) -> RelaxedPricing:
    """The relaxation's levels and per-type tables for ``space``'s piece types; ``on_type`` is called before each
    type's table (preparation's deadline check: at 2000 workloads the tables take 1.5-2.1 s)."""
    tab = items.table
    cap = space.cap_units
    limit = cache_limits(tab, space.problem.perf_model.hardware, items.bounds)
    use = limit >= tab.cache  # C >= c_k: the others never have company
    count = np.array([p.count for p in space.pieces], np.int64)
    has_items = np.array([idx.size > 0 for idx in items.by_piece], bool)
    if not use.any():
        return RelaxedPricing(np.zeros(0), np.zeros(0), {}, {}, count, has_items, cap)
    floor, top = levels(limit[use], N_LEVELS)
    least: dict[int, np.ndarray] = {}
    falls: dict[int, np.ndarray] = {}
    for t, idx in enumerate(items.by_piece):
        mine = idx[use[idx]]
        if mine.size == 0:
            continue
        if on_type is not None:
            on_type()
        usable = (limit[mine][None, :] >= floor[:, None]) & (tab.cache[mine][None, :] <= top[:, None])
        table = _least_cache(tab.units[mine].astype(np.int64), tab.cache[mine], usable, cap)
        drop = np.flatnonzero((table[:, 1:] < table[:, :-1]).any(axis=0)) + 1
        if drop.size:
            least[t], falls[t] = table, drop
    return RelaxedPricing(floor, top, least, falls, count, has_items, cap)


def _maxplus(acc: np.ndarray, add: np.ndarray) -> np.ndarray:
    """out[..., U] = max_{u <= U} acc[..., U - u] + add[..., u], for ``acc`` and ``add`` nondecreasing in U
    with add[..., 0] = 0: only the units where ``add`` rises anywhere need trying."""
    out = acc.copy()
    rise = np.flatnonzero((np.diff(add, axis=-1) > 0).reshape(-1, add.shape[-1] - 1).any(axis=0)) + 1
    width = add.shape[-1]
    for u in rise:
        np.maximum(out[..., u:], acc[..., : width - u] + add[..., u : u + 1], out=out[..., u:])
    return out


def _type_table(rp: RelaxedPricing, t: int, pi_t: float, mu: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """For piece type t: per level of ``levels``, multiplier and units U, the most sum (pi_t - mu c_k) over at most
    count_t of its items within U units (0: none), shape (levels, multipliers, cap + 1)."""
    width = rp.cap_units + 1
    least = rp.least_cache_pct[t][levels]
    with np.errstate(invalid="ignore"):  # 0 * inf where mu = 0 and no item: no item is -inf
        single = pi_t - mu[:, :, None] * least[:, None, :]
    single = np.where(np.isinf(least)[:, None, :], -np.inf, single)
    out = np.maximum(single, 0.0)
    prev = single
    for _ in range(1, int(rp.count[t])):
        nxt = np.full_like(prev, -np.inf)
        for u in rp.falls[t]:
            np.maximum(nxt[..., u:], prev[..., : width - u] + single[..., u : u + 1], out=nxt[..., u:])
        if not np.isfinite(nxt).any():
            break
        np.maximum(out, nxt, out=out)
        prev = nxt
    return out


class _OutOfTime(Exception):
    """The relaxation's dynamic program reached its deadline: no bound this time."""


def _level_values(rp: RelaxedPricing, duals: np.ndarray, mu: np.ndarray, levels: np.ndarray, deadline: float
                  ) -> np.ndarray:
    """mu top_g + the group knapsack's optimum, per level of ``levels`` and multiplier (levels, multipliers):
    each a bound on the worth of every configuration of two or more members whose gamma is in level g.
    Raises ``_OutOfTime`` past ``deadline`` (``time.perf_counter()``), checked after each piece type."""
    total = np.zeros((*mu.shape, rp.cap_units + 1))
    for t in rp.least_cache_pct:
        if duals[t] > DUAL_EPS:
            total = _maxplus(total, _type_table(rp, t, float(duals[t]), mu, levels))
            if time.perf_counter() > deadline:
                raise _OutOfTime
    return mu * rp.level_top_pct[levels, None] + total[:, :, -1]


def _live_ratios(rp: RelaxedPricing, duals: np.ndarray) -> np.ndarray:
    """pi_t / c for every live piece type's least L2 demands: the scale of useful multipliers."""
    out = [duals[t] / tab[np.isfinite(tab) & (tab > 0)] for t, tab in rp.least_cache_pct.items() if duals[t] > DUAL_EPS]
    return np.concatenate(out) if out else np.zeros(0)


def _mu_grid(rp: RelaxedPricing, duals: np.ndarray) -> np.ndarray:
    """The first multipliers: 0 and a geometric grid over the items' dual worth per % of L2."""
    ratio = _live_ratios(rp, duals)
    if ratio.size == 0:
        return np.zeros(1)
    return np.r_[0.0, np.geomspace(ratio.min() / 4.0, ratio.max(), N_MU - 1)]


def _refine(grid: np.ndarray, best: np.ndarray) -> np.ndarray:
    """Per level, ``N_MU`` multipliers between the neighbours of its best one on ``grid``."""
    lo = grid[np.maximum(best - 1, 0)]
    hi = grid[np.minimum(best + 1, grid.size - 1)]
    return lo[:, None] + (hi - lo)[:, None] * np.linspace(0.0, 1.0, N_MU)[None, :]


@dataclass(frozen=True)
class RelaxedBound:
    """``relaxed_bound``'s answer: kappa (inf where it stopped early: above what was useful) and the
    level whose bound was the largest (the one to probe first next time)."""

    kappa: float
    level: int


def _per_level(rp: RelaxedPricing, duals: np.ndarray, grid: np.ndarray, levels: np.ndarray, deadline: float
               ) -> np.ndarray:
    """Per level of ``levels``: the least bound over the multipliers ``grid``, then over ``MU_PASSES - 1``
    finer grids around each level's best."""
    mu = np.broadcast_to(grid, (levels.size, grid.size)).copy()
    values = _level_values(rp, duals, mu, levels, deadline)
    per_level = values.min(axis=1)
    for _ in range(1, MU_PASSES if grid.size > 1 else 1):
        mu = _refine(grid, values.argmin(axis=1))
        per_level = np.minimum(per_level, _level_values(rp, duals, mu, levels, deadline).min(axis=1))
    return per_level


def relaxed_bound(rp: RelaxedPricing, duals: np.ndarray, useful_below: float = math.inf, probe: int = 0,
                  deadline: float = math.inf) -> RelaxedBound:
    """An upper bound kappa on sum_t duals_t T_t over every feasible one-GPU configuration (T_t: its
    pieces of type t, at most count_t), from the relaxation in the module docstring. Level ``probe`` is
    bounded first: kappa is the largest bound over levels, so when that one level's is ``useful_below``
    or more, kappa is too, and the others are not computed (kappa reported as inf). Past ``deadline``
    (``time.perf_counter()``; checked after each piece type's table) it stops with kappa inf too."""
    try:
        return _relaxed_bound(rp, duals, useful_below, probe, deadline)
    except _OutOfTime:
        return RelaxedBound(math.inf, probe)


def _relaxed_bound(rp: RelaxedPricing, duals: np.ndarray, useful_below: float, probe: int, deadline: float
                   ) -> RelaxedBound:
    credited = np.where(rp.has_items, np.maximum(duals, 0.0), 0.0)
    alone = float(credited.max(initial=0.0))
    if alone >= useful_below:
        return RelaxedBound(math.inf, probe)
    if not any(duals[t] > DUAL_EPS for t in rp.least_cache_pct):
        return RelaxedBound(alone * (1.0 + KAPPA_SAFETY_REL) + 1e-12, probe)
    n_levels = rp.level_floor_pct.size
    grid = _mu_grid(rp, duals)
    probe = min(max(probe, 0), n_levels - 1)
    per_level = np.empty(n_levels)
    per_level[probe] = _per_level(rp, duals, grid, np.array([probe]), deadline)[0]
    if per_level[probe] >= useful_below:
        return RelaxedBound(math.inf, probe)
    rest = np.delete(np.arange(n_levels), probe)  # each level's bound is computed on its own: the probe's stands
    if rest.size:
        per_level[rest] = _per_level(rp, duals, grid, rest, deadline)
    kappa = max(alone, float(per_level.max()))
    return RelaxedBound(kappa * (1.0 + KAPPA_SAFETY_REL) + 1e-12, int(per_level.argmax()))


def relaxed_kappa(rp: RelaxedPricing, duals: np.ndarray) -> float:
    """``relaxed_bound``'s kappa, every level computed."""
    return relaxed_bound(rp, duals).kappa
