"""The master problem over the columns generated so far: min GPUs such that every workload is served.

Rows: per piece type t (``PieceType``: count_t pieces of one rate, of split option o(t) of its
workload) and per workload w,

    sum_p n_{t,p} y_p - count_t z_{w,o(t)} >= 0,        sum_o z_{w,o} = 1,

with y_p >= 0 the GPUs running configuration p, n_{t,p} its pieces of type t and z_{w,o} in
[0, 1] the choice of w's split option. The LP relaxation gives the duals pricing needs; the same
model with y integer and z binary is the price-and-branch MIP. Kept in one HiGHS instance so
that the LP re-solves from the last basis.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from igniter_opt.planner.exact.columns import Column, PieceSpace, column_key
from igniter_opt.planner.exact.lp import WATCHDOG_GRACE_S, RunResult, f64, highspy_module, int32, new_highs, run

# A solve HiGHS contradicted is re-solved without presolve only with at least this much of its limit left.
MIN_RETRY_S = 1.5


@dataclass(frozen=True)
class LpSolution:
    """The master LP's value, each piece type's dual (clipped at 0: the rows are >=) and status."""

    status: str
    objective: float | None
    duals: np.ndarray


@dataclass(frozen=True)
class IntegerSolution:
    """The price-and-branch MIP: GPUs per column (index into ``Master.columns``), the split option
    chosen per workload, and HiGHS's own objective and bound."""

    result: RunResult
    counts: dict[int, int]
    chosen: dict[int, Any]  # workload -> option (over a fleet: (type, option))
    note: str = ""  # what had to be done about HiGHS's answer, if anything
    contradicted: bool = False  # HiGHS reported an improving solution's objective that was not its own

    @property
    def cost(self) -> int:
        """GPUs of the solution as returned (every column costs one GPU)."""
        return sum(self.counts.values())


