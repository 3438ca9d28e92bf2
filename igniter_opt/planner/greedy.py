"""The paper's greedy planner (iGniter Algorithms 1 and 2), faithful and vectorised.

Initialisation (``initial_demands``), by latency budget:
- igniter (the paper's): batch from the paper's closed form, lower-bound share from its closed
  form raised until the demand meets its limit alone (``solo_feasible_units``: the closed form
  ignores the clock drop of a power-hungry model running alone, and without this a GPU opened
  for one demand can violate its SLO; it changes nothing on the paper's 12-workload mix). A
  workload whose lower bound exceeds 100 % gets dedicated GPUs at 100 % serving 90 % of the
  throughput of the largest batch that meets SLO/2 alone, until the rest fits one GPU.
- full and tail: the configuration (batch and, under tail, queue delay) that needs the smallest
  share alone (ties: the smaller batch, then the shorter delay); a workload no single GPU can
  carry is split into equal replicas, the fewest that fit.
Batches never exceed the problem's batch limit (by default the largest the profile measured).

Placement: the paper's Algorithm 1 over the kernel's AllocGPU (``placement.place``): demands by
lower-bound share, largest first (stable); each goes to the open GPU whose total share grows
least after AllocGPU (first on ties), else to a new GPU. Nothing placed moves.
"""

from __future__ import annotations

import math
import time

import numpy as np

from igniter_opt.domain import LatencyBudget, Plan, PlanningProblem, Workload
from igniter_opt.errors import ProblemError
from igniter_opt.perfmodel.model import PerformanceModel
from igniter_opt.placement import Demand, Packing, assemble_plan, lower_share_units_array, solo_feasible_units
from igniter_opt.placement.alloc import ConfigTerms, slot_constants
from igniter_opt.placement.bounds import solo_rate_ceiling
from igniter_opt.placement.feasibility import tolerant_bounds, violates
from igniter_opt.placement.place import OpenGpus, place_demands
from igniter_opt.placement.serving import ServingModel, serving_model_for, unreachable_slo_error
from igniter_opt.solver import SolveOptions, SolveOutcome, SolveStatus

PLANNER_NAME = "greedy"
# A dedicated replica serves this fraction of its predicted throughput (the paper's rule).
DEDICATED_LOAD_FACTOR = 0.9
# Largest batch considered where the profile does not say which batches it measured.
FALLBACK_MAX_BATCH = 1024
# A workload split over more servers than this is refused (a rate or SLO typed wrong, most likely).
MAX_REPLICAS = 10_000
_EPS = 1e-9


def too_tight(problem: PlanningProblem, w: Workload) -> ProblemError:
    """The error for a workload whose SLO no share can meet even alone."""
    return unreachable_slo_error(problem, w)


def too_many_servers(problem: PlanningProblem, w: Workload) -> ProblemError:
    return ProblemError(f"workload '{w.name}' ({w.model}, {w.rate_rps:g} req/s) would need more than {MAX_REPLICAS} "
                        f"servers under the '{problem.latency_budget}' budget; lower its rate or relax its SLO")


def batch_limit(problem: PlanningProblem) -> int:
    return problem.batch_limit or FALLBACK_MAX_BATCH


def igniter_batches(model: PerformanceModel, model_idx: np.ndarray, slo_ms: np.ndarray, rate_rps: np.ndarray,
                    max_batch: int = FALLBACK_MAX_BATCH) -> np.ndarray:
    """The paper's batch for many workloads, b = ceil(T2 a B / (B + d_load a)) with a = rate / 1000
    per ms, at most ``max_batch``."""
    consts = model.slot_constants(model_idx, np.ones(np.shape(model_idx)))
    d_load = consts["t_load"] * model.hardware.pcie_bandwidth_bytes_per_ms  # input bytes per request
    bw = model.hardware.pcie_bandwidth_bytes_per_ms
    a = rate_rps / 1000.0
    t2 = slo_ms / 2.0
    return np.clip(np.ceil(t2 * a * bw / (bw + d_load * a) - _EPS), 1, max_batch).astype(np.int64)


