"""Column generation: the master LP's bound, certified, and price-and-branch plans.

1. ``prepare_colgen``: piece types (``pieces``), items (``items``), heuristic entries, the start
   (the greedy plan) as columns, and every piece type alone as a column.
2. ``generate``: re-solve the master LP (its duals capped in the first rounds: ``stabilize``); price with the
   kernel heuristic (``heuristic.grow``) and by enumerating pairs (``pairs``: the pairs worth more than a GPU,
   and the best pairs grown by the heuristic) while they find columns worth more than a GPU at the duals; when
   they find none, above ``MIP_MAX_ITEMS`` items, by point pricing (``points``: box pricing's knapsack at
   guessed points of the environment, a heuristic); then, within a share of the time left, price with the
   pricing MIP (``pricing.price_mip``) on small instances and by branch and bound over boxes
   (``boxes.box_kappa``: a bound on every configuration's worth, and the configurations found on the way,
   grown by the heuristic) where the MIP leaves the pricing problem open or did not run (``_exact_round``). Every
   master LP's duals give a certified bound (Farley): with duals pi >= 0 and kappa >= every column's
   worth sum_t pi_t n_{t,p} (the relaxation's bound, ``relaxed.relaxed_bound``, after every LP, stopped at
   its first level where it could not raise the bound in whole GPUs; at an exact pricing the least of it, the
   boxes' and the pricing MIP's dual bound),

       GPUs >= D(pi) / max(1, kappa),    D(pi) = sum_w min_o sum_{t in o} count_t pi_t,

   because pi / max(1, kappa) is feasible for the master's dual. The LP is solved to optimality
   when either kappa <= 1.
3. ``Master.solve_integer``: the master over the columns generated, y integer (price-and-branch),
   warm-started with the start; ``packing_of`` turns its solution into a packing.

The bound is a bound over the split options the piece types describe (``pieces.scope_text``).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from igniter_opt.domain import PlanningProblem
from igniter_opt.placement import Demand, GpuPacking, Packing, Slot
from igniter_opt.placement.alloc import ConfigTerms
from igniter_opt.placement.serving import ServingModel
from igniter_opt.planner import greedy
from igniter_opt.planner.exact.boxes import BoxPricing, BoxResult, box_kappa
from igniter_opt.planner.exact.classbound import ClassBound, PieceRows, class_bound
from igniter_opt.planner.exact.classbound import dual_value as rows_dual_value
from igniter_opt.planner.exact.columns import ColSlot, Column, PieceSpace, column_worth, evaluate
from igniter_opt.planner.exact.heuristic import Entries, extend, grow, make_entries, ranked_entries
from igniter_opt.planner.exact.items import (
    Items,
    build_items,
    check_company_never_helps,
    check_deadline,
    fewest_replicas,
    least_units_alone,
    piece_tables,
    trivial_bound,
)
from igniter_opt.planner.exact.items import least_units as items_least_units
from igniter_opt.planner.exact.lp import WATCHDOG_GRACE_S
from igniter_opt.planner.exact.master import Master
from igniter_opt.planner.exact.pairs import PairTable
from igniter_opt.planner.exact.pieces import PieceType, piece_types
from igniter_opt.planner.exact.points import point_candidates
from igniter_opt.planner.exact.pricing import price_mip
from igniter_opt.planner.exact.proofworker import ClassDone, ClassTask, MasterDone, ProofWorker, worker_wanted
from igniter_opt.planner.exact.relaxed import RelaxedPricing, prepare_relaxed, relaxed_bound
from igniter_opt.planner.exact.stabilize import DualCaps

log = logging.getLogger(__name__)

# A column must be worth more than a GPU by this much at the duals to enter the master.
IMPROVE_EPS = 1e-7
# Pairs grown into larger configurations per round of pair pricing, and the entries tried on each.
GROWN_PAIRS = 64
GROW_CANDIDATES = 256
# Box pricing stops once it has found this many configurations worth more than a GPU, hands the kernel
# at most BOX_COLUMNS of them and grows the best BOX_SEEDS. The pricing MIP runs (before it) only on
# instances of at most MIP_MAX_ITEMS items: it proves those fast, and larger ones rarely in time
# (docs/exact.md).
BOX_ENOUGH = 24
BOX_COLUMNS = 48
BOX_SEEDS = 32
MIP_MAX_ITEMS = 1500
# Share of the time left that one exact pricing may take, and one round of point pricing.
PRICING_SHARE = 0.4
POINT_SHARE = 0.25
# Share of the time left that one proof round may take (``_proof_round``), and the proof's target lowered
# by this (relative) so that the kappa it returns, raised for float noise, still lifts the bound.
PROOF_SHARE = 0.5
PROOF_MARGIN_REL = 1e-8
# A proof round's duals: the mean of the last PROOF_AVERAGE master LPs' duals. Farley's bound holds at any
# duals >= 0; D is concave and kappa convex in them, so a mean of duals that oscillate from LP to LP bounds
# better than the last alone (H100 n = 50 seed 1: proven at the mean of 10, not at the last; docs/exact.md).
PROOF_AVERAGE = 10
# A proof round is begun only when the last round's root boxes took at most this share of the time left, and
# never after a round whose roots did not end in its limit; the first round, their time unknown, runs at most
# PROOF_FIRST_S. At 1000 workloads on the H100 a first round had spent 145 s of its 290 s limit on roots it
# did not finish.
PROOF_ROOTS_SHARE = 0.25
PROOF_FIRST_S = 15.0
# A proof round stops at the first configuration worth more than its target: no proof at these duals then.
PROOF_ENOUGH = 1
# No exact pricing is started with less time than this to run in.
MIN_PRICING_S = 0.1
# The member-class bound (``classbound``) gets this share of the time to the end of generation on the
# worker's core (at 1000 H100 workloads its first pass took 161 s alone, 2-3 times that beside generation),
# and this share of it in this process where there is no worker (it then delays generation).
CLASS_SHARE = 0.8
CLASS_SHARE_HERE = 0.25
# The bound in GPUs is rounded up after subtracting this (float noise only: it lowers the bound).
ROUND_EPS = 1e-6


@dataclass(frozen=True)
class ColgenSetup:
    """Everything column generation needs, computed once."""

    space: PieceSpace
    items: Items
    terms: ConfigTerms
    entries: Entries
    start_columns: list[tuple[Column, int]]  # the start's GPU configurations and how many GPUs run each
    start_choice: dict[int, int]  # workload -> split option the start uses
    trivial_gpus: int  # ceil(sum_w min_o sum_{t in o} count_t least units_t / 100 %)
    relaxed: RelaxedPricing  # the relaxation bounding every configuration's worth (``relaxed``)
    pairs: PairTable  # which piece types can share a GPU in pairs (``pairs``)
    boxes: BoxPricing  # the branch and bound bounding every configuration's worth (``boxes``)

    @property
    def pieces(self) -> tuple[PieceType, ...]:
        return self.space.pieces


def start_pieces(problem: PlanningProblem, pieces: tuple[PieceType, ...], packing: Packing
                 ) -> tuple[dict[int, int], dict[int, int]]:
    """(demand -> piece type, workload -> option) for a start packing whose every workload is split
    as one of its options (the greedy plan always is: ``pieces.split_options``)."""
    index = {w.name: i for i, w in enumerate(problem.workloads)}
    demands_of: dict[int, list[int]] = {}
    for i, d in enumerate(packing.demands):
        demands_of.setdefault(index[d.workload.name], []).append(i)
    options_of: dict[int, dict[int, list[int]]] = {}
    for t, p in enumerate(pieces):
        options_of.setdefault(p.workload, {}).setdefault(p.option, []).append(t)
    piece_of: dict[int, int] = {}
    choice: dict[int, int] = {}
    for w, ds in demands_of.items():
        for o, mine in sorted(options_of.get(w, {}).items()):
            got = _assign(pieces, mine, [packing.demands[i].rate_rps for i in ds])
            if got is not None:
                choice[w] = o
                piece_of.update(zip(ds, got, strict=True))
                break
    return piece_of, choice


def _assign(pieces: tuple[PieceType, ...], mine: list[int], rates: list[float]) -> list[int] | None:
    """Each rate's piece type when the rates are exactly option ``mine``'s pieces, else None."""
    need = {t: pieces[t].count for t in mine}
    out = []
    for r in rates:
        t = next((t for t in mine if need[t] > 0 and math.isclose(pieces[t].rate_rps, r, rel_tol=1e-9)), None)
        if t is None:
            return None
        need[t] -= 1
        out.append(t)
    return out if all(v == 0 for v in need.values()) else None


def packing_columns(space: PieceSpace, packing: Packing, piece_of: dict[int, int]) -> list[tuple[Column, int]]:
    """The GPUs of ``packing`` whose every demand has a piece type (``piece_of``) as columns, with how
    many GPUs run each."""
    slots = [[ColSlot(piece_of[s.demand], s.batch, s.units, s.queue_delay_ms) for s in g.slots]
             for g in packing.gpus if all(s.demand in piece_of for s in g.slots)]
    counts: dict[tuple, tuple[Column, int]] = {}
    for col in evaluate(space, slots):
        if col is not None:
            prev = counts.get(col.slots)
            counts[col.slots] = (col, (prev[1] if prev else 0) + 1)
    return list(counts.values())


def prepare_colgen(problem: PlanningProblem, rule: ServingModel, start: Packing, deadline: float = math.inf
                   ) -> ColgenSetup:
    """Piece types, items, entries and the start as columns. Raises ``ProblemError`` for a
    workload that cannot be served or a profile the bound's assumptions do not hold for, and
    ``PreparationTimedOut`` past ``deadline`` (checked between its steps, and within ``build_items`` and
    ``prepare_relaxed``)."""
    check_company_never_helps(problem)
    perf = problem.perf_model
    pieces = piece_types(problem, start.demands, fewest_replicas(problem, rule, deadline))
    items = build_items(problem, rule, pieces, deadline)
    trivial = trivial_bound(pieces, items.least_units, perf.max_units)
    space = PieceSpace(problem, rule, pieces)
    terms = ConfigTerms(perf, greedy.batch_limit(problem), perf.max_units)
    entries = make_entries(space, items, terms)
    check_deadline(deadline, trivial)
    piece_of, choice = start_pieces(problem, pieces, start)
    start_columns = packing_columns(space, start, piece_of)
    check_deadline(deadline, trivial)
    relaxed = prepare_relaxed(space, items, lambda: check_deadline(deadline, trivial))
    pairs = PairTable(space, items)
    check_deadline(deadline, trivial)
    return ColgenSetup(space, items, terms, entries, start_columns, choice, trivial, relaxed, pairs,
                       BoxPricing(space, items))


def least_units(pieces: tuple[PieceType, ...], items: Items) -> dict[int, float]:
    """Per workload: the least share units any of its split options needs, each piece alone on a GPU
    (the terms the trivial bound sums), from ``Items.least_units``."""
    return items_least_units(pieces, items.least_units)


def workload_least_units(problem: PlanningProblem, rule: ServingModel) -> list[float]:
    """``least_units`` of every workload of ``problem``, over the split options the set-partitioning
    bound covers (``pieces.scope_text``): what a GPU type's trivial bound sums, for bounds over a fleet.
    Refuses (``ProblemError``) a profile on which company could speed a workload up, as the bound does."""
    check_company_never_helps(problem)
    pieces = piece_types(problem, greedy.initial_demands(problem), fewest_replicas(problem, rule))
    per = items_least_units(pieces, least_units_alone(piece_tables(problem, rule, pieces)))
    return [float(per[i]) for i in range(len(problem.workloads))]


def dual_value(pieces: tuple[PieceType, ...], duals: np.ndarray) -> float:
    """D(pi) = sum_w min_o sum_{t in o} count_t pi_t: the master dual's objective (``classbound.dual_value``)."""
    return rows_dual_value(piece_rows(pieces), duals)