class Master:
    """The restricted master problem (see the module docstring)."""

    def __init__(self, space: PieceSpace, threads: int = 1) -> None:
        self.space = space
        self.threads = threads
        self.h = new_highs(threads)
        pieces = space.pieces
        inf = self.h.getInfinity()
        self.n_pieces = len(pieces)
        n_w = len(space.problem.workloads)
        n_rows = self.n_pieces + n_w
        lower = [0.0] * self.n_pieces + [1.0] * n_w
        upper = [inf] * self.n_pieces + [1.0] * n_w
        self.h.addRows(n_rows, f64(lower), f64(upper), 0, int32([0] * n_rows), int32([]), f64([]))
        of_option: dict[tuple[int, int], list[int]] = {}
        for t, p in enumerate(pieces):
            of_option.setdefault((p.workload, p.option), []).append(t)
        self.options = sorted(of_option)
        for w, o in self.options:
            mine = of_option[(w, o)]
            self.h.addCols(1, f64([0.0]), f64([0.0]), f64([1.0]), len(mine) + 1, int32([0]),
                           int32([*mine, self.n_pieces + w]), f64([*(-pieces[t].requirement for t in mine), 1.0]))
        self.columns: list[Column] = []
        self.keys: dict[tuple, int] = {}
        self._caps: np.ndarray | None = None  # the artificial columns' indices in ``h`` while capped
        self._raised: set[int] = set()  # variables whose lower bound ``raise_lower`` raised

    @property
    def capped(self) -> bool:
        """Whether the duals are capped (``cap_duals``)."""
        return self._caps is not None

    def cap_duals(self, caps: np.ndarray | None) -> None:
        """Cap every piece type's dual at ``caps[t]`` (stabilisation, ``stabilize``), or with None lift the
        caps. An artificial column per piece type covers one piece of it at cost caps[t], so the LP's duals
        meet pi_t <= caps[t]. While capped the LP's value is the capped master's (at most the restricted
        master's), not a value of the master; the integer master and ``lp_solution`` refuse. The artificial
        columns are deleted when the caps are lifted, so columns added meanwhile keep their indices."""
        n = self.n_pieces
        if caps is None:
            if self._caps is not None:
                self.h.deleteCols(n, int32(self._caps))
                self._caps = None
        elif self._caps is not None:
            self.h.changeColsCost(n, int32(self._caps), f64(caps))
        else:
            first = self.h.getNumCol()
            rows = np.arange(n)
            self.h.addCols(n, f64(caps), f64(np.zeros(n)), f64(np.full(n, self.h.getInfinity())), n, int32(rows),
                           int32(rows), f64(np.ones(n)))
            self._caps = np.arange(first, first + n)

    def caps_bind(self) -> bool:
        """Whether the last LP (capped) used an artificial column: if not, its value is the restricted
        master's too."""
        if self._caps is None:
            return False
        return bool(np.any(np.asarray(self.h.getSolution().col_value, float)[self._caps] > 1e-9))

    def _uncapped(self) -> None:
        if self.capped:
            raise RuntimeError("the master's duals are capped: lift the caps (cap_duals(None)) first")

    @property
    def offset(self) -> int:
        """Index of the first column variable (the option variables come first)."""
        return len(self.options)

    def add(self, cols: list[Column], cost: float = 1.0) -> list[int]:
        """Add the columns not there yet; returns the index of each given column."""
        out, new = [], []
        for c in cols:
            key = c.slots
            if key not in self.keys:
                self.keys[key] = len(self.columns)
                self.columns.append(c)
                new.append(c)
            out.append(self.keys[key])
        if new:
            starts = np.cumsum([0] + [len(c.coef) for c in new[:-1]])
            idx = [p for c in new for p, _ in c.coef]
            val = [a for c in new for _, a in c.coef]
            self.h.addCols(len(new), f64([cost] * len(new)), f64([0.0] * len(new)),
                           f64([self.h.getInfinity()] * len(new)), len(idx), int32(starts), int32(idx), f64(val))
        return out

    def index_of(self, slots: tuple) -> int | None:
        return self.keys.get(column_key(slots))

    def solve_lp(self, time_limit_s: float) -> LpSolution:
        res = run(self.h, time_limit_s, mip=False)
        if res.status != "Optimal":
            return LpSolution(res.status, None, np.zeros(self.n_pieces))
        duals = np.asarray(self.h.getSolution().row_dual, float)[: self.n_pieces]
        return LpSolution(res.status, res.objective, np.maximum(duals, 0.0))

    def lp_solution(self) -> tuple[np.ndarray, np.ndarray]:
        """The last LP solution's values: every split-option variable z (in ``options`` order), then every
        column variable y."""
        self._uncapped()
        x = np.asarray(self.h.getSolution().col_value, float)
        return x[: self.offset], x[self.offset:]

    def raise_lower(self, var: int, value: float) -> None:
        """Bound variable ``var`` (an index into the HiGHS columns: options first, then ``offset`` + column)
        below by ``value`` (a fixing of ``dive``), until ``lift_lowers``."""
        self.h.changeColBounds(int(var), float(value), self._upper(var))
        self._raised.add(int(var))

    def lift_lowers(self) -> None:
        """Every variable's lower bound back to 0 (undo ``raise_lower``)."""
        for var in sorted(self._raised):
            self.h.changeColBounds(var, 0.0, self._upper(var))
        self._raised.clear()

    def _upper(self, var: int) -> float:
        """Variable ``var``'s upper bound: 1 for a split option, none for a column."""
        return self.h.getInfinity() if var >= self.offset else 1.0

    def integer_mip(self) -> MasterMip:
        """The master as the integer master solves it, as arrays (``MasterMip``: for a copy on another core)."""
        self._uncapped()
        return master_mip(self.h)

    def solve_integer(self, time_limit_s: float, start: dict[int, int] | None, chosen: dict[int, int] | None,
                      mip_rel_gap: float) -> IntegerSolution:
        """y integer, z binary, from ``start`` (GPUs per column) and ``chosen`` (workload -> option)
        (``solve_integer_master``; every column costs one GPU)."""
        self._uncapped()
        return solve_integer_master(self.h, self.options, self.threads, time_limit_s, start, chosen, mip_rel_gap,
                                    lambda counts: float(sum(counts.values())))


