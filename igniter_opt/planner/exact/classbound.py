"""The member-class bound: one compact LP that no plan's GPU count is below (docs/exact.md, "Member-class bound").

Column generation's bound (Farley's, ``colgen``) needs its LP nearly solved, which at a few hundred workloads
it never is within the limit; the trivial bound ignores interference. This LP sits between them: it keeps the
rows every GPU of the plan must meet, summed over the GPUs of one class, so it is small enough to solve
whole, and it is solved once per count of levels, by sifting (``_sift``: its columns enter as they price out,
and those far from it leave).

A GPU's class is (m, g): its m members, and the level g of the least Cmax_k(m) among them, where
Cmax_k(m) = c_k + (B_k - idle_k - a_k - kern_k D(m)) / (a_k alpha_k) is the most total L2 at which
member k meets its loosened budget with m members (``relaxed.cache_limits``; the throttling row only
tightens and is dropped). Levels split each m's Cmax values (``relaxed.levels``): in level g every
member has Cmax_k(m) >= L_g, and the GPU's total L2 C = sum c_j is at most gamma <= top_g. Since C <= Cmax_k
for every member k, summing over the members gives m C <= sum_k min(Cmax_k(m), top_g). With y_{m,g} the
GPUs of class (m, g) and x_{i,m,g} their members that are item i, z_{w,o} w's split option:

    sum_i x_{i,m,g} = m y_{m,g}                                          (members)
    sum_i u_i x_{i,m,g} <= 100 % y_{m,g}                                  (units)
    sum_i (m c_i - min(Cmax_i(m), top_g)) x_{i,m,g} <= 0                  (L2, m >= 2)
    sum_{m,g} sum_{i of type t} x_{i,m,g} >= count_t z_{w,o(t)},  sum_o z_{w,o} = 1    (cover)

min sum y. Item i may be in class (m, g) only where Cmax_i(m) >= L_g, it meets its budget beside m - 1 of
the least L2 and power any item has, and its units leave room for m - 1 of the fewest units. Every plan
in the pieces' scope gives a solution (its dominated slots replaced by the items dominating them, as
``relaxed`` does), so the LP's value is a lower bound on its GPUs.

The bound is not read off HiGHS's objective. From the LP's duals (pi_t of the cover rows, b and d of each
class's units and L2 rows, clipped to their signs), every class's most worth of one GPU,
kappa_{m,g} <= m max_i (pi_t(i) - b u_i - d coef_i) + b 100 % (weak duality of that class's one-GPU LP), is
computed exactly in numpy, and the bound is Farley's D(pi) / max kappa (``dual_value``): valid at any
duals, whether HiGHS solved the LP to the end or stopped at its limit, and equal to the LP's value at its
optimum. Within a class and piece type only the items on the Pareto front of (units, L2 coefficient) are
columns: any other one is no better in either row.

Pair columns (docs/exact.md, "Pair columns in the member-class bound"): a GPU of two members is exactly a pair
of piece types that the pair screen passes (``pairs.fitting_type_pairs``: exact for the model, never tighter
than the kernel), so after the first pass the classes of 2 members may be replaced by one column per such
pair, covering a piece of each at one GPU; the LP is tighter and still a relaxation, and the certificate's
max kappa takes the pairs' worth pi_s + pi_t too (``certify``). Likewise triple columns (docs/exact.md, "Triple
columns in the member-class bound"): a GPU of three members is a triple of piece types the triple screen passes
(``triples.fitting_type_triples``: never tighter than the kernel), so where the pairs are used and the triples'
candidates are few enough, one column per such triple replaces the classes of 3 members (``group_kappa``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from igniter_opt.perfmodel.model import HardwareCoefficients
from igniter_opt.planner.exact.configs import Bounds
from igniter_opt.planner.exact.items import Items, ItemTable
from igniter_opt.planner.exact.lp import COLWISE, WATCHDOG_GRACE_S, f64, highspy_module, int32, new_highs, run
from igniter_opt.planner.exact.pairs import fitting_type_pairs
from igniter_opt.planner.exact.relaxed import cache_limits, levels, usable_with_company
from igniter_opt.planner.exact.triples import fitting_type_triples

if TYPE_CHECKING:
    import scipy.sparse as sp

# Levels per member count, one pass each while time allows: more make the bound stronger and the LP larger
# (docs/exact.md has the figures; at 1000 H100 workloads, sifted, 16 levels end in about 50 s, 32 in 115 s).
# A next pass is begun only with this many times the last one's time left (a pass takes about twice the one
# before it), and only after a pass of at most NEXT_PASS_COLUMNS_MAX columns: memory (at 1000 H100 workloads,
# 32 levels are 4.9 million columns and take the worker to 1.6 GB; 64 levels, 8.6 million and 2.6 GB).
CLASS_LEVELS = (2, 8, 16, 32, 64)
NEXT_PASS_FACTOR = 2.5
NEXT_PASS_COLUMNS_MAX = 4_000_000
# Share of the time left after the first pass that screening every pair of piece types may take (at 200 V100
# workloads 64 000 pairs fit, screened in 0.4 s; at 1000, 1.7 million in 8 s), and that a pass with their
# columns may take (at 1000 V100 workloads, 8 levels: 2.2 million columns, 175 s alone on one core).
PAIR_SHARE = 0.3
PAIR_PASS_SHARE = 0.6
# Pair columns only where a GPU holds at most this many members on average at its pieces' least units.
PAIR_MEAN_MEMBERS = 8.0
# No pair columns beyond this many: memory (at 1000 V100 workloads 1.7 million of them took the worker to 1.33 GB).
PAIR_COLUMNS_MAX = 2_500_000
# Share of the time left after the pair screen that screening the triples of piece types may take (at 200 V100
# workloads 6.6-7.7 million candidates, of which 5.3-6.7 million fit, in 7.6-12.6 s), and the most candidates
# screened: memory (at 200 V100 workloads their columns took the worker to 0.9-1.1 GB).
TRIPLE_SHARE = 0.3
TRIPLE_CANDIDATES_MAX = 10_000_000
# Sifting the LP (``_sift``): the columns of most negative reduced cost that enter per round, the columns out of
# the basis that stay in HiGHS's LP between rounds (the others of highest reduced cost leave it, and may enter
# again), and what counts as negative. Small rounds over a small LP: at 1000 H100 workloads, 8 levels (2.2
# million x columns), 17 s of sifting against 95-124 s with 20 000-55 000 columns a round and none leaving
# (docs/exact.md, "Smaller sifting rounds, and columns that leave"). _KEY_M: an (item, member count) pair's key
# is item * _KEY_M + m (member counts are far below it).
SIFT_ROUND_COLUMNS = 10_000
SIFT_KEPT_COLUMNS = 10_000
SIFT_RC_TOL = 1e-9
_KEY_M = 1 << 16
# The most worth of a class's GPU is raised by this relative amount (plus 1e-12) for float noise.
KAPPA_SAFETY_REL = 1e-9


@dataclass(frozen=True)
class PieceRows:
    """What the cover rows need of each piece type: its workload, split option and count (arrays)."""

    workload: np.ndarray
    option: np.ndarray
    count: np.ndarray


@dataclass(frozen=True)
class ClassLp:
    """The LP's classes (member count, the floor of their level: the least Cmax_k(m) of their members is at
    least that and below the next floor of that m, whether it has an L2 row) and its x columns (item, class,
    L2 coefficient)."""

    members: np.ndarray
    floor_pct: np.ndarray
    l2_row: np.ndarray
    item: np.ndarray
    klass: np.ndarray
    coef: np.ndarray
    pairs: np.ndarray  # (n, 2) piece types: the pair columns that replace the classes of 2 members (none: (0, 2))
    triples: np.ndarray  # (n, 3) piece types: the triple columns that replace the classes of 3 members (none: (0, 3))

    @property
    def n_classes(self) -> int:
        return int(self.members.size)


@dataclass(frozen=True)
class ClassBound:
    """The certified bound (GPUs, fractional), the LP's own value where HiGHS gave one, HiGHS's status, the
    LP's size and the seconds it all took."""

    value: float
    lp_value: float | None
    status: str
    classes: int
    columns: int
    levels: int
    seconds: float
    pairs: int | None = None  # pair columns in place of the classes of 2 members (None: that pass did not use them)
    triples: int | None = None  # triple columns in place of the classes of 3 members (None: that pass did not use them)
    support: np.ndarray | None = field(default=None, repr=False, compare=False)  # seeds the next pass (``_sift``)