def piece_rows(pieces: tuple[PieceType, ...]) -> PieceRows:
    """What the member-class bound (and ``dual_value``) needs of the piece types."""
    return PieceRows(np.array([p.workload for p in pieces], np.int64), np.array([p.option for p in pieces], np.int64),
                     np.array([p.count for p in pieces], np.int64))


@dataclass
class PricingClock:
    """How far past its limit an exact pricing has run (HiGHS checks its limit between phases only, and
    the watchdog of ``lp.run`` cancels it ``WATCHDOG_GRACE_S`` late; a cancel can take longer still):
    each turn keeps that much of the time left in reserve. Box pricing bounds its root boxes however short
    its limit (its kappa needs them all): no turn is begun with a limit below the longest that took."""

    overrun_s: float = WATCHDOG_GRACE_S
    least_s: float = MIN_PRICING_S  # the shortest limit a turn is begun with

    def timed(self, run: Callable[[float], bool], limit_s: float) -> bool:
        t0 = time.perf_counter()
        try:
            return run(limit_s)
        finally:
            self.overrun_s = max(self.overrun_s, time.perf_counter() - t0 - limit_s)


@dataclass
class ColgenState:
    """What column generation has found so far (GPU counts; the caller prices them)."""

    master: Master
    lp_value: float | None = None
    bound: float = 0.0  # the best certified bound (fractional GPUs)
    converged: bool = False  # the last exact pricing found no column worth more than a GPU
    pricing_rounds: int = 0
    pricing_s: float = 0.0
    relaxed_calls: int = 0
    relaxed_s: float = 0.0
    relaxed_skipped: int = 0  # calls stopped early: at their first level (nothing they could raise) or deadline
    relaxed_level: int = 0  # the relaxation's level of the largest bound last time (probed first)
    iterations: int = 0
    notes: list[str] = field(default_factory=list)
    clock: PricingClock = field(default_factory=PricingClock)
    heuristic_max_s: float = 0.0  # the longest round of kernel pricing so far
    point_rounds: int = 0
    point_s: float = 0.0
    step_max_s: float = 0.0  # the longest master LP solve and relaxed bound so far
    proof_rounds: int = 0
    proof_won: int = 0  # proof rounds that raised the bound by a GPU
    proof_s: float = 0.0
    proof_after: float = 0.0  # no proof round begins before this time (``time.perf_counter()``)
    proof_roots_s: float = 0.0  # how long the last proof round's root boxes took (or would have)
    recent_duals: deque[np.ndarray] = field(default_factory=lambda: deque(maxlen=PROOF_AVERAGE))  # uncapped LPs'
    proofs: ProofWorker | None = None  # runs the proof rounds on another core (``proofworker``), if set
    proof_end: float = math.inf  # no worker's proof round runs past this (``time.perf_counter()``)
    worker_pricing_rounds: int = 0  # the worker's rounds of box pricing at an LP's duals (``_submit_proof``)
    worker_pricing_s: float = 0.0
    # cap the duals in the first rounds (``stabilize``); None: above MIP_MAX_ITEMS items only (below, the
    # pricing MIP proves the LP in a few rounds, and capped rounds delayed it: the default problem 5.0 -> 7.9 s)
    stabilize: bool | None = None
    caps: DualCaps | None = None  # the caps' state, from the first ``generate``
    class_where: str = ""  # where the member-class bound ran ("": it did not, or has not ended)
    class_result: ClassBound | None = None  # and what it gave (None: nothing in its time)
    rival: MasterDone | None = None  # the worker's copy of the integer master, answered and not yet taken
    # the master LP over the columns, rounded up, reached the certified bound: Farley's bound (every proof's and
    # pricing's) is at most the master LP's optimum, at most that LP, so generation can no longer raise the
    # bound, only bring columns for a plan (``generate``'s ``until_settled``)
    settled: bool = False

    @property
    def bound_gpus(self) -> int:
        return max(0, math.ceil(self.bound - ROUND_EPS))


