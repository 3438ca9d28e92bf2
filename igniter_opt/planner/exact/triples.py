"""Which triples of piece types can share one GPU: the exact columns of 3-member GPUs in the member-class bound.

The member-class LP (``classbound``) covers a GPU of three members by its class, whose rows are summed over the
members, so fractional members of different piece types may meet them where no three items could: at 200 V100
workloads its optimum put about 27 GPUs in classes of three, against 3 in greedy's plan (docs/exact.md, "Triple
columns in the member-class bound"). A GPU of three members is exactly a triple of piece types (s, t, u) that
three of their items, one of each, serve together, so, as the pair columns replace the classes of two members,
a column per such triple may replace the classes of three.

The screen (never tighter than the kernel, so that the LP stays a relaxation): items i, j, k with
u_i + u_j + u_k <= 100 % and C = c_i + c_j + c_k <= min(H_i, H_j, H_k), where H_k is the most total L2 at which k
meets the pricing model's row at three members (``relaxed.cache_limits``), budgets loosened as in ``relaxed``,

    kern_k D(3) + idle_k + a_k (1 + alpha_k (C - c_k)) <= B_k f(P),   f(P) = min(1, 1 + alpha_f / F (P - P_max)),

(capped at the reachable L2: no GPU reaches more), at the least power its GPU can draw with it:
P = P_busy + p_k + 2 p_least, p_least the least power of any item usable with company
(``relaxed.usable_with_company``; only those take part). The GPU's real power is no less, and f does not rise
with it (alpha_f <= 0; where a fit has alpha_f > 0 the row is taken at f = 1), so the row at the real power is no
looser. With H per item, of each type only its items on the Pareto front of (units, L2, -H) are tried: any other
one is no better in any row. With the rows at f = 1 instead, 0.2 % more triples passed at 200 V100 workloads and
the bound gained a third as much (docs/exact.md). A triple is a candidate only where its three pairs of types are
among the fitting pairs (``pairs.fitting_type_pairs``): two of a GPU's three members meet the pair screen, with
fewer units, less L2 and power, and D(2) <= D(3). Most candidates fit with items of fewest units (``PROBE_RANKS``
of each type's front, each combination tried); the others are first checked against their types' fewest units,
then item triple by item triple.
"""

from __future__ import annotations

import itertools
import time

import numpy as np

from igniter_opt.perfmodel.model import HardwareCoefficients
from igniter_opt.planner.exact.configs import busy_power_w
from igniter_opt.planner.exact.items import Items
from igniter_opt.planner.exact.relaxed import cache_limits, usable_with_company

# The items of fewest units of each type's front tried against each other first (each combination of ranks).
PROBE_RANKS = 3
# Candidate triples (and item triples) handled per numpy call.
CHUNK = 1 << 20