def igniter_batch(model: PerformanceModel, w: Workload, max_batch: int = FALLBACK_MAX_BATCH) -> int:
    """The paper's batch of one workload (see ``igniter_batches``)."""
    idx = np.array([model.model_index(w.model)])
    return int(igniter_batches(model, idx, np.array([w.slo_ms]), np.array([w.rate_rps]), max_batch)[0])


def _largest_solo_batch(model: PerformanceModel, w: Workload, limit_ms: float, upto: int) -> int | None:
    """Largest batch <= ``upto`` whose solo latency at 100 % meets ``limit_ms``."""
    batches = np.arange(1, upto + 1, dtype=float)[:, None]
    idx = np.full(batches.shape, model.model_index(w.model))
    lat, _ = model.predict_padded(idx, batches, np.full(batches.shape, model.max_units * model.unit_pct))
    fits = np.flatnonzero(~violates(lat[:, 0], np.inf, limit_ms, 0.0))
    return int(fits[-1]) + 1 if fits.size else None


def _replica(problem: PlanningProblem, w: Workload, cache: dict[tuple[str, float], tuple[int, float]]
             ) -> tuple[int, float]:
    """(batch, rate) of one dedicated replica: the largest batch (up to the batch limit) whose solo
    latency at 100 % meets SLO/2, serving 90 % of its predicted throughput. Depends on (model, SLO) only."""
    model = problem.perf_model
    key = (w.model, w.slo_ms)
    if key not in cache:
        big = _largest_solo_batch(model, w, w.slo_ms / 2.0, batch_limit(problem))
        if big is None:
            raise too_tight(problem, w)
        _, thr = model.solo(w.model, big, model.max_units * model.unit_pct)
        cache[key] = (big, DEDICATED_LOAD_FACTOR * thr)
    return cache[key]


def igniter_demands_many(problem: PlanningProblem, ws: tuple[Workload, ...] | list[Workload]) -> list[list[Demand]]:
    """The paper's initialisation under the igniter budget, for many workloads at once.

    Batch from the closed form, lower-bound share raised until it meets SLO/2 alone. A workload
    whose lower bound exceeds 100 % gets dedicated GPUs at 100 % (see ``_replica``) until the
    remaining rate fits one GPU; that remainder is planned as an ordinary workload. Returns each
    workload's demands, in input order.
    """
    model = problem.perf_model
    n = len(ws)
    if n == 0:
        return []
    cap = model.max_units
    bmax = batch_limit(problem)
    idx = np.array([model.model_index(w.model) for w in ws], np.intp)
    slo = np.array([w.slo_ms for w in ws], float)
    rate = np.array([w.rate_rps for w in ws], float)
    limit = slo / 2.0

    # Column k holds the rate left after k dedicated replicas (k = 0: the whole rate), computed
    # by repeated subtraction; columns are added only while some workload still needs them.
    cache: dict[tuple[str, float], tuple[int, float]] = {}
    big = np.zeros(n, np.int64)
    replica_rate = np.full(n, np.inf)
    rest = rate[:, None]
    fits_at = np.full(n, -1)
    batch0, units0 = np.zeros(n, np.int64), np.zeros(n, np.int64)
    k = 0
    todo = np.arange(n)
    ceilings: dict[tuple[int, int, float], float] = {}
    while todo.size:
        col = rest[todo, k]
        b = igniter_batches(model, idx[todo], slo[todo], col, bmax)
        u = np.full(todo.size, cap + 1, np.int64)
        # After a replica, most columns are still far above what one GPU can carry: skip walking
        # their shares (a workload at 1e7 req/s has a thousand such columns).
        walk = np.ones(todo.size, bool) if k == 0 else _may_fit_one_gpu(model, idx[todo], b, limit[todo], col,
                                                                         ceilings)
        t = todo[walk]
        u[walk] = solo_feasible_units(model, idx[t], b[walk], lower_share_units_array(model, idx[t], b[walk],
                                                                                      limit[t]), limit[t], col[walk])
        ok = (u > 0) & (u <= cap)
        batch0[todo[ok]], units0[todo[ok]] = b[ok], u[ok]
        fits_at[todo[ok]] = k
        todo = todo[~ok]
        if not todo.size:
            break
        for j in todo:
            if not np.isfinite(replica_rate[j]):
                big[j], replica_rate[j] = _replica(problem, ws[j], cache)
        # A rate no larger than one replica's that still does not fit stops here: the last
        # replica serves it at the replica batch.
        todo = todo[rest[todo, k] > replica_rate[todo] + 1e-9]
        nxt = np.full(n, -np.inf)
        nxt[todo] = rest[todo, k] - replica_rate[todo]
        rest = np.column_stack([rest, nxt])
        k += 1
    return [_igniter_pieces(w, int(fits_at[j]), rest[j], float(replica_rate[j]), int(big[j]), int(batch0[j]),
                            int(units0[j]), float(limit[j]), cap) for j, w in enumerate(ws)]