Progress = Callable[[ColgenState], None]


def initial_master(setup: ColgenSetup, threads: int) -> Master:
    """The master with ``initial_columns``."""
    master = Master(setup.space, threads)
    master.add(initial_columns(setup))
    return master


def initial_columns(setup: ColgenSetup) -> list[Column]:
    """The start's columns, then every piece type's entries alone."""
    ent = setup.entries
    singles = [[ColSlot(int(ent.piece[e]), int(ent.batch[e]), int(ent.units[e]),
                        None if np.isnan(ent.delay[e]) else float(ent.delay[e]))] for e in range(ent.piece.size)]
    return [c for c, _ in setup.start_columns] + [c for c in evaluate(setup.space, singles) if c is not None]


def kernel_columns(setup: ColgenSetup, duals: np.ndarray, deadline: float = math.inf) -> list[Column]:
    """Kernel pricing: the feasible configurations the heuristic grows at these duals, then pair pricing's
    (``pair_columns``), improving or not; what they found by ``deadline`` if it comes first."""
    slots = grow(setup.space, setup.entries, setup.terms, duals, deadline=deadline)
    grown = [c for c in evaluate(setup.space, slots) if c is not None]
    return grown + pair_columns(setup, duals, deadline)


def pair_columns(setup: ColgenSetup, duals: np.ndarray, deadline: float = math.inf) -> list[Column]:
    """Pair pricing: the best pairs worth more than a GPU (``pairs.PairTable``), and the ``GROWN_PAIRS``
    best pairs however little they are worth, grown by the kernel heuristic (``heuristic.extend``); what
    was found by ``deadline`` if it comes first."""
    slots = setup.pairs.slots(duals, 1.0 + IMPROVE_EPS, deadline=deadline)
    slots += grown_slots(setup, duals, setup.pairs.best(duals, 0.0, GROWN_PAIRS, deadline), deadline)
    return [c for c in evaluate(setup.space, slots) if c is not None]


