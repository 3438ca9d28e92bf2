"""The set-partitioning master over a fleet of GPU types, and the certified bound its duals give.

A column is one GPU of type t (price c_t per hour, optional count limit M_t) running a feasible
configuration under t's profile (``columns``). Each type has its own piece types (``pieces``: the split
options of the workloads it can serve, under its profile); the master chooses one (type, option) per
workload:

    min  sum_t c_t sum_{p in P_t} y_p
    s.t. sum_{p in P_t} n_{i,p} y_p - count_i z_{w(i),t,o(i)} >= 0    per piece type i of type t   (pi_i >= 0)
         sum_{t,o} z_{w,t,o} = 1                                      per workload w               (sigma_w)
         sum_{p in P_t} y_p <= M_t                                     per type t with a limit      (mu_t >= 0)
         y >= 0, z >= 0.

Its dual is max sum_w sigma_w - sum_t M_t mu_t subject to sum_i n_{i,p} pi_i - mu_t <= c_t for every
column p of type t and sigma_w <= sum_{i in o} count_i pi_i for every option. For any pi >= 0, with
kappa_t >= the worth sum_i n_{i,p} pi_i of every configuration of type t (the pricing MIP's dual bound)
and D(pi) = sum_w min_{t,o} sum_{i in o} count_i pi_i, the duals (s pi, s min_o ..., mu_t = max(0, s kappa_t
- c_t)) are feasible for every s > 0 with s kappa_t <= c_t on the types without a limit, so

    cost of every plan  >=  f(s) = s D(pi) - sum_{t with a limit} M_t max(0, s kappa_t - c_t)

(``lagrangian_bound``: f is concave and piecewise linear; its best s is a breakpoint c_t / kappa_t or
the largest s allowed). With one type of price 1 and no limit this is Farley's bound D / kappa.

The same certificates bound the GPU counts themselves (``count_bound``): a plan whose types in use are
the set S has counts G with D_S(pi) <= sum_{t in S} G_t kappa_t at every pi (``CountCut``), where D_S
takes each workload's options on S's types only; so does a bound on one type serving every workload alone
(G_t >= B_t). The least cost over every S and whole counts that meet S's cuts is a bound, stronger than
f rounded up: each S is bounded by its own duals, and the counts are whole.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from igniter_opt.planner.exact.columns import Column
from igniter_opt.planner.exact.lp import f64, highspy_module, int32, new_highs, run
from igniter_opt.planner.exact.master import IntegerSolution, solve_integer_master
from igniter_opt.planner.exact.pieces import PieceType

# Seconds the rounding of a bound to the prices may take (it has one integer per type).
ROUND_LIMIT_S = 2.0
# A bound is lowered by this relative amount before it is rounded up to the prices (float noise).
ROUND_REL_EPS = 1e-9
# The count bound tries every set of types in use up to this many types (2^T - 1 sets).
COUNT_MAX_TYPES = 6


@dataclass(frozen=True)
class TypeBlock:
    """One GPU type in the fleet master: its piece types (indices local to the type), the fleet
    workload each of its problem's workloads is, its price and count limit, and its first row."""

    pieces: tuple[PieceType, ...]
    workloads: tuple[int, ...]  # the type's problem's workload i is the fleet's workloads[i]
    price_per_gpu_hour: float
    max_count: int | None
    offset: int


@dataclass(frozen=True)
class FleetLp:
    """The master LP's value and duals: per type its piece types' duals (clipped at 0) and mu_t >= 0."""

    status: str
    objective: float | None
    duals: tuple[np.ndarray, ...]
    mu: tuple[float, ...]


def type_blocks(pieces: Sequence[tuple[PieceType, ...]], workloads: Sequence[tuple[int, ...]],
                prices: Sequence[float], limits: Sequence[int | None]) -> tuple[TypeBlock, ...]:
    """The blocks of the master, rows in type order."""
    out, offset = [], 0
    for ps, ws, price, limit in zip(pieces, workloads, prices, limits, strict=True):
        out.append(TypeBlock(ps, ws, price, limit, offset))
        offset += len(ps)
    return tuple(out)


