"""Candidate placements (items) of every piece type on one GPU, as one flat table.

An item is a piece type (``pieces``) at one (batch, share units, queue delay) with its constants:
the solo active time a_k, L2 demand c_k, power p_k and GPU-time budget B_k, the largest t_gpu at
full clock meeting the item's latency limit and its piece's rate
(``PerformanceModel.gpu_time_budget_ms``; "latency <= limit and throughput >= rate" is exactly
t_gpu <= B_k under every serving model). Items that fail even alone are dropped, and so are
dominated ones (``configs.prune``: another item of the same piece type needs no more units, L2 or
power and is feasible wherever this one is, in every environment a GPU whose members all meet
their budgets can reach). ``copies`` bounds how many placements of one piece type a GPU could
usefully hold: what fits, and no more than its option needs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields

import numpy as np

from igniter_opt.domain import PlanningProblem, Workload
from igniter_opt.errors import ProblemError
from igniter_opt.perfmodel.model import ModelCoefficients
from igniter_opt.placement import Demand
from igniter_opt.placement.serving import ServingModel
from igniter_opt.planner import greedy
from igniter_opt.planner.exact.columns import ColSlot
from igniter_opt.planner.exact.configs import Bounds, ConfigTable, batch_range, config_table, prune, unplaceable
from igniter_opt.planner.exact.data import reachable_bounds
from igniter_opt.planner.exact.pieces import PieceType


@dataclass(frozen=True)
class ItemTable:
    """Every item of every piece type, one entry per item (see the module docstring)."""

    piece: np.ndarray  # piece type index
    model: np.ndarray  # model index in the performance model
    batch: np.ndarray
    units: np.ndarray
    delay: np.ndarray  # queue delay, NaN: apply's rule
    active: np.ndarray  # a_k, ms
    cache: np.ndarray  # c_k, % of L2
    power: np.ndarray  # p_k, W
    budget: np.ndarray  # B_k, ms
    limit: np.ndarray  # latency limit, ms
    kernels: np.ndarray
    idle: np.ndarray  # ms
    alpha_cache: np.ndarray
    copies: np.ndarray  # the most placements of this item's piece type one GPU could usefully hold

    def __len__(self) -> int:
        return int(self.piece.size)

    def take(self, idx: np.ndarray) -> ItemTable:
        return ItemTable(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def slot(self, k: int) -> ColSlot:
        """Item ``k`` as a column's slot."""
        d = float(self.delay[k])
        return ColSlot(int(self.piece[k]), int(self.batch[k]), int(self.units[k]), None if np.isnan(d) else d)


@dataclass(frozen=True)
class Items:
    """The item table, the reachable per-GPU bounds it was pruned with, each piece type's items and its
    least share units alone on a GPU (``least_units_alone``: the least over its items too)."""

    table: ItemTable
    bounds: Bounds
    by_piece: tuple[np.ndarray, ...]
    least_units: np.ndarray


class PreparationTimedOut(Exception):
    """The time limit came before column generation was ready to run. ``trivial_gpus``: the trivial
    bound (``trivial_bound``) when it was known by then, else None."""

    def __init__(self, trivial_gpus: int | None) -> None:
        super().__init__("the time limit came while preparing column generation")
        self.trivial_gpus = trivial_gpus


def check_deadline(deadline: float, trivial_gpus: int | None = None) -> None:
    """Raise ``PreparationTimedOut`` once ``time.perf_counter()`` is past ``deadline``."""
    if time.perf_counter() > deadline:
        raise PreparationTimedOut(trivial_gpus)


def piece_table(problem: PlanningProblem, rule: ServingModel, w: Workload, rate_rps: float) -> ConfigTable:
    """Every candidate configuration of a piece of ``w`` at ``rate_rps``, batches as
    ``configs.batch_range`` allows (igniter: up to the paper's batch at the piece's rate; full:
    while batch formation leaves room for inference; tail: up to the batch limit)."""
    perf = problem.perf_model
    d = Demand(w, rate_rps, 1, 1, rule.limit(w.slo_ms, rate_rps, 1, 0.0))
    return config_table(perf, rule, d, batch_range(perf, problem, d), perf.max_units)