def grown_slots(setup: ColgenSetup, duals: np.ndarray, seeds: np.ndarray, deadline: float = math.inf
                ) -> list[list[ColSlot]]:
    """Each seed (a row of item indices that fit together) grown member by member by the kernel heuristic
    (``heuristic.extend``) over the ``GROW_CANDIDATES`` entries worth most per unit."""
    if seeds.size == 0:
        return []
    space, items = setup.space, setup.items
    ent = setup.entries.joined(make_entries(space, items, setup.terms, seeds.ravel()))
    first = setup.entries.piece.size + np.arange(seeds.size).reshape(seeds.shape)
    return extend(space, ent, setup.terms, duals, first, ranked_entries(setup.entries, duals)[:GROW_CANDIDATES],
                  deadline=deadline)


def heuristic_round(setup: ColgenSetup, master: Master, duals: np.ndarray, deadline: float = math.inf
                     ) -> tuple[int, float]:
    """One round of kernel pricing (``kernel_columns``, cut at ``deadline``): how many improving columns
    entered the master, and the most any configuration it found is worth (a floor of kappa)."""
    worth = [(column_worth(c, duals), c) for c in kernel_columns(setup, duals, deadline)]
    before = len(master.columns)
    master.add([c for w, c in worth if w > 1.0 + IMPROVE_EPS])
    return len(master.columns) - before, max((w for w, _ in worth), default=0.0)


def point_columns(setup: ColgenSetup, duals: np.ndarray, deadline: float) -> list[Column]:
    """Point pricing (``points.point_candidates``) until ``deadline``: the multisets it finds, and the best
    ``BOX_SEEDS`` of them grown by the kernel heuristic, as the kernel judges them."""
    found = point_candidates(setup.boxes, duals, 1.0 + IMPROVE_EPS, deadline)
    return [c for c in evaluate(setup.space, _with_grown(setup, duals, found)) if c is not None]


def _improving_columns(setup: ColgenSetup, slots: list[list[ColSlot]], duals: np.ndarray) -> list[Column]:
    """The configurations ``slots`` that the kernel accepts and that are worth more than a GPU at ``duals``."""
    return [c for c in evaluate(setup.space, slots) if c is not None and column_worth(c, duals) > 1.0 + IMPROVE_EPS]


def _with_grown(setup: ColgenSetup, duals: np.ndarray, found: list[tuple[float, tuple[int, ...]]]
                ) -> list[list[ColSlot]]:
    """The ``BOX_COLUMNS`` best multisets found (worth, item indices) as slot lists, then the best
    ``BOX_SEEDS`` grown by the kernel heuristic (``grown_slots``)."""
    slots = [setup.boxes.slots(m) for _, m in found[:BOX_COLUMNS]]
    for size in sorted({len(m) for _, m in found[:BOX_SEEDS]}):
        seeds = np.array([m for _, m in found[:BOX_SEEDS] if len(m) == size], np.intp)
        slots += grown_slots(setup, duals, seeds)
    return slots


def _point_round(setup: ColgenSetup, state: ColgenState, duals: np.ndarray, deadline: float) -> int:
    """One round of point pricing within ``POINT_SHARE`` of the time to ``deadline``: how many improving
    columns entered the master. ``generate`` runs it only above ``MIP_MAX_ITEMS`` items: below, the pricing
    MIP that comes next finds the best column and proves it in a second or two."""
    t0 = time.perf_counter()
    cols = point_columns(setup, duals, t0 + POINT_SHARE * max(0.0, deadline - t0))
    good = [c for c in cols if column_worth(c, duals) > 1.0 + IMPROVE_EPS]
    before = len(state.master.columns)
    state.master.add(good)
    state.point_rounds += 1
    state.point_s += time.perf_counter() - t0
    log.debug("point pricing: %d column(s) worth more than a GPU in %.2f s", len(good), time.perf_counter() - t0)
    return len(state.master.columns) - before


def relaxed_round(setup: ColgenSetup, state: ColgenState, duals: np.ndarray, capped: bool = False,
                  deadline: float = math.inf) -> float:
    """The relaxation's bound on every configuration's worth at ``duals`` (``relaxed.relaxed_bound``);
    raises the certified bound with it. Marks the LP solved when no configuration can be worth more
    than a GPU, unless the duals are ``capped`` (they are not the master's: the bound holds, the LP may
    not be solved). Returns inf, its levels left uncomputed, where a level already shows kappa too large
    to do either (``useful_kappa``), or at ``deadline`` (the first call has no time of its own to go by:
    2.8 s at 300 workloads on the H100)."""
    t0 = time.perf_counter()
    value = dual_value(setup.pieces, duals)
    found = relaxed_bound(setup.relaxed, duals, useful_kappa(setup, state, value), state.relaxed_level, deadline)
    state.relaxed_s += time.perf_counter() - t0
    state.relaxed_calls += 1
    state.relaxed_level = found.level
    if math.isinf(found.kappa):
        state.relaxed_skipped += 1
        return found.kappa
    state.bound = max(state.bound, value / max(1.0, found.kappa))
    if found.kappa <= 1.0 + IMPROVE_EPS and not capped:
        state.converged = True
    return found.kappa


def useful_kappa(setup: ColgenSetup, state: ColgenState, value: float) -> float:
    """The kappa below which Farley's bound D(pi) / kappa (``value``: D(pi)) would raise the certified bound
    in whole GPUs (the trivial bound's included), or prove the LP solved (kappa <= 1): a larger kappa
    changes nothing reported."""
    floor = certified_gpus(setup, state)
    return max(1.0 + IMPROVE_EPS, value / (floor + ROUND_EPS)) if floor > 0 else math.inf


def least_fraction(setup: ColgenSetup) -> np.ndarray:
    """Each piece type's least share alone, as a fraction of a GPU (what the dual caps scale)."""
    return setup.items.least_units / setup.space.problem.perf_model.max_units