class FleetMaster:
    """The restricted fleet master (see the module docstring), in one HiGHS instance so that the LP
    re-solves from the last basis. Option variables z come first, then the columns."""

    def __init__(self, blocks: tuple[TypeBlock, ...], n_workloads: int, threads: int = 1) -> None:
        self.blocks, self.threads, self.n_workloads = blocks, threads, n_workloads
        self.h = new_highs(threads)
        self.slack = False  # ``add_count_slack``
        inf = self.h.getInfinity()
        self.n_pieces = sum(len(b.pieces) for b in blocks)
        self.count_row = {t: self.n_pieces + n_workloads + k
                          for k, t in enumerate(t for t, b in enumerate(blocks) if b.max_count is not None)}
        lower = [0.0] * self.n_pieces + [1.0] * n_workloads + [-inf] * len(self.count_row)
        upper = ([inf] * self.n_pieces + [1.0] * n_workloads
                 + [float(blocks[t].max_count or 0) for t in self.count_row])
        self.h.addRows(len(lower), f64(lower), f64(upper), 0, int32([0] * len(lower)), int32([]), f64([]))
        of_option: dict[tuple[int, tuple[int, int]], list[int]] = {}
        for t, b in enumerate(blocks):
            for i, p in enumerate(b.pieces):
                of_option.setdefault((b.workloads[p.workload], (t, p.option)), []).append(i)
        self.options: list[tuple[int, tuple[int, int]]] = sorted(of_option)
        for w, (t, o) in self.options:
            b = blocks[t]
            mine = of_option[(w, (t, o))]
            self.h.addCols(1, f64([0.0]), f64([0.0]), f64([1.0]), len(mine) + 1, int32([0]),
                           int32([*(b.offset + i for i in mine), self.n_pieces + w]),
                           f64([*(-b.pieces[i].requirement for i in mine), 1.0]))
        self.columns: list[tuple[int, Column]] = []  # (type, column)
        self.keys: dict[tuple[int, tuple], int] = {}

    def add_count_slack(self) -> None:
        """Let every count row be exceeded at cost 1 per GPU over its limit: with prices 0, the LP of a count
        vector (``fleetcolgen.exclude_counts``), whose value is how many GPUs the columns fall short by and
        whose mu_t are at most 1. The integer master no longer applies."""
        rows = sorted(self.count_row.values())
        n = len(rows)
        self.h.addCols(n, f64([1.0] * n), f64([0.0] * n), f64([self.h.getInfinity()] * n), n, int32(np.arange(n)),
                       int32(rows), f64([-1.0] * n))
        self.slack = True

    def add(self, t: int, cols: Sequence[Column]) -> list[int]:
        """Add the columns of type t not there yet; returns the index of each given column."""
        out, new = [], []
        for c in cols:
            key = (t, c.slots)
            if key not in self.keys:
                self.keys[key] = len(self.columns)
                self.columns.append((t, c))
                new.append(c)
            out.append(self.keys[key])
        if new:
            b = self.blocks[t]
            extra = [(self.count_row[t], 1.0)] if t in self.count_row else []
            coefs = [[(b.offset + p, a) for p, a in c.coef] + extra for c in new]
            starts = np.cumsum([0] + [len(c) for c in coefs[:-1]])
            self.h.addCols(len(new), f64([b.price_per_gpu_hour] * len(new)), f64([0.0] * len(new)),
                           f64([self.h.getInfinity()] * len(new)), sum(len(c) for c in coefs), int32(starts),
                           int32([r for c in coefs for r, _ in c]), f64([a for c in coefs for _, a in c]))
        return out

    def columns_of(self, t: int) -> int:
        return sum(1 for u, _ in self.columns if u == t)

    def solve_lp(self, time_limit_s: float) -> FleetLp:
        res = run(self.h, time_limit_s, mip=False)
        if res.status != "Optimal":
            return FleetLp(res.status, None, tuple(np.zeros(len(b.pieces)) for b in self.blocks),
                           tuple(0.0 for _ in self.blocks))
        row = np.asarray(self.h.getSolution().row_dual, float)
        duals = tuple(np.maximum(row[b.offset: b.offset + len(b.pieces)], 0.0) for b in self.blocks)
        # a <= row of a minimisation has a dual <= 0; mu_t is its negative
        mu = tuple(max(0.0, -float(row[self.count_row[t]])) if t in self.count_row else 0.0
                   for t in range(len(self.blocks)))
        return FleetLp(res.status, res.objective, duals, mu)

    def dual_value(self, duals: Sequence[np.ndarray], types: frozenset[int] | None = None) -> float:
        """D(pi) = sum_w min over its (type, option) of sum_{i in o} count_i pi_i; with ``types``, over the
        options on those types only (D_S; inf when a workload has none there)."""
        per: dict[int, dict[tuple[int, int], float]] = {}
        if types is not None:
            per = {w: {} for b in self.blocks for w in b.workloads}
        for t, (b, pi) in enumerate(zip(self.blocks, duals, strict=True)):
            if types is not None and t not in types:
                continue
            for i, p in enumerate(b.pieces):
                opts = per.setdefault(b.workloads[p.workload], {})
                opts[(t, p.option)] = opts.get((t, p.option), 0.0) + p.count * float(pi[i])
        return math.fsum(min(v.values(), default=math.inf) for v in per.values())

    def cost(self, counts: dict[int, int]) -> float:
        """Cost per hour of GPUs per column."""
        return math.fsum(self.blocks[self.columns[j][0]].price_per_gpu_hour * n for j, n in counts.items())

    def solve_integer(self, time_limit_s: float, start: dict[int, int] | None,
                      chosen: dict[int, tuple[int, int]] | None, mip_rel_gap: float) -> IntegerSolution:
        """y integer, z binary (price-and-branch), from ``start`` (GPUs per column) and ``chosen``
        (workload -> (type, option)); ``chosen`` of the solution maps the same way."""
        if self.slack:
            raise ValueError("a master with count slack (a count vector's LP) has no integer master")
        return solve_integer_master(self.h, self.options, self.threads, time_limit_s, start, chosen, mip_rel_gap,
                                    self.cost)


