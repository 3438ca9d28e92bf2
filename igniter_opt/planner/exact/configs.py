"""Candidate configurations of one demand: every (batch, queue delay, share units) with its
constants, its GPU-time budget and whether it is feasible alone; and the dominance pruning."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from igniter_opt.domain import LatencyBudget, PlanningProblem, Workload
from igniter_opt.errors import ProblemError
from igniter_opt.perfmodel.model import HardwareCoefficients, PerformanceModel
from igniter_opt.placement import Demand, violates
from igniter_opt.placement.serving import ServingModel
from igniter_opt.planner.greedy import batch_limit, igniter_batch


def busy_power_w(hw: HardwareCoefficients) -> float:
    """Power of a busy GPU before its placements' own terms: idle power plus the shared floor."""
    return hw.idle_power_w + hw.power_floor_w


def sched_increment_ms(hw: HardwareCoefficients, members: int) -> float:
    """D(n), the scheduling-delay increment per kernel on a GPU of n members: 0 alone, else
    alpha_sch n + beta_sch (at least 0)."""
    return 0.0 if members < 2 else max(0.0, hw.alpha_sch * members + hw.beta_sch)


@dataclass(frozen=True)
class Config:
    """One candidate configuration of a demand: batch, share units, queue delay and its constants."""

    batch: int
    units: int
    active_ms: float  # a_k = k_act(b, r), solo active time
    cache: float  # c_k, L2 demand (% of peak)
    power_w: float  # p_k, power above idle (and above the shared floor, see busy_power_w)
    budget_ms: float  # B_k, the largest t_gpu (at full clock) meeting latency limit and rate
    queue_delay_ms: float | None = None  # the queue delay it runs with (None: apply's rule)

    @property
    def key(self) -> tuple[int, float, int]:
        return config_key(self.batch, self.queue_delay_ms, self.units)


def config_key(batch: int, queue_delay_ms: float | None, units: int) -> tuple[int, float, int]:
    """A configuration's identity (a delay of None and NaN are the same: apply's rule)."""
    d = -1.0 if queue_delay_ms is None or math.isnan(queue_delay_ms) else round(float(queue_delay_ms), 9)
    return int(batch), d, int(units)


@dataclass(frozen=True)
class ConfigTable:
    """Every candidate configuration of one demand, as flat arrays (one entry per configuration)."""

    batch: np.ndarray
    units: np.ndarray
    delay: np.ndarray  # NaN: apply's rule
    active: np.ndarray
    cache: np.ndarray
    power: np.ndarray
    budget: np.ndarray
    limit: np.ndarray
    lat: np.ndarray
    thr: np.ndarray
    solo_ok: np.ndarray

    def index(self) -> dict[tuple[int, float, int], int]:
        return {config_key(int(b), float(d), int(u)): j
                for j, (b, d, u) in enumerate(zip(self.batch, self.delay, self.units, strict=True))}

    def config(self, j: int) -> Config:
        d = float(self.delay[j])
        return Config(int(self.batch[j]), int(self.units[j]), float(self.active[j]), float(self.cache[j]),
                      float(self.power[j]), float(self.budget[j]), None if math.isnan(d) else d)


def batch_range(perf: PerformanceModel, problem: PlanningProblem, d: Demand) -> int:
    """The largest batch a demand's candidates use: igniter, up to the paper's batch at its rate;
    full, while batch formation leaves room for inference; tail, the batch limit."""
    w = d.workload
    bmax = batch_limit(problem)
    if problem.latency_budget is LatencyBudget.IGNITER:
        top = igniter_batch(perf, Workload(w.name, w.model, w.slo_ms, d.rate_rps), bmax)
    elif problem.latency_budget is LatencyBudget.FULL:
        top = min(bmax, math.floor(w.slo_ms * (1.0 - problem.margin) * d.rate_rps / 1000.0) + 1)
    else:
        top = bmax
    return max(1, d.batch, top)