def _start_caps(setup: ColgenSetup, state: ColgenState) -> None:
    """Cap the master's duals if stabilisation is on and not over (``stabilize``)."""
    on = len(setup.items.table) > MIP_MAX_ITEMS if state.stabilize is None else state.stabilize
    if on and state.caps is None:
        state.caps = DualCaps(least_fraction(setup))
    if state.caps is not None and not state.caps.done:
        state.master.cap_duals(state.caps.caps())


def _grow_caps(state: ColgenState, added: int) -> None:
    """After a round of kernel pricing at capped duals that added ``added`` columns: the caps grow, or are
    lifted for good (``DualCaps.after_round``)."""
    caps = state.caps
    assert caps is not None
    if caps.after_round(added):
        state.master.cap_duals(None if caps.done else caps.caps())


def _end_caps(state: ColgenState) -> None:
    """Lift the caps (``generate`` returns with the true master; the next call caps again where the caps
    have not grown to their end)."""
    state.master.cap_duals(None)


def _exact_round(setup: ColgenSetup, state: ColgenState, duals: np.ndarray, limit_s: float, threads: int,
                 relaxed: float = math.inf) -> bool:
    """Exact pricing within ``limit_s``: on an instance of at most ``MIP_MAX_ITEMS`` items the pricing MIP
    (``pricing.price_mip``) first; then, where it neither solved the pricing problem nor found a column (or
    did not run), box pricing (``boxes.box_kappa``) in the time left. Raises the certified bound with the
    least kappa found (``relaxed``: the relaxation's at these duals, also valid); adds the improving
    columns found. True if it added one."""
    t0 = time.perf_counter()
    deadline = t0 + limit_s
    kappa, solved, proven = relaxed, False, False
    good: list[Column] = []
    if len(setup.items.table) <= MIP_MAX_ITEMS:
        kappa, solved, proven, good = _mip_pricing(setup, duals, limit_s, threads, kappa)
    if not solved and not good and deadline - time.perf_counter() >= state.clock.least_s:
        kappa, proven, good = _box_pricing(setup, state, duals, deadline, kappa)
    state.pricing_s += time.perf_counter() - t0
    state.pricing_rounds += 1
    best = max((column_worth(c, duals) for c in [*state.master.columns, *good]), default=0.0)
    kappa = max(kappa, best)
    if math.isfinite(kappa):
        state.bound = max(state.bound, dual_value(setup.pieces, duals) / max(1.0, kappa))
    if proven:
        state.converged = True
        return False
    before = len(state.master.columns)
    state.master.add(good)
    return len(state.master.columns) > before


def _mip_pricing(setup: ColgenSetup, duals: np.ndarray, limit_s: float, threads: int, kappa: float
                 ) -> tuple[float, bool, bool, list[Column]]:
    """The pricing MIP: (the least kappa, whether HiGHS proved its optimum, whether the LP is proven
    solved, the improving column found)."""
    res = price_mip(setup.space, setup.items, duals, limit_s, threads)
    col = evaluate(setup.space, [res.slots])[0] if res.slots else None
    good = [col] if col is not None and column_worth(col, duals) > 1.0 + IMPROVE_EPS else []
    return min(kappa, res.worth_bound), res.proven, res.proven and res.worth_bound <= 1.0 + IMPROVE_EPS, good


def _box_pricing(setup: ColgenSetup, state: ColgenState, duals: np.ndarray, deadline: float, kappa: float
                 ) -> tuple[float, bool, list[Column]]:
    """Box pricing: (the least kappa, whether the LP is proven solved, the improving columns found: the
    best configurations the boxes found, and the best of them grown by the kernel heuristic). Records
    how long its root boxes took as the shortest limit a later turn is begun with."""
    t0 = time.perf_counter()
    found = box_kappa(setup.boxes, duals, 1.0 + IMPROVE_EPS, deadline, enough=BOX_ENOUGH)
    state.clock.least_s = max(state.clock.least_s, found.roots_s)
    good = _improving_columns(setup, _with_grown(setup, duals, found.candidates), duals)
    log.debug("box pricing: kappa %.4f after %d box(es) in %.2f s, %d column(s) worth more than a GPU", found.kappa,
              found.nodes, time.perf_counter() - t0, len(good))
    return min(kappa, found.kappa), found.proven, good


def _proof_round(setup: ColgenSetup, state: ColgenState, duals: np.ndarray, deadline: float, found: float) -> bool:
    """Box pricing aimed at the next whole GPU of the bound rather than at the LP's optimum: at the mean of
    the recent LPs' duals (``PROOF_AVERAGE``), every configuration's worth bounded by ``useful_kappa`` (not by
    one GPU), which raises the certified bound by a GPU even though columns worth more than a GPU are left.
    Not run while a configuration found is worth that much: at the LP's ``duals`` (``found``: the most the
    kernel heuristic found, against the target there), or a column of the master at the mean. Runs within
    ``PROOF_SHARE`` of the time left (the first round: at most ``PROOF_FIRST_S``), when the last round's
    root boxes took at most ``PROOF_ROOTS_SHARE`` of it (none after a round whose roots did not end), and
    stops at the first configuration worth more than the target (no proof at these duals then). A round that
    fails waits as long as it took before the next. Adds the improving configurations found (at the LP's
    duals); True if the bound rose. With a worker (``state.proofs``) the round is handed to it instead
    (``_submit_proof``) and False returned: its result comes through ``collect_proof``."""
    if state.proofs is not None:
        _submit_proof(setup, state, duals, found)
        return False
    t0 = time.perf_counter()
    limit = PROOF_SHARE * (deadline - t0)
    if not state.proof_roots_s:  # the first round: its roots' time unknown
        limit = min(limit, PROOF_FIRST_S)
    if (t0 < state.proof_after or limit < state.clock.least_s
            or state.proof_roots_s > PROOF_ROOTS_SHARE * (deadline - t0)
            or _proof_needless(setup, state, duals, found)):
        return False
    task = _proof_task(setup, state, duals)
    if task is None:
        return False
    point, value, target = task
    res = box_kappa(setup.boxes, point, target, t0 + limit, enough=PROOF_ENOUGH)
    took = time.perf_counter() - t0
    won = _apply_proof(setup, state, value, res, duals, took)
    state.proof_after = t0 if won else time.perf_counter() + took
    return won