def count_vector_master(blocks: Sequence[TypeBlock], n_workloads: int, counts: Mapping[int, int],
                        threads: int = 1) -> FleetMaster:
    """The LP of a count vector G (``counts``: GPUs per type), without columns: the workloads on G's types only
    (the other types' pieces dropped), columns at price 0, each type's count row capped at G_t with a slack at
    cost 1 per GPU over (``FleetMaster.add_count_slack``). Its value is how many GPUs its columns fall short by;
    at its duals pi, G is ruled out when D_S(pi) > sum_t kappa_t G_t (``CountCut``), which is its value once no
    column improves it (a type-t column does when worth more than mu_t)."""
    n = len(blocks)
    vm = FleetMaster(type_blocks([b.pieces if t in counts else () for t, b in enumerate(blocks)],
                                 [b.workloads for b in blocks], [0.0] * n, [counts.get(t) for t in range(n)]),
                     n_workloads, threads)
    vm.add_count_slack()
    return vm


def lagrangian_bound(d_value: float, kappa: Sequence[float], prices: Sequence[float],
                     limits: Sequence[int | None]) -> float:
    """max over s of f(s) = s D - sum_{t with a limit} M_t max(0, s kappa_t - c_t), over 0 < s <= the
    least c_t / kappa_t of the types without a limit (see the module docstring); 0 when no s helps."""
    if d_value <= 0:
        return 0.0
    free = [c / k for k, c, m in zip(kappa, prices, limits, strict=True) if m is None and k > 0]
    if any(math.isinf(k) for k in kappa):  # a type whose configurations' worth is not bounded
        return 0.0
    s_max = min(free, default=math.inf)
    breaks = [c / k for k, c, m in zip(kappa, prices, limits, strict=True) if m is not None and k > 0]
    candidates = [s for s in [*breaks, s_max, 1.0] if 0 < s <= s_max and math.isfinite(s)]

    def f(s: float) -> float:
        return s * d_value - math.fsum(m * max(0.0, s * k - c) for k, c, m in zip(kappa, prices, limits, strict=True)
                                       if m is not None)

    return max([0.0, *(f(s) for s in candidates)])


@dataclass(frozen=True)
class CountCut:
    """sum_{t in S} kappa_t G_t >= d_value, for every plan whose types in use are the set S the cut is filed
    under (G_t: its GPUs of type t). Such a plan serves every workload on S's types, so at any duals pi >= 0
    with kappa_t >= every type-t configuration's worth, D_S(pi) (``FleetMaster.dual_value`` over S) <= what
    its GPUs are worth <= sum_t G_t kappa_t. A bound of B GPUs on type t alone is the cut G_t >= B."""

    kappa: tuple[float, ...]  # per type of the fleet (those outside S do not count)
    d_value: float


def type_sets(n_types: int, served_by: Sequence[frozenset[int]]) -> list[frozenset[int]]:
    """Every set of types that can serve every workload (``served_by[w]``: the types that can serve w), up
    to ``COUNT_MAX_TYPES`` types (more: none, and the count bound is not used)."""
    if n_types > COUNT_MAX_TYPES:
        return []
    sets = [frozenset(t for t in range(n_types) if m >> t & 1) for m in range(1, 2 ** n_types)]
    return [s for s in sets if all(s & w for w in served_by)]