def _may_fit_one_gpu(model: PerformanceModel, idx: np.ndarray, batch: np.ndarray, limit: np.ndarray,
                     rate: np.ndarray, ceilings: dict[tuple[int, int, float], float]) -> np.ndarray:
    """False where ``rate`` is above the most a GPU can carry at that batch and limit
    (``solo_rate_ceiling``, memoised in ``ceilings``): no share can fit it."""
    keys = list(zip(idx.tolist(), batch.tolist(), limit.tolist(), strict=True))
    new = sorted({key for key in keys if key not in ceilings})
    if new:
        i, b, lim = (np.array(c) for c in zip(*new, strict=True))
        ceilings.update(zip(new, solo_rate_ceiling(model, i.astype(np.intp), b, lim.astype(float)).tolist(),
                            strict=True))
    _, rate_bound = tolerant_bounds(limit, rate)
    return rate_bound <= np.array([ceilings[key] for key in keys])


def _igniter_pieces(w: Workload, fits_at: int, rest: np.ndarray, replica_rate: float, big: int, batch0: int,
                    units0: int, limit: float, cap: int) -> list[Demand]:
    """One workload's demands: ``fits_at`` dedicated replicas and the remainder (or replicas only)."""
    if fits_at == 0:
        return [Demand(w, w.rate_rps, batch0, units0, limit)]
    if fits_at > 0:
        ds = [Demand(w, replica_rate, big, cap, limit, dedicated=True) for _ in range(fits_at)]
        return [*ds, Demand(w, float(rest[fits_at]), batch0, units0, limit)]
    last = int(np.flatnonzero(np.isfinite(rest))[-1])
    ds = [Demand(w, replica_rate, big, cap, limit, dedicated=True) for _ in range(last)]
    return [*ds, Demand(w, float(rest[last]), big, cap, limit, dedicated=True)]


def formation_batch_limit(problem: PlanningProblem, slo_ms: float, rate_rps: float) -> int:
    """The largest batch worth considering for a workload piece: the batch limit, and under the full
    budget no more than the requests arriving within SLO (1 - margin), since (b - 1) / R of batch
    formation must leave room for inference. (Not under tail: a larger maximum batch shortens the
    queue behind a busy server even when batches rarely fill.)"""
    if problem.latency_budget is not LatencyBudget.FULL:
        return batch_limit(problem)
    return min(batch_limit(problem), max(1, int(rate_rps * slo_ms * (1.0 - problem.margin) / 1000.0) + 1))


def _candidates(problem: PlanningProblem, rule: ServingModel, slo: np.ndarray, rates: np.ndarray
                ) -> tuple[np.ndarray, ...]:
    """Every (workload piece, batch, queue delay) candidate: (owner, batch, delay, limit), flattened
    in owner order (then batch, then delay)."""
    tops = np.array([formation_batch_limit(problem, float(x), float(r)) for x, r in zip(slo, rates, strict=True)])
    if tops.size and (tops == tops[0]).all():
        return _candidates_same_batches(rule, int(tops[0]), slo, rates)
    owner = np.repeat(np.arange(tops.size), tops)
    batch = np.arange(owner.size) - np.repeat(np.cumsum(tops) - tops, tops) + 1
    delays = rule.queue_delay_candidates(slo[owner], rates[owner], batch)
    keep = np.ones(delays.shape, bool)
    keep[batch == 1, 1:] = False  # a batch of one never waits: one delay is enough
    k = delays.shape[1]
    owner, batch, delay = np.repeat(owner, k)[keep.ravel()], np.repeat(batch, k)[keep.ravel()], delays[keep]
    return owner, batch, delay, rule.limit_ms(slo[owner], rates[owner], batch, delay)