def _proof_needless(setup: ColgenSetup, state: ColgenState, duals: np.ndarray, found: float) -> bool:
    """No proof round: the last one's roots did not end in its limit (none will in less), or the kernel
    heuristic found a configuration worth the target at the LP's ``duals`` (the LP is far from solved)."""
    return math.isinf(state.proof_roots_s) or found >= useful_kappa(setup, state, dual_value(setup.pieces, duals))


def _proof_task(setup: ColgenSetup, state: ColgenState, duals: np.ndarray) -> tuple[np.ndarray, float, float] | None:
    """A proof round's duals (the mean of the recent LPs', else the LP's ``duals``), D there and its target
    kappa; None where no round can raise the bound there (the next GPU needs the LP solved, or a master
    column is worth the target at those duals)."""
    point = np.mean(state.recent_duals, axis=0) if state.recent_duals else duals
    value = dual_value(setup.pieces, point)
    target = useful_kappa(setup, state, value) * (1.0 - PROOF_MARGIN_REL)
    best = max((column_worth(c, point) for c in state.master.columns), default=0.0)
    if target <= 1.0 + IMPROVE_EPS or best >= target:
        log.debug("no proof round: target %.4f at the mean duals, a master column worth %.4f there", target, best)
        return None
    return point, value, target


def _apply_boxes(setup: ColgenSetup, state: ColgenState, value: float, res: BoxResult, duals: np.ndarray,
                 slots: list[list[ColSlot]]) -> tuple[bool, int]:
    """What a round of box pricing at ``duals`` (D there: ``value``) brings, wherever it ran: Farley's bound
    from its kappa, its roots' time as the least limit of a later exact turn, the configurations ``slots``
    worth more than a GPU at ``duals`` as columns. (Whether the bound rose by a GPU, the columns added.)"""
    before = certified_gpus(setup, state)
    state.clock.least_s = max(state.clock.least_s, res.roots_s)
    if math.isfinite(res.kappa):
        state.bound = max(state.bound, value / max(1.0, res.kappa))
    good = _improving_columns(setup, slots, duals)
    state.master.add(good)
    return state.bound_gpus > before, len(good)


def _apply_proof(setup: ColgenSetup, state: ColgenState, value: float, res: BoxResult, duals: np.ndarray,
                 took_s: float, preempted: bool = False) -> bool:
    """A proof round's result (``res``, at duals where D is ``value``): ``_apply_boxes`` with its best
    configurations as found, its roots' time for the next round, the counts. True if the bound rose by a GPU.
    A round ``preempted`` (``proofworker``) says nothing of its roots' time where they did not all end."""
    # no kappa: the roots did not all end in the limit (their time extrapolated from those done proved 4x too
    # low at 1000 workloads on the H100, where a second round then spent 133 s on them): no more rounds
    if not (preempted and math.isinf(res.kappa)):
        state.proof_roots_s = math.inf if math.isinf(res.kappa) else res.roots_s
    won, added = _apply_boxes(setup, state, value, res, duals,
                              [setup.boxes.slots(m) for _, m in res.candidates[:BOX_COLUMNS]])
    state.proof_rounds += 1
    state.proof_won += won
    state.proof_s += took_s
    log.debug("proof round: kappa %.4f after %d box(es) in %.2f s, %d configuration(s) found worth more than a GPU%s",
              res.kappa, res.nodes, took_s, added, ", the bound rose" if won else "")
    return won


def _submit_proof(setup: ColgenSetup, state: ColgenState, duals: np.ndarray, found: float) -> None:
    """Hand the idle worker a proof round (as ``_proof_round`` would run one) within ``PROOF_SHARE`` of the
    time left to ``state.proof_end``. Nothing waits for it: its time is the other core's, so neither the
    first round's cap nor the wait after a failed round applies. Where no proof round could raise the bound,
    the worker prices instead: box pricing at the LP's ``duals`` aimed at one GPU (as ``_box_pricing``),
    within ``PRICING_SHARE`` of the time left, its configurations worth more than a GPU columns."""
    worker = state.proofs
    assert worker is not None
    now = time.perf_counter()
    left = state.proof_end - now
    if worker.busy or left < state.clock.least_s or math.isinf(state.proof_roots_s):
        return
    task = None if _proof_needless(setup, state, duals, found) else _proof_task(setup, state, duals)
    if task is not None:
        point, value, target = task
        worker.submit(point, value, target, now + PROOF_SHARE * left, PROOF_ENOUGH)
    else:
        worker.submit(duals, dual_value(setup.pieces, duals), 1.0 + IMPROVE_EPS, now + PRICING_SHARE * left,
                      BOX_ENOUGH, kind="pricing")


def _apply_class_bound(state: ColgenState, res: ClassBound | None, where: str) -> None:
    """The member-class bound's result: the certified bound, and what it was for the notes."""
    state.class_where = where
    state.class_result = res
    if res is not None:
        state.bound = max(state.bound, res.value)
        log.info("member-class bound %.4f GPUs (%s, %d classes, %d columns, %.1f s %s)", res.value, res.status,
                 res.classes, res.columns, res.seconds, where)


def class_bound_text(state: ColgenState) -> str:
    """The member-class bound's part of the note."""
    res = state.class_result
    if res is None:
        return ("member-class bound: none in its time" if state.class_where else
                "member-class bound: not ended by the end of the run")
    solved = "its LP solved" if res.status == "Optimal" else f"its LP ended with '{res.status}'"
    pairs = "" if res.pairs is None else f", {res.pairs} of them pairs of piece types in place of the 2-member classes"
    if res.triples is not None:
        pairs += f" and {res.triples} triples in place of the 3-member classes"
    return (f"member-class bound {res.value:.4f} GPUs ({solved} at {res.levels} levels: {res.classes} classes, "
            f"{res.columns} columns{pairs}; {res.seconds:.1f} s {state.class_where})")