def fewest_replicas(problem: PlanningProblem, rule: ServingModel, deadline: float = math.inf) -> list[int]:
    """Per workload, the fewest equal replicas of which one meets its SLO and rate alone on a GPU:
    counted up from its rate over the most one server carries (fewer can never serve the rate).
    Raises ``PreparationTimedOut`` past ``deadline``."""
    perf = problem.perf_model
    b = np.arange(1, greedy.batch_limit(problem) + 1, dtype=float)
    out = []
    for w in problem.workloads:
        check_deadline(deadline)
        idx = np.full((b.size, 1), perf.model_index(w.model))
        _, thr = perf.predict_padded(idx, b[:, None], np.full((b.size, 1), perf.max_units * perf.unit_pct))
        k = max(1, math.ceil(w.rate_rps / float(np.max(thr)) - 1e-9))
        while not piece_table(problem, rule, w, w.rate_rps / k).solo_ok.any():
            k += 1
            if k > greedy.MAX_REPLICAS:
                raise greedy.too_many_servers(problem, w)
        out.append(k)
    return out


def _copies(piece: PieceType, t: ConfigTable, cap: int) -> int:
    return min(piece.count, cap // int(t.units[t.solo_ok].min()))


def piece_tables(problem: PlanningProblem, rule: ServingModel, pieces: tuple[PieceType, ...],
                 deadline: float = math.inf) -> list[ConfigTable]:
    """Every piece type's configuration table (``piece_table``). Raises ``ProblemError`` naming a workload
    a piece type of which cannot be served even alone, or for a profile that predicts a negative L2 or
    power demand, and ``PreparationTimedOut`` past ``deadline`` (checked after each table)."""
    perf = problem.perf_model
    tables = []
    for p in pieces:
        tables.append(piece_table(problem, rule, problem.workloads[p.workload], p.rate_rps))
        check_deadline(deadline)
    for p, t in zip(pieces, tables, strict=True):
        if not t.solo_ok.any():
            w = problem.workloads[p.workload]
            raise unplaceable(Demand(w, p.rate_rps, 1, 1, t.limit[0] if t.limit.size else math.nan), t)
    for t in tables:
        if (t.cache[t.solo_ok] < 0).any() or (t.power[t.solo_ok] < 0).any():
            raise ProblemError(f"profile '{perf.name}' predicts a negative L2 or power demand for some configuration; "
                               "the exact planner's bound assumes company never speeds a workload up: re-fit the "
                               "profile, or use --planner greedy")
    return tables


def least_units_alone(tables: list[ConfigTable]) -> np.ndarray:
    """Each piece type's least share units alone on a GPU, from its table. Pruning keeps a piece type's
    fewest units (nothing with more units dominates them), so this is also the least over its items."""
    return np.array([t.units[t.solo_ok].min() for t in tables], float)


def least_units(pieces: tuple[PieceType, ...], least: np.ndarray) -> dict[int, float]:
    """Per workload: the least share units any of its split options needs, each piece alone on a GPU,
    min_o sum_{t in o} count_t least_t (``least``: each piece type's least units alone; the terms
    the trivial bound sums)."""
    need: dict[int, dict[int, float]] = {}
    for t, p in enumerate(pieces):
        need.setdefault(p.workload, {}).setdefault(p.option, 0.0)
        need[p.workload][p.option] += p.count * float(least[t])
    return {w: min(v.values()) for w, v in need.items()}


def trivial_bound(pieces: tuple[PieceType, ...], least: np.ndarray, cap: int) -> int:
    """ceil(sum over workloads of ``least_units`` / a GPU's units): no plan in the pieces' scope uses fewer GPUs."""
    return math.ceil(sum(least_units(pieces, least).values()) / cap - 1e-9)


def build_items(problem: PlanningProblem, rule: ServingModel, pieces: tuple[PieceType, ...],
                deadline: float = math.inf) -> Items:
    """Every piece type's non-dominated items, and the reachable bounds they were pruned with.

    Raises ``ProblemError`` naming a workload a piece type of which cannot be served even alone, and
    ``PreparationTimedOut`` past ``deadline`` (checked after each piece type's table and pruning).
    """
    perf = problem.perf_model
    cap = perf.max_units
    tables = piece_tables(problem, rule, pieces, deadline)
    copies = [_copies(p, t, cap) for p, t in zip(pieces, tables, strict=True)]
    models = [perf.models[problem.workloads[p.workload].model] for p in pieces]
    least = least_units_alone(tables)
    trivial = trivial_bound(pieces, least, cap)
    check_deadline(deadline, trivial)
    bounds = feasible_bounds(problem, reachable_bounds(problem, tables, copies), list(zip(tables, models, strict=True)))
    parts = []
    for i, (t, c) in enumerate(zip(tables, models, strict=True)):
        check_deadline(deadline, trivial)
        sel = prune(t, float(c.kernels_per_inference), c.idle_ms, c.alpha_cache, bounds)
        n = sel.size
        parts.append(ItemTable(
            piece=np.full(n, i), model=np.full(n, perf.model_index(problem.workloads[pieces[i].workload].model)),
            batch=t.batch[sel], units=t.units[sel], delay=t.delay[sel], active=t.active[sel], cache=t.cache[sel],
            power=t.power[sel], budget=t.budget[sel], limit=t.limit[sel],
            kernels=np.full(n, float(c.kernels_per_inference)), idle=np.full(n, c.idle_ms),
            alpha_cache=np.full(n, c.alpha_cache), copies=np.minimum(cap // t.units[sel], copies[i]),
        ))
    table = ItemTable(**{f.name: np.concatenate([getattr(x, f.name) for x in parts]) for f in fields(ItemTable)})
    by_piece = tuple(np.flatnonzero(table.piece == i) for i in range(len(pieces)))
    return Items(table, bounds, by_piece, least)


def feasible_bounds(problem: PlanningProblem, reach: Bounds, tables: list[tuple[ConfigTable, ModelCoefficients]]
                    ) -> Bounds:
    """``reach`` (what any set of placements reaches on one GPU) tightened to what a set whose
    members all meet their budgets can reach: every member k needs clock ratio f/F >= Y_k / B_k
    (Y_k at least its solo GPU time at full clock, idle + a_k), and total L2 at most
    c_k + (B_k - idle - a_k) / (a_k alpha_cache); the power follows from the clock ratio."""
    hw = problem.perf_model.hardware
    ratio, cache = 1.0, 0.0
    for t, c in tables:
        ok = t.solo_ok
        y_solo = c.idle_ms + t.active[ok]
        ratio = min(ratio, float(np.min(y_solo / t.budget[ok])))
        if c.alpha_cache > 0:
            cache = max(cache, float(np.max(t.cache[ok] + (t.budget[ok] - y_solo) / (t.active[ok] * c.alpha_cache))))
        else:  # an L2-blind model tolerates any L2: no tightening
            cache = reach.max_cache
    min_ratio = max(reach.min_clock_ratio, ratio)
    kappa = hw.alpha_f / hw.max_clock_mhz
    max_power = reach.max_power_w
    if kappa < 0:
        max_power = min(max_power, hw.max_power_w + (min_ratio - 1.0) / kappa)
    return Bounds(reach.max_members, reach.max_sched_ms, min(reach.max_cache, max(cache, 0.0)), max_power, min_ratio)


def check_company_never_helps(problem: PlanningProblem) -> None:
    """The bound's pruning and pricing take co-runners to only slow a placement down: the scheduling
    increment D(n) = alpha_sch n + beta_sch >= 0 for n >= 2 (and, checked in ``build_items``, no
    negative L2 or power demand). A profile fitted otherwise is refused."""
    hw = problem.perf_model.hardware
    if hw.alpha_sch < 0.0 or 2 * hw.alpha_sch + hw.beta_sch < 0.0:
        raise ProblemError(
            f"profile '{problem.perf_model.name}' has a negative scheduling increment for some number of "
            f"co-located workloads (alpha_sch {hw.alpha_sch:g}, beta_sch {hw.beta_sch:g}); the exact planner's bound "
            "assumes company never speeds a workload up: re-fit the profile, or use --planner greedy"
        )