def _candidates_same_batches(rule: ServingModel, top: int, slo: np.ndarray, rates: np.ndarray
                             ) -> tuple[np.ndarray, ...]:
    """``_candidates`` where every piece considers batches 1..``top``. The limits are asked for in
    (batch, delay, owner) order, where the serving model's per-batch curves serve contiguous runs
    (under the tail budget, millions of them), then laid out in owner order: a transpose."""
    n = slo.size
    batches = np.arange(1, top + 1)
    delays = rule.queue_delay_candidates(np.tile(slo, top), np.tile(rates, top), np.repeat(batches, n))
    k = delays.shape[1]
    by_batch = delays.reshape(top, n, k).transpose(0, 2, 1)  # [batch, delay, owner]
    # a batch of one never waits: one delay is enough
    delay = np.concatenate([by_batch[0, :1].ravel(), by_batch[1:].ravel()])
    cols = 1 + (top - 1) * k  # candidates per owner
    batch = np.repeat(np.r_[1, np.repeat(batches[1:], k)], n)
    limit = rule.limit_ms(np.tile(slo, cols), np.tile(rates, cols), batch, delay)
    return (np.repeat(np.arange(n), cols), *(a.reshape(cols, n).T.ravel() for a in (batch, delay, limit)))


def _fewest_replicas(problem: PlanningProblem, ws: list[Workload]) -> np.ndarray:
    """A lower bound on each workload's servers: its rate over the most any one server carries
    (the best batch at 100 %); fewer can never meet the rate, whatever the latency budget."""
    perf = problem.perf_model
    b = np.arange(1, batch_limit(problem) + 1, dtype=float)
    best = {}
    for m in {w.model for w in ws}:
        idx = np.full((b.size, 1), perf.model_index(m))
        _, thr = perf.predict_padded(idx, b[:, None], np.full((b.size, 1), perf.max_units * perf.unit_pct))
        best[m] = float(np.max(thr))
    return np.array([max(1, math.ceil(w.rate_rps / best[w.model] - 1e-9)) for w in ws], np.int64)


def _choose(owner: np.ndarray, batch: np.ndarray, delay: np.ndarray, units: np.ndarray, cap: int) -> dict[int, int]:
    """Per owner, its candidate with the fewest units alone (ties: smaller batch, shorter delay).

    Candidates come in owner order; one key per candidate ranks (units, batch, delay) exactly
    (units <= 4096, batch <= 1024 and the delay's rank among its batch's candidates < 64).
    """
    if owner.size == 0:
        return {}
    ok = (units > 0) & (units <= cap)
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    same_batch = np.r_[False, (batch[1:] == batch[:-1]) & (owner[1:] == owner[:-1])]
    rank = np.arange(owner.size) - np.maximum.accumulate(np.where(same_batch, 0, np.arange(owner.size)))
    key = np.where(ok, (units.astype(float) * 1025 + batch) * 64 + rank, np.inf)
    best = np.minimum.reduceat(key, starts)
    hit = np.flatnonzero(np.isfinite(key) & (key == np.repeat(best, np.diff(np.r_[starts, owner.size]))))
    first = hit[np.r_[True, owner[hit][1:] != owner[hit][:-1]]] if hit.size else hit
    return {int(owner[i]): int(i) for i in first}


def _solo_units(perf: PerformanceModel, midx: np.ndarray, batch: np.ndarray, limit: np.ndarray,
                rate: np.ndarray) -> np.ndarray:
    """Each candidate's share units alone (``solo_feasible_units`` from the lower bound), computed
    only where the serving model gives a limit: a NaN or -inf limit has no lower bound (-1), and
    under the tail budget most candidates have none (batches that cannot fill within the SLO)."""
    units = np.full(limit.shape, -1, np.int64)
    has = np.flatnonzero(limit > -np.inf)  # False for NaN too
    m, b, lim = midx[has], batch[has], limit[has]
    units[has] = solo_feasible_units(perf, m, b, lower_share_units_array(perf, m, b, lim), lim, rate[has])
    return units