@contextmanager
def proofs_on_a_second_core(setup: ColgenSetup, state: ColgenState, time_limit_s: float, threads: int, end: float,
                            classes: bool = False) -> Iterator[None]:
    """Within the block, ``state``'s proof rounds (and box pricing where no proof can help) run in a worker
    process (``proofworker``), no round past ``end``, where ``proofworker.worker_wanted`` says a core is
    free for them (and the process can be started: else a note says so); the worker is closed on the way out,
    and a note says so if it had stopped before. With ``classes`` (the bound is on GPUs, not another cost),
    the member-class bound (``classbound``) runs first: the worker's first task, within ``CLASS_SHARE`` of the
    time to ``end``, else here before the block, within ``CLASS_SHARE_HERE`` of it."""
    worker = None
    start_gpus = sum(n for _, n in setup.start_columns)
    rows = piece_rows(setup.pieces) if classes else None
    first = None if rows is None else ClassTask(
        rows, time.perf_counter() + CLASS_SHARE * max(0.0, end - time.perf_counter()), start_gpus)
    if worker_wanted(time_limit_s, threads) and setup.boxes.max_members >= 2:
        try:
            worker = ProofWorker(setup.boxes, first)
        except OSError as exc:  # no process to be had: the rounds run here, as on one core
            state.notes.append(f"no proof worker ({type(exc).__name__}: {exc}); proof rounds ran in this process")
    if worker is None:
        if rows is not None:
            until = time.perf_counter() + CLASS_SHARE_HERE * max(0.0, end - time.perf_counter())
            _apply_class_bound(state, class_bound(setup.items, setup.space.problem.perf_model.hardware,
                                                  setup.space.cap_units, rows, until, start_gpus, threads), "here")
        yield
        return
    state.proofs, state.proof_end = worker, end
    try:
        yield
    finally:
        if worker.failed is not None:
            state.notes.append(f"the proof worker stopped ({worker.failed}); proof rounds ended with it")
        worker.close()


def certified_gpus(setup: ColgenSetup, state: ColgenState) -> int:
    """The certified bound in whole GPUs: the larger of the trivial bound and generation's (Farley's, the LP's
    or the member-class bound, rounded up)."""
    return max(setup.trivial_gpus, state.bound_gpus)


def collect_proof(setup: ColgenSetup, state: ColgenState, wait_s: float = 0.0) -> bool:
    """Apply the worker's finished round, if there is one (waiting at most ``wait_s``): its bound, and its
    configurations worth more than a GPU at the duals it ran at as columns (a pricing round's best also grown
    by the kernel heuristic, as ``_box_pricing``'s). True if the bound rose."""
    done = state.proofs.poll(wait_s) if state.proofs is not None else None
    if done is None:
        return False
    if isinstance(done, MasterDone):  # for the integer master's caller (``setpart``)
        state.rival = done
        return False
    before = state.bound_gpus
    if isinstance(done, ClassDone):
        _apply_class_bound(state, done.result, "on the second core")
        return state.bound_gpus > before
    task, res = done.task, done.result
    if task.kind == "proof":
        return _apply_proof(setup, state, task.value, res, task.duals, done.took_s, done.preempted)
    if math.isinf(res.kappa) and not done.preempted:  # its roots did not end: neither will a proof round's
        state.proof_roots_s = math.inf
    won, _ = _apply_boxes(setup, state, task.value, res, task.duals, _with_grown(setup, task.duals, res.candidates))
    state.worker_pricing_rounds += 1
    state.worker_pricing_s += done.took_s
    return won


def exact_pricing_turn(run: Callable[[float], bool], deadline: float, stalled: bool,
                       converged: Callable[[], bool], clock: PricingClock) -> bool | None:
    """One turn of exact pricing at the LP's duals, ``run(limit_s)`` -> whether it added a column, given
    ``PRICING_SHARE`` of the time left (at least the clock's ``least_s``), or all of it after a turn that
    was cut short and found nothing (at the same duals again its bound tightens), less the clock's reserve
    so that the turn ends by ``deadline``. Returns the next ``stalled`` flag, or None to stop: too little
    time left, the LP solved (``converged()``), or a second turn at the same duals found nothing."""
    left = deadline - time.perf_counter()
    limit = min(max(left if stalled else PRICING_SHARE * left, clock.least_s), left - clock.overrun_s)
    if limit < clock.least_s:
        return None
    if clock.timed(run, limit):
        return False
    return None if converged() or stalled else True


def _generate_rounds(setup: ColgenSetup, state: ColgenState, deadline: float, target_gpus: int | None,
                     threads: int, progress: Progress | None, lp_below: int | None, until_settled: bool) -> None:
    """``generate``'s rounds: LP, bound, pricing, until one of its ends."""
    master = state.master
    stalled = False  # the last exact pricing, cut short by its time share, found no column
    while time.perf_counter() + state.step_max_s < deadline:  # a step that would end past it is not begun
        t0 = time.perf_counter()
        lp = master.solve_lp(max(0.1, deadline - time.perf_counter()))
        if lp.objective is None:
            state.notes.append(f"the master LP ended with '{lp.status}'")
            break
        # capped duals that bind: neither the LP's value nor its duals are the master's; caps that do not
        # bind leave an optimal solution and duals of the master, which go on as uncapped ones
        capped = master.caps_bind()
        state.lp_value = None if capped else lp.objective
        if not capped:
            state.recent_duals.append(lp.duals)
        state.iterations += 1
        kappa = relaxed_round(setup, state, lp.duals, capped, deadline)
        collect_proof(setup, state)
        state.step_max_s = max(state.step_max_s, time.perf_counter() - t0)
        if progress:
            progress(state)
        if state.converged or (target_gpus is not None and state.bound_gpus >= target_gpus):
            break
        if (until_settled and not capped
                and math.ceil(lp.objective - ROUND_EPS) <= certified_gpus(setup, state)):
            state.settled = True  # Farley's bound <= the master LP's optimum <= this LP: no raising it further
            break
        if lp_below is not None and not capped and math.ceil(lp.objective - ROUND_EPS) < lp_below:
            break
        if deadline - time.perf_counter() < state.heuristic_max_s:  # the next round would end past the deadline
            break
        t0 = time.perf_counter()
        added, found = heuristic_round(setup, master, lp.duals, deadline)
        state.heuristic_max_s = max(state.heuristic_max_s, time.perf_counter() - t0)
        log.debug("LP %.4f%s: the kernel heuristic added %d column(s), the best worth %.4f, in %.2f s", lp.objective,
                  " (capped duals)" if capped else "", added, found, time.perf_counter() - t0)
        if capped:  # only the heuristic prices at binding caps
            _grow_caps(state, added)
            continue
        if (_proof_round(setup, state, lp.duals, deadline, found) and target_gpus is not None
                and state.bound_gpus >= target_gpus):
            break
        if added or (len(setup.items.table) > MIP_MAX_ITEMS and _point_round(setup, state, lp.duals, deadline)):
            continue
        turn = exact_pricing_turn(partial(_exact_round, setup, state, lp.duals, threads=threads, relaxed=kappa),
                                  deadline, stalled, lambda: state.converged, state.clock)
        if turn is None:
            break
        stalled = turn