def config_table(perf: PerformanceModel, rule: ServingModel, d: Demand, max_batch: int, cap: int,
                 extra: tuple[tuple[int, float | None], ...] = ()) -> ConfigTable:
    """Every (batch <= max_batch, queue-delay candidate, units) of demand ``d``, and the (batch,
    delay) pairs in ``extra`` (running placements it could keep), with constants and solo feasibility."""
    w = d.workload
    b_vals = np.arange(1, max_batch + 1)
    delays = rule.queue_delay_candidates(w.slo_ms, d.rate_rps, b_vals)  # (batches, k)
    bd_batch = np.repeat(b_vals, delays.shape[1])
    bd_delay = delays.ravel()
    if d.queue_delay_ms is not None:
        extra = ((d.batch, d.queue_delay_ms), *extra)
    have = {config_key(int(b), float(x), 0) for b, x in zip(bd_batch, bd_delay, strict=True)}
    for b, x in extra:
        if config_key(b, x, 0) not in have:
            have.add(config_key(b, x, 0))
            bd_batch = np.append(bd_batch, b)
            bd_delay = np.append(bd_delay, np.nan if x is None else x)
    batch = np.repeat(bd_batch, cap)
    delay = np.repeat(bd_delay, cap)
    units = np.tile(np.arange(1, cap + 1), bd_batch.size)
    midx = np.full(batch.size, perf.model_index(w.model))
    rate = np.full(batch.size, d.rate_rps)
    limit = np.repeat(rule.limit_ms(np.full(bd_batch.size, w.slo_ms), np.full(bd_batch.size, d.rate_rps),
                                    bd_batch.astype(float), bd_delay), cap)
    active, cache, power = perf.solo_terms(midx, batch.astype(float), units * perf.unit_pct)
    budget = perf.gpu_time_budget_ms(midx, batch.astype(float), limit, rate)
    lat, thr = perf.predict_padded(midx[:, None], batch[:, None].astype(float), (units * perf.unit_pct)[:, None])
    solo_ok = ~violates(lat[:, 0], thr[:, 0], limit, rate) & np.isfinite(limit)
    return ConfigTable(batch, units, delay, active, cache, power, budget, limit, lat[:, 0], thr[:, 0], solo_ok)


def unplaceable(d: Demand, t: ConfigTable) -> ProblemError:
    """Say why no configuration of a demand works even alone on a GPU."""
    w = d.workload
    gap = np.where(np.isfinite(t.limit), t.lat - t.limit, np.inf)
    j = int(np.argmin(gap))
    why = []
    if not math.isfinite(float(gap[j])):
        why.append("no batch and queue delay can meet the SLO at this rate")
    elif float(t.lat[j]) > float(t.limit[j]):
        why.append(f"best latency {t.lat[j]:.2f} ms > limit {t.limit[j]:.2f} ms (batch {int(t.batch[j])}, 100 %)")
    if float(np.max(t.thr)) < d.rate_rps:
        why.append(f"best throughput {float(np.max(t.thr)):.1f} req/s < rate {d.rate_rps:g} req/s")
    if not why:
        why.append("no batch meets the latency limit and the rate at the same time")
    return ProblemError(
        f"workload '{w.name}' ({w.model}, SLO {w.slo_ms:g} ms, {d.rate_rps:g} req/s) cannot be placed "
        f"even alone on a GPU: {'; '.join(why)}; relax its SLO or lower its rate"
    )


@dataclass(frozen=True)
class Bounds:
    """Reachable ranges on one GPU, used for dominance and the tightest big-M."""

    max_members: int
    max_sched_ms: float  # largest scheduling-delay increment D
    max_cache: float  # largest total L2 demand on a GPU
    max_power_w: float  # largest total power demand (idle included)
    min_clock_ratio: float  # f / F at max_power_w


def slack(t: ConfigTable, idx: np.ndarray, kernels: float, idle: float, alpha_cache: float, clock_ratio: float,
          cache_others: float, sched: float) -> np.ndarray:
    """B_k f/F - Y_k for an environment (clock ratio, others' L2, scheduling increment): >= 0 feasible."""
    return (t.budget[idx] * clock_ratio - idle - t.active[idx] * (1.0 + alpha_cache * cache_others)
            - kernels * sched)