def solve_integer_master(h: Any, options: Sequence[tuple[int, Hashable]], threads: int, time_limit_s: float,
                         start: dict[int, int] | None, chosen: Mapping[int, Hashable] | None, mip_rel_gap: float,
                         cost: Callable[[dict[int, int]], float]) -> IntegerSolution:
    """The master in ``h`` (option variables z for ``options`` (workload, option) first, then the
    columns) with every variable integer; ``start`` (GPUs per column) and ``chosen`` (workload ->
    option) are the incumbent; ``cost`` prices a solution's GPUs per column.

    HiGHS runs with its presolve and without the start: HiGHS 1.16 maps a start through presolve wrongly.
    Given one, it declared "optimal" at once with an objective below the start's own, and handed back the start
    (V100 n = 50 seed 0: 22 for the start's 25, where the optimum over those columns is 24; the benchmark's first
    integer master contradicted itself so on 17 of its 22 instances). Without the start, presolve proves the
    optimum fast (H100 n = 200 seed 0, 7 439 columns: 23 in 0.5 s, against 15.2 s without presolve and with
    the start); the incumbent is held by the caller, so nothing is lost when HiGHS finds nothing better.

    The objective is still recomputed from the solution HiGHS hands back; where it differs from HiGHS's, or
    an improving solution's did (``_ObjectiveCheck`` stops that run at once), the master is re-solved without
    presolve and with the start in the time left, when at least ``MIN_RETRY_S`` is left (else the solution
    returned stands, its objective recomputed).
    """
    t0 = time.perf_counter()
    sol = _integer_run(h, options, threads, None, None, mip_rel_gap, time_limit_s, presolve=True)
    wrong = sol.result.objective is not None and abs(sol.result.objective - cost(sol.counts)) > 1e-6
    if wrong or sol.contradicted:  # the run was stopped at a contradiction, whatever it handed back at the end
        said = (f"HiGHS reported {sol.result.objective:g} for a solution of {cost(sol.counts):g}" if wrong
                else "HiGHS reported an improving solution's objective that was not its own")
        left = time_limit_s - (time.perf_counter() - t0)
        if left < MIN_RETRY_S:  # a retry could end past the limit (HiGHS's watchdog cancels it late)
            return replace(sol, note=f"{said}; too little time left to re-solve without presolve")
        retry = _integer_run(h, options, threads, start, chosen, mip_rel_gap, left - WATCHDOG_GRACE_S,
                             presolve=False)
        return replace(retry, note=f"{said}; re-solved without presolve")
    return sol


def _integer_run(master: Any, options: Sequence[tuple[int, Hashable]], threads: int, start: dict[int, int] | None,
                 chosen: Mapping[int, Hashable] | None, mip_rel_gap: float, time_limit_s: float, presolve: bool
                 ) -> IntegerSolution:
    t0 = time.perf_counter()  # copying the model counts against the limit (25 000 columns at 1000 workloads)
    lp = master.getLp()
    offset = len(options)
    h = new_highs(threads)
    lp.integrality_ = [highspy_module().HighsVarType.kInteger] * lp.num_col_
    h.passModel(lp)
    if start is not None:
        values = np.zeros(lp.num_col_)
        for z, (w, o) in enumerate(options):
            values[z] = 1.0 if chosen and chosen.get(w) == o else 0.0
        for j, n in start.items():
            values[offset + j] = n
        h.setSolution(lp.num_col_, int32(np.arange(lp.num_col_)), f64(values))
    res, x, contradicted = _mip_run(h, np.asarray(lp.col_cost_, float), mip_rel_gap, presolve, 0,
                                    time_limit_s - (time.perf_counter() - t0))
    return integer_solution(options, res, x, contradicted)


def integer_solution(options: Sequence[tuple[int, Hashable]], res: RunResult, x: np.ndarray | None,
                     contradicted: bool) -> IntegerSolution:
    """A master MIP's rounded solution ``x`` (option variables for ``options`` first, then the columns) as GPUs per
    column and the option chosen per workload."""
    if x is None:
        return IntegerSolution(res, {}, {}, contradicted=contradicted)
    offset = len(options)
    counts = {j: int(v) for j, v in enumerate(x[offset:]) if v > 0}
    picked = {w: o for z, (w, o) in enumerate(options) if x[z] > 0}
    return IntegerSolution(res, counts, picked, contradicted=contradicted)


