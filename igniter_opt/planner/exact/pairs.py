"""Pricing over GPU configurations of two members, by enumeration.

The master LP's duals are often best served by pairs (a large piece next to a small one), which
the kernel heuristic (``heuristic.grow``, one member at a time at its fewest units) misses and the
pricing MIP finds only slowly. Whether two piece types can share a GPU does not depend on the
duals, so ``PairTable`` decides it once per pair of piece types, over every pair of their items
(``items``: each piece type at each batch and share), with the pricing model's rows at two members
(``pricing``: exact for the performance model),

    kern_k D(2) + idle_k + a_k (1 + alpha_k (C - c_k)) <= B_k min(1, 1 + kappa (P - P_max))   (k = i, j)

with C = c_i + c_j, P = P_busy + p_i + p_j and u_i + u_j <= 100 %, budgets loosened as in
``relaxed`` so the screen is never tighter than the kernel; it keeps the pair of fewest units.
A pair of piece types is worth pi_s + pi_t at the duals (2 pi_t for two pieces of one type, where
its option needs two). Pair pricing is therefore
exact over two-member configurations: ``PairTable.best`` walks the pairs of piece types from the
most worth down and returns, for those that can share a GPU, their pair of fewest units, for the
kernel to judge (``columns.evaluate``) or to grow into larger configurations (``heuristic.extend``).
No two-member configuration is worth more than the first pair it returns (a dominated item is
covered by the one dominating it, ``items``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import numpy as np

from igniter_opt.perfmodel.model import HardwareCoefficients
from igniter_opt.planner.exact.columns import ColSlot, PieceSpace
from igniter_opt.planner.exact.configs import busy_power_w
from igniter_opt.planner.exact.items import Items
from igniter_opt.planner.exact.pricing import DUAL_EPS
from igniter_opt.planner.exact.relaxed import cache_limits, loosened_budget, meets_loosened_budget

# How many of the best pairs above the threshold one round hands to the kernel.
MAX_PAIRS = 200
# Items of fewest units per piece type screened against each other first, for all partners at once.
PROBE_ITEMS = 6
# The first chunk of pairs of types ``PairTable._ranked`` orders, before it doubles.
FIRST_RANKED = 4096
# Item pairs screened per numpy call.
CHUNK = 1 << 16


class PairTable:
    """Per pair of piece types, whether two of their items can share a GPU, and which pair of items
    does with the fewest units (decided on first use, kept for the run)."""

    def __init__(self, space: PieceSpace, items: Items) -> None:
        self.space, self.items = space, items
        self._fit: dict[tuple[int, int], tuple[int, int] | None] = {}
        self._budget = loosened_budget(items.table)
        self._has_items = np.array([idx.size > 0 for idx in items.by_piece], bool)
        self._two = np.array([p.count >= 2 for p in space.pieces], bool)  # its option needs two pieces
        n = len(space.pieces)
        # per (s, t), s <= t: 1 fits, 0 does not, -1 not screened yet (a byte a pair: 9 MB at 3 000 piece types)
        self._known = np.full((n, n), -1, np.int8)

    def fit(self, s: int, t: int) -> tuple[int, int] | None:
        """The pair of items (one of type s, one of t, s <= t) of fewest units that passes the screen."""
        key = (s, t)
        if key not in self._fit:
            self._fit[key] = self._screen(s, t)
            self._known[s, t] = 0 if self._fit[key] is None else 1
        return self._fit[key]

    def _screen(self, s: int, t: int) -> tuple[int, int] | None:
        return _least_units_pair(self.items, self.space.problem.perf_model.hardware, self.space.cap_units,
                                 self._budget, s, t)

    def _ranked(self, duals: np.ndarray, threshold: float) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(s, t) arrays of the pairs of piece types with items, s <= t, worth more than ``threshold``, in
        chunks, most worth first (ties in the order of the types sorted by dual, stably): about
        ``FIRST_RANKED`` pairs first, then twice as many each time. A chunk is every pair between two worths,
        found per type by binary search over the others sorted by dual, so memory stays linear in the pairs a
        round reads (a few thousand) however many there are."""
        live = np.flatnonzero((duals > DUAL_EPS) & self._has_items)
        if live.size == 0:
            return
        live = live[np.argsort(-duals[live], kind="stable")]
        d = duals[live]
        first_b = np.arange(live.size) + np.where(self._two[live], 0, 1)  # b = a only where two pieces of it pair
        tol = 1e-9 * (1.0 + 2.0 * float(d[0]))  # ranges found from d[b] >= x - d[a] widened, then exact by the sum

        def ends(worth: float, widen: float = tol) -> np.ndarray:
            """Per a, the end of the b (>= its first) whose pair may be worth ``worth`` or more (``widen`` < 0:
            only those surely worth that much)."""
            return np.maximum(first_b, np.searchsorted(-d, d - worth + widen, side="right"))

        top = math.inf
        bottom = max(threshold, 0.0)
        want = FIRST_RANKED
        while True:
            hi_end = ends(top, -tol) if math.isfinite(top) else first_b  # the chunks before took those
            low = bottom
            if int((ends(bottom) - hi_end).sum()) > want:  # the chunk's lower worth, by bisection on its size
                lo_w, hi_w = bottom, (top if math.isfinite(top) else 2.0 * float(d[0]) + 1.0)
                for _ in range(60):
                    mid = 0.5 * (lo_w + hi_w)
                    if int((ends(mid) - hi_end).sum()) > want:
                        lo_w = mid
                    else:
                        hi_w = mid
                # hi_w: the least worth whose chunk is small enough; where it is empty (more pairs than ``want`` tie
                # at one worth), lo_w: the whole tie
                low = hi_w if int((ends(hi_w) - hi_end).sum()) > 0 else lo_w
            counts = np.maximum(ends(low) - hi_end, 0)
            a = np.repeat(np.arange(live.size), counts)
            b = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(hi_end, counts)
            worth = d[a] + d[b]
            keep = (worth > threshold) & (worth >= low) & (worth < top) if low > bottom else (
                (worth > threshold) & (worth < top))
            a, b, worth = a[keep], b[keep], worth[keep]
            order = np.lexsort((b, a, -worth))
            s_, t_ = live[a[order]], live[b[order]]
            yield np.minimum(s_, t_), np.maximum(s_, t_)
            if low <= bottom:
                return
            top, want = low, 2 * want

    def best(self, duals: np.ndarray, threshold: float, max_pairs: int = MAX_PAIRS, deadline: float = math.inf
             ) -> np.ndarray:
        """Item index pairs, shape (m, 2): for the ``max_pairs`` pairs of piece types worth most above
        ``threshold`` that can share a GPU, their pair of fewest units; those found by ``deadline``
        (``time.perf_counter()`` seconds) if it comes first (screening a pair of types on first use takes time).

        The pairs of types are screened in order of worth, each once per run (``fit``), until ``max_pairs`` fit:
        those not screened yet that come before the ``max_pairs``-th pair that fits or may fit are screened,
        then the same question again."""
        out: list[tuple[int, int] | None] = []

        def take(s: np.ndarray, t: np.ndarray) -> None:
            """The item pairs of the screened pairs of types among (s, t) that fit, up to ``max_pairs`` in all."""
            fits = np.flatnonzero(self._known[s, t] == 1)[: max_pairs - len(out)]
            out.extend(self._fit[(int(s[f]), int(t[f]))] for f in fits)

        for s, t in self._ranked(duals, threshold):
            while True:
                known = self._known[s, t]
                maybe = np.flatnonzero(known != 0)  # fits (1) or not screened yet (-1)
                upto = maybe[max_pairs - len(out) - 1] + 1 if maybe.size >= max_pairs - len(out) else s.size
                fresh = np.flatnonzero(known[:upto] < 0)
                if fresh.size == 0:
                    break
                for k in fresh:
                    if time.perf_counter() > deadline:
                        take(s[:k], t[:k])
                        return np.array(out, np.intp).reshape(-1, 2)
                    self.fit(int(s[k]), int(t[k]))
            take(s, t)
            if len(out) >= max_pairs:
                break
        return np.array(out, np.intp).reshape(-1, 2)

    def slots(self, duals: np.ndarray, threshold: float, max_pairs: int = MAX_PAIRS, deadline: float = math.inf
              ) -> list[list[ColSlot]]:
        """``best`` as slot lists (the kernel still judges them)."""
        tab = self.items.table
        return [[tab.slot(int(i)), tab.slot(int(j))] for i, j in self.best(duals, threshold, max_pairs, deadline)]


