"""Box pricing: a bound on every one-GPU configuration's worth that tightens by branch and bound,
and the configurations found on the way.

The rows (``pricing``, exact for the performance model): on a GPU with n members, total L2 C and
power P, member k meets its budget iff

    base_k + kern_k D(n) + A_k (C - c_k) <= B_k - E_k Q,      Q = max(0, P - P_max),

with base_k = idle_k + a_k, A_k = a_k alpha_k, E_k = B_k |alpha_f| / F (throttling) and D(n) the
scheduling increment (0 alone, alpha_sch n + beta_sch >= 0 from two on, nondecreasing:
``items.check_company_never_helps``). Every term grows with n, C and Q, so in a box
n in [n_lo, n_hi], C in [C_lo, C_hi], Q in [Q_lo, Q_hi] every member of a feasible configuration is
*eligible*: base_k + kern_k D(n_lo) + A_k max(C_lo - c_k, (n_lo - 1) c_min) <= B_k - E_k max(Q_lo,
P_busy + p_k + (n_lo - 1) p_min - P_max) (the others bring at least c_min and p_min each). The
box's configurations are therefore among the multisets of eligible items with n_lo..n_hi members,
at most 100 % of units, sum c <= C_hi and sum p <= P_max - P_busy + Q_hi, at most count_t pieces of
type t credited (more never help: dropping one keeps a configuration feasible). Relaxing the two
resource rows with multipliers mu, nu >= 0 (Lagrange), the most worth there is at most

    mu C_hi + nu (P_max - P_busy + Q_hi) + max sum_k (pi_t(k) - mu c_k - nu p_k),

the max a group knapsack over (members, units) solved exactly by dynamic programming (up to
min(count_t, copies) pieces of type t, ``items.copies``; several of one type may be one item repeated:
a relaxation). Boxes cover every reachable (n, C, Q), so
the largest bound over the boxes left (open or closed) bounds every configuration's worth (a bound at any moment, and it
falls as boxes split). The first boxes are classes of member counts, each cut into L2 levels; a box is
split where the knapsack's best multiset breaks a row through one of n, C, Q (past the breaking
member's limit: the multiset leaves both halves), else in half, the box of the largest bound first.
A box of one member count narrowed to ``LEAF_WIDTH`` of the L2 and power ranges is a *leaf*: splitting
cannot close the multipliers' duality gap there, so its knapsack is solved as a MIP with both resource
rows kept (``BoxSearch.leaf``) and its dual bound closes it.
Each box's best multiset, less its members that break a row (``BoxPricing.repair``), is returned as a
candidate for the kernel to judge. Members whose dual is 0 are left out (dropping them keeps a
configuration feasible and worth as much). Items are the non-dominated placements (``items``),
budgets loosened as in ``relaxed``; one member is priced exactly (pi_t of a type with items). The
result is raised by ``KAPPA_SAFETY_REL`` for float noise.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from igniter_opt.planner.exact.columns import ColSlot, PieceSpace
from igniter_opt.planner.exact.configs import busy_power_w, sched_increment_ms
from igniter_opt.planner.exact.items import Items
from igniter_opt.planner.exact.lp import COLWISE, WATCHDOG_GRACE_S, f64, highspy_module, int32, new_highs, run
from igniter_opt.planner.exact.pricing import BOUND_SAFETY_REL, DUAL_EPS
from igniter_opt.planner.exact.relaxed import KAPPA_SAFETY_REL, loosened_budget, meets_loosened_budget

NEG = -1e30
# Widening of the reachable L2 (%) and power (W) for float noise.
TOP_LOOSEN = 1e-6
# Multipliers tried at the root (mu per % of L2, nu per W, over the duals' scale) and around a parent's best.
ROOT_MU = np.r_[0.0, np.geomspace(1e-4, 1.0, 9)]
ROOT_NU = np.r_[0.0, np.geomspace(1e-5, 0.1, 9)]
# With ``enough``: boxes evaluated after the first configuration worth more than the target before stopping.
AFTER_FIRST = 120
# L2 levels per class of member counts among the first boxes.
ROOT_LEVELS = 12
LOCAL_STEPS = np.array([0.0, 0.5, 0.8, 1.0, 1.25, 2.0])
# A box of one member count whose L2 and power ranges are at most this share of the reachable ones is a
# leaf: solved as a knapsack MIP (``BoxSearch.leaf``), which closes the Lagrangian relaxation's gap.
LEAF_WIDTH = 0.02
# Relative gap at which HiGHS may stop on a leaf, and the most seconds one leaf may take (its dual bound
# is what is used, so a leaf stopped early still bounds its box).
LEAF_GAP = 1e-6
LEAF_MAX_S = 2.0


@dataclass(frozen=True)
class Box:
    """A region of (members, total L2 %, power above the cap W)."""

    n_lo: int
    n_hi: int
    c_lo: float
    c_hi: float
    q_lo: float
    q_hi: float


@dataclass(frozen=True)
class BoxResult:
    """An upper bound on every configuration's worth at the duals; the multisets of items found that
    meet every row, best first, with their worth; the boxes evaluated; whether every box left was
    closed at or below ``target``; how long bounding the root boxes took (a kappa needs every one: when the
    deadline comes first, kappa is inf, and this is the time they all would take, from those bounded)."""

    kappa: float
    candidates: list[tuple[float, tuple[int, ...]]]
    nodes: int
    proven: bool
    roots_s: float = 0.0


class BoxPricing:
    """The duals-independent part: each item's row constants, and the reachable ranges."""

    def __init__(self, space: PieceSpace, items: Items) -> None:
        hw = space.problem.perf_model.hardware
        tab = items.table
        self.items = items
        self.budget = loosened_budget(tab)
        self.base = tab.idle + tab.active
        self.slope = tab.active * tab.alpha_cache
        self.throttle = self.budget * max(0.0, -hw.alpha_f / hw.max_clock_mhz)
        self.p_busy, self.p_max = busy_power_w(hw), hw.max_power_w
        self.hw = hw
        self.has_items = np.array([idx.size > 0 for idx in items.by_piece], bool)
        b = items.bounds
        self.max_members = int(b.max_members)
        # The reachable L2 and power (``items.feasible_bounds``) come from unloosened budgets: widened by
        # what the loosening adds to any item's L2 limit, and to the power at the least clock ratio.
        extra = (self.budget - tab.budget) / np.where(self.slope > 0, self.slope, np.inf)
        self.c_top = b.max_cache + float(extra.max(initial=0.0)) + TOP_LOOSEN
        kappa = max(0.0, -hw.alpha_f / hw.max_clock_mhz)
        ratio = float(((self.budget - tab.budget) / self.budget).max(initial=0.0))  # least clock ratio: this lower
        self.q_top = max(0.0, b.max_power_w - self.p_max) + (ratio / kappa if kappa > 0 else 0.0) + TOP_LOOSEN
        self.count = np.array([p.count for p in space.pieces], np.int64)
        self.cap = space.cap_units

    def repair(self, members: tuple[int, ...], duals: np.ndarray) -> tuple[int, ...]:
        """``members`` less, one at a time, the member of least dual among those breaking their row,
        until every member meets it (empty: none left)."""
        kept = list(members)
        while kept:
            ok = self.meets_rows(tuple(kept))
            if ok.all():
                break
            worth = np.where(ok, np.inf, duals[self.items.table.piece[kept]])
            kept.pop(int(np.argmin(worth)))
        return tuple(kept)

    def sched(self, n: int) -> float:
        return sched_increment_ms(self.hw, n)

    def slots(self, members: tuple[int, ...]) -> list[ColSlot]:
        return [self.items.table.slot(k) for k in members]

    def meets_rows(self, members: tuple[int, ...]) -> np.ndarray:
        """Per member: whether it meets its (loosened) row in this multiset."""
        tab = self.items.table
        k = np.asarray(members)
        return meets_loosened_budget(tab, self.hw, self.budget, k, k.size, tab.cache[k].sum(),
                                     self.p_busy + tab.power[k].sum())


