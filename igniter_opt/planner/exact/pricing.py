"""Pricing: the GPU configuration worth most at the master's duals, and a bound on what any is worth.

The pricing MIP is the single-GPU version of the compact model (``model``), whose linear rows are
exact for the performance model (see its docstring): on one GPU with n members, total L2 C, power
P and scheduling increment S = D(n),

    t_gpu of item k <= B_k  <=>  kern_k S + idle_k + a_k (1 + alpha_k (C - c_k)) <= B_k
                                 and the same <= B_k (1 + kappa (P - P_max)),   kappa = alpha_f / F < 0.

Variables: x_k in {0..copies_k} placements of item k (``items``), on_k in {0, 1} (x_k > 0), T_t
the pieces of type t credited (at most as many as its split option needs), n, C, P, S. Maximise
sum_t dual_t T_t subject to sum_k u_k x_k <= 100 %, T_t <= sum_{k of t} x_k and the two rows
above for every item switched on (big-M from the reachable bounds). Every feasible GPU
configuration (up to dominated items, which a dominating one replaces) satisfies these rows, with
budgets loosened by ``LOOSEN_ABS_MS`` so the solver's tolerances cannot cut one off, so HiGHS's
dual bound bounds every column's worth: that is what the certified bound divides by.
The solution it finds is re-judged by the kernel (``columns.evaluate``) before it becomes a column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from igniter_opt.perfmodel.model import HardwareCoefficients
from igniter_opt.planner.exact.columns import ColSlot, PieceSpace
from igniter_opt.planner.exact.configs import Bounds, busy_power_w
from igniter_opt.planner.exact.items import Items, ItemTable
from igniter_opt.planner.exact.lp import ROWWISE, f64, highspy_module, int32, new_highs, run

# Budgets in the pricing MIP are loosened (not tightened) by this much, plus a share of the row's
# big-M: a bound must come from a model no tighter than the problem.
LOOSEN_ABS_MS = 1e-6
LOOSEN_REL_BIGM = 1e-7
# The worth bound is raised by this relative amount for HiGHS's own tolerances on its dual bound.
BOUND_SAFETY_REL = 1e-6
# Duals at or below this are worth nothing: their piece types' items are left out.
DUAL_EPS = 1e-12
PRICING_GAP = 1e-4


@dataclass(frozen=True)
class PricingResult:
    """The best configuration the pricing MIP found (None: nothing worth more than 0), its worth
    under the items' credits, an upper bound on the worth of every GPU configuration at these
    duals, and whether HiGHS proved its optimum."""

    slots: tuple[ColSlot, ...] | None
    worth: float
    worth_bound: float
    proven: bool


class _Rows:
    """A sparse row-wise matrix under construction."""

    def __init__(self) -> None:
        self.lower: list[np.ndarray] = []
        self.upper: list[np.ndarray] = []
        self.idx: list[np.ndarray] = []
        self.val: list[np.ndarray] = []
        self.len: list[np.ndarray] = []

    def add(self, lower: np.ndarray | float, upper: np.ndarray | float, idx: np.ndarray, val: np.ndarray) -> None:
        """Rows of equal length: ``idx`` and ``val`` shaped (rows, nonzeros per row)."""
        idx, val = np.atleast_2d(idx), np.atleast_2d(val)
        self.lower.append(np.broadcast_to(f64(lower), idx.shape[:1]))
        self.upper.append(np.broadcast_to(f64(upper), idx.shape[:1]))
        self.idx.append(idx.ravel())
        self.val.append(val.ravel())
        self.len.append(np.full(idx.shape[0], idx.shape[1]))

    def add_one(self, lower: float, upper: float, idx: np.ndarray, val: np.ndarray) -> None:
        self.add(np.array([lower]), np.array([upper]), np.asarray(idx)[None, :], np.asarray(val, float)[None, :])

    def arrays(self) -> tuple[np.ndarray, ...]:
        lengths = np.concatenate(self.len)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        return (np.concatenate(self.lower), np.concatenate(self.upper), int32(starts),
                int32(np.concatenate(self.idx)), f64(np.concatenate(self.val)))


@dataclass(frozen=True)
class _Layout:
    """Column positions of the pricing MIP's variables: x (items), z (on/off of items with several
    copies), T (per piece type), n, C, P, S."""

    k: int
    multi: np.ndarray  # positions (among items) with copies > 1
    pieces: np.ndarray  # piece types with items, in T order

    @property
    def z0(self) -> int:
        return self.k

    @property
    def t0(self) -> int:
        return self.k + self.multi.size

    @property
    def n(self) -> int:
        return self.t0 + self.pieces.size

    def on(self) -> np.ndarray:
        """The on/off variable of every item: itself when it has one copy, else its z."""
        out = np.arange(self.k)
        out[self.multi] = self.z0 + np.arange(self.multi.size)
        return out


# HiGHS 1.16's sub-MIP heuristics, off in the pricing MIP: inside nested RENS sub-MIPs, presolve
# (``strengthenInequalities``) ran for more than 10 minutes on a 594-item pricing MIP with a 3.8 s limit,
# deaf to the time limit and to ``cancelSolve`` (a fleet count vector's LP, docs/exact.md). The pricing MIP is
# there for its dual bound; with RENS alone off, that model is solved in 1 s.
SUB_MIP_HEURISTICS_OFF = ("mip_heuristic_run_rens", "mip_heuristic_run_rins", "mip_heuristic_run_root_reduced_cost")


def set_pricing_options(h: Any) -> None:
    """The pricing MIP's HiGHS options: its gap, and the sub-MIP heuristics off (``SUB_MIP_HEURISTICS_OFF``)."""
    h.setOptionValue("mip_rel_gap", PRICING_GAP)
    for heuristic in SUB_MIP_HEURISTICS_OFF:
        h.setOptionValue(heuristic, False)