def _pareto(idx: np.ndarray, piece: np.ndarray, units: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """Of items ``idx``, per piece type those no other item of its type beats in both units and ``coef``
    (at any b, d >= 0 the item of a type worth most at pi_t - b u - d coef is among them)."""
    import pandas as pd  # here, not at the top: planning without the exact planner does not load it

    order = np.lexsort((coef[idx], units[idx], piece[idx]))
    s = idx[order]
    best = pd.Series(coef[s]).groupby(piece[s]).cummin().to_numpy()
    first = np.r_[True, piece[s][1:] != piece[s][:-1]]
    keep = first | (coef[s] < np.r_[np.inf, best[:-1]])
    return np.sort(s[keep])


def _class_columns(tab: ItemTable, hw: HardwareCoefficients, bounds: Bounds, cap: int, m: int, n_levels: int
                   ) -> list[tuple[float, np.ndarray, np.ndarray | None]]:
    """Per class of ``m`` members: its level's floor, its items and their L2 coefficients (None: no L2 row)."""
    n = len(tab.units)
    if m == 1:  # every item meets its budget alone (``items``)
        return [(-math.inf, np.flatnonzero(tab.units <= cap), None)]
    cmax = cache_limits(tab, hw, bounds, m)
    room = tab.cache + (m - 1) * float(tab.cache.min())
    use = np.flatnonzero(usable_with_company(tab, hw, bounds, cap, m, cmax))
    if use.size == 0:
        return []
    out: list[tuple[float, np.ndarray, np.ndarray | None]] = []
    for floor, top in zip(*levels(cmax[use], n_levels), strict=True):
        mine = use[(cmax[use] >= floor) & (room[use] <= top)]
        if mine.size == 0:
            continue
        coef = m * tab.cache - np.minimum(cmax, top)
        if not np.isfinite(coef[mine]).all():  # an L2-blind level: no L2 row
            out.append((float(floor), _pareto(mine, tab.piece, tab.units, np.zeros(n)), None))
            continue
        keep = _pareto(mine, tab.piece, tab.units, coef)
        out.append((float(floor), keep, coef[keep]))
    return out


def class_lp(tab: ItemTable, hw: HardwareCoefficients, bounds: Bounds, cap: int, n_levels: int = CLASS_LEVELS[0],
             deadline: float = math.inf, pairs: np.ndarray | None = None, triples: np.ndarray | None = None
             ) -> ClassLp | None:
    """The classes and columns (None past ``deadline``, ``time.perf_counter()``); with ``pairs`` (every pair of
    piece types that can share a GPU, ``pairs.fitting_type_pairs``) those pair columns instead of the classes
    of 2 members, and with ``triples`` (``triples.fitting_type_triples``) those triple columns instead of the
    classes of 3."""
    pair_cols = np.zeros((0, 2), np.intp) if pairs is None else pairs
    triple_cols = np.zeros((0, 3), np.intp) if triples is None else triples
    members: list[int] = []
    floors: list[float] = []
    l2: list[bool] = []
    item: list[np.ndarray] = []
    klass: list[np.ndarray] = []
    coef: list[np.ndarray] = []
    for m in range(1, int(bounds.max_members) + 1):
        if time.perf_counter() > deadline:
            return None
        if (m == 2 and pairs is not None) or (m == 3 and triples is not None):
            continue
        for floor, idx, c in _class_columns(tab, hw, bounds, cap, m, n_levels):
            klass.append(np.full(idx.size, len(members)))
            members.append(m)
            floors.append(floor)
            l2.append(c is not None)
            item.append(idx)
            coef.append(np.zeros(idx.size) if c is None else c)
    if not members:
        return ClassLp(np.zeros(0, int), np.zeros(0), np.zeros(0, bool), np.zeros(0, int), np.zeros(0, int),
                       np.zeros(0), pair_cols, triple_cols)
    return ClassLp(np.array(members), np.array(floors), np.array(l2), np.concatenate(item), np.concatenate(klass),
                   np.concatenate(coef), pair_cols, triple_cols)


def _model(lp: ClassLp, tab: ItemTable, rows: PieceRows, cap: int
           ) -> tuple[sp.csc_matrix, np.ndarray, np.ndarray, np.ndarray]:
    """The LP's matrix (column-wise), row bounds and costs. Columns: y (one per class), x, z (one per split
    option, in ``np.unique`` order of (workload, option)), then one GPU per pair of ``lp.pairs`` (a piece of
    each type, two of one type paired with itself); rows: members, units (one per class each), L2 (one per
    class that has one), cover (one per piece type), choose (one per workload); then one GPU per triple of
    ``lp.triples`` likewise. Costs: 1 for each y, pair and triple."""
    import scipy.sparse as sp  # here, not at the top: planning without the exact planner does not load it

    k, nx = lp.n_classes, lp.item.size
    options, opt_of = np.unique(np.c_[rows.workload, rows.option], axis=0, return_inverse=True)
    workloads, w_of = np.unique(options[:, 0], return_inverse=True)
    n_l2 = int(lp.l2_row.sum())
    l2_at = np.full(k, -1)
    l2_at[lp.l2_row] = 2 * k + np.arange(n_l2)
    cover0 = 2 * k + n_l2
    choose0 = cover0 + rows.count.size
    ci, xi, zi = np.arange(k), k + np.arange(nx), k + nx + np.arange(len(options))
    l2 = l2_at[lp.klass] >= 0
    r = [ci, k + ci, lp.klass, k + lp.klass, cover0 + tab.piece[lp.item], l2_at[lp.klass][l2],
         cover0 + np.arange(rows.count.size), choose0 + w_of.ravel()]
    c = [ci, ci, xi, xi, xi, xi[l2], zi[opt_of.ravel()], zi]
    v = [-lp.members.astype(float), np.full(k, -float(cap)), np.ones(nx), tab.units[lp.item].astype(float),
         np.ones(nx), lp.coef[l2], -rows.count.astype(float), np.ones(len(options))]
    n_rows = choose0 + workloads.size
    base = sp.csc_matrix((np.concatenate(v), (np.concatenate(r), np.concatenate(c))),
                         shape=(n_rows, k + nx + len(options)))
    groups = _group_block(_groups(lp), cover0, n_rows)
    a = sp.hstack([base, groups], format="csc")
    n_groups = groups.shape[1]
    lower = np.r_[np.zeros(k), np.full(k + n_l2, -np.inf), np.zeros(rows.count.size), np.ones(workloads.size)]
    upper = np.r_[np.zeros(2 * k + n_l2), np.full(rows.count.size, np.inf), np.ones(workloads.size)]
    cost = np.r_[np.ones(k), np.zeros(nx + len(options)), np.ones(n_groups)]
    return a, lower, upper, cost


def _group_block(groups: np.ndarray, cover0: int, n_rows: int) -> sp.csc_matrix:
    """The pair and triple columns (``_groups``, each row's types in order) in the cover rows from ``cover0``, built
    column-wise at once: a type twice or thrice in a group is one entry of 2 or 3 (millions of triples: a COO
    matrix of them would take twice the memory)."""
    import scipy.sparse as sp  # here, not at the top: planning without the exact planner does not load it

    present = groups >= 0
    new = present & np.c_[np.ones(len(groups), bool), groups[:, 1:] != groups[:, :-1]]  # a type's first entry
    # each entry's multiplicity: how many of the group's slots hold its type
    times = (groups[:, :, None] == groups[:, None, :]).sum(axis=2) * present
    indptr = np.r_[0, np.cumsum(new.sum(axis=1))].astype(np.int64)
    return sp.csc_matrix(((times[new]).astype(float), (cover0 + groups[new]).astype(np.int32), indptr),
                         shape=(n_rows, len(groups)))


def _groups(lp: ClassLp) -> np.ndarray:
    """The pair columns' piece types, then the triples', as rows of an (n, 3) array (-1: no third)."""
    return np.r_[np.c_[lp.pairs, np.full(len(lp.pairs), -1)], lp.triples].astype(np.intp).reshape(-1, 3)


@dataclass(frozen=True)
class _Sifted:
    """What sifting the class LP gave: HiGHS's status ("Optimal" only where no column was left to enter), the
    LP's optimum (then only), the best certified bound over its rounds (``certify``: valid at every round's
    duals) and the keys (``_KEY_M``) of the x columns positive in its last solution."""

    status: str
    objective: float | None
    value: float
    support: np.ndarray


def _first_columns(lp: ClassLp, tab: ItemTable) -> np.ndarray:
    """The x columns HiGHS starts from: per piece type, its item of fewest units in a class of the fewest members
    (one GPU each: the LP is feasible from the first solve)."""
    fewest = lp.members[lp.klass] == lp.members.min()
    idx = np.flatnonzero(fewest)
    piece = tab.piece[lp.item[idx]]
    order = np.lexsort((tab.units[lp.item[idx]], piece))
    first = np.r_[True, piece[order][1:] != piece[order][:-1]]
    return idx[order[first]]


def _sift(lp: ClassLp, tab: ItemTable, rows: PieceRows, cap: int, deadline: float, seed: np.ndarray | None,
          threads: int, stop: Callable[[], bool] = lambda: False) -> _Sifted:
    """The class LP by sifting: HiGHS solves it over the y and z columns and a subset of the x and pair columns
    (``_first_columns``, and those of the items and member counts in ``seed``, the support of the pass before);
    at each solve's duals the bound is certified, then the ``SIFT_ROUND_COLUMNS`` columns of most negative
    reduced cost enter and, of those out of the basis, all but the ``SIFT_KEPT_COLUMNS`` of least reduced cost
    leave, until no column prices out (the LP is solved), ``deadline`` or ``stop()``. HiGHS's interior point method over
    all columns took twice as long as sifting that kept every column, and that five times as long as this
    (docs/exact.md)."""
    hs = highspy_module()
    a, lower, upper, cost = _model(lp, tab, rows, cap)
    k, nx, n_groups = lp.n_classes, lp.item.size, len(lp.pairs) + len(lp.triples)
    n_opt = a.shape[1] - k - nx - n_groups
    cand = np.r_[k + np.arange(nx), k + nx + n_opt + np.arange(n_groups)]  # x, then the pairs and triples
    inside = np.zeros(cand.size, bool)
    inside[_first_columns(lp, tab)] = True
    keys = lp.item.astype(np.int64) * _KEY_M + lp.members[lp.klass]
    if seed is not None and seed.size:
        inside[:nx] |= np.isin(keys, seed)
    fixed = np.r_[np.arange(k), k + nx + np.arange(n_opt)]  # y and z: always in HiGHS's LP, first
    held = np.flatnonzero(inside)  # the candidates in HiGHS's LP, in its order after ``fixed``
    order = np.r_[fixed, cand[held]]
    sub = a[:, order]
    h = new_highs(threads)
    n_col = order.size
    status = h.passModel(n_col, a.shape[0], sub.nnz, COLWISE, int(hs.ObjSense.kMinimize), 0.0, f64(cost[order]),
                         f64(np.zeros(n_col)), f64(np.full(n_col, np.inf)), f64(lower), f64(upper),
                         int32(sub.indptr[:-1]), int32(sub.indices), f64(sub.data), np.zeros(n_col, np.int32))
    if status == hs.HighsStatus.kError:
        raise RuntimeError("HiGHS refused the member-class LP")
    value, said, objective = 0.0, "Time limit reached", None
    support = np.zeros(0, np.intp)  # the candidates positive in the last solution
    while True:
        left = deadline - time.perf_counter() - WATCHDOG_GRACE_S
        if left <= 0 or stop():
            break
        res = run(h, left, mip=False)
        sol = h.getSolution()
        if res.status != "Optimal" or not sol.dual_valid:
            said = res.status
            break
        duals = np.asarray(sol.row_dual, float)
        value = max(value, certify(lp, tab, rows, cap, duals))
        support = held[np.asarray(sol.col_value, float)[fixed.size:] > 1e-9]
        reduced = (cost - a.T @ duals)[cand]  # HiGHS's row duals: c_j - a_j' y
        entering = np.flatnonzero((reduced < -SIFT_RC_TOL) & ~inside)
        if entering.size == 0:  # no column prices out: the LP is solved
            said, objective = res.status, res.objective
            break
        if entering.size > SIFT_ROUND_COLUMNS:
            entering = entering[np.argpartition(reduced[entering], SIFT_ROUND_COLUMNS)[:SIFT_ROUND_COLUMNS]]
        out = _drop_columns(h, fixed.size, reduced[held])
        inside[held[out]] = False
        held = np.delete(held, out)
        inside[entering] = True
        new = a[:, cand[entering]]
        h.addCols(entering.size, f64(cost[cand[entering]]), f64(np.zeros(entering.size)),
                  f64(np.full(entering.size, np.inf)), new.nnz, int32(new.indptr[:-1]), int32(new.indices),
                  f64(new.data))
        held = np.r_[held, entering]
    return _Sifted(said, objective, value, keys[support[support < nx]])


def _drop_columns(h: Any, n_fixed: int, reduced: np.ndarray) -> np.ndarray:
    """Out of HiGHS's LP (its columns after the first ``n_fixed`` of reduced costs ``reduced``): the columns out of
    the basis of the highest positive reduced cost, all but ``SIFT_KEPT_COLUMNS`` of them; their positions among
    those columns are returned (sorted). A column out of the basis is at 0, so the solution and its basis stand."""
    basic = int(highspy_module().HighsBasisStatus.kBasic)
    status = np.fromiter((int(s) for s in h.getBasis().col_status[n_fixed:]), np.int64, reduced.size)
    out = np.flatnonzero((status != basic) & (reduced > SIFT_RC_TOL))
    n_drop = out.size - SIFT_KEPT_COLUMNS
    if n_drop <= 0:
        return np.zeros(0, np.intp)
    out = np.sort(out[np.argpartition(-reduced[out], n_drop)[:n_drop]])
    h.deleteCols(out.size, int32(n_fixed + out))
    return out


def class_kappas(lp: ClassLp, tab: ItemTable, cap: int, pi: np.ndarray, b: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Per class, a bound on the worth sum pi_t of any one GPU of it: m max_i (pi_t(i) - b u_i - d coef_i) + b 100 %
    (``b``, ``d`` >= 0 per class: the weak dual of the class's one-GPU LP, whose members sum to m exactly)."""
    worth = pi[tab.piece[lp.item]] - b[lp.klass] * tab.units[lp.item] - d[lp.klass] * lp.coef
    best = np.full(lp.n_classes, -np.inf)
    np.maximum.at(best, lp.klass, worth)
    return lp.members * best + b * cap


def group_kappa(lp: ClassLp, pi: np.ndarray) -> float:
    """The most worth sum pi_t of a GPU of two or three members at ``pi``: of its pair or triple column (exact: such
    a GPU holds just those pieces, and its types are one of ``lp.pairs`` or ``lp.triples``); 0 without them."""
    groups = _groups(lp)
    with_none = np.r_[pi, 0.0]  # -1: no third piece
    return float((with_none[groups[:, 0]] + with_none[groups[:, 1]] + with_none[groups[:, 2]]).max(initial=0.0))


def certify(lp: ClassLp, tab: ItemTable, rows: PieceRows, cap: int, duals: np.ndarray) -> float:
    """Farley's bound D(pi) / max kappa at the LP's row ``duals`` (module docstring): a lower bound on the
    GPUs of every plan in the pieces' scope, whatever the duals. 0 where it says nothing."""
    k = lp.n_classes
    n_l2 = int(lp.l2_row.sum())
    b = np.maximum(0.0, -duals[k:2 * k])  # <= rows of a min problem: duals <= 0
    d = np.zeros(k)
    d[lp.l2_row] = np.maximum(0.0, -duals[2 * k:2 * k + n_l2])
    pi = np.maximum(0.0, duals[2 * k + n_l2:2 * k + n_l2 + rows.count.size])  # >= rows: duals >= 0
    most = max(float(class_kappas(lp, tab, cap, pi, b, d).max(initial=0.0)), group_kappa(lp, pi))
    top = most * (1.0 + KAPPA_SAFETY_REL) + 1e-12
    return dual_value(rows, pi) / top if top > 1e-9 else 0.0


def dual_value(rows: PieceRows, pi: np.ndarray) -> float:
    """D(pi) = sum_w min_o sum_{t in o} count_t pi_t: the master dual's objective (the piece types of ``rows``;
    each option's sum in the order of its types, the workloads' minima summed exactly)."""
    if rows.count.size == 0:
        return 0.0
    options, opt_of = np.unique(np.c_[rows.workload, rows.option], axis=0, return_inverse=True)
    per_option = np.zeros(len(options))
    np.add.at(per_option, opt_of.ravel(), rows.count * np.asarray(pi, float)[:rows.count.size])
    _, w_of = np.unique(options[:, 0], return_inverse=True)
    per_workload = np.full(int(w_of.max()) + 1, np.inf)
    np.minimum.at(per_workload, w_of.ravel(), per_option)
    return math.fsum(per_workload.tolist())


def class_bound_at(tab: ItemTable, hw: HardwareCoefficients, bounds: Bounds, cap: int, rows: PieceRows,
                   deadline: float, n_levels: int, threads: int = 1, pairs: np.ndarray | None = None,
                   seed: np.ndarray | None = None, triples: np.ndarray | None = None,
                   stop: Callable[[], bool] = lambda: False) -> ClassBound | None:
    """The member-class bound with ``n_levels`` levels per member count (module docstring; with ``pairs``,
    those pair columns instead of the classes of 2 members, and with ``triples`` those triple columns instead of
    the classes of 3) by ``deadline`` (``time.perf_counter()``), its LP sifted from the support ``seed`` of a pass
    before (``_sift``); where the LP is not solved by then, the best bound certified on the way. None when the LP
    could not be built or gave no duals by then (or ``stop()``: its sifting ends then)."""
    t0 = time.perf_counter()
    lp = class_lp(tab, hw, bounds, cap, n_levels, deadline, pairs, triples)
    if lp is None or lp.n_classes == 0 or deadline - time.perf_counter() <= WATCHDOG_GRACE_S:
        return None
    res = _sift(lp, tab, rows, cap, deadline, seed, threads, stop)
    if res.value <= 0.0:
        return None
    return ClassBound(res.value, res.objective, res.status, lp.n_classes,
                      int(lp.item.size) + len(lp.pairs) + len(lp.triples), n_levels, time.perf_counter() - t0,
                      None if pairs is None else len(pairs), None if triples is None else len(triples), res.support)


def _pairs_worth_screening(items: Items, rows: PieceRows, cap: int) -> bool:
    """Whether a GPU holds few enough members for the pair columns to matter: a GPU's units over the pieces'
    mean least units (weighted by their counts) at most ``PAIR_MEAN_MEMBERS`` (random V100 mixes: 3.2-3.4; H100: 15-19,
    where they left the bound as it was)."""
    mean = float(np.sum(rows.count * items.least_units) / max(1, int(np.sum(rows.count))))
    return mean > 0 and cap / mean <= PAIR_MEAN_MEMBERS


def _screen_pairs(items: Items, hw: HardwareCoefficients, cap: int, rows: PieceRows, deadline: float
                  ) -> np.ndarray | None:
    """Every pair of piece types that can share a GPU (``pairs.fitting_type_pairs``) within ``PAIR_SHARE`` of
    the time to ``deadline``; None where they would not matter (``_pairs_worth_screening``), the screen did not
    end by then or found more than ``PAIR_COLUMNS_MAX``."""
    if items.bounds.max_members < 2 or not _pairs_worth_screening(items, rows, cap):
        return None
    until = time.perf_counter() + PAIR_SHARE * max(0.0, deadline - time.perf_counter())
    found = fitting_type_pairs(items, hw, cap, rows.count >= 2, until)
    return found if found is not None and len(found) <= PAIR_COLUMNS_MAX else None


def _screen_triples(items: Items, hw: HardwareCoefficients, cap: int, rows: PieceRows, pairs: np.ndarray | None,
                    deadline: float) -> np.ndarray | None:
    """Every triple of piece types that can share a GPU (``triples.fitting_type_triples``, from the fitting
    ``pairs``) within ``TRIPLE_SHARE`` of the time to ``deadline``; None without pairs, where the screen did not end
    by then or had more than ``TRIPLE_CANDIDATES_MAX`` candidates."""
    if pairs is None:
        return None
    until = time.perf_counter() + TRIPLE_SHARE * max(0.0, deadline - time.perf_counter())
    return fitting_type_triples(items, hw, cap, pairs, rows.count, until, TRIPLE_CANDIDATES_MAX)


def class_bound(items: Items, hw: HardwareCoefficients, cap: int, rows: PieceRows, deadline: float,
                target_gpus: int | None = None, threads: int = 1,
                on_pass: Callable[[ClassBound], None] | None = None, stop: Callable[[], bool] = lambda: False
                ) -> ClassBound | None:
    """The member-class bound at ``CLASS_LEVELS[0]`` levels; then the pairs of piece types that can share a GPU
    are screened (``_screen_pairs``) and, where the screen ended, each next pass has their pair columns in place
    of the classes of 2 members (a tighter LP: a GPU of two members is one of those pairs exactly), within
    ``PAIR_PASS_SHARE`` of the time left; a pass with them that does not end in it is run again without them.
    Likewise the triples of piece types that can share a GPU (``_screen_triples``) replace the classes of 3
    members; a pass with them that does not end in its time is run again without them (and then without pairs).
    Each next count of levels is run while the last pass leaves ``NEXT_PASS_FACTOR`` times its time before
    ``deadline``, had at most ``NEXT_PASS_COLUMNS_MAX`` columns and the bound, rounded up, is below
    ``target_gpus`` (a plan's GPUs: no pass can raise the bound past it); the best pass's (seconds: all of them).
    ``on_pass`` is given the best so far after each pass that raised it and is followed by another (the proof
    worker sends it on: the bound need not wait for the last pass). ``stop()`` ends it as the deadline would: the best
    pass so far (a pass it cuts short still certifies what its last duals give)."""
    t0 = time.perf_counter()
    tab, bounds = items.table, items.bounds
    best: ClassBound | None = None
    pairs: np.ndarray | None = None
    triples: np.ndarray | None = None
    i = 0
    while i < len(CLASS_LEVELS):
        start = time.perf_counter()
        until = deadline if pairs is None else start + PAIR_PASS_SHARE * max(0.0, deadline - start)
        res = class_bound_at(tab, hw, bounds, cap, rows, until, CLASS_LEVELS[i], threads, pairs,
                             None if best is None else best.support, triples, stop)
        if res is not None and (best is None or res.value > best.value):
            best = res  # a pass cut short still certifies what its last duals give
        if stop():
            break
        if pairs is not None and (res is None or res.status != "Optimal"):  # too large for the time: without them
            if triples is not None:
                triples = None
            else:
                pairs = None
            continue
        took = time.perf_counter() - start
        done = best is not None and target_gpus is not None and math.ceil(best.value - 1e-6) >= target_gpus
        if (res is None or done or deadline - time.perf_counter() < NEXT_PASS_FACTOR * took
                or res.columns - (res.triples or 0) > NEXT_PASS_COLUMNS_MAX):  # the triples' do not grow with levels
            break
        if on_pass is not None and best is res:
            on_pass(replace(best, seconds=time.perf_counter() - t0, support=None))
        if i == 0:
            pairs = _screen_pairs(items, hw, cap, rows, deadline)
            triples = _screen_triples(items, hw, cap, rows, pairs, deadline)
        i += 1
    return None if best is None else replace(best, seconds=time.perf_counter() - t0, support=None)