class BoxSearch:
    """One branch and bound at one dual vector."""

    def __init__(self, bp: BoxPricing, duals: np.ndarray) -> None:
        self.bp = bp
        tab = bp.items.table
        live = np.flatnonzero((duals[tab.piece] > DUAL_EPS) & (tab.units <= bp.cap))
        self.live = live
        self.pi = duals[tab.piece[live]]
        self.piece = tab.piece[live]
        self.units = tab.units[live].astype(np.int64)
        self.cache, self.power = tab.cache[live], tab.power[live]
        self.kern = tab.kernels[live]
        self.c_min = float(self.cache.min()) if live.size else 0.0
        self.p_min = float(self.power.min()) if live.size else 0.0
        types = np.unique(self.piece)
        self.of_type = [np.flatnonzero(self.piece == t) for t in types]
        # the most pieces of each type one configuration can hold (``items.copies``); the trace back follows
        # one or two of a type (three or more, rare, are bounded but not traced)
        self.most = np.array([min(int(bp.count[t]), int(tab.copies[live[idx]].max())) for t, idx
                              in zip(types, self.of_type, strict=True)], np.int64)
        self.scale = float(self.pi.max()) if live.size else 1.0  # the multipliers' scale: the largest dual
        # the live items sorted by (type, units), one group per pair: a max per group gives every type's best
        # item at each unit count in one pass (``type_tables``)
        self.type_pos = np.zeros(live.size, np.intp)
        for i, idx in enumerate(self.of_type):
            self.type_pos[idx] = i
        self.by_type_units = np.lexsort((self.units, self.type_pos))
        key_t, key_u = self.type_pos[self.by_type_units], self.units[self.by_type_units]
        new_group = np.r_[True, (key_t[1:] != key_t[:-1]) | (key_u[1:] != key_u[:-1])]
        self.group_starts = np.flatnonzero(new_group) if live.size else np.zeros(0, np.intp)
        self.group_type, self.group_units = key_t[self.group_starts], key_u[self.group_starts]

    def roots(self) -> list[Box]:
        """The first boxes: per class of member counts (``member_classes``), L2 split at quantiles of
        the most total L2 each live item tolerates there (``ROOT_LEVELS`` of them)."""
        bp = self.bp
        out = []
        for lo, hi in member_classes(bp.max_members):
            lim = self.cache_limit(lo, 0.0)
            lim = lim[np.isfinite(lim) & (lim > 0) & (lim < bp.c_top)]
            cuts = np.quantile(lim, np.linspace(0, 1, ROOT_LEVELS + 1)[1:-1]) if lim.size else np.zeros(0)
            edges = np.r_[0.0, np.unique(cuts), bp.c_top]
            out += [Box(lo, hi, float(a), float(b), 0.0, bp.q_top)
                    for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]
        return out

    def cache_limit(self, n: int, q: float, k: np.ndarray | None = None) -> np.ndarray:
        """The most total L2 at which each live item (or the live positions ``k``) meets its row with n
        members and Q = q (inf: L2-blind; below c_k: never with that company)."""
        k = np.arange(self.live.size) if k is None else k
        bp, item = self.bp, self.live[k]
        room = bp.budget[item] - bp.base[item] - self.kern[k] * bp.sched(n) - bp.throttle[item] * q
        slope = bp.slope[item]
        with np.errstate(divide="ignore", invalid="ignore"):
            lim = np.where(slope > 0, self.cache[k] + room / np.where(slope > 0, slope, 1.0), np.inf)
        return np.where((slope <= 0) & (room < 0), -np.inf, lim)

    def eligible(self, box: Box) -> np.ndarray:
        """The live items that meet their rows at the box's floor (module docstring) and fit its ceilings."""
        bp, others = self.bp, box.n_lo - 1
        cache = self.cache + np.maximum(box.c_lo - self.cache, others * self.c_min)  # C at least
        power = np.maximum(bp.p_max + box.q_lo, bp.p_busy + self.power + others * self.p_min)  # P at least
        meets = meets_loosened_budget(bp.items.table, bp.hw, bp.budget, self.live, box.n_lo, cache, power)
        return meets & (self.cache <= box.c_hi) & (self.power <= bp.p_max - bp.p_busy + box.q_hi)

    def knapsack(self, box: Box, mu: np.ndarray, nu: np.ndarray, keep: bool = False
                 ) -> tuple[np.ndarray, list[_Step], np.ndarray]:
        """Per multiplier pair: the box's Lagrangian bound, the steps to trace the best multiset back
        (with ``keep``: one multiplier pair only) and the final table (multipliers, members, units)."""
        cap, hi = self.bp.cap, box.n_hi
        el = self.eligible(box)
        tables = self.type_tables(el, mu, nu, hi)
        rises = [np.asarray((np.diff(table, axis=2) > 0).any(axis=0)) for table in tables]  # each (type, U - 1)
        dp = np.full((mu.size, hi + 1, cap + 1), NEG)
        dp[:, 0, :] = 0.0
        trace: list[_Step] = []
        for t_i in np.flatnonzero(np.bincount(self.type_pos[el], minlength=len(self.of_type))):
            most = min(int(self.most[t_i]), hi)
            new = _maxplus_members(dp, tables[0][:, t_i], 1, np.flatnonzero(rises[0][t_i]) + 1)
            for m in range(2, most + 1):
                np.maximum(new, _maxplus_members(dp, tables[m - 1][:, t_i], m, np.flatnonzero(rises[m - 1][t_i]) + 1),
                           out=new)
            if keep:
                idx = self.of_type[t_i][el[self.of_type[t_i]]]
                val = self.pi[idx] - mu[0] * self.cache[idx] - nu[0] * self.power[idx]
                trace.append(_Step(idx, val, tables[0][0, t_i], tables[1][0, t_i] if most >= 2 else None, dp[0]))
            dp = new
        total = dp[:, box.n_lo:, cap].max(axis=1)
        return self.resource_terms(box, mu, nu) + total, trace, dp

    def type_tables(self, eligible: np.ndarray, mu: np.ndarray, nu: np.ndarray, hi: int) -> list[np.ndarray]:
        """Per m = 1..(the most of a type a box of at most ``hi`` members takes), per multiplier pair, type and
        units U: the most m ``eligible`` items of the type bring within U units, less the priced resources (one
        item repeated allowed: a relaxation)."""
        cap = self.bp.cap
        val = self.pi[None, :] - np.outer(mu, self.cache) - np.outer(nu, self.power)
        val[:, ~eligible] = NEG
        one = np.full((mu.size, len(self.of_type), cap + 1), NEG)
        if self.group_starts.size:
            best = np.maximum.reduceat(val[:, self.by_type_units], self.group_starts, axis=1)
            one[:, self.group_type, self.group_units] = best
        np.maximum.accumulate(one, axis=2, out=one)
        tables = [one]
        while len(tables) < min(int(self.most.max(initial=1)), hi):
            more = np.flatnonzero(self.most > len(tables))  # the types that may take one more
            table = np.full_like(one, NEG)
            table[:, more] = _maxplus_units(tables[-1][:, more], one[:, more])
            tables.append(table)
        return tables

    def resource_terms(self, box: Box, mu: np.ndarray, nu: np.ndarray) -> np.ndarray:
        """mu C_hi + nu (P_max - P_busy + Q_hi): the relaxed rows' ceilings, priced."""
        return mu * box.c_hi + nu * (self.bp.p_max - self.bp.p_busy + box.q_hi)

    def best_multiplier(self, box: Box, mu0: float, nu0: float, root: bool, target: float = math.inf
                        ) -> tuple[float, float, float]:
        """The least Lagrangian bound of ``box`` over a grid of multipliers (the root grid, or steps around
        (mu0, nu0)), and its multipliers; (mu0, nu0) alone when it already bounds the box by ``target`` (the
        box is then closed whatever a lower bound would be: a search for a proof needs no more)."""
        if target < math.inf:
            first = float(self.knapsack(box, np.array([mu0]), np.array([nu0]))[0][0])
            if first <= target:
                return first, mu0, nu0
        if root:
            mu, nu = np.meshgrid(ROOT_MU * self.scale, ROOT_NU * self.scale)
            mu, nu = mu.ravel(), nu.ravel()
        else:  # a cross through (mu0, nu0): one multiplier moved at a time (as good as the whole 6 x 6 grid on
            # the proofs measured, in a third of the knapsacks)
            mus = LOCAL_STEPS * mu0 if mu0 > 0 else np.r_[0.0, ROOT_MU[1::3] * self.scale]
            nus = LOCAL_STEPS * nu0 if nu0 > 0 else np.r_[0.0, ROOT_NU[1::3] * self.scale]
            nus = nus[nus != nu0]  # (mu0, nu0) is on the mu line already
            mu, nu = np.r_[mus, np.full(nus.size, mu0)], np.r_[np.full(mus.size, nu0), nus]
        bound, _, _ = self.knapsack(box, mu, nu)
        j = int(np.argmin(bound))
        return float(bound[j]), float(mu[j]), float(nu[j])

    def trace_back(self, box: Box, mu: float, nu: float, least: float = NEG / 2) -> tuple[int, ...]:
        """The best multiset of the box's knapsack at (mu, nu), as item indices of ``items.table`` (empty
        when there is none, its knapsack value is at most ``least``, or float noise hides how it was formed)."""
        cap = self.bp.cap
        _, trace, dp = self.knapsack(box, np.array([mu]), np.array([nu]), keep=True)
        n = box.n_lo + int(np.argmax(dp[0, box.n_lo:, cap]))
        if dp[0, n, cap] <= least:
            return ()
        u_left, out = cap, []
        cur = dp[0]
        for step in reversed(trace):
            target = cur[n, u_left]
            cur = step.before
            if _same(cur[n, u_left], target):
                continue
            took = self._took(step, n, u_left, target)
            if not took:
                return ()
            out += [int(self.live[k]) for k in took]
            u_left -= int(self.units[took].sum())
            n -= len(took)
        return tuple(out)

    def _took(self, step: _Step, n: int, u_left: int, target: float) -> list[int]:
        """The items (positions among the live ones) of ``step``'s type that its best multiset took."""
        units = self.units[step.idx]

        def best_within(u: int) -> int:
            return int(step.idx[np.argmax(np.where(units <= u, step.val, NEG))])

        for u in range(1, u_left + 1):
            if n >= 1 and _same(step.before[n - 1, u_left - u] + step.one[u], target):
                return [best_within(u)]
            if step.two is not None and n >= 2 and _same(step.before[n - 2, u_left - u] + step.two[u], target):
                u1 = next((a for a in range(1, u) if _same(step.one[a] + step.one[u - a], step.two[u])), None)
                return [] if u1 is None else [best_within(u1), best_within(u - u1)]
        return []

    def is_leaf(self, box: Box) -> bool:
        """Whether the box is solved by ``leaf`` rather than split (``LEAF_WIDTH``)."""
        bp = self.bp
        return (box.n_lo == box.n_hi and box.c_hi - box.c_lo <= LEAF_WIDTH * bp.c_top
                and box.q_hi - box.q_lo <= LEAF_WIDTH * max(bp.q_top, 1e-12))

    def leaf(self, box: Box, limit_s: float) -> tuple[float | None, tuple[int, ...]]:
        """The box's knapsack with its two resource rows kept instead of priced, as a MIP: max sum_k pi_k x_k
        over the eligible items, x_k <= copies_k integer, n_lo <= sum x <= n_hi, sum units x <= 100 %,
        sum c x <= C_hi, sum p x <= P_max - P_busy + Q_hi, at most count_t of type t (no floors C_lo, Q_lo:
        they make HiGHS several times slower). Returns HiGHS's dual bound, raised for float noise (None when
        it gave none in time), and the best multiset found (item indices; empty if none)."""
        bp, tab = self.bp, self.bp.items.table
        el = np.flatnonzero(self.eligible(box))
        if el.size == 0:
            return NEG, ()
        types, of_type = np.unique(self.piece[el], return_inverse=True)
        room = bp.p_max - bp.p_busy
        lo = np.r_[-np.inf, -np.inf, -np.inf, box.n_lo, np.full(types.size, -np.inf)]
        up = np.r_[bp.cap, box.c_hi, room + box.q_hi, box.n_hi, bp.count[types]].astype(float)
        rows = np.c_[np.zeros(el.size), np.ones(el.size), np.full(el.size, 2), np.full(el.size, 3), 4 + of_type]
        vals = np.c_[self.units[el], self.cache[el], self.power[el], np.ones(el.size), np.ones(el.size)]
        upper = np.minimum(tab.copies[self.live[el]], box.n_hi).astype(float)
        h = new_highs()
        hs = highspy_module()
        h.passModel(el.size, lo.size, rows.size, COLWISE, int(hs.ObjSense.kMaximize), 0.0, f64(self.pi[el]),
                    f64(np.zeros(el.size)), f64(upper), f64(lo), f64(up), int32(np.arange(el.size) * 5),
                    int32(rows.ravel()), f64(vals.ravel()), np.ones(el.size, np.int32))
        h.setOptionValue("mip_rel_gap", LEAF_GAP)
        res = run(h, limit_s, mip=True)
        bound = res.bound if res.bound is not None else (res.objective if res.status == "Optimal" else None)
        if bound is None:
            return (NEG, ()) if res.status == "Infeasible" else (None, ())
        bound = bound * (1.0 + BOUND_SAFETY_REL) + 1e-12
        if res.objective is None:
            return bound, ()
        x = np.rint(np.asarray(h.getSolution().col_value, float)).astype(int)
        return bound, tuple(sorted(int(self.live[el[j]]) for j in np.flatnonzero(x > 0) for _ in range(x[j])))

    def split(self, box: Box, members: tuple[int, ...]) -> tuple[Box, Box]:
        """Two boxes covering ``box``: past the limit of a member of the knapsack's best multiset that
        breaks its row through n, C or Q alone (the multiset then leaves both halves), else in half."""
        if members:
            cut = self._cut_at_row(box, members)
            if cut is not None:
                return cut
        bp = self.bp
        if box.n_hi - box.n_lo >= 4:
            return _cut_n(box, (box.n_lo + box.n_hi) // 2)
        wc = (box.c_hi - box.c_lo) / max(bp.c_top, 1e-12)
        wq = (box.q_hi - box.q_lo) / max(bp.q_top, 1e-12)
        if box.n_hi > box.n_lo and max(wc, wq) < 0.05:
            return _cut_n(box, box.n_lo)
        if wc >= wq:
            return _cut_c(box, 0.5 * (box.c_lo + box.c_hi))
        return _cut_q(box, 0.5 * (box.q_lo + box.q_hi))

    def _cut_at_row(self, box: Box, members: tuple[int, ...]) -> tuple[Box, Box] | None:
        bp, tab = self.bp, self.bp.items.table
        k = np.asarray(members)
        n, c = k.size, float(tab.cache[k].sum())
        q = max(0.0, bp.p_busy + float(tab.power[k].sum()) - bp.p_max)
        room = bp.budget[k] - bp.base[k]
        c_rest = np.maximum(box.c_lo - tab.cache[k], 0.0)
        if n > box.n_lo and (tab.kernels[k] * bp.sched(n) + bp.slope[k] * c_rest + bp.throttle[k] * box.q_lo
                             > room).any():
            return _cut_n(box, (box.n_lo + n - 1) // 2)  # bisect below the multiset's count: it lies above
        d = tab.kernels[k] * bp.sched(box.n_lo)
        live = np.searchsorted(self.live, k)
        lim_c = self.cache_limit(box.n_lo, box.q_lo, live)
        if (lim_c < c).any():
            mid = 0.5 * (max(float(lim_c[lim_c < c].max()), box.c_lo) + c)
            if box.c_lo < mid < box.c_hi:
                return _cut_c(box, mid)
        over = (bp.throttle[k] > 0) & (d + bp.slope[k] * c_rest + bp.throttle[k] * q > room)
        if over.any():
            lim_q = (room - d - bp.slope[k] * c_rest)[over] / bp.throttle[k][over]
            mid = 0.5 * (max(float(lim_q.max()), box.q_lo) + q)
            if box.q_lo < mid < box.q_hi:
                return _cut_q(box, mid)
        return None


def _cut_n(box: Box, last: int) -> tuple[Box, Box]:
    """Members n_lo..last and last + 1..n_hi."""
    return (Box(box.n_lo, last, box.c_lo, box.c_hi, box.q_lo, box.q_hi),
            Box(last + 1, box.n_hi, box.c_lo, box.c_hi, box.q_lo, box.q_hi))


def _cut_c(box: Box, at: float) -> tuple[Box, Box]:
    return (Box(box.n_lo, box.n_hi, box.c_lo, at, box.q_lo, box.q_hi),
            Box(box.n_lo, box.n_hi, at, box.c_hi, box.q_lo, box.q_hi))


def _cut_q(box: Box, at: float) -> tuple[Box, Box]:
    return (Box(box.n_lo, box.n_hi, box.c_lo, box.c_hi, box.q_lo, at),
            Box(box.n_lo, box.n_hi, box.c_lo, box.c_hi, at, box.q_hi))


@dataclass(frozen=True)
class _Step:
    """One piece type's step of the knapsack, kept to trace its best multiset back."""

    idx: np.ndarray  # its eligible items (positions among the live ones)
    val: np.ndarray  # their worth less the priced resources
    one: np.ndarray  # the most one item brings within U units
    two: np.ndarray | None  # the most two bring
    before: np.ndarray  # the table before this type (members, units)


def _rises(table: np.ndarray) -> np.ndarray:
    """The units U >= 1 where ``table`` (rows nondecreasing in U) rises in some row."""
    return np.flatnonzero((np.diff(table, axis=-1) > 0).reshape(-1, table.shape[-1] - 1).any(axis=0)) + 1


def _maxplus_units(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row and units U: max_u a[:, U - u] + b[:, u] over the u >= 1 where ``b`` rises (both
    nondecreasing in U): what one more member (``b``) adds to ``a``'s within U units."""
    width = a.shape[-1]
    out = np.full_like(a, NEG)
    for u in _rises(b):
        np.maximum(out[..., u:], b[..., u: u + 1] + a[..., : width - u], out=out[..., u:])
    return out


def _maxplus_members(dp: np.ndarray, add: np.ndarray, members: int, rises: np.ndarray) -> np.ndarray:
    """dp with ``members`` more members bringing ``add`` (multipliers, units): out[:, m, U] = max(dp[:, m, U],
    max_u dp[:, m - members, U - u] + add[:, u]) over the u in ``rises``, those >= 1 where ``add`` rises in
    some row (``add`` is nondecreasing in U, so the others bring nothing more)."""
    out = dp.copy()
    width = dp.shape[-1]
    for u in rises:
        np.maximum(out[:, members:, u:], dp[:, :-members, : width - u] + add[:, None, u: u + 1],
                   out=out[:, members:, u:])
    return out


class _Frontier:
    """The boxes still open (largest bound first) and the largest bound of those closed at or below the
    target."""

    def __init__(self, target: float, closed: float) -> None:
        self.target, self.closed = target, closed
        self.heap: list[tuple[float, int, Box, float, float]] = []
        self.nodes = 0

    def offer(self, bound: float, mu: float, nu: float, box: Box) -> None:
        self.nodes += 1
        if bound > self.target:
            heapq.heappush(self.heap, (-bound, self.nodes, box, mu, nu))
        else:
            self.closed = max(self.closed, bound)

    def close(self, bound: float) -> None:
        """A box solved to the end (a leaf): its bound counts whether or not it is above the target."""
        self.nodes += 1
        self.closed = max(self.closed, bound)

    def open(self) -> bool:
        """Whether a box is bounded above the target."""
        return bool(self.heap)

    def pop(self) -> tuple[float, Box, float, float]:
        neg, _, box, mu, nu = heapq.heappop(self.heap)
        return -neg, box, mu, nu

    def kappa(self) -> float:
        """The largest bound over every box: open, or closed."""
        return max(self.closed, -self.heap[0][0]) if self.heap else self.closed


def box_kappa(bp: BoxPricing, duals: np.ndarray, target: float, deadline: float, max_nodes: int = 100_000,
              enough: int | None = None, stop: Callable[[], bool] = lambda: False) -> BoxResult:
    """Branch and bound over boxes (module docstring) until every box left is bounded by ``target``,
    ``max_nodes`` boxes were evaluated, ``deadline`` (``time.perf_counter()``) passed or ``stop()`` (as a deadline
    that came), or (``enough``) that many multisets worth more than ``target`` were found. The kappa returned
    bounds every configuration's worth at ``duals`` whenever it stops."""
    s = BoxSearch(bp, duals)
    tab = bp.items.table
    alone = float(np.max(np.where(bp.has_items, np.maximum(duals, 0.0), 0.0), initial=0.0))
    if s.live.size == 0 or bp.max_members < 2:
        return BoxResult(_safe(alone), [], 0, alone <= target)
    frontier = _Frontier(target, alone)
    t0 = time.perf_counter()
    roots = s.roots()
    mu, nu = 0.0, 0.0  # each root tries the last root's best multipliers first
    for i, box in enumerate(roots):
        if i and (time.perf_counter() >= deadline or stop()):  # kappa needs every root: none this time (past the
            # deadline by one root at most), and how long they all would take, from those done, for the next turn
            return BoxResult(math.inf, [], frontier.nodes, False, (time.perf_counter() - t0) * len(roots) / i)
        root_bound, mu, nu = s.best_multiplier(box, mu, nu, root=True, target=target)
        frontier.offer(root_bound, mu, nu, box)
    roots_s = time.perf_counter() - t0
    found: dict[tuple[int, ...], float] = {}
    better, first_at = 0, None
    while frontier.open() and frontier.nodes < max_nodes and time.perf_counter() < deadline and not stop():
        if enough is not None and (better >= enough or frontier.nodes - (first_at or math.inf) >= AFTER_FIRST):
            break
        top, box, mu, nu = frontier.pop()
        leaf = s.is_leaf(box)
        if leaf:
            # HiGHS may run up to WATCHDOG_GRACE_S past its limit: kept in reserve so the search ends by the deadline
            left = deadline - time.perf_counter() - WATCHDOG_GRACE_S
            bound, members = s.leaf(box, min(LEAF_MAX_S, left)) if left > 0 else (None, ())
            if bound is None:  # out of time: the box stays open at its Lagrangian bound
                frontier.offer(top, mu, nu, box)
                break
            frontier.close(min(bound, top))
        else:
            members = tuple(sorted(s.trace_back(box, mu, nu)))
        kept = bp.repair(members, duals)
        if kept and kept not in found:
            found[kept] = float(np.sum(duals[tab.piece[list(kept)]]))
            better += found[kept] > target
            if better and first_at is None:
                first_at = frontier.nodes
        if leaf:
            continue
        for child in s.split(box, members):
            b, m2, n2 = s.best_multiplier(child, mu, nu, root=False, target=target)
            frontier.offer(min(b, top), m2, n2, child)  # a child's region is inside its parent's
    cands = sorted(((w, m) for m, w in found.items()), reverse=True)
    kappa = frontier.kappa()
    return BoxResult(_safe(kappa), cands, frontier.nodes, not frontier.open() and kappa <= target, roots_s)


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-12 * max(1.0, abs(b))


def member_classes(max_members: int) -> list[tuple[int, int]]:
    """The root boxes' member counts: 2, 3, 4 alone, then ranges growing by half."""
    out, lo = [], 2
    while lo <= max_members:
        hi = min(max_members, lo if lo <= 4 else lo + lo // 2)
        out.append((lo, hi))
        lo = hi + 1
    return out


def _safe(kappa: float) -> float:
    return kappa * (1.0 + KAPPA_SAFETY_REL) + 1e-12
