"""Column generation and price-and-branch over a fleet of GPU types (``fleetmaster`` states the master).

1. ``prepare_fleet``: per type, the single-type preparation (``colgen.prepare_colgen``: piece types,
   items, heuristic entries) of the workloads that type can serve, under its profile; the master
   with each type's start and single-piece columns, and the fleet greedy's plan as columns (the
   start of the integer master, and the plan to beat).
2. ``bound_counts``: the count bound (``fleetmaster.count_bound``) is the cost of the cheapest count
   vector (GPUs per type) its cuts leave; rule those out in turn, a vector of one type by that type's own
   column generation (``exclude_alone``), one of several by its own LP (``exclude_counts``).
3. ``generate``: re-solve the master LP; price every type with the kernel heuristic at its duals
   (a column of type t enters when its worth exceeds c_t + mu_t); when none enters, price every type
   exactly (``_price_type``: the pricing MIP, or box pricing above ``MIP_MAX_ITEMS`` items). A bound on
   every configuration's worth per type (kappa_t) certifies ``fleetmaster.lagrangian_bound``: the
   relaxation's (``relaxed.relaxed_bound``) after every master LP, the least of it and the exact
   pricing's bound at an exact pricing. The LP value is the bound once
   either proves that no column of any type improves. Every certificate is also a cut of the count bound.
4. ``improve``: the master over the columns generated with y integer (price-and-branch), warm-started
   with the incumbent; its solution as a packing per type (``colgen.packing_of``).

The bound is over the split options each type's piece types describe (``pieces.scope_text``, per type).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from igniter_opt.domain import PlanningProblem
from igniter_opt.placement import Packing
from igniter_opt.placement.serving import serving_model_for
from igniter_opt.planner import greedy
from igniter_opt.planner.exact.boxes import box_kappa
from igniter_opt.planner.exact.colgen import (
    BOX_COLUMNS,
    BOX_ENOUGH,
    IMPROVE_EPS,
    MIP_MAX_ITEMS,
    PRICING_SHARE,
    ROUND_EPS,
    ColgenSetup,
    ColgenState,
    PricingClock,
    exact_pricing_turn,
    initial_columns,
    initial_master,
    kernel_columns,
    packing_columns,
    packing_of,
    prepare_colgen,
    start_pieces,
)
from igniter_opt.planner.exact.colgen import generate as generate_alone
from igniter_opt.planner.exact.columns import ColSlot, Column, column_worth, evaluate
from igniter_opt.planner.exact.fleetmaster import (
    CheapestCounts,
    CountCut,
    FleetLp,
    FleetMaster,
    cheapest_counts,
    count_vector_master,
    lagrangian_bound,
    round_to_prices,
    type_blocks,
    type_sets,
)
from igniter_opt.planner.exact.items import PreparationTimedOut
from igniter_opt.planner.exact.lp import master_limit_s
from igniter_opt.planner.exact.pricing import price_mip
from igniter_opt.planner.exact.relaxed import relaxed_bound

# Relative tolerance at which a bound meets a cost (float noise in prices).
MEET_REL = 1e-9
# Exact pricing runs at least this often (seconds) while the heuristic still finds columns.
EXACT_EVERY_S = 2.0
# No master LP is started with less time than this left.
MIN_LP_S = 0.1
# Share of the time limit that ruling out the cheapest count vectors may take first (``bound_counts``).
COUNT_SHARE = 0.6
# Cuts kept per set of types in use (the latest; the rounded bound never falls).
MAX_CUTS = 64


@dataclass(frozen=True)
class FleetTypeInput:
    """One GPU type as column generation sees it: the workloads it can serve as a problem under its
    profile, which fleet workload each of them is, its price and limit, and the fleet greedy's part
    on it (a packing of that part's own problem; None: the greedy uses no GPU of the type)."""

    problem: PlanningProblem
    workloads: tuple[int, ...]
    price_per_gpu_hour: float
    max_count: int | None
    start: Packing | None


@dataclass
class _Incumbent:
    """The best solution so far: its cost, GPUs per master column, choice per workload, and its
    packing per type (None for the start, which the caller holds as a plan)."""

    cost_per_hour: float
    counts: dict[int, int]
    chosen: dict[int, tuple[int, int]]
    packings: tuple[Packing | None, ...] | None = None


@dataclass
class FleetColgen:
    """Everything column generation over the fleet has: the types, the master, the certified bound
    (cost per hour; ``rounded``: up to the next cost whole GPUs can have) and the incumbent."""

    inputs: tuple[FleetTypeInput, ...]
    setups: tuple[ColgenSetup, ...]
    master: FleetMaster
    inc: _Incumbent
    threads: int = 1
    lp_value: float | None = None
    bound: float = 0.0
    rounded: float = 0.0
    converged: bool = False
    pricing_rounds: int = 0
    masters: int = 0
    notes: list[str] = field(default_factory=list)
    clock: PricingClock = field(default_factory=PricingClock)
    # per set of types that can serve every workload, the cuts its plans' GPU counts meet (``count_bound``)
    cuts: dict[frozenset[int], list[CountCut]] = field(default_factory=dict)
    alone: dict[int, float] = field(default_factory=dict)  # per type: the certified bound in GPUs with it alone
    alone_states: dict[int, ColgenState] = field(default_factory=dict)  # per type: its generation alone so far
    vectors: int = 0  # count vectors of several types ruled out by their own LP (``bound_counts``)
    cheapest: CheapestCounts | None = None  # the count bound and its vector, as of the latest cut (``_count``)

    @property
    def prices(self) -> list[float]:
        return [x.price_per_gpu_hour for x in self.inputs]

    @property
    def limits(self) -> list[int | None]:
        return [x.max_count for x in self.inputs]

    def proves(self, cost_per_hour: float) -> bool:
        return self.rounded >= cost_per_hour * (1 - MEET_REL)

    def raise_bound(self, value: float) -> None:
        """Keep ``value`` (a certified bound) if it is larger, rounded up to the prices."""
        if value > self.bound:
            self.bound = value
            self.rounded = max(self.rounded, round_to_prices(value, self.prices, self.limits, self.threads))

    def certify(self, duals: Sequence[np.ndarray], kappa: Sequence[float]) -> None:
        """Raise the bound with duals ``duals`` and their bounds ``kappa`` (per type): the Lagrangian bound
        (``lagrangian_bound``), and the cut they give every set of types in use (``CountCut``, ``count_bound``) whose
        types all have a finite kappa."""
        self.raise_bound(lagrangian_bound(self.master.dual_value(duals), kappa, self.prices, self.limits))
        if not self.cuts:
            return
        for types, mine in self.cuts.items():
            if any(math.isinf(kappa[t]) for t in types):  # a type not priced: no cut for the sets with it
                continue
            mine.append(CountCut(tuple(kappa), self.master.dual_value(duals, types)))
            del mine[:-MAX_CUTS]
        self._count()

    def certify_alone(self, t: int, gpus: float) -> None:
        """File ``gpus`` (a certified bound on GPUs of type t serving every workload alone) as a cut."""
        types = frozenset([t])
        if types in self.cuts and gpus > self.alone.get(t, 0.0):
            self.alone[t] = gpus
            self.cuts[types].append(CountCut(tuple(1.0 if u == t else 0.0 for u in range(len(self.inputs))), gpus))
            self._count()

    def _count(self) -> None:
        self.cheapest = cheapest_counts(self.cuts, self.prices, self.limits, self.threads)
        self.rounded = max(self.rounded, self.cheapest.cost_per_hour)


def prepare_fleet(inputs: tuple[FleetTypeInput, ...], n_workloads: int, start_cost_per_hour: float,
                  threads: int = 1, deadline: float = math.inf) -> FleetColgen | None:
    """Per type its single-type preparation, the master with the first columns, and the fleet
    greedy's plan (costing ``start_cost_per_hour``) as the incumbent; None when ``deadline`` passes
    while preparing (``prepare_colgen`` checks it). Raises ``ProblemError`` as ``prepare_colgen`` does
    (a profile on which company could speed a workload up)."""
    setups = []
    for x in inputs:
        if time.perf_counter() > deadline:
            return None
        perf = x.problem.perf_model
        try:
            setups.append(prepare_colgen(x.problem, serving_model_for(x.problem),
                                         greedy.place(perf, greedy.initial_demands(x.problem)), deadline))
        except PreparationTimedOut:
            return None
    blocks = type_blocks([s.pieces for s in setups], [x.workloads for x in inputs],
                         [x.price_per_gpu_hour for x in inputs], [x.max_count for x in inputs])
    master = FleetMaster(blocks, n_workloads, threads)
    counts: dict[int, int] = {}
    chosen: dict[int, tuple[int, int]] = {}
    for t, (x, s) in enumerate(zip(inputs, setups, strict=True)):
        master.add(t, initial_columns(s))
        if x.start is None:
            continue
        piece_of, choice = start_pieces(x.problem, s.pieces, x.start)
        chosen.update({x.workloads[w]: (t, o) for w, o in choice.items()})
        for col, n in packing_columns(s.space, x.start, piece_of):
            j = master.add(t, [col])[0]
            counts[j] = counts.get(j, 0) + n
    fc = FleetColgen(inputs, tuple(setups), master, _Incumbent(start_cost_per_hour, counts, chosen), threads)
    served_by = [frozenset(t for t, x in enumerate(inputs) if w in x.workloads) for w in range(n_workloads)]
    fc.cuts = {types: [] for types in type_sets(len(inputs), served_by)}
    for t, s in enumerate(setups):
        fc.certify_alone(t, s.trivial_gpus)
    if not math.isclose(master.cost(counts), start_cost_per_hour, rel_tol=1e-9):
        fc.notes.append("the fleet greedy's plan is not all columns of the master: the integer master starts "
                        "without it")
    return fc


def _improves(fc: FleetColgen, t: int, col: Column, lp: FleetLp) -> bool:
    price = fc.inputs[t].price_per_gpu_hour
    return column_worth(col, lp.duals[t]) - lp.mu[t] > price * (1 + IMPROVE_EPS)


def _heuristic_round(fc: FleetColgen, lp: FleetLp, deadline: float = math.inf) -> int:
    """Kernel pricing of every type (what it finds by ``deadline``): how many improving columns entered
    the master."""
    before = len(fc.master.columns)
    for t, s in enumerate(fc.setups):
        fc.master.add(t, [c for c in kernel_columns(s, lp.duals[t], deadline) if _improves(fc, t, c, lp)])
    return len(fc.master.columns) - before


def _no_column_improves(fc: FleetColgen, lp: FleetLp, t: int, kappa_t: float) -> bool:
    """True when ``kappa_t`` (a bound on every type-t configuration's worth) proves none improves."""
    return kappa_t - lp.mu[t] <= fc.inputs[t].price_per_gpu_hour * (1 + IMPROVE_EPS)


def relaxed_round(fc: FleetColgen, lp: FleetLp, deadline: float = math.inf) -> list[float]:
    """The relaxation's kappa_t of every type at the LP's duals; raises the certified bound with them and
    marks the LP solved when they prove that no column of any type improves. Past ``deadline`` a type's
    kappa is inf (no bound: ``relaxed.relaxed_bound``)."""
    kappa = [relaxed_bound(s.relaxed, lp.duals[t], deadline=deadline).kappa if s.pieces else 0.0
             for t, s in enumerate(fc.setups)]
    fc.certify(lp.duals, kappa)
    if all(_no_column_improves(fc, lp, t, k) for t, k in enumerate(kappa)):
        fc.converged = True
    return kappa


def _exact_round(fc: FleetColgen, lp: FleetLp, limit_s: float, relaxed: list[float] | None = None) -> bool:
    """Exact pricing of every type: raise the certified bound (``relaxed``: the relaxation's kappa_t, also
    valid); add the columns found that improve. True if one did; ``fc.converged`` when every type is
    proven to have none."""
    fc.pricing_rounds += 1
    kappa, proven, added = [], True, False
    for t, s in enumerate(fc.setups):
        if not s.pieces:
            kappa.append(0.0)
            continue
        bound, exact, found = _price_type(fc, t, lp.duals[t], fc.inputs[t].price_per_gpu_hour + lp.mu[t],
                                          limit_s / len(fc.setups))
        rk = math.inf if relaxed is None else relaxed[t]
        kappa.append(_kappa(fc, t, lp.duals[t], min(bound, rk)))
        proven &= _no_column_improves(fc, lp, t, min(rk, bound if exact else math.inf))
        better = [c for c in evaluate(s.space, found) if c is not None and _improves(fc, t, c, lp)]
        added |= bool(fc.master.add(t, better))
    fc.certify(lp.duals, kappa)
    fc.converged = proven and not added
    return added


def _kappa(fc: FleetColgen, t: int, duals: np.ndarray, bound: float) -> float:
    """kappa_t from a pricing bound on every type-t configuration's worth at ``duals``: never below the worth of
    a type-t column the fleet master holds (a bound below one would be a defect of the pricing, not a proof)."""
    return max(bound, *(column_worth(c, duals) for u, c in fc.master.columns if u == t), 0.0)


def _price_type(fc: FleetColgen, t: int, duals: np.ndarray, threshold: float, limit_s: float
                ) -> tuple[float, bool, list[tuple[ColSlot, ...]]]:
    """Exact pricing of type t at ``duals`` within ``limit_s``: (a bound on every configuration's worth,
    whether it settles whether one is worth more than ``threshold``, the configurations found). The pricing MIP up to
    ``MIP_MAX_ITEMS`` items (as for one type: above, its build and presolve, which no deadline cuts, took one
    round 64 s of a 60 s solve at 200 workloads); box pricing above, whose bound holds whenever it stops."""
    s = fc.setups[t]
    if len(s.items.table) <= MIP_MAX_ITEMS:
        res = price_mip(s.space, s.items, duals, limit_s, fc.threads)
        return res.worth_bound, res.proven, [res.slots] if res.slots else []
    box = box_kappa(s.boxes, duals, threshold * (1 + IMPROVE_EPS), time.perf_counter() + limit_s, enough=BOX_ENOUGH)
    fc.clock.least_s = max(fc.clock.least_s, box.roots_s)
    return box.kappa, True, [tuple(s.boxes.slots(m)) for _, m in box.candidates[:BOX_COLUMNS]]


def _exact_round_or(fc: FleetColgen, lp: FleetLp, added: int, relaxed: list[float], limit_s: float) -> bool:
    """An exact round that counts as progress when the heuristic round before it added ``added`` columns."""
    return _exact_round(fc, lp, limit_s, relaxed) or added > 0


def generate(fc: FleetColgen, deadline: float) -> None:
    """Column generation until the LP is solved, the bound proves the incumbent or ``deadline``
    (``time.perf_counter()`` seconds). Exact pricing runs when the heuristic finds nothing, and at
    least every ``EXACT_EVERY_S`` (its bound at any duals is certified: the fleet's LP tails off slowly,
    and a bound just above a cost whole GPUs can have already rounds up to the next)."""
    stalled = False  # the last exact pricing, cut short by its time share, found no column
    last_exact = time.perf_counter()
    while not fc.proves(fc.inc.cost_per_hour):
        left = deadline - time.perf_counter()
        if left < MIN_LP_S:
            break
        lp = fc.master.solve_lp(left)
        if lp.objective is None:
            if time.perf_counter() < deadline:
                fc.notes.append(f"the fleet master LP ended with '{lp.status}'")
            break
        fc.lp_value = lp.objective
        relaxed = relaxed_round(fc, lp, deadline)
        if fc.converged or fc.proves(fc.inc.cost_per_hour):
            break
        added = _heuristic_round(fc, lp, deadline)
        if added and time.perf_counter() - last_exact < EXACT_EVERY_S:
            continue
        last_exact = time.perf_counter()
        turn = exact_pricing_turn(partial(_exact_round_or, fc, lp, added, relaxed), deadline, stalled,
                                  lambda: fc.converged, fc.clock)
        if turn is None:
            break
        stalled = turn
    if fc.converged and fc.lp_value is not None:
        fc.raise_bound(fc.lp_value)


def improve(fc: FleetColgen, limit_s: float, mip_rel_gap: float) -> None:
    """The integer master over the columns so far, from the incumbent; kept when it costs less and
    every type's part is a packing of exactly the workloads given to it."""
    fc.masters += 1
    sol = fc.master.solve_integer(limit_s, fc.inc.counts, fc.inc.chosen, mip_rel_gap)
    if sol.note:
        fc.notes.append(sol.note)
    if not sol.counts:
        return
    cost = fc.master.cost(sol.counts)
    if cost >= fc.inc.cost_per_hour * (1 - MEET_REL):
        return
    packings = _packings(fc, sol.counts, sol.chosen)
    if packings is None:
        fc.notes.append("the integer fleet master's solution did not cover every workload once trimmed (a defect)")
        return
    fc.inc = _Incumbent(cost, sol.counts, sol.chosen, packings)


def _packings(fc: FleetColgen, counts: dict[int, int], chosen: dict[int, tuple[int, int]]
              ) -> tuple[Packing | None, ...] | None:
    """Per type, its GPUs of the solution as a packing of the workloads chosen there (None: no GPU)."""
    out: list[Packing | None] = []
    for t, (x, s) in enumerate(zip(fc.inputs, fc.setups, strict=True)):
        local = {g: i for i, g in enumerate(x.workloads)}
        mine = [j for j, (u, _) in enumerate(fc.master.columns) if u == t]
        index = {j: k for k, j in enumerate(mine)}
        cols = [fc.master.columns[j][1] for j in mine]
        my_counts = {index[j]: n for j, n in counts.items() if j in index}
        my_choice = {local[w]: o for w, (u, o) in chosen.items() if u == t}
        if not my_choice:
            out.append(None)
            continue
        p = packing_of(s, cols, my_counts, my_choice)
        if p is None:
            return None
        out.append(p)
    return tuple(out)


def exclude_alone(fc: FleetColgen, t: int, gpus: int, deadline: float) -> bool:
    """Column generation on type t serving every workload alone (``colgen.generate`` on its own master, resumed
    where the last call left it) until its certified bound passes ``gpus``, its LP is solved or ``deadline``:
    the bound becomes the cut on the plans that use type t alone (``FleetColgen.certify_alone``), and the
    columns it generated join the fleet master's (a plan on type t alone is made of them). True when it rules
    out ``gpus`` GPUs of type t alone."""
    s = fc.setups[t]
    if t not in fc.alone_states:
        fc.alone_states[t] = ColgenState(initial_master(s, fc.threads))
    state = fc.alone_states[t]
    generate_alone(s, state, deadline, gpus + 1, fc.threads)
    fc.certify_alone(t, state.bound)
    fc.master.add(t, state.master.columns)
    return math.ceil(state.bound - ROUND_EPS) > gpus


def _vector_master(fc: FleetColgen, counts: dict[int, int]) -> FleetMaster:
    """The LP of a count vector (``fleetmaster.count_vector_master``) with the fleet master's columns of its
    types."""
    vm = count_vector_master(fc.master.blocks, fc.master.n_workloads, counts, fc.threads)
    for t in counts:
        vm.add(t, [c for u, c in fc.master.columns if u == t])
    return vm


def _rules_out(fc: FleetColgen, counts: dict[int, int], duals: Sequence[np.ndarray], kappa: Sequence[float]) -> bool:
    """File the certificate (``FleetColgen.certify``) and say whether it rules the count vector out:
    D_S(pi) > sum_{t in S} kappa_t G_t (``CountCut``) for S the types of ``counts``."""
    fc.certify(duals, kappa)
    need = fc.master.dual_value(duals, frozenset(counts))
    return need > math.fsum(kappa[t] * g for t, g in counts.items()) * (1 + MEET_REL)


def _vector_columns(fc: FleetColgen, vm: FleetMaster, t: int, cols: Sequence[Column], lp: FleetLp) -> int:
    """Add to both masters the columns of type t worth more than mu_t at the vector LP's duals (they improve
    it: its columns cost 0); how many."""
    better = [c for c in cols if column_worth(c, lp.duals[t]) > lp.mu[t] * (1 + IMPROVE_EPS) + IMPROVE_EPS]
    fc.master.add(t, better)
    before = len(vm.columns)
    vm.add(t, better)
    return len(vm.columns) - before


def exclude_counts(fc: FleetColgen, counts: dict[int, int], deadline: float) -> bool:
    """Column generation on the LP of one count vector G (``counts``: GPUs per type; ``_vector_master``) until
    its duals rule G out (``_rules_out``: no plan has these counts on these types), its columns meet G
    (value 0: the LP cannot rule it out), pricing finds nothing more, or ``deadline``. Every certificate is
    filed as a cut; the columns found join the fleet master. True when G is ruled out."""
    vm = _vector_master(fc, counts)
    last_exact = -math.inf
    while deadline - time.perf_counter() >= MIN_LP_S:
        lp = vm.solve_lp(deadline - time.perf_counter())
        if lp.objective is None or lp.objective <= IMPROVE_EPS:
            return False
        duals = [d if t in counts else np.zeros(len(s.pieces))
                 for t, (d, s) in enumerate(zip(lp.duals, fc.setups, strict=True))]
        kappa = [relaxed_bound(s.relaxed, duals[t], deadline=deadline).kappa if t in counts else math.inf
                 for t, s in enumerate(fc.setups)]
        if _rules_out(fc, counts, duals, kappa):
            return True
        added = sum(_vector_columns(fc, vm, t, kernel_columns(fc.setups[t], duals[t], deadline), lp) for t in counts)
        if added and time.perf_counter() - last_exact < EXACT_EVERY_S:
            continue
        last_exact = time.perf_counter()
        share = PRICING_SHARE * (deadline - time.perf_counter()) / len(counts)
        for t in counts:
            bound, _, found = _price_type(fc, t, duals[t], lp.mu[t], share)
            kappa[t] = _kappa(fc, t, duals[t], min(kappa[t], bound))
            added += _vector_columns(fc, vm, t, [c for c in evaluate(fc.setups[t].space, found) if c], lp)
        if _rules_out(fc, counts, duals, kappa):
            return True
        if not added:
            return False
    return False


def bound_counts(fc: FleetColgen, deadline: float) -> None:
    """Rule out the cheapest count vector the cuts leave (``FleetColgen.cheapest``), then the next, until one is not
    ruled out, the bound proves the incumbent or ``deadline``: a vector of one type by that type's own column
    generation (``exclude_alone``), one of several by its own LP (``exclude_counts``). The count bound is the
    cost of the cheapest vector left, so it rises only when that vector is ruled out."""
    while not fc.proves(fc.inc.cost_per_hour) and deadline - time.perf_counter() >= MIN_LP_S:
        cheap = fc.cheapest
        if cheap is None or not cheap.counts:
            return
        if len(cheap.counts) == 1:
            [(t, gpus)] = cheap.counts.items()
            if not exclude_alone(fc, t, gpus, deadline):
                return
        elif exclude_counts(fc, cheap.counts, deadline):
            fc.vectors += 1
        else:
            return


def solve_fleet_columns(fc: FleetColgen, deadline: float, generate_share: float, min_round_s: float,
                        mip_rel_gap: float) -> FleetColgen:
    """Generation and the integer master in turn until the bound proves the incumbent, the LP is
    solved (the columns will not change) or ``deadline``; generation takes ``generate_share`` of
    the time left each round."""
    if not fc.proves(fc.inc.cost_per_hour):
        bound_counts(fc, time.perf_counter() + COUNT_SHARE * (deadline - time.perf_counter()))
    while True:
        left = deadline - time.perf_counter()
        generate(fc, time.perf_counter() + generate_share * left)
        left = deadline - time.perf_counter()
        master_s = master_limit_s(deadline)
        if fc.proves(fc.inc.cost_per_hour) or left < min_round_s or master_s is None:
            return fc
        improve(fc, master_s, mip_rel_gap)
        if fc.proves(fc.inc.cost_per_hour) or fc.converged or deadline - time.perf_counter() < min_round_s:
            return fc


__all__ = ["FleetColgen", "FleetTypeInput", "bound_counts", "exclude_alone", "exclude_counts", "generate",
           "improve", "prepare_fleet", "solve_fleet_columns"]