def generate(setup: ColgenSetup, state: ColgenState, deadline: float, target_gpus: int | None, threads: int = 1,
             progress: Progress | None = None, lp_below: int | None = None, until_settled: bool = False
             ) -> ColgenState:
    """Column generation until the LP is solved, the bound reaches ``target_gpus`` (a plan's GPU
    count: nothing more to prove), ``deadline`` (``time.perf_counter()`` seconds), with ``lp_below``, the
    LP rounded up falls below it (an integer master over the columns might then find such a plan), or,
    with ``until_settled``, the LP rounded up is at the certified bound (``ColgenState.settled``).
    The first rounds of the first call run at capped duals (``stabilize``); it returns with them lifted."""
    _start_caps(setup, state)
    try:
        _generate_rounds(setup, state, deadline, target_gpus, threads, progress, lp_below, until_settled)
    finally:
        _end_caps(state)
    if state.converged and state.lp_value is not None:
        state.bound = max(state.bound, state.lp_value)
    if state.relaxed_calls:
        log.info("relaxed pricing bound: %d call(s) (%d stopped early), %.3f s each; bound %.4f GPUs",
                 state.relaxed_calls, state.relaxed_skipped, state.relaxed_s / state.relaxed_calls, state.bound)
    if state.point_rounds:
        log.info("point pricing: %d round(s), %.2f s in all", state.point_rounds, state.point_s)
    return state


def packing_of(setup: ColgenSetup, columns: list[Column], counts: dict[int, int], chosen: dict[int, int]
               ) -> Packing | None:
    """GPUs running ``columns`` (``counts``: GPUs per column index) as a packing of exactly the pieces of
    the ``chosen`` option of each workload in ``chosen`` (surplus pieces dropped, and pieces of workloads
    not in ``chosen``; a GPU left empty is not used). None when a piece is missing or a GPU that lost a
    piece no longer fits (co-runners only slow a placement down, so that is not expected)."""
    found = packing_with_sources(setup, columns, counts, chosen)
    return None if found is None else found[0]


def packing_with_sources(setup: ColgenSetup, columns: list[Column], counts: dict[int, int], chosen: dict[int, int],
                         first: frozenset[int] = frozenset()) -> tuple[Packing, list[int]] | None:
    """``packing_of``, with the column index each of the packing's GPUs runs; the columns in ``first``
    keep their pieces before the others (surplus pieces are dropped from the others)."""
    got = trimmed_gpus(setup, columns, counts, chosen, first)
    if got is None:
        return None
    trimmed, sources = got
    pieces = setup.pieces
    problem = setup.space.problem
    demands: list[Demand] = []
    gpus: list[GpuPacking] = []
    rule = setup.space.rule
    for kept in trimmed:
        slots = []
        for s in kept:
            p = pieces[s.piece]
            w = problem.workloads[p.workload]
            demands.append(Demand(w, p.rate_rps, s.batch, s.units, rule.limit(w.slo_ms, p.rate_rps, s.batch, s.delay),
                                  dedicated=p.count > 1, queue_delay_ms=s.delay))
            slots.append(Slot(len(demands) - 1, s.units, s.batch, s.delay))
        gpus.append(GpuPacking(tuple(slots)))
    return Packing(tuple(demands), tuple(gpus)), sources


def trimmed_gpus(setup: ColgenSetup, columns: list[Column], counts: dict[int, int], chosen: dict[int, int],
                 first: frozenset[int] = frozenset()) -> tuple[list[list[ColSlot]], list[int]] | None:
    """The slots of each GPU of ``packing_with_sources`` (a GPU left empty is not used) and the column index it
    runs; None when a piece is missing or a trimmed GPU does not fit."""
    need = {t: p.count for t, p in enumerate(setup.pieces) if chosen.get(p.workload) == p.option}
    trimmed: list[list[ColSlot]] = []
    sources: list[int] = []
    for j, copies in sorted(counts.items(), key=lambda jc: (jc[0] not in first, jc[0])):
        for _ in range(copies):
            kept = []
            for s in columns[j].slots:
                if need.get(s.piece, 0) > 0:
                    need[s.piece] -= 1
                    kept.append(s)
            if kept:
                trimmed.append(kept)
                sources.append(j)
    if any(v > 0 for v in need.values()) or any(c is None for c in evaluate(setup.space, trimmed)):
        return None
    return trimmed, sources


def start_solution(setup: ColgenSetup, master: Master) -> dict[int, int]:
    """The start as GPUs per master column."""
    out: dict[int, int] = {}
    for col, n in setup.start_columns:
        j = master.keys.get(col.slots)
        if j is not None:
            out[j] = out.get(j, 0) + n
    return out