def _item_pairs(items: Items, cap: int, s: int, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of items, one of type s and one of t (s <= t), whose units fit in ``cap`` together."""
    tab, by = items.table, items.by_piece
    a, b = by[s], by[t]
    ii, jj = np.repeat(a, b.size), np.tile(b, a.size)
    if s == t:  # two pieces of one type: each pair once, the same item twice only where it has copies
        keep = (ii < jj) | ((ii == jj) & (tab.copies[ii] >= 2))
        ii, jj = ii[keep], jj[keep]
    fit = tab.units[ii] + tab.units[jj] <= cap
    return ii[fit], jj[fit]


def _meet(items: Items, hw: HardwareCoefficients, budget: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Items i and j (arrays) both meet their loosened budgets next to each other."""
    tab = items.table
    cache = tab.cache[i] + tab.cache[j]
    power = busy_power_w(hw) + tab.power[i] + tab.power[j]
    return (meets_loosened_budget(tab, hw, budget, i, 2, cache, power)
            & meets_loosened_budget(tab, hw, budget, j, 2, cache, power))


def _least_units_pair(items: Items, hw: HardwareCoefficients, cap: int, budget: np.ndarray, s: int, t: int
                      ) -> tuple[int, int] | None:
    """The pair of items (one of type s, one of t, s <= t) of fewest units that passes the screen (module
    docstring), or None."""
    tab = items.table
    ii, jj = _item_pairs(items, cap, s, t)
    best: tuple[int, int, int] | None = None
    for lo in range(0, ii.size, CHUNK):
        i, j = ii[lo:lo + CHUNK], jj[lo:lo + CHUNK]
        ok = np.flatnonzero(_meet(items, hw, budget, i, j))
        if ok.size:
            units = tab.units[i[ok]] + tab.units[j[ok]]
            m = int(np.argmin(units))
            if best is None or units[m] < best[0]:
                best = (int(units[m]), int(i[ok[m]]), int(j[ok[m]]))
    return None if best is None else (best[1], best[2])


def _any_pair(items: Items, hw: HardwareCoefficients, cap: int, budget: np.ndarray, s: int, t: int) -> bool:
    """Whether some pair of items of types s and t passes the screen (fewest units first: most likely)."""
    ii, jj = _item_pairs(items, cap, s, t)
    order = np.argsort(items.table.units[ii] + items.table.units[jj], kind="stable")
    ii, jj = ii[order], jj[order]
    return any(_meet(items, hw, budget, ii[lo:lo + CHUNK], jj[lo:lo + CHUNK]).any() for lo in range(0, ii.size, CHUNK))


def _pair_screen_data(items: Items, hw: HardwareCoefficients) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                        np.ndarray]:
    """Per piece type: its fewest units, least L2, the most L2 a partner of any of its items may bring
    (``relaxed.cache_limits`` at two members, less the item's own: never tighter than the screen), and its
    ``PROBE_ITEMS`` items of fewest units (repeated where it has fewer; -1 where it has none)."""
    tab = items.table
    tolerance = cache_limits(tab, hw, items.bounds, 2) - tab.cache
    n = len(items.by_piece)
    least_u, least_c, most_tol = np.full(n, np.inf), np.full(n, np.inf), np.full(n, -np.inf)
    probe = np.full((n, PROBE_ITEMS), -1, np.intp)
    for t, idx in enumerate(items.by_piece):
        if idx.size:
            least_u[t], least_c[t], most_tol[t] = tab.units[idx].min(), tab.cache[idx].min(), tolerance[idx].max()
            first = idx[np.argsort(tab.units[idx], kind="stable")[:PROBE_ITEMS]]
            probe[t] = np.resize(first, PROBE_ITEMS)
    return least_u, least_c, most_tol, probe