def price_mip(space: PieceSpace, items: Items, duals: np.ndarray, time_limit_s: float,
              threads: int = 1) -> PricingResult:
    """Solve the pricing MIP (see the module docstring) at ``duals`` (one per piece type)."""
    sel = np.flatnonzero(duals[items.table.piece] > DUAL_EPS)
    if sel.size == 0:
        return PricingResult(None, 0.0, 0.0, True)
    tab = items.table.take(sel)
    pieces = np.unique(tab.piece)
    lay = _Layout(len(tab), np.flatnonzero(tab.copies > 1), pieces)
    h = new_highs(threads)
    _pass_model(h, space, items, tab, lay, duals)
    set_pricing_options(h)
    res = run(h, time_limit_s, mip=True)
    bound = res.bound if res.bound is not None else (res.objective if res.status == "Optimal" else None)
    worth_bound = np.inf if bound is None else bound * (1.0 + BOUND_SAFETY_REL) + 1e-12
    if res.objective is None:
        return PricingResult(None, 0.0, worth_bound, False)
    x = np.rint(np.asarray(h.getSolution().col_value, float)[: lay.k]).astype(int)
    slots = tuple(tab.slot(int(k)) for k in np.flatnonzero(x > 0) for _ in range(int(x[k])))
    return PricingResult(slots or None, res.objective, worth_bound, res.status == "Optimal")


def _pass_model(h: Any, space: PieceSpace, items: Items, tab: ItemTable, lay: _Layout, duals: np.ndarray) -> None:
    """Variables, bounds and rows of the pricing MIP, passed to HiGHS in one call."""
    hs = highspy_module()
    hw = space.problem.perf_model.hardware
    b = items.bounds
    k, n_t = lay.k, lay.pieces.size
    n_col = lay.n + 4
    req = np.array([space.pieces[t].requirement for t in lay.pieces])
    cost = np.zeros(n_col)
    cost[lay.t0:lay.n] = duals[lay.pieces]
    d_lo = 0.0  # D(n) >= 0 for n >= 2 (items.check_company_never_helps), and D(1) = 0
    lower = np.concatenate([np.zeros(k + lay.multi.size + n_t), [1.0, 0.0, busy_power_w(hw), d_lo]])
    upper = np.concatenate([tab.copies.astype(float), np.ones(lay.multi.size), req,
                            [b.max_members, b.max_cache, max(b.max_power_w, busy_power_w(hw)), b.max_sched_ms]])
    integral = np.zeros(n_col, np.int32)
    integral[: k + lay.multi.size] = 1
    rows = _rows(space, items, tab, lay)
    lo, up, starts, idx, val = rows.arrays()
    status = h.passModel(n_col, lo.size, idx.size, ROWWISE, int(hs.ObjSense.kMaximize), 0.0, f64(cost),
                         f64(lower), f64(upper), f64(lo), f64(up), starts, idx, val, integral)
    if status != hs.HighsStatus.kOk:
        raise RuntimeError(f"HiGHS refused the pricing model ({status})")


