"""Point pricing: configurations found by box pricing's knapsack at points of the environment.

A heuristic, run when the kernel heuristic and pair pricing find nothing, on instances of more items than
the pricing MIP is tried on (``colgen``; below, the MIP finds and proves the best column fast). The kernel
heuristic grows a configuration one member at a time by worth per unit, and at 50 workloads on the
V100 it misses configurations of seven to nine small pieces worth up to 9 % more than a GPU, which box
pricing finds only after a thousand boxes (docs/exact.md). Here the environment is guessed instead:

1. At a point (n members, total L2 C, power over the cap Q) the items that meet their rows there
   (``boxes.BoxSearch.eligible`` at a box of zero width) are the ones a configuration of at most those
   aggregates may hold. The knapsack of box pricing without multipliers gives the multiset of n of
   them worth most within the units; its members that break their rows at its own aggregates are
   dropped (``BoxPricing.repair``).
2. Steps towards a fixed point (at most ``FIX_STEPS``, while the worth grows): the same at the repaired
   multiset's own aggregates (n to n + 1 members, ``FIX_CACHE_REL`` more L2 and ``FIX_POWER_W`` more
   power), where all its members are eligible, so the knapsack is worth at least as much; repaired again.

Points: every member count n from 2 to ``MAX_MEMBERS``; the L2 at ``LEVELS`` quantiles of what the live
items tolerate with n members, and at n times the median L2 of an item (what n members typically bring:
on an L2-tolerant model every tolerance lies far above it); the power at the cap and a quarter of the way
above it. A point whose knapsack is worth no more than the threshold is not traced (repairs only lose worth).
The multisets found are candidates: the kernel judges them (``columns.evaluate``), like every column.
Exact in nothing: it proves nothing, and box pricing still bounds.
"""

from __future__ import annotations

import time

import numpy as np

from igniter_opt.planner.exact.boxes import Box, BoxPricing, BoxSearch

# L2 levels per member count (quantiles of the live items' L2 limits, 5 % to 95 %).
LEVELS = 5
# Member counts tried: 2 up to this (and the reachable most).
MAX_MEMBERS = 12
# Power over the cap tried, as shares of the reachable most.
POWER_SHARES = (0.0, 0.25)
# The fixed-point steps: at most this many, each in a box above a multiset's own aggregates.
FIX_STEPS = 3
FIX_CACHE_REL = 0.05
FIX_POWER_W = 5.0


def points(s: BoxSearch) -> list[Box]:
    """The points tried, as boxes of zero width (one member count, one L2, one power over the cap), a
    pass over the member counts per (power, L2 level), so that a search cut short has tried every count."""
    bp = s.bp
    typical = float(np.median(s.cache)) if s.live.size else 0.0
    out: dict[Box, tuple[int, int, int]] = {}
    for n in range(2, min(bp.max_members, MAX_MEMBERS) + 1):
        lim = s.cache_limit(n, 0.0)
        lim = lim[np.isfinite(lim) & (lim > 0)]
        levels = np.r_[n * typical, np.quantile(lim, np.linspace(0.05, 0.95, LEVELS)) if lim.size else []]
        for qi, share in enumerate(POWER_SHARES):
            q = share * bp.q_top
            for li, c in enumerate(np.minimum(levels, bp.c_top)):
                out.setdefault(Box(n, n, float(c), float(c), q, q), (qi, li, n))
    return sorted(out, key=out.__getitem__)


def point_candidates(bp: BoxPricing, duals: np.ndarray, threshold: float, deadline: float
                     ) -> list[tuple[float, tuple[int, ...]]]:
    """The repaired multisets found at the points (module docstring) until ``deadline``
    (``time.perf_counter()``), as (worth, item indices of ``items.table``), most worth first; those
    worth at most ``threshold`` included (as seeds to grow)."""
    s = BoxSearch(bp, duals)
    if s.live.size == 0 or bp.max_members < 2:
        return []
    piece = bp.items.table.piece
    found: dict[tuple[int, ...], float] = {}

    def keep(members: tuple[int, ...]) -> tuple[int, ...]:
        kept = tuple(sorted(bp.repair(members, duals)))
        if kept:
            found[kept] = float(np.sum(duals[piece[list(kept)]]))
        return kept

    for box in points(s):
        if time.perf_counter() >= deadline:
            break
        kept = keep(s.trace_back(box, 0.0, 0.0, least=threshold))
        for _ in range(FIX_STEPS):
            if not kept:
                break
            was = found[kept]
            kept = keep(s.trace_back(_around(bp, kept), 0.0, 0.0))
            if not kept or found[kept] <= was:
                break
    return sorted(((w, m) for m, w in found.items()), reverse=True)


def _around(bp: BoxPricing, members: tuple[int, ...]) -> Box:
    """The fixed-point step's box: the multiset's own member count (to one more), L2 and power over the cap."""
    tab = bp.items.table
    k = np.asarray(members)
    c = float(tab.cache[k].sum())
    q = max(0.0, bp.p_busy + float(tab.power[k].sum()) - bp.p_max)
    return Box(k.size, min(k.size + 1, bp.max_members), c, c * (1.0 + FIX_CACHE_REL), q, q + FIX_POWER_W)