def prune(t: ConfigTable, kernels: float, idle: float, alpha_cache: float, bounds: Bounds,
          credit: np.ndarray | None = None) -> np.ndarray:
    """Indices of the non-dominated solo-feasible configurations.

    Environment box: others' L2 in [0, max_cache], clock ratio in [min_clock_ratio, 1],
    scheduling increment in [0, max_sched]. A dominates B when A needs no more units, L2 and
    power, and A's slack >= B's slack at the box's corners (the difference is linear, and the
    scheduling term cancels: same model), or A is feasible everywhere in the box. Per (batch,
    delay), shares above the first one feasible everywhere are dominated by it. With ``credit``
    (what each configuration is worth, per configuration), A must also be worth at least as much.
    """
    idx = np.flatnonzero(t.solo_ok)
    if idx.size == 0:
        return idx
    cr = np.zeros(t.batch.size) if credit is None else np.asarray(credit, float)
    return undominated(t, first_pass(t, idx, kernels, idle, alpha_cache, bounds, cr), kernels, idle, alpha_cache,
                       bounds, cr)


def first_pass(t: ConfigTable, idx: np.ndarray, kernels: float, idle: float, alpha_cache: float, bounds: Bounds,
               cr: np.ndarray) -> np.ndarray:
    """``idx`` less what the first configuration feasible everywhere of its (batch, delay) dominates: a
    quick pass (``undominated`` removes the same configurations, in far less time on fewer). NaN
    (apply's rule) is one delay here: as a dict key NaN never equals itself, which once left this
    pass doing nothing."""
    worst = (bounds.min_clock_ratio, bounds.max_cache, bounds.max_sched_ms)
    always = slack(t, idx, kernels, idle, alpha_cache, *worst) >= 0
    delay = np.where(np.isnan(t.delay), -np.inf, t.delay)
    first_always: dict[tuple[int, float], int] = {}
    for j in idx[always]:
        first_always.setdefault((int(t.batch[j]), float(delay[j])), int(j))
    f = np.array([first_always.get((int(b), float(d)), -1) for b, d in zip(t.batch[idx], delay[idx], strict=True)])
    fs = np.maximum(f, 0)
    kept = ((f < 0) | (t.units[idx] <= t.units[fs]) | (cr[idx] > cr[fs]) | (t.cache[idx] < t.cache[fs])
            | (t.power[idx] < t.power[fs]))
    return idx[kept]


def undominated(t: ConfigTable, idx: np.ndarray, kernels: float, idle: float, alpha_cache: float, bounds: Bounds,
                cr: np.ndarray) -> np.ndarray:
    """The configurations of ``idx`` no other one of them dominates (see ``prune``)."""
    worst = (bounds.min_clock_ratio, bounds.max_cache, bounds.max_sched_ms)
    corners = [(1.0, 0.0), (1.0, bounds.max_cache), (bounds.min_clock_ratio, 0.0),
               (bounds.min_clock_ratio, bounds.max_cache)]
    sl = np.stack([slack(t, idx, kernels, idle, alpha_cache, f, co, 0.0) for f, co in corners], axis=1)
    always = slack(t, idx, kernels, idle, alpha_cache, *worst) >= 0
    u, c, p, v = t.units[idx], t.cache[idx], t.power[idx], cr[idx]
    n = idx.size
    # le[i, j]: i needs no more of every resource than j (and is worth no less)
    le = ((u[:, None] <= u[None, :]) & (c[:, None] <= c[None, :] + 1e-12) & (p[:, None] <= p[None, :] + 1e-12)
          & (v[:, None] >= v[None, :]))
    # better[i, j]: i's slack >= j's at every corner (one 2-D comparison per corner: no n x n x 4 array)
    better = np.ones_like(le)
    for corner in range(sl.shape[1]):
        better &= sl[:, None, corner] >= sl[None, :, corner] - 1e-12
    dom = le & (better | always[:, None])
    np.fill_diagonal(dom, False)
    # strict: i dominates j unless j also dominates i, in which case keep the earlier index
    mutual = dom & dom.T
    dom = dom & ~(mutual & (np.arange(n)[:, None] > np.arange(n)[None, :]))
    return idx[~dom.any(axis=0)]