def _mip_run(h: Any, cost: np.ndarray, mip_rel_gap: float, presolve: bool, seed: int, time_limit_s: float
             ) -> tuple[RunResult, np.ndarray | None, bool]:
    """The MIP loaded in ``h`` (of column costs ``cost``) run with HiGHS's random seed ``seed``: its result, its
    solution rounded (None without one), and whether HiGHS contradicted itself (``_ObjectiveCheck``)."""
    h.setOptionValue("mip_rel_gap", float(mip_rel_gap))
    h.setOptionValue("random_seed", int(seed))
    if not presolve:
        h.setOptionValue("presolve", "off")
    check = _ObjectiveCheck(cost)
    h.cbMipImprovingSolution.subscribe(check.improving)
    h.cbMipInterrupt.subscribe(check.interrupt)
    res = run(h, time_limit_s, mip=True)
    if res.objective is None:
        return res, None, check.mismatch
    return res, np.rint(np.asarray(h.getSolution().col_value, float)).astype(int), check.mismatch


@dataclass(frozen=True)
class MasterMip:
    """An integer master as arrays, column-wise (picklable, unlike HiGHS's model): what the proof worker needs to
    run a copy of the integer master with a random seed of its own (``proofworker.MasterTask``)."""

    cost: np.ndarray
    col_lower: np.ndarray
    col_upper: np.ndarray
    row_lower: np.ndarray
    row_upper: np.ndarray
    start: np.ndarray  # column j's entries are index/value[start[j]:start[j + 1]]
    index: np.ndarray
    value: np.ndarray

    def solve(self, threads: int, time_limit_s: float, mip_rel_gap: float, seed: int,
              stop: Callable[[], bool] | None = None) -> tuple[RunResult, np.ndarray | None, bool]:
        """Every variable integer, with presolve and no start (as ``solve_integer_master``'s first run), HiGHS's
        random seed ``seed``, until ``stop()`` (asked at HiGHS's MIP interrupt checks: a cancel from another thread
        before the run begins would be lost). As ``_mip_run``."""
        h = new_highs(threads)
        n, m = self.cost.size, self.row_lower.size
        h.passModel(n, m, int(self.index.size), int(highspy_module().MatrixFormat.kColwise),
                    int(highspy_module().ObjSense.kMinimize), 0.0, f64(self.cost), f64(self.col_lower),
                    f64(self.col_upper), f64(self.row_lower), f64(self.row_upper), int32(self.start[:-1]),
                    int32(self.index), f64(self.value), np.ones(n, np.int32))
        if stop is not None:
            h.cbMipInterrupt.subscribe(lambda event: event.interrupt() if stop() else None)
        return _mip_run(h, self.cost, mip_rel_gap, True, seed, time_limit_s)


def master_mip(master: Any) -> MasterMip:
    """The master in ``master`` (a HiGHS instance) as a ``MasterMip``."""
    lp = master.getLp()
    a = lp.a_matrix_
    if a.format_ != highspy_module().MatrixFormat.kColwise:  # HiGHS keeps the master column-wise (columns enter)
        raise ValueError("the master's matrix is not column-wise")
    start = np.asarray(a.start_, np.int64)
    return MasterMip(np.asarray(lp.col_cost_, float), np.asarray(lp.col_lower_, float),
                     np.asarray(lp.col_upper_, float), np.asarray(lp.row_lower_, float),
                     np.asarray(lp.row_upper_, float), start, np.asarray(a.index_, np.int64)[:start[-1]],
                     np.asarray(a.value_, float)[:start[-1]])


class _ObjectiveCheck:
    """HiGHS callbacks that interrupt a MIP run once an improving solution's reported objective is not
    the objective of the solution itself (a relative 1e-6 apart): the run's answer is then not to be
    trusted, and ``solve_integer_master`` re-solves without presolve."""

    def __init__(self, cost: np.ndarray) -> None:
        self.cost = cost
        self.mismatch = False

    def improving(self, event: Any) -> None:
        x = np.asarray(event.data_out.mip_solution, float)
        reported = float(event.data_out.objective_function_value)
        if x.size == self.cost.size and abs(reported - float(self.cost @ x)) > 1e-6 * max(1.0, abs(reported)):
            self.mismatch = True

    def interrupt(self, event: Any) -> None:
        if self.mismatch:
            event.interrupt()