def _rows(space: PieceSpace, items: Items, tab: ItemTable, lay: _Layout) -> _Rows:
    hw = space.problem.perf_model.hardware
    b = items.bounds
    k = lay.k
    v_n, v_c, v_p, v_s = lay.n, lay.n + 1, lay.n + 2, lay.n + 3
    xs = np.arange(k)
    r = _Rows()
    inf = np.inf
    r.add_one(-inf, space.cap_units, xs, tab.units)  # units
    r.add_one(0.0, 0.0, np.r_[v_n, xs], np.r_[1.0, -np.ones(k)])  # members
    r.add_one(0.0, 0.0, np.r_[v_c, xs], np.r_[1.0, -tab.cache])  # L2
    r.add_one(busy_power_w(hw), busy_power_w(hw), np.r_[v_p, xs], np.r_[1.0, -tab.power])  # power
    _sched_rows(r, hw, b.max_members, v_s, v_n)
    for j, t in enumerate(lay.pieces):  # pieces of type t credited: T_t <= sum_{k of t} x_k
        mine = np.flatnonzero(tab.piece == t)
        r.add_one(-inf, 0.0, np.r_[lay.t0 + j, mine], np.r_[1.0, -np.ones(mine.size)])
    if lay.multi.size:  # x <= copies on, on <= x
        m = lay.multi
        z = lay.z0 + np.arange(m.size)
        r.add(-inf, 0.0, np.column_stack([m, z]), np.column_stack([np.ones(m.size), -tab.copies[m].astype(float)]))
        r.add(-inf, 0.0, np.column_stack([z, m]), np.column_stack([np.ones(m.size), -np.ones(m.size)]))
    _budget_rows(r, hw, b, tab, lay.on(), v_s, v_c, v_p)
    return r


def _sched_rows(r: _Rows, hw: HardwareCoefficients, max_members: int, v_s: int, v_n: int) -> None:
    """S >= alpha_sch n + beta_sch (exact with S >= 0 when alpha_sch + beta_sch <= 0: alone, D = 0).
    Otherwise the row is relaxed by alpha_sch + beta_sch so that a lone member may have S = 0."""
    if max_members < 2:
        return
    a, beta = hw.alpha_sch, hw.beta_sch
    relax = max(0.0, a + beta)
    r.add_one(beta - relax, np.inf, np.array([v_s, v_n]), np.array([1.0, -a]))


def _budget_rows(r: _Rows, hw: HardwareCoefficients, b: Bounds, tab: ItemTable, on: np.ndarray, v_s: int, v_c: int,
                 v_p: int) -> None:
    """Per item switched on: its GPU time within its budget at full clock and under throttling."""
    s_max, c_max = b.max_sched_ms, b.max_cache
    const = tab.idle + tab.active * (1.0 - tab.alpha_cache * tab.cache)
    a_c = tab.active * tab.alpha_cache
    kern = tab.kernels
    lhs_max = kern * s_max + a_c * c_max + const
    big = np.maximum(0.0, lhs_max - tab.budget)
    rhs = tab.budget + LOOSEN_ABS_MS + LOOSEN_REL_BIGM * big - const
    live = np.flatnonzero(big > 0)
    r.add(-np.inf, rhs[live] + big[live], np.column_stack([np.full(live.size, v_s), np.full(live.size, v_c), on[live]]),
          np.column_stack([kern[live], a_c[live], big[live]]))
    p_max = b.max_power_w
    if p_max <= hw.max_power_w:
        return
    kap = -hw.alpha_f / hw.max_clock_mhz  # |kappa|
    pm = hw.max_power_w
    big2 = np.maximum(0.0, lhs_max + tab.budget * kap * (p_max - pm) - tab.budget)
    rhs2 = tab.budget + LOOSEN_ABS_MS + LOOSEN_REL_BIGM * big2 - const + tab.budget * kap * pm
    live = np.flatnonzero(big2 > 0)
    r.add(-np.inf, rhs2[live] + big2[live],
          np.column_stack([np.full(live.size, v_s), np.full(live.size, v_c), np.full(live.size, v_p), on[live]]),
          np.column_stack([kern[live], a_c[live], tab.budget[live] * kap, big2[live]]))