def fitting_type_pairs(items: Items, hw: HardwareCoefficients, cap: int, two: np.ndarray, deadline: float
                       ) -> np.ndarray | None:
    """Every pair of piece types (s, t), s <= t, rows of an (n, 2) array, that two items can serve on one GPU
    under the screen (module docstring; (t, t) only where ``two[t]``: t's option has two pieces or more), or
    None past ``deadline`` (``time.perf_counter()``). Every two-member configuration of the kernel's is one of them.

    For each type s at once over its partners: pairs that no two items could serve for units or L2 alone are
    dropped (fewest units, least L2 against the most a partner may bring); the ``PROBE_ITEMS`` items of fewest
    units of each side are screened, which settles most pairs that fit; the others are scanned item pair by item
    pair (``_any_pair``)."""
    budget = loosened_budget(items.table)
    least_u, least_c, most_tol, probe = _pair_screen_data(items, hw)
    live = np.flatnonzero(probe[:, 0] >= 0)
    out: list[np.ndarray] = []
    for a, s in enumerate(live):
        if time.perf_counter() > deadline:
            return None
        ts = live[a:]
        ts = ts[(least_u[s] + least_u[ts] <= cap) & (most_tol[s] >= least_c[ts]) & (most_tol[ts] >= least_c[s])
                & ((ts != s) | bool(two[s]))]
        others = ts[ts != s]
        ii = np.broadcast_to(probe[s][None, :, None], (others.size, PROBE_ITEMS, PROBE_ITEMS)).ravel()
        jj = np.broadcast_to(probe[others][:, None, :], (others.size, PROBE_ITEMS, PROBE_ITEMS)).ravel()
        ok = (items.table.units[ii] + items.table.units[jj] <= cap) & _meet(items, hw, budget, ii, jj)
        settled = ok.reshape(others.size, PROBE_ITEMS * PROBE_ITEMS).any(axis=1)
        unsettled = np.r_[others[~settled], ts[ts == s]]
        rest = [int(t) for t in unsettled if _any_pair(items, hw, cap, budget, int(s), int(t))]
        found = np.r_[others[settled], np.array(rest, np.intp)]
        out.append(np.c_[np.full(found.size, s), np.sort(found)])
    return np.concatenate(out).astype(np.intp) if out else np.zeros((0, 2), np.intp)