def best_solo_demands(problem: PlanningProblem, ws: list[Workload]) -> list[list[Demand]]:
    """Initialisation under the full and tail budgets: per workload the configuration (batch, queue
    delay) that needs the smallest share alone (ties: smaller batch, then shorter delay); a
    workload no single GPU can carry is split into r equal replicas, the fewest that fit (counted
    up from ``_fewest_replicas``, below which none can)."""
    perf = problem.perf_model
    rule = serving_model_for(problem)
    out: list[list[Demand]] = [[] for _ in ws]
    replicas = _fewest_replicas(problem, ws)
    slo_all = np.array([w.slo_ms for w in ws])
    midx_all = np.array([perf.model_index(w.model) for w in ws], np.intp)
    todo = np.arange(len(ws))
    while todo.size:
        rates = np.array([ws[j].rate_rps for j in todo]) / replicas[todo]
        owner, batch, delay, limit = _candidates(problem, rule, slo_all[todo], rates)
        units = _solo_units(perf, midx_all[todo][owner], batch, limit, rates[owner])
        chosen = _choose(owner, batch, delay, units, perf.max_units)
        if rule.budget is LatencyBudget.FULL:  # the full budget's limit is the same at any rate
            for j in map(int, np.flatnonzero(replicas[todo] == 1)):
                if j not in chosen and not (units[owner == j] > 0).any():
                    raise too_tight(problem, ws[todo[j]])
        for j, i in chosen.items():
            w, r = ws[todo[j]], int(replicas[todo[j]])
            d = None if np.isnan(delay[i]) else float(delay[i])
            # r equal replicas: one (immutable) demand, r times; a workload may need thousands
            out[todo[j]] = [Demand(w, float(rates[j]), int(batch[i]), int(units[i]), float(limit[i]), dedicated=r > 1,
                                   queue_delay_ms=d)] * r
        todo = np.array([t for j, t in enumerate(todo) if j not in chosen], np.int64)
        replicas[todo] += 1
        if todo.size and replicas[todo].max() > MAX_REPLICAS:
            raise too_many_servers(problem, ws[todo[int(np.argmax(replicas[todo]))]])
    return out


def initial_demands(problem: PlanningProblem) -> list[Demand]:
    """Every workload's demands under the problem's latency budget, in input order."""
    perf = problem.perf_model
    ws = problem.workloads
    for w in ws:
        perf.model_index(w.model)  # a clear error for an unknown model
    if problem.latency_budget is LatencyBudget.IGNITER:
        return [d for ds in igniter_demands_many(problem, ws) for d in ds]
    return [d for ds in best_solo_demands(problem, list(ws)) for d in ds]


def demand_constants(perf: PerformanceModel, demands: list[Demand] | tuple[Demand, ...]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Model indices and slot constants of every demand at its batch, limit and rate."""
    midx = np.array([perf.model_index(d.workload.model) for d in demands], np.intp)
    const = slot_constants(perf, midx, np.array([d.batch for d in demands], float),
                           np.array([d.limit_ms for d in demands], float), np.array([d.rate_rps for d in demands]))
    return midx, const


def place(perf: PerformanceModel, demands: list[Demand]) -> Packing:
    """Algorithm 1 over ``demands`` (already initialised) onto new GPUs."""
    cap = perf.max_units
    order = sorted(range(len(demands)), key=lambda i: -demands[i].lower_units)  # stable
    terms = ConfigTerms(perf, max((d.batch for d in demands), default=1), cap)
    midx, const = demand_constants(perf, demands)
    cfg = np.array([terms.index(int(m), d.batch, d.lower_units) for m, d in zip(midx, demands, strict=True)], np.int64)
    table = OpenGpus(terms)
    place_demands(table, demands, order, const, cfg, cap)
    return Packing(tuple(demands), table.packing_gpus())


def solve(problem: PlanningProblem, options: SolveOptions | None = None) -> Plan:
    """Plan ``problem`` with the paper's greedy algorithm."""
    del options  # the greedy planner has no tunable search
    t0 = time.perf_counter()
    demands = initial_demands(problem)
    packing = place(problem.perf_model, demands)
    wall = time.perf_counter() - t0
    info = SolveOutcome(SolveStatus.HEURISTIC,
                      objective=packing.num_gpus * problem.perf_model.hardware.price_per_gpu_hour, wall_s=wall)
    return assemble_plan(problem, packing, PLANNER_NAME, info)