class _Screen:
    """The screen's rows (module docstring) over the item table: H per item, and whether items pass together."""

    def __init__(self, items: Items, hw: HardwareCoefficients, cap: int) -> None:
        tab = items.table
        self.tab, self.cap = tab, cap
        self.usable = usable_with_company(tab, hw, items.bounds, cap, 3, cache_limits(tab, hw, items.bounds, 3))
        least_w = float(tab.power[self.usable].min()) if self.usable.any() else 0.0
        power = busy_power_w(hw) + tab.power + 2 * least_w
        throttle = np.minimum(1.0, 1.0 + hw.alpha_f / hw.max_clock_mhz * (power - hw.max_power_w))
        self.most_cache = cache_limits(tab, hw, items.bounds, 3, throttle if hw.alpha_f <= 0.0 else 1.0)

    def meet(self, i: np.ndarray, j: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Whether items i, j, k (arrays; -1: none) pass the screen together."""
        tab, most = self.tab, self.most_cache
        cache = tab.cache[i] + tab.cache[j] + tab.cache[k]
        return ((i >= 0) & (j >= 0) & (k >= 0) & (tab.units[i] + tab.units[j] + tab.units[k] <= self.cap)
                & (cache <= np.minimum(np.minimum(most[i], most[j]), most[k])))


def _fronts(items: Items, screen: _Screen) -> list[np.ndarray]:
    """Per piece type, its usable items on the Pareto front of (units, L2, -H), fewest units first."""
    tab = items.table
    usable = screen.usable
    # no three items reach more L2 than the three of most L2: beyond that, H makes no difference
    top = float(np.sort(tab.cache[usable])[-3:].sum()) * (1.0 + 1e-9) + 1e-9 if usable.any() else 0.0
    key = np.c_[tab.units, tab.cache, -np.minimum(screen.most_cache, top)]  # each minimised
    fronts = []
    for idx in items.by_piece:
        mine = idx[usable[idx]]
        mine = mine[np.lexsort(key[mine].T[::-1])]
        kept: list[int] = []
        for k in mine:  # those before k have no more units: k is dominated where one is no worse in the others
            if not any(key[q, 1] <= key[k, 1] and key[q, 2] <= key[k, 2] for q in kept):
                kept.append(int(k))
        fronts.append(np.array(kept, np.intp))
    return fronts


def _candidates(pairs: np.ndarray, count: np.ndarray, max_candidates: int, deadline: float) -> np.ndarray | None:
    """Every triple of piece types s <= t <= u whose three pairs are in ``pairs`` (three of one type only where
    its option has three pieces), rows of an (n, 3) array; None past ``deadline`` or beyond ``max_candidates``."""
    n = count.size
    fit = np.zeros((n, n), bool)
    fit[pairs[:, 0], pairs[:, 1]] = True
    fit[pairs[:, 1], pairs[:, 0]] = True
    out: list[np.ndarray] = []
    total = 0
    for s in range(n):
        if time.perf_counter() > deadline:
            return None
        ts = s + np.flatnonzero(fit[s, s:])
        if ts.size == 0:
            continue
        # (t, u) with u >= t, both partners of s and of each other
        both = fit[ts][:, s:] & fit[s, s:][None, :] & (np.arange(s, n)[None, :] >= ts[:, None])
        row, col = np.nonzero(both)
        found = np.c_[np.full(row.size, s), ts[row], s + col].astype(np.int32)
        found = found[~((found[:, 2] == s) & (count[s] < 3))]  # (s, s, s)
        total += len(found)
        if total > max_candidates:
            return None
        out.append(found)
    return np.concatenate(out) if out else np.zeros((0, 3), np.int32)


def _exhaust(screen: _Screen, fronts: list[np.ndarray], cand: np.ndarray, deadline: float) -> np.ndarray | None:
    """Whether each candidate triple passes the screen with some item triple of its fronts; None past ``deadline``."""
    size = np.array([f.size for f in fronts], np.int64)
    start = np.r_[0, np.cumsum(size)]
    flat = np.concatenate(fronts) if fronts else np.zeros(0, np.intp)
    fit = np.zeros(len(cand), bool)
    combos = size[cand[:, 0]] * size[cand[:, 1]] * size[cand[:, 2]]
    ends = np.cumsum(combos)
    lo = 0
    while lo < len(cand):  # chunks of about CHUNK item triples
        if time.perf_counter() > deadline:
            return None
        hi = max(lo + 1, int(np.searchsorted(ends, ends[lo] - combos[lo] + CHUNK, side="right")))
        c, n = cand[lo:hi], combos[lo:hi]
        tid = np.repeat(np.arange(hi - lo), n)
        off = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        nb, nc = size[c[:, 1]][tid], size[c[:, 2]][tid]
        i = flat[start[c[tid, 0]] + off // (nb * nc)]
        j = flat[start[c[tid, 1]] + off // nc % nb]
        k = flat[start[c[tid, 2]] + off % nc]
        ok = screen.meet(i, j, k)
        fit[lo + np.unique(tid[ok])] = True
        lo = hi
    return fit


def fitting_type_triples(items: Items, hw: HardwareCoefficients, cap: int, pairs: np.ndarray, count: np.ndarray,
                         deadline: float, max_candidates: int) -> np.ndarray | None:
    """Every triple of piece types (s, t, u), s <= t <= u, rows of an (n, 3) array, that three items can serve
    on one GPU under the screen (module docstring; a type repeated only as often as its option has pieces,
    ``count``); None past ``deadline`` (``time.perf_counter()``) or where there are more than ``max_candidates``
    candidates. Every three-member configuration of the kernel's is one of them."""
    if items.bounds.max_members < 3 or len(pairs) == 0:
        return np.zeros((0, 3), np.int32)
    cand = _candidates(pairs, count, max_candidates, deadline)
    if cand is None:
        return None
    screen = _Screen(items, hw, cap)
    fronts = _fronts(items, screen)
    units = items.table.units
    ranked = np.full((len(fronts), PROBE_RANKS), -1, np.intp)
    for t, f in enumerate(fronts):
        if f.size:
            ranked[t] = f[np.minimum(np.arange(PROBE_RANKS), f.size - 1)]
    fit = np.zeros(len(cand), bool)
    open_ = np.arange(len(cand))
    for ranks in itertools.product(range(PROBE_RANKS), repeat=3):
        if time.perf_counter() > deadline:
            return None
        c = cand[open_]
        ok = screen.meet(*(ranked[c[:, x], r] for x, r in enumerate(ranks)))
        fit[open_[ok]] = True
        open_ = open_[~ok]
    # the rest: first their types' fewest units together, then every item triple of their fronts
    least = np.array([units[f].min() if f.size else cap + 1 for f in fronts], np.int64)
    open_ = open_[least[cand[open_]].sum(axis=1) <= cap]
    rest = _exhaust(screen, fronts, cand[open_], deadline)
    if rest is None:
        return None
    fit[open_[rest]] = True
    return cand[fit]