@dataclass(frozen=True)
class CheapestCounts:
    """The count bound (``count_bound``) and the GPU counts per type that reach it: the cheapest count
    vector no cut rules out yet (empty when none is left or HiGHS gave no solution)."""

    cost_per_hour: float
    counts: dict[int, int]


def count_bound(cuts: Mapping[frozenset[int], Sequence[CountCut]], prices: Sequence[float],
                limits: Sequence[int | None], threads: int = 1) -> float:
    """The least cost sum_t c_t G_t over every set S of types in use (the keys of ``cuts``: every set that can
    serve all workloads, ``type_sets``) and whole counts G_t >= 1 on S, within the limits, 0 off it, that
    meet S's cuts: a plan's types in use and GPU counts are one of these, so no plan costs less. Per set, the
    dual bound of a small MIP (one integer per type in it); a set whose cuts no counts meet holds no plan.
    0 when no set is left (the cuts contradict a plan: a defect, so nothing is claimed)."""
    return cheapest_counts(cuts, prices, limits, threads).cost_per_hour


def cheapest_counts(cuts: Mapping[frozenset[int], Sequence[CountCut]], prices: Sequence[float],
                    limits: Sequence[int | None], threads: int = 1) -> CheapestCounts:
    """``count_bound`` with the counts that reach it (see ``CheapestCounts``)."""
    best, counts = math.inf, {}
    for types, mine in cuts.items():
        order = sorted(types)
        rows = [([cut.kappa[t] for t in order], cut.d_value) for cut in mine
                if 0 < cut.d_value < math.inf and all(math.isfinite(cut.kappa[t]) for t in order)]
        least = _least_count_cost([prices[t] for t in order], 1.0, [limits[t] for t in order], rows, threads)
        if least.status == "Infeasible":
            continue
        floor = math.fsum(prices[t] for t in order)  # one GPU of each type in use
        value = max(floor, least.bound if least.bound is not None else floor)
        if value < best:
            best = value
            counts = {} if least.values is None else {t: round(v) for t, v in zip(order, least.values, strict=True)}
    return CheapestCounts(0.0, {}) if math.isinf(best) else CheapestCounts(best, counts)


def round_to_prices(value: float, prices: Sequence[float], limits: Sequence[int | None], threads: int = 1) -> float:
    """The least cost sum_t c_t G_t >= ``value`` with G_t whole and within the limits (every plan's cost
    is such a sum, so a bound rounds up to it): HiGHS's dual bound of that small MIP, ``value`` itself
    when it cannot tell."""
    if value <= 0:
        return max(0.0, value)
    least = _least_count_cost(prices, 0.0, limits, [(list(prices), value)], threads)
    if least.status == "Infeasible":
        return value  # the limits cannot reach it: a defect upstream; rounding proves nothing here
    return max(value, least.bound if least.bound is not None else value)


@dataclass(frozen=True)
class _LeastCount:
    status: str
    bound: float | None  # HiGHS's dual bound (the answer a bound needs; None when it gave none)
    values: list[float] | None  # its solution's counts, when it found one


def _least_count_cost(prices: Sequence[float], least: float, limits: Sequence[int | None],
                      rows: Sequence[tuple[Sequence[float], float]], threads: int) -> _LeastCount:
    """min sum_t c_t G_t over whole G_t in [``least``, limit_t] with sum_t a_t G_t >= b (each b lowered by
    ``ROUND_REL_EPS``, float noise) for every (a, b) of ``rows``."""
    h = new_highs(threads)
    inf = h.getInfinity()
    n = len(prices)
    h.addCols(n, f64(list(prices)), f64([least] * n), f64([inf if m is None else float(m) for m in limits]), 0,
              int32([0] * n), int32([]), f64([]))
    h.changeColsIntegrality(n, int32(np.arange(n)), [highspy_module().HighsVarType.kInteger] * n)
    for a, b in rows:
        h.addRows(1, f64([b * (1 - ROUND_REL_EPS)]), f64([inf]), n, int32([0]), int32(np.arange(n)), f64(list(a)))
    h.setOptionValue("mip_rel_gap", 0.0)  # the dual bound is the answer: close it
    res = run(h, ROUND_LIMIT_S, mip=True)
    values = list(h.getSolution().col_value) if res.objective is not None else None
    return _LeastCount(res.status, res.bound, values)

__all__ = ["CheapestCounts", "CountCut", "FleetLp", "FleetMaster", "TypeBlock", "cheapest_counts", "count_bound",
           "count_vector_master", "lagrangian_bound", "round_to_prices", "type_blocks", "type_sets"]
