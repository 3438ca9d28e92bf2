"""The exact planner: a mixed-integer program over candidate (batch, share) configurations.

Data (``prepare``)
    Demands are the greedy planner's (a workload too large for one GPU is split the same way).
    For each demand ``d`` the candidate configurations ``k = (b, u)`` are batches ``b`` (igniter
    budget: 1 .. the paper's closed-form batch; full budget: every batch whose formation time fits
    the SLO) and shares of ``u`` units. Each configuration has constants: solo active time
    ``a_k = k_act(b, r)``, L2 demand ``c_k``, power ``p_k``, and a GPU-time budget

        B_k = min(L_d(b) - t_load(b) - t_fb(b),  1000 b / R_d - t_fb(b))
        (serving overhead o, utilization u: B_k = min(L_d(b), u 1000 b / R_d) - t_load(b) - t_fb(b) - o)

    so that "latency <= limit and throughput >= rate" is exactly ``t_gpu <= B_k``. Infeasible
    configurations (not even alone) and dominated ones (another configuration of the demand
    needs no more share, L2 and power and is feasible wherever this one is) are dropped.

Why the interference is linear, exactly
    On GPU g with n_g workloads, total L2 demand C_g and power P_g, configuration k has

        t_gpu = (F / f(P_g)) * Y_k,   Y_k = n_k D(n_g) + idle + a_k (1 + alpha_cache (C_g - c_k)),
        f(P)/F = min(1, 1 + kappa (P - P_max)),  kappa = alpha_f / F < 0.

    F/f is convex in P and multiplies Y; instead of over-estimating the product, divide by it:
    ``t_gpu <= B_k``  <=>  ``Y_k <= B_k * f(P_g)/F``  <=>  ``Y_k <= B_k`` and
    ``Y_k <= B_k (1 + kappa (P_g - P_max))``: two linear inequalities, no approximation. The
    scheduling delay D(n) (0 alone, alpha_sch n + beta_sch with company) is bounded by a variable
    ``s_g >= max(0, alpha_sch n_g + beta_sch)``, exact when alpha_sch + beta_sch <= 0 (as on the
    V100) and an over-estimate for a lone workload otherwise. Every plan the program accepts
    therefore meets the exact model (re-checked by ``verify_plan`` anyway), up to a safety
    margin that absorbs the solver's tolerances.

The program (``build_model``): binaries x[d, g, k] (demand d on GPU g with configuration k) and
open[g]; continuous n[g], cache[g], power[g], sched[g]; the constraint families are the
``add_<name>_constraints`` functions below (their docstrings state the inequalities). Objective:
lexicographic, GPU cost first, then total share (two HiGHS runs, see ``add_objective``).
GPU symmetry is broken by ordering: demands sorted by lower-bound share, demand i may use GPUs
0..i only, and open[g] >= open[g+1]. The greedy plan is the MIP start; its GPU count is the
number of GPU slots.

Replanning (``igniter_opt.replan.exact``) passes a ``Migration``: the first GPU slots stand for
the GPUs running now (exempt from symmetry breaking, which holds among the new slots only), each
running placement that could survive becomes a ``KeepOption``, and the objective adds the
migration cost per running placement not kept (``add_keep_placement_constraints``).
"""

from __future__ import annotations

import importlib
import logging
import math
import threading
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from igniter_opt.domain import LatencyBudget, Plan, PlanningProblem, SolverInfo, Workload
from igniter_opt.errors import ProblemError, SolverUnavailableError
from igniter_opt.perfmodel.model import HardwareCoefficients, PerformanceModel
from igniter_opt.planner import greedy
from igniter_opt.planner.budget import Demand, igniter_batch, inference_limit_ms, max_units
from igniter_opt.planner.verify import verify_plan
from igniter_opt.solver import (
    SolveOptions,
    SolveReport,
    SolveStatus,
    highs_options,
    relative_gap,
)

if TYPE_CHECKING:
    from pyomo.environ import ConcreteModel

log = logging.getLogger(__name__)

PLANNER_NAME = "exact"
SOLVER_NAME = "appsi_highs"
# Budgets are tightened by this much (ms, plus a share of the constraint's big-M) so that a
# solution the solver accepts within its feasibility and integrality tolerances (1e-7, 1e-6)
# still meets the exact model.
SAFETY_ABS_MS = 1e-5
SAFETY_REL_BIGM = 2e-6
# Largest batch considered under the full budget.
MAX_BATCH = 256
# Above this many assignment binaries, each demand keeps fewer configurations (smallest shares first).
DEFAULT_MAX_ASSIGN_VARS = 15_000
MIN_CONFIGS_PER_DEMAND = 2
# Seconds past the time limit after which a HiGHS run is cancelled (it can overrun in a cut round).
WATCHDOG_GRACE_S = 2.0
# Conflict-clique rows are dense: at most this many nonzeros in all (the largest clique always).
CLIQUE_MAX_NONZEROS = 40_000
# The MIP start (a repaired greedy plan) keeps at least this much slack, more than the MIP's safety.
REPAIR_MARGIN_MS = 1e-3
REPAIR_RATE_REL = 1e-4

INSTALL_HINT = "the exact planner needs the HiGHS solver: pip install 'highspy>=1.7' (and pyomo>=6.7)"


# ---- data ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    """One candidate configuration of a demand: batch, share units and its constants."""

    batch: int
    units: int
    active_ms: float  # a_k = k_act(b, r), solo active time
    cache: float  # c_k, L2 demand (% of peak)
    power_w: float  # p_k, power above idle (and above the shared floor, see busy_power_w)
    budget_ms: float  # B_k, the largest t_gpu (at full clock) meeting latency limit and rate


@dataclass(frozen=True)
class MipDemand:
    """A demand with its model constants and candidate configurations."""

    demand: Demand
    kernels: float
    idle_ms: float
    alpha_cache: float
    configs: tuple[Config, ...]

    @property
    def name(self) -> str:
        return self.demand.workload.name

    @property
    def min_units(self) -> int:
        return min(c.units for c in self.configs)


@dataclass(frozen=True)
class Bounds:
    """Reachable ranges on one GPU, used for dominance and the tightest big-M."""

    max_members: int
    max_sched_ms: float  # largest scheduling-delay increment D
    max_cache: float  # largest total L2 demand on a GPU
    max_power_w: float  # largest total power demand (idle included)
    min_clock_ratio: float  # f / F at max_power_w


@dataclass(frozen=True)
class KeepOption:
    """A running placement a replan may keep: on GPU slot ``slot`` with ``batch`` and ``units``,
    taken by any one of ``demands`` (input indices of its workload's demands). ``count`` identical
    running placements share one option."""

    slot: int
    demands: tuple[int, ...]
    batch: int
    units: int
    count: int = 1


@dataclass(frozen=True)
class Migration:
    """What turns the MIP into a replanning MIP (see the module docstring).

    GPU slots ``0 .. fixed_slots - 1`` are the running GPUs; ``start_slots`` says which of them
    each GPU of the start (``greedy_result``) is on (None: a new GPU); at least ``fresh_slots``
    interchangeable slots follow for new GPUs. Of the ``old_placements`` running placements, each
    one not kept costs ``cost``.
    """

    fixed_slots: int
    fresh_slots: int
    keeps: tuple[KeepOption, ...]
    cost: float
    old_placements: int
    start_slots: tuple[int | None, ...] = ()  # per start GPU: its running slot, or None (a new GPU)


@dataclass(frozen=True)
class MipData:
    """Everything ``build_model`` needs, computed once from the problem."""

    problem: PlanningProblem
    demands: tuple[MipDemand, ...]  # sorted: largest lower-bound share first
    num_gpus: int  # GPU slots (the greedy plan's count)
    cap_units: int
    bounds: Bounds
    greedy_plan: Plan  # the plan to beat: greedy's (or its repaired copy if greedy's violates the model)
    warm: dict[int, tuple[int, int]] = field(default_factory=dict)  # demand -> (gpu, config index)
    configs_capped: bool = False
    greedy_repairs: int = 0  # greedy GPUs whose shares were raised (or split) to meet the exact model
    cliques: tuple[tuple[int, ...], ...] = ()  # sets of demand positions no two of which can share a GPU
    max_clique: int = 0
    # replanning (``Migration``): slots 0..fixed_slots-1 are running GPUs; keeps are
    # (slot, ((demand position, config index), ...), count)
    fixed_slots: int = 0
    keeps: tuple[tuple[int, tuple[tuple[int, int], ...], int], ...] = ()
    migration_cost: float = 0.0
    old_placements: int = 0

    @property
    def price(self) -> float:
        return self.problem.perf_model.hardware.price_per_gpu_hour

    def lower_bound_gpus(self) -> int:
        """Bounds no solver is needed for: ceil(sum of every demand's smallest share / 100 %), and
        the size of the largest set of demands no two of which fit on one GPU together."""
        share = math.ceil(sum(d.min_units for d in self.demands) / self.cap_units - 1e-9)
        return max(1, share, self.max_clique)


def slot_allowed(data: MipData, d: int, g: int) -> bool:
    """Demand position d may use GPU slot g: every running (fixed) slot, and new slot f = g - fixed
    only if f <= d (symmetry breaking among interchangeable slots)."""
    return g < data.fixed_slots or g - data.fixed_slots <= d


def busy_power_w(hw: HardwareCoefficients) -> float:
    """Power of a busy GPU before its placements' own terms: idle power plus the shared floor."""
    return hw.idle_power_w + hw.power_floor_w


def _config_table(
    perf: PerformanceModel, d: Demand, budget: LatencyBudget, margin: float, max_batch: int, cap: int
) -> dict[str, np.ndarray]:
    """Every (batch, units) on the grid with its solo prediction and constants (vectorised)."""
    w = d.workload
    c = perf.models[w.model]
    hw = perf.hardware
    b = np.repeat(np.arange(1, max_batch + 1), cap)
    u = np.tile(np.arange(1, cap + 1), max_batch)
    share = u * perf.unit_pct
    k1, k2, k3, k4, k5 = c.k
    active = (k1 * b * b + k2 * b + k3) / (share + k4) + k5
    h = 1000.0 * b / active
    cache = c.alpha_c * h + c.beta_c
    power = c.alpha_p * h + c.beta_p - hw.power_floor_w  # the shared floor is counted once per busy GPU
    bw = hw.pcie_bandwidth_bytes_per_ms
    t_load = c.input_bytes * b / bw
    t_fb = c.output_bytes * b / bw
    limit = np.array([inference_limit_ms(w.slo_ms, d.rate_rps, int(x), budget, margin) for x in range(1, max_batch + 1)])
    limit = np.repeat(limit, cap)
    if perf.serving_overhead_ms is None:
        budget_ms = np.minimum(limit - t_load - t_fb, 1000.0 * b / d.rate_rps - t_fb)
    else:  # one batch at a time: t_inf + o within the limit and u 1000 b / (t_inf + o) >= R
        budget_ms = (np.minimum(limit, perf.serving_max_utilization * 1000.0 * b / d.rate_rps)
                     - t_load - t_fb - perf.serving_overhead_ms)
    midx = np.full((b.size, 1), perf.model_index(w.model))
    lat, thr = perf.predict_padded(midx, b[:, None].astype(float), share[:, None])
    solo_ok = (lat[:, 0] <= limit) & (thr[:, 0] >= d.rate_rps)
    return {"b": b, "u": u, "active": active, "cache": cache, "power": power, "budget": budget_ms,
            "solo_ok": solo_ok, "lat": lat[:, 0], "thr": thr[:, 0], "limit": limit}


def _batch_range(perf: PerformanceModel, d: Demand, budget: LatencyBudget, margin: float) -> int:
    w = d.workload
    if budget is LatencyBudget.IGNITER:
        top = igniter_batch(perf, Workload(w.name, w.model, w.slo_ms, d.rate_rps))
        return max(top, d.batch)
    # full budget: (b - 1) / R must leave room for inference
    top = math.floor(w.slo_ms * (1.0 - margin) * d.rate_rps / 1000.0) + 1
    return max(1, d.batch, min(top, MAX_BATCH))


def _slack(cfg: dict[str, np.ndarray], kernels: float, idle: float, alpha_cache: float,
           clock_ratio: float, cache_others: float, sched: float) -> np.ndarray:
    """B_k f/F - Y_k for an environment (clock ratio, others' L2, scheduling increment): >= 0 feasible."""
    return (cfg["budget"] * clock_ratio - idle - cfg["active"] * (1.0 + alpha_cache * cache_others)
            - kernels * sched)


def _prune(cfg: dict[str, np.ndarray], keep: np.ndarray, kernels: float, idle: float, alpha_cache: float,
           bounds: Bounds) -> np.ndarray:
    """Indices (into cfg) of the non-dominated solo-feasible configurations.

    Environment box: others' L2 in [0, max_cache], clock ratio in [min_clock_ratio, 1],
    scheduling increment in [0, max_sched]. A dominates B when A needs no more units, L2 and
    power, and A's slack >= B's slack at the box's corners (the difference is linear, and the
    scheduling term cancels: same model), or A is feasible everywhere in the box.
    """
    idx = np.flatnonzero(keep)
    if idx.size == 0:
        return idx
    # Per batch, shares above the first one feasible in every environment are dominated by it.
    always = _slack({k: v[idx] for k, v in cfg.items()}, kernels, idle, alpha_cache,
                    bounds.min_clock_ratio, bounds.max_cache, bounds.max_sched_ms) >= 0
    b = cfg["b"][idx]
    first_always = {}
    for j in np.flatnonzero(always):
        first_always.setdefault(int(b[j]), int(cfg["u"][idx[j]]))
    idx = np.array([i for i in idx if cfg["u"][i] <= first_always.get(int(cfg["b"][i]), 10**9)], dtype=np.intp)
    corners = [(1.0, 0.0), (1.0, bounds.max_cache), (bounds.min_clock_ratio, 0.0),
               (bounds.min_clock_ratio, bounds.max_cache)]
    sl = np.stack([_slack({k: v[idx] for k, v in cfg.items()}, kernels, idle, alpha_cache, f, co, 0.0)
                   for f, co in corners], axis=1)  # (n, 4)
    always = _slack({k: v[idx] for k, v in cfg.items()}, kernels, idle, alpha_cache,
                    bounds.min_clock_ratio, bounds.max_cache, bounds.max_sched_ms) >= 0
    u, c, p = cfg["u"][idx], cfg["cache"][idx], cfg["power"][idx]
    n = idx.size
    # le[i, j]: i needs no more of every resource than j
    le = (u[:, None] <= u[None, :]) & (c[:, None] <= c[None, :] + 1e-12) & (p[:, None] <= p[None, :] + 1e-12)
    better = np.all(sl[:, None, :] >= sl[None, :, :] - 1e-12, axis=2) | always[:, None]
    dom = le & better
    np.fill_diagonal(dom, False)
    # strict: i dominates j unless j also dominates i, in which case keep the earlier index
    mutual = dom & dom.T
    dom = dom & ~(mutual & (np.arange(n)[:, None] > np.arange(n)[None, :]))
    dominated = dom.any(axis=0)
    return idx[~dominated]


def _resource_bound(per_demand: list[tuple[np.ndarray, np.ndarray]], cap: int) -> float:
    """Upper bound on sum of a resource over one GPU: max sum v s.t. sum units <= cap, one config each.

    Lagrangian dual: min over lambda >= 0 of lambda cap + sum_d max(0, max_k (v_k - lambda u_k)).
    """
    if not per_demand:
        return 0.0
    ratios = np.concatenate([v / u for u, v in per_demand] + [np.zeros(1)])
    lams = np.unique(np.clip(ratios, 0.0, None))
    # Every lambda at once. max_k (v_k - lambda u_k) is attained on the upper convex hull of the
    # points (u_k, v_k), a few of the hundreds of configurations: evaluate those only.
    acc = np.zeros(lams.size)
    for u, v in per_demand:
        h = _upper_hull(u, v)
        acc += np.maximum(0.0, (v[None, h] - lams[:, None] * u[None, h]).max(axis=1))
    return float(np.min(lams * cap + acc))


def _upper_hull(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Indices of the upper convex hull of the points (u_k, v_k) (monotone chain), every point that
    maximises v - lambda u for some lambda among them."""
    order = np.lexsort((-v, u))  # by u, the largest v first within one u
    hull: list[int] = []
    last_u = None
    for i in order:
        if u[i] == last_u:
            continue  # a smaller v at the same u is never the maximum
        last_u = u[i]
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # drop b when it lies on or below the segment from a to i
            if (v[b] - v[a]) * (u[i] - u[a]) <= (v[i] - v[a]) * (u[b] - u[a]):
                hull.pop()
            else:
                break
        hull.append(int(i))
    return np.array(hull, dtype=np.intp)


def _greedy_units(demands: list[Demand], gpus: list[tuple[list[int], list[int]]]) -> dict[int, tuple[int, int, int]]:
    """demand index -> (greedy GPU, batch, units)."""
    out = {}
    for g, (members, units) in enumerate(gpus):
        for i, u in zip(members, units, strict=True):
            out[i] = (g, demands[i].batch, int(u))
    return out


def _alloc_rows(perf: PerformanceModel, cap: int, model_idx: np.ndarray, batch: np.ndarray, units: np.ndarray,
                limit: np.ndarray, rate: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AllocGPU on many GPUs (rows) at once: one more unit per violating placement until none
    violates (feasible) or the shares exceed 100 % (infeasible). Returns (feasible, units)."""
    units = units.copy()
    active = np.ones(units.shape[0], bool)
    feasible = np.zeros(units.shape[0], bool)
    while active.any():
        rows = np.flatnonzero(active)
        over = units[rows].sum(axis=1) > cap
        active[rows[over]] = False
        rows = rows[~over]
        if rows.size == 0:
            break
        lat, thr = perf.predict_padded(model_idx[rows], batch[rows], units[rows] * perf.unit_pct, mask[rows])
        viol = mask[rows] & ((lat > limit[rows]) | (thr < rate[rows]))
        done = ~viol.any(axis=1)
        feasible[rows[done]] = True
        active[rows[done]] = False
        units[rows[~done]] += viol[~done]
    return feasible, units


def repair_greedy(
    problem: PlanningProblem,
    demands: list[Demand],
    gpus: list[tuple[list[int], list[int]]],
    tables: list[dict[str, np.ndarray]],
    origins: list[int] | None = None,
) -> tuple[list[Demand], list[tuple[list[int], list[int]]], int]:
    """Make the greedy plan meet the exact model (with the MIP's safety margin), for the MIP start.

    The MIP's rows keep a small safety margin (``SAFETY_*``), so a greedy GPU that meets its
    limits with less slack than that would not be a valid MIP start. AllocGPU (one more unit per
    violating placement, until none violates) runs on every greedy GPU with limits tightened by
    ``REPAIR_MARGIN_MS``; a GPU that cannot be repaired is split into one GPU per demand at the
    demand's smallest solo-feasible configuration. A greedy plan that violates the exact model
    outright is repaired the same way.
    Returns (demands with their batches, GPUs, number of GPUs changed); ``origins``, if given, is
    filled with the input GPU each output GPU comes from.
    """
    perf = problem.perf_model
    cap = max_units(perf)
    if not gpus:
        return demands, gpus, 0
    width = max(len(mem) for mem, _ in gpus)
    n = len(gpus)
    m_idx = np.zeros((n, width), np.intp)
    b = np.zeros((n, width))
    u = np.zeros((n, width), np.int64)
    lim = np.zeros((n, width))
    rt = np.zeros((n, width))
    mask = np.zeros((n, width), bool)
    for g, (mem, units) in enumerate(gpus):
        for s, (i, un) in enumerate(zip(mem, units, strict=True)):
            d = demands[i]
            m_idx[g, s], b[g, s], u[g, s] = perf.model_index(d.workload.model), d.batch, un
            lim[g, s], rt[g, s], mask[g, s] = d.limit_ms - REPAIR_MARGIN_MS, d.rate_rps * (1 + REPAIR_RATE_REL), True
    ok, final = _alloc_rows(perf, cap, m_idx, b, u, lim, rt, mask)
    out: list[tuple[list[int], list[int]]] = []
    demands = list(demands)
    changed = 0
    for g, (mem, units) in enumerate(gpus):
        new_units = [int(x) for x in final[g, : len(mem)]]
        if ok[g]:
            out.append((list(mem), new_units))
            if origins is not None:
                origins.append(g)
            changed += new_units != list(units)
            continue
        changed += 1
        for i in mem:
            if origins is not None:
                origins.append(g)
            cfg = tables[i]
            okj = np.flatnonzero(cfg["solo_ok"] & (cfg["lat"] <= cfg["limit"] - REPAIR_MARGIN_MS)
                                 & (cfg["thr"] >= demands[i].rate_rps * (1 + REPAIR_RATE_REL)))
            if okj.size == 0:
                okj = np.flatnonzero(cfg["solo_ok"])
            j = int(okj[np.lexsort((cfg["b"][okj], cfg["u"][okj]))[0]])
            bj = int(cfg["b"][j])
            demands[i] = replace(demands[i], batch=bj, lower_units=int(cfg["u"][j]),
                                 limit_ms=float(cfg["limit"][j]))
            out.append(([i], [int(cfg["u"][j])]))
    if changed:
        log.info("greedy start: %d GPU(s) repaired to meet the exact model", changed)
    return demands, out, changed


def pair_conflicts(mds: list[MipDemand], cap: int, perf: PerformanceModel) -> np.ndarray:
    """conflict[i, j]: demands i and j cannot share a GPU in any pair of their configurations.

    A pair is checked under the least interference it can meet together (the two alone: n = 2,
    each other's L2 and power), with the same linear rows as the MIP; more company only adds
    interference, so a conflicting pair conflicts on every GPU.
    """
    hw = perf.hardware
    kappa = hw.alpha_f / hw.max_clock_mhz
    s2 = max(0.0, 2 * hw.alpha_sch + hw.beta_sch)
    n = len(mds)
    conf = np.zeros((n, n), bool)
    arr = []
    for md in mds:
        c = md.configs
        arr.append((np.array([x.units for x in c]), np.array([x.cache for x in c]), np.array([x.power_w for x in c]),
                    np.array([x.active_ms for x in c]), np.array([x.budget_ms for x in c]),
                    md.kernels * s2 + md.idle_ms, md.alpha_cache))
    umin = np.array([md.min_units for md in mds])
    for i in range(n):
        ui, ci, pi, ai, bi, fi, aci = arr[i]
        for j in range(i + 1, n):
            if umin[i] + umin[j] > cap:
                conf[i, j] = conf[j, i] = True
                continue
            uj, cj, pj, aj, bj, fj, acj = arr[j]
            ratio = np.minimum(1.0, 1.0 + kappa * (busy_power_w(hw) + pi[:, None] + pj[None, :] - hw.max_power_w))
            ok = ((ui[:, None] + uj[None, :] <= cap)
                  & (fi + ai[:, None] * (1 + aci * cj[None, :]) <= bi[:, None] * ratio)
                  & (fj + aj[None, :] * (1 + acj * ci[:, None]) <= bj[None, :] * ratio))
            if not ok.any():
                conf[i, j] = conf[j, i] = True
    return conf


def clique_cover(conf: np.ndarray, num_gpus: int, max_nonzeros: int = 400_000) -> tuple[tuple[tuple[int, ...], ...], int]:
    """Greedy maximal cliques of the conflict graph (largest first), and the largest size found.

    Each clique gives one row per GPU slot; cliques are kept while their rows stay within
    ``max_nonzeros`` assignment entries (counted per demand and GPU).
    """
    n = conf.shape[0]
    deg = conf.sum(axis=1)
    by_deg = sorted(range(n), key=lambda i: (-deg[i], i))
    covered: set[int] = set()
    found: list[tuple[int, ...]] = []
    for v in by_deg:
        if v in covered or deg[v] == 0:
            continue
        clique = [v]
        for w in by_deg:
            if w != v and all(conf[w, c] for c in clique):
                clique.append(w)
        if len(clique) >= 2:
            found.append(tuple(sorted(clique)))
            covered.update(clique)
    found = sorted(set(found), key=lambda c: -len(c))
    biggest = len(found[0]) if found else (1 if n else 0)
    kept, used = [], 0
    for c in found:
        cost = len(c) * num_gpus
        if used + cost > max_nonzeros:
            break
        kept.append(c)
        used += cost
    return tuple(kept), biggest


def prepare(problem: PlanningProblem, *, max_assign_vars: int = DEFAULT_MAX_ASSIGN_VARS,
            greedy_result: tuple[list[Demand], list[tuple[list[int], list[int]]]] | None = None,
            migration: Migration | None = None) -> MipData:
    """Demands, candidate configurations, reachable bounds and the greedy start.

    With ``migration`` (replanning), every keep option's (batch, units) stays a candidate of each
    of its demands for which it is feasible alone, and the GPU slots are laid out as it says.
    """
    perf = problem.perf_model
    budget = problem.latency_budget
    cap = max_units(perf)
    hw = perf.hardware
    if greedy_result is None:
        demands = greedy.initial_demands(problem)
        gpus = greedy.place(perf, demands)
    else:
        demands, gpus = greedy_result
    keep_cfgs: dict[int, set[tuple[int, int]]] = {}
    for opt in migration.keeps if migration else ():
        for i in opt.demands:
            if 1 <= opt.units <= cap:
                keep_cfgs.setdefault(i, set()).add((opt.batch, opt.units))
    tables = []
    for i, d in enumerate(demands):
        bmax = max([_batch_range(perf, d, budget, problem.margin), *(b for b, _ in keep_cfgs.get(i, ()))])
        cfg = _config_table(perf, d, budget, problem.margin, bmax, cap)
        if not cfg["solo_ok"].any():
            raise _unplaceable(perf, d, cfg)
        tables.append(cfg)

    # The plan to beat is greedy's own (if it meets the exact model); the MIP start is a repaired
    # copy with slack for the MIP's safety margin, which may split a GPU that greedy filled to the brim.
    gplan = greedy.build_plan(problem, demands, gpus, greedy.PLANNER_NAME,
                              SolverInfo(status=str(SolveStatus.HEURISTIC)))
    origins: list[int] = []
    demands, gpus, repaired = repair_greedy(problem, demands, gpus, tables, origins)
    if repaired:
        start_plan = greedy.build_plan(problem, demands, gpus, greedy.PLANNER_NAME,
                                       SolverInfo(status=str(SolveStatus.HEURISTIC)))
        if verify_plan(gplan, problem):
            gplan = start_plan
    gmap = _greedy_units(demands, gpus)

    # Reachable bounds on one GPU (valid for any set of demands that fits in its share).
    min_units = sorted(int(t["u"][t["solo_ok"]].min()) for t in tables)
    members, used = 0, 0
    for mu in min_units:
        if used + mu > cap:
            break
        used += mu
        members += 1
    members = max(1, members)
    max_sched = max(0.0, hw.alpha_sch * members + hw.beta_sch) if members >= 2 else 0.0
    max_cache = _resource_bound([(t["u"][t["solo_ok"]].astype(float), t["cache"][t["solo_ok"]]) for t in tables], cap)
    max_power = busy_power_w(hw) + _resource_bound(
        [(t["u"][t["solo_ok"]].astype(float), t["power"][t["solo_ok"]]) for t in tables], cap)
    kappa = hw.alpha_f / hw.max_clock_mhz
    min_ratio = min(1.0, 1.0 + kappa * (max_power - hw.max_power_w))
    bounds = Bounds(members, max_sched, max(0.0, max_cache), max_power, max(min_ratio, 1e-6))

    mds: list[MipDemand] = []
    for i, (d, cfg) in enumerate(zip(demands, tables, strict=True)):
        c = perf.models[d.workload.model]
        keep = _prune(cfg, cfg["solo_ok"], float(c.kernels_per_inference), c.idle_ms, c.alpha_cache, bounds)
        sel = {int(j) for j in keep}
        if i in gmap:  # the greedy configuration stays a candidate, so the MIP start is valid
            _, gb, gu = gmap[i]
            sel.add(int((gb - 1) * cap + (gu - 1)))
        for kb, ku in keep_cfgs.get(i, ()):  # a running placement this demand could keep
            j = (kb - 1) * cap + (ku - 1)
            if cfg["solo_ok"][j]:
                sel.add(int(j))
        configs = tuple(
            Config(int(cfg["b"][j]), int(cfg["u"][j]), float(cfg["active"][j]), float(cfg["cache"][j]),
                   float(cfg["power"][j]), float(cfg["budget"][j]))
            for j in sorted(sel, key=lambda j: (cfg["u"][j], cfg["b"][j]))
        )
        mds.append(MipDemand(d, float(c.kernels_per_inference), c.idle_ms, c.alpha_cache, configs))

    order = sorted(range(len(mds)), key=lambda i: (-mds[i].min_units, i))
    # GPU slot of each start GPU: replanning pins the running ones (``None``: relabelled below)
    fixed = migration.fixed_slots if migration else 0
    start_slot: list[int | None] = [None] * len(gpus)
    if migration:
        seen: set[int] = set()
        for o, g in enumerate(origins):
            slot = migration.start_slots[g] if g < len(migration.start_slots) else None
            if slot is not None and slot not in seen:
                start_slot[o] = slot
                seen.add(slot)
        fresh = max(migration.fresh_slots, sum(x is None for x in start_slot))
        num_gpus = fixed + fresh
    else:
        num_gpus = len(gpus)
    # pairwise conflicts on the full (uncapped) candidate lists: valid for the real problem
    conflict = pair_conflicts([mds[i] for i in order], cap, perf)
    cliques, biggest = clique_cover(conflict, num_gpus)

    # Size control: the assignment binaries number about sum_d K_d * (F + min(d + 1, G - F)).
    def n_slots(pos: int) -> int:
        return fixed + min(pos + 1, num_gpus - fixed)

    def n_vars(mds_sorted: list[MipDemand]) -> int:
        return sum(len(m.configs) * n_slots(pos) for pos, m in enumerate(mds_sorted))

    sorted_mds = [mds[i] for i in order]
    capped = False
    if n_vars(sorted_mds) > max_assign_vars:
        capped = True
        slots = sum(n_slots(pos) for pos in range(len(sorted_mds)))
        k_max = max(MIN_CONFIGS_PER_DEMAND, max_assign_vars // max(slots, 1))
        trimmed = []
        for pos, m in enumerate(sorted_mds):
            orig = order[pos]
            must = []
            if orig in gmap:
                _, gb, gu = gmap[orig]
                must.append(next(c for c in m.configs if c.batch == gb and c.units == gu))
            must += [c for c in m.configs if (c.batch, c.units) in keep_cfgs.get(orig, ()) and c not in must]
            keep_c = list(m.configs[:k_max])
            if orig in gmap and must[0] not in keep_c:
                keep_c[-1] = must[0]
            keep_c += [c for c in must if c not in keep_c]  # running placements it could keep
            trimmed.append(replace(m, configs=tuple(sorted(set(keep_c), key=lambda c: (c.units, c.batch)))))
        sorted_mds = trimmed

    # Greedy start, relabelled so that GPUs appear in order of their first (sorted) demand (new
    # slots only: a running GPU keeps its slot).
    pos_of = {orig: pos for pos, orig in enumerate(order)}
    first = {}
    for orig, (g, _, _) in gmap.items():
        if start_slot[g] is None:
            first[g] = min(first.get(g, 10**9), pos_of[orig])
    relabel = {g: fixed + new for new, g in enumerate(sorted(first, key=lambda g: first[g]))}
    relabel.update({g: slot for g, slot in enumerate(start_slot) if slot is not None})
    warm = {}
    for orig, (g, gb, gu) in gmap.items():
        pos = pos_of[orig]
        k = next(j for j, c in enumerate(sorted_mds[pos].configs) if c.batch == gb and c.units == gu)
        warm[pos] = (relabel[g], k)
    keeps = []
    for opt in migration.keeps if migration else ():
        cands = tuple(
            (pos_of[i], k) for i in opt.demands
            for k, c in enumerate(sorted_mds[pos_of[i]].configs) if (c.batch, c.units) == (opt.batch, opt.units)
        )
        if cands and opt.slot < fixed:
            keeps.append((opt.slot, cands, opt.count))
    return MipData(problem, tuple(sorted_mds), num_gpus, cap, bounds, gplan, warm, capped, repaired,
                   cliques, biggest, fixed_slots=fixed, keeps=tuple(keeps),
                   migration_cost=migration.cost if migration else 0.0,
                   old_placements=migration.old_placements if migration else 0)


def _unplaceable(perf: PerformanceModel, d: Demand, cfg: dict[str, np.ndarray]) -> ProblemError:
    """Say why no configuration of a demand works even alone on a GPU."""
    w = d.workload
    j = int(np.argmin(cfg["lat"] - cfg["limit"]))
    best_thr = float(np.max(cfg["thr"]))
    why = []
    if float(cfg["lat"][j]) > float(cfg["limit"][j]):
        why.append(f"best latency {cfg['lat'][j]:.2f} ms > limit {cfg['limit'][j]:.2f} ms "
                   f"(batch {int(cfg['b'][j])}, 100 %)")
    if best_thr < d.rate_rps:
        why.append(f"best throughput {best_thr:.1f} req/s < rate {d.rate_rps:g} req/s")
    if not why:
        why.append("no batch meets the latency limit and the rate at the same time")
    return ProblemError(
        f"workload '{w.name}' ({w.model}, SLO {w.slo_ms:g} ms, {d.rate_rps:g} req/s) cannot be placed "
        f"even alone on a GPU: {'; '.join(why)}; relax its SLO or lower its rate"
    )


# ---- model -----------------------------------------------------------------------------------
def _pyomo() -> Any:
    try:
        return importlib.import_module("pyomo.environ")
    except ImportError as exc:
        raise SolverUnavailableError(f"{INSTALL_HINT} ({exc})") from None


def add_variables(m: ConcreteModel, data: MipData) -> None:
    """open[g] in {0,1}; x[d,g,k] in {0,1} where ``slot_allowed`` (g <= position of d, or g a running
    GPU when replanning); n, cache, power, sched >= 0; kept[j] in [0, count_j] per keep option."""
    pyo = _pyomo()
    G = data.num_gpus
    m.GPUS = pyo.Set(initialize=range(G), ordered=True)
    m.DEMANDS = pyo.Set(initialize=range(len(data.demands)), ordered=True)
    m.ASSIGN = pyo.Set(
        dimen=3, ordered=True,
        initialize=[(d, g, k) for d, md in enumerate(data.demands) for g in range(G)
                    if slot_allowed(data, d, g) for k in range(len(md.configs))],
    )
    m.PAIRS = pyo.Set(dimen=2, ordered=True,
                      initialize=[(d, g) for d in range(len(data.demands)) for g in range(G)
                                  if slot_allowed(data, d, g)])
    m.open = pyo.Var(m.GPUS, domain=pyo.Binary)
    m.x = pyo.Var(m.ASSIGN, domain=pyo.Binary)
    m.n = pyo.Var(m.GPUS, domain=pyo.NonNegativeReals, bounds=(0, data.bounds.max_members))
    m.cache = pyo.Var(m.GPUS, domain=pyo.Reals)
    m.power = pyo.Var(m.GPUS, domain=pyo.Reals)
    m.sched = pyo.Var(m.GPUS, domain=pyo.NonNegativeReals, bounds=(0, max(data.bounds.max_sched_ms, 0.0)))
    if data.keeps:
        m.KEEPS = pyo.Set(initialize=range(len(data.keeps)), ordered=True)
        m.kept = pyo.Var(m.KEEPS, domain=pyo.NonNegativeReals, bounds=lambda m, j: (0, data.keeps[j][2]))


def add_one_gpu_per_demand_constraints(m: ConcreteModel, data: MipData) -> None:
    """sum_{g,k} x[d,g,k] = 1 for every demand d (each demand on one GPU, one configuration)."""
    pyo = _pyomo()
    if not len(m.DEMANDS):
        return
    by_d: dict[int, list] = {d: [] for d in m.DEMANDS}
    for d, g, k in m.ASSIGN:
        by_d[d].append(m.x[d, g, k])
    m.one_gpu_per_demand = pyo.Constraint(m.DEMANDS, rule=lambda m, d: sum(by_d[d]) == 1)


def _by_gpu(m: ConcreteModel) -> dict[int, list[tuple[int, int]]]:
    out: dict[int, list[tuple[int, int]]] = {g: [] for g in m.GPUS}
    for d, g, k in m.ASSIGN:
        out[g].append((d, k))
    return out


def add_gpu_share_capacity_constraints(m: ConcreteModel, data: MipData) -> None:
    """sum_{d,k} u_k x[d,g,k] <= (100 % / unit) * open[g] for every GPU slot g."""
    pyo = _pyomo()
    if not len(m.GPUS):
        return
    members = _by_gpu(m)
    m.gpu_share_capacity = pyo.Constraint(m.GPUS, rule=lambda m, g: sum(
        data.demands[d].configs[k].units * m.x[d, g, k] for d, k in members[g]) <= data.cap_units * m.open[g])


def add_demand_needs_open_gpu_constraints(m: ConcreteModel, data: MipData) -> None:
    """sum_k x[d,g,k] <= open[g] for every (demand, GPU) pair (tightens the LP relaxation)."""
    pyo = _pyomo()
    if not len(m.PAIRS):
        return
    ks = {d: range(len(md.configs)) for d, md in enumerate(data.demands)}
    m.demand_needs_open_gpu = pyo.Constraint(
        m.PAIRS, rule=lambda m, d, g: sum(m.x[d, g, k] for k in ks[d]) <= m.open[g])


def add_gpu_load_constraints(m: ConcreteModel, data: MipData) -> None:
    """n[g] = sum x[d,g,k];  cache[g] = sum c_k x[d,g,k];  power[g] = p_idle + p_floor + sum p_k x[d,g,k].

    p_floor is the profile's shared power floor (0 under the paper's power form): the model pays it
    once on a busy GPU, and every row that reads power[g] only binds on a GPU with a member.
    """
    pyo = _pyomo()
    if not len(m.GPUS):
        return
    members = _by_gpu(m)
    p_idle = busy_power_w(data.problem.perf_model.hardware)
    cfg = data.demands
    m.gpu_members = pyo.Constraint(m.GPUS, rule=lambda m, g: m.n[g] == sum(m.x[d, g, k] for d, k in members[g]))
    m.gpu_cache = pyo.Constraint(m.GPUS, rule=lambda m, g: m.cache[g] == sum(
        cfg[d].configs[k].cache * m.x[d, g, k] for d, k in members[g]))
    m.gpu_power = pyo.Constraint(m.GPUS, rule=lambda m, g: m.power[g] == p_idle + sum(
        cfg[d].configs[k].power_w * m.x[d, g, k] for d, k in members[g]))


def add_sched_delay_constraints(m: ConcreteModel, data: MipData) -> None:
    """sched[g] >= alpha_sch n[g] + beta_sch (and sched[g] >= 0): D(n) = max(0, alpha_sch n + beta_sch)."""
    pyo = _pyomo()
    if not len(m.GPUS):
        return
    hw = data.problem.perf_model.hardware
    if data.bounds.max_members < 2:
        return
    m.sched_delay = pyo.Constraint(m.GPUS, rule=lambda m, g: m.sched[g] >= hw.alpha_sch * m.n[g] + hw.beta_sch)


def _gpu_time_terms(data: MipData, d: int, k: int) -> tuple[float, float, float]:
    """(constant, coefficient of sched, coefficient of cache) of Y_k = n_k s + idle + a_k (1 + ac (C - c_k))."""
    md = data.demands[d]
    c = md.configs[k]
    const = md.idle_ms + c.active_ms * (1.0 - md.alpha_cache * c.cache)
    return const, md.kernels, c.active_ms * md.alpha_cache


def _y_max(data: MipData, d: int, k: int) -> float:
    const, a_s, a_c = _gpu_time_terms(data, d, k)
    return const + a_s * data.bounds.max_sched_ms + a_c * max(data.bounds.max_cache, data.demands[d].configs[k].cache)


def add_gpu_time_budget_constraints(m: ConcreteModel, data: MipData) -> None:
    """Full clock: n_k sched[g] + idle + a_k (1 + alpha_cache (cache[g] - c_k)) <= B_k + M (1 - x[d,g,k]).

    M = Y_k at the reachable maxima of sched and cache, minus B_k (the tightest the bounds allow).
    """
    pyo = _pyomo()
    if not len(m.ASSIGN):
        return

    def rule(m, d, g, k):
        const, a_s, a_c = _gpu_time_terms(data, d, k)
        b = data.demands[d].configs[k].budget_ms
        big_m = max(0.0, _y_max(data, d, k) - b)
        rhs = b - SAFETY_ABS_MS - SAFETY_REL_BIGM * big_m
        if big_m <= 0.0:
            return pyo.Constraint.Skip  # feasible in every reachable environment
        return a_s * m.sched[g] + a_c * m.cache[g] + const <= rhs + big_m * (1 - m.x[d, g, k])

    m.gpu_time_budget = pyo.Constraint(m.ASSIGN, rule=rule)


def add_gpu_time_budget_throttled_constraints(m: ConcreteModel, data: MipData) -> None:
    """Clock drop: Y_k <= B_k (1 + kappa (power[g] - P_max)) + M' (1 - x[d,g,k]), kappa = alpha_f / F < 0.

    With the full-clock family this is exactly Y_k <= B_k f(P)/F, i.e. t_gpu <= B_k. Skipped when
    no GPU can reach P_max.
    """
    pyo = _pyomo()
    hw = data.problem.perf_model.hardware
    if not len(m.ASSIGN) or data.bounds.max_power_w <= hw.max_power_w:
        return
    kappa = hw.alpha_f / hw.max_clock_mhz

    def rule(m, d, g, k):
        const, a_s, a_c = _gpu_time_terms(data, d, k)
        b = data.demands[d].configs[k].budget_ms
        rhs_min = b * (1.0 + kappa * (data.bounds.max_power_w - hw.max_power_w))
        big_m = max(0.0, _y_max(data, d, k) - rhs_min)
        if big_m <= 0.0:
            return pyo.Constraint.Skip
        return (a_s * m.sched[g] + a_c * m.cache[g] + const - b * kappa * (m.power[g] - hw.max_power_w)
                <= b - SAFETY_ABS_MS - SAFETY_REL_BIGM * big_m + big_m * (1 - m.x[d, g, k]))

    m.gpu_time_budget_throttled = pyo.Constraint(m.ASSIGN, rule=rule)


def _tolerance_terms(data: MipData, d: int, throttled: bool) -> tuple[float, float, list[float], float] | None:
    """Per demand: (sigma, pi, theta_k, big) of the aggregated tolerance cut, or None if not needed."""
    hw = data.problem.perf_model.hardware
    kappa = hw.alpha_f / hw.max_clock_mhz
    md = data.demands[d]
    sig, pis, thetas = [], [], []
    for k, c in enumerate(md.configs):
        const, a_s, a_c = _gpu_time_terms(data, d, k)
        if a_c <= 0:
            return None
        b = c.budget_ms
        if throttled:
            big_m = max(0.0, _y_max(data, d, k) - b * (1.0 + kappa * (data.bounds.max_power_w - hw.max_power_w)))
            rhs = b - SAFETY_ABS_MS - SAFETY_REL_BIGM * big_m - const
            # a_s s + a_c C - b kappa (P - P_idle) <= rhs + b kappa (P_idle - P_max), divided by a_c
            pis.append(-b * kappa / a_c)
            thetas.append((rhs + b * kappa * (hw.idle_power_w - hw.max_power_w)) / a_c)
        else:
            big_m = max(0.0, _y_max(data, d, k) - b)
            rhs = b - SAFETY_ABS_MS - SAFETY_REL_BIGM * big_m - const
            pis.append(0.0)
            thetas.append(rhs / a_c)
        sig.append(a_s / a_c)
    sigma, pi = min(sig), min(pis)
    big = data.bounds.max_cache + sigma * data.bounds.max_sched_ms + pi * (data.bounds.max_power_w - hw.idle_power_w)
    thetas = [min(t, big) for t in thetas]
    if all(t >= big for t in thetas):
        return None
    return sigma, pi, thetas, big


def add_interference_tolerance_constraints(m: ConcreteModel, data: MipData) -> None:
    """Aggregated cut per (d, g), implied by the gpu_time_budget families, stronger in the LP:

    cache[g] + sigma_d sched[g] + pi_d (power[g] - p_idle) <= sum_k theta_k x[d,g,k] + big_d (1 - sum_k x[d,g,k]),
    where theta_k is the largest cache[g] configuration k tolerates (divide its budget row by
    a_k alpha_cache), sigma_d and pi_d are the smallest coefficients over k, and big_d bounds the
    left side. Two rows per pair: full clock (pi = 0) and throttled.
    """
    pyo = _pyomo()
    if not len(m.PAIRS):
        return
    hw = data.problem.perf_model.hardware
    terms = {(d, t): _tolerance_terms(data, d, t) for d in m.DEMANDS for t in (False, True)
             if not t or data.bounds.max_power_w > hw.max_power_w}
    m.CLOCKS = pyo.Set(initialize=[0, 1] if data.bounds.max_power_w > hw.max_power_w else [0])

    def rule(m, d, g, t):
        tt = terms.get((d, bool(t)))
        if tt is None:
            return pyo.Constraint.Skip
        sigma, pi, thetas, big = tt
        return (m.cache[g] + sigma * m.sched[g] + pi * (m.power[g] - hw.idle_power_w)
                <= sum(th * m.x[d, g, k] for k, th in enumerate(thetas))
                + big * (1 - sum(m.x[d, g, k] for k in range(len(thetas)))))

    m.interference_tolerance = pyo.Constraint(m.PAIRS, m.CLOCKS, rule=rule)


def add_conflict_clique_constraints(m: ConcreteModel, data: MipData) -> None:
    """sum_{d in C} sum_k x[d,g,k] <= open[g] for every conflict clique C and GPU g.

    A clique is a set of demands no two of which fit on one GPU together (``pair_conflicts``);
    implied by the other rows, but it lifts the LP bound to at least |C| GPUs. Added only when the
    largest clique beats the share bound ceil(sum min share / 100 %): otherwise the rows do not
    move the root bound and (measured on the paper's mix) slow HiGHS's search down.
    """
    pyo = _pyomo()
    share_bound = math.ceil(sum(d.min_units for d in data.demands) / data.cap_units - 1e-9)
    if not data.cliques or not len(m.GPUS) or data.max_clique <= share_bound:
        return
    K = {d: range(len(md.configs)) for d, md in enumerate(data.demands)}
    # largest cliques first, while their rows stay small (dense rows make HiGHS's presolve slow)
    keep, used = [], 0
    for c, clique in enumerate(data.cliques):
        nz = sum(len(K[d]) * min(d + 1, data.num_gpus) for d in clique)
        if keep and used + nz > CLIQUE_MAX_NONZEROS:
            break
        keep.append(c)
        used += nz
    m.CLIQUES = pyo.Set(initialize=keep, ordered=True)

    def rule(m, c, g):
        members = [d for d in data.cliques[c] if slot_allowed(data, d, g)]
        if len(members) < 2:
            return pyo.Constraint.Skip  # one demand: demand_needs_open_gpu already says it
        return sum(m.x[d, g, k] for d in members for k in K[d]) <= m.open[g]

    m.conflict_clique = pyo.Constraint(m.CLIQUES, m.GPUS, rule=rule)


def add_gpu_open_order_constraints(m: ConcreteModel, data: MipData) -> None:
    """open[g] >= open[g+1] for interchangeable (new) slots g, g+1 (symmetry breaking; with 'demand
    i on new slots 0..i' in the index set). Running GPUs (replanning) are not interchangeable."""
    pyo = _pyomo()
    if data.num_gpus - data.fixed_slots < 2:
        return
    m.GPU_PAIRS = pyo.Set(initialize=range(data.fixed_slots, data.num_gpus - 1), ordered=True)
    m.gpu_open_order = pyo.Constraint(m.GPU_PAIRS, rule=lambda m, g: m.open[g] >= m.open[g + 1])


def add_keep_placement_constraints(m: ConcreteModel, data: MipData) -> None:
    """kept[j] <= sum_{(d,k) in K_j} x[d, g_j, k] for every keep option j (replanning only).

    K_j: the demands of the running placement's workload, each with the configuration equal to the
    placement's batch and share; g_j: its GPU's slot. kept[j] <= count_j is its bound, and the
    objective pays the migration cost on count_j - kept[j]: a running placement counts as kept
    only when a demand of its workload sits on the same GPU with the same share and batch.
    """
    pyo = _pyomo()
    if not data.keeps:
        return

    def rule(m, j):
        g, cands, _ = data.keeps[j]
        terms = [m.x[d, g, k] for d, k in cands if (d, g, k) in m.x]
        if not terms:
            return m.kept[j] <= 0
        return m.kept[j] <= sum(terms)

    m.keep_placement = pyo.Constraint(m.KEEPS, rule=rule)


def add_objective(m: ConcreteModel, data: MipData) -> None:
    """Lexicographic: first min gpu_cost = price * sum_g open[g]; then, with the GPUs fixed,
    min total_share = sum_{d,g,k} share_k x[d,g,k] (``m.total_share``, deactivated until phase 2).

    Replanning adds C * (running placements - sum_j kept[j]) to the first objective and
    (100 G + 1) * (running placements - sum_j kept[j]) to the second (fewest changes, then share).
    Solving the two in turn is the exact lexicographic optimum. A single weighted objective
    (cost + eps * share) is equivalent but much slower to prove: a node whose LP bound exceeds
    G - 1 GPUs can be pruned by the GPU-count objective, not by the weighted one.
    """
    pyo = _pyomo()
    unit = data.problem.perf_model.unit_pct
    cost = data.price * sum(m.open[g] for g in m.GPUS)
    if data.migration_cost and data.old_placements:
        # replanning: + C * (running placements not kept)
        kept = sum(m.kept[j] for j in m.KEEPS) if data.keeps else 0.0
        cost = cost + data.migration_cost * (data.old_placements - kept)
    m.gpu_cost = pyo.Objective(expr=cost, sense=pyo.minimize)
    share = unit * sum(data.demands[d].configs[k].units * m.x[d, g, k] for d, g, k in m.ASSIGN)
    if data.old_placements:
        # replanning: fewest changed placements first (one outweighs any share: the total share
        # stays below 100 % per slot), then the least share
        kept = sum(m.kept[j] for j in m.KEEPS) if data.keeps else 0.0
        share = share + (100.0 * data.num_gpus + 1.0) * (data.old_placements - kept)
    m.total_share = pyo.Objective(expr=share, sense=pyo.minimize)
    m.total_share.deactivate()


def build_model(problem: PlanningProblem, data: MipData | None = None) -> ConcreteModel:
    """The Pyomo model (not solved). ``m.data`` holds the instance data; ``m.build_s`` its build time."""
    pyo = _pyomo()
    t0 = time.perf_counter()
    if data is None:
        data = prepare(problem)
    m = pyo.ConcreteModel(name="igniter_exact")
    add_variables(m, data)
    add_one_gpu_per_demand_constraints(m, data)
    add_gpu_share_capacity_constraints(m, data)
    add_demand_needs_open_gpu_constraints(m, data)
    add_gpu_load_constraints(m, data)
    add_sched_delay_constraints(m, data)
    add_gpu_time_budget_constraints(m, data)
    add_gpu_time_budget_throttled_constraints(m, data)
    add_interference_tolerance_constraints(m, data)
    add_conflict_clique_constraints(m, data)
    add_gpu_open_order_constraints(m, data)
    add_keep_placement_constraints(m, data)
    add_objective(m, data)
    m.data = data
    m.build_s = time.perf_counter() - t0
    return m


def set_warm_start(m: ConcreteModel, data: MipData) -> None:
    """Give every variable the greedy plan's value (the MIP start)."""
    hw = data.problem.perf_model.hardware
    for idx in m.x:
        m.x[idx].set_value(0)
    used: dict[int, list[tuple[int, int]]] = {}
    for d, (g, k) in data.warm.items():
        m.x[d, g, k].set_value(1)
        used.setdefault(g, []).append((d, k))
    for g in m.GPUS:
        mem = used.get(g, [])
        m.open[g].set_value(1 if mem else 0)
        n = len(mem)
        m.n[g].set_value(n)
        m.cache[g].set_value(sum(data.demands[d].configs[k].cache for d, k in mem))
        m.power[g].set_value(busy_power_w(hw) + sum(data.demands[d].configs[k].power_w for d, k in mem))
        m.sched[g].set_value(max(0.0, hw.alpha_sch * n + hw.beta_sch) if data.bounds.max_members >= 2 else 0.0)
    for j, (g, cands, count) in enumerate(data.keeps):
        m.kept[j].set_value(min(count, sum(1 for d, k in cands if data.warm.get(d) == (g, k))))


# ---- solve -----------------------------------------------------------------------------------
_LAST_THREADS: list[int] = []  # HiGHS fixes its thread count at the first solve of a process


def _require_highs() -> tuple[Any, Any]:
    """Import highspy and Pyomo's APPSI HiGHS interface, or raise SolverUnavailableError."""
    try:
        highspy = importlib.import_module("highspy")
        appsi = importlib.import_module("pyomo.contrib.appsi.solvers")
    except ImportError as exc:
        raise SolverUnavailableError(f"{INSTALL_HINT} ({exc})") from None
    opt = appsi.Highs()
    if not opt.available():
        raise SolverUnavailableError(f"{INSTALL_HINT} (Pyomo cannot load highspy)")
    return highspy, opt


def _map_termination(tc: object, has_solution: bool) -> SolveStatus:
    name = getattr(tc, "name", str(tc))
    table = {
        "optimal": SolveStatus.OPTIMAL,
        "infeasible": SolveStatus.INFEASIBLE,
        "infeasibleOrUnbounded": SolveStatus.INFEASIBLE,
        "error": SolveStatus.ERROR,
        "unknown": SolveStatus.UNKNOWN,
    }
    if name in ("maxTimeLimit", "maxIterations", "objectiveLimit", "interrupted", "minStepLength"):
        return SolveStatus.FEASIBLE if has_solution else SolveStatus.NO_SOLUTION
    return table.get(name, SolveStatus.UNKNOWN)


class _TimeLimitHit:
    """Termination of a run stopped by ``_run``'s watchdog (HiGHS overran its own time limit)."""

    name = "maxTimeLimit"


def _run(opt: Any, m: ConcreteModel, options: SolveOptions, warm_start: bool) -> tuple[object, float | None, float | None]:
    """One HiGHS run: (termination condition, incumbent objective or None, bound or None).

    HiGHS checks its time limit between phases; a long root-node cut round can overrun it by a
    minute on a 40 000-binary model. A watchdog thread cancels the run (``cancelSolve``, which
    HiGHS polls inside every LP) ``WATCHDOG_GRACE_S`` after the limit; the incumbent and bound
    found so far are kept and the run counts as a time limit.
    """
    opt.config.warmstart = bool(warm_start)
    opt.highs_options = highs_options(options)
    highs = getattr(opt, "_solver_model", None)
    fired = threading.Event()

    def cancel() -> None:
        fired.set()
        log.warning("HiGHS overran its time limit of %.1f s; cancelling the run", options.time_limit_s)
        highs.cancelSolve()

    timer = None
    if highs is not None and hasattr(highs, "cancelSolve"):
        timer = threading.Timer(options.time_limit_s + WATCHDOG_GRACE_S, cancel)
        timer.daemon = True
        timer.start()
    try:
        res = opt.solve(m)
    finally:
        if timer is not None:
            timer.cancel()
    tc = res.termination_condition
    obj = res.best_feasible_objective
    bound = res.best_objective_bound
    if fired.is_set() and getattr(tc, "name", "") not in ("optimal", "infeasible"):
        tc = _TimeLimitHit()
        info = highs.getInfo()
        sol = highs.getSolution()
        obj = info.objective_function_value if sol.value_valid else None
        bound = info.mip_dual_bound
    has_sol = obj is not None and math.isfinite(obj)
    if has_sol:
        opt.load_vars()
    bound = float(bound) if bound is not None and math.isfinite(bound) else None
    return tc, (float(obj) if has_sol else None), bound


def solve_model(m: ConcreteModel, options: SolveOptions, *, warm_start: bool = True, tiebreak: bool = True) -> SolveReport:
    """Solve with HiGHS through APPSI, GPU cost first, then (GPUs fixed) total share.

    ``options.time_limit_s`` covers both phases. Never raises for solver trouble: it becomes
    ``ERROR`` with the reason in ``message``.
    """
    highspy, opt = _require_highs()
    t0 = time.perf_counter()
    if _LAST_THREADS and _LAST_THREADS[-1] != options.threads:
        reset = getattr(highspy.Highs, "resetGlobalScheduler", None)
        if reset is not None:
            reset(True)
    _LAST_THREADS[:] = [options.threads]
    opt.config.load_solution = False
    opt.config.stream_solver = bool(options.log_to_console)
    if warm_start:
        set_warm_start(m, m.data)
    build_s = getattr(m, "build_s", None)
    try:
        opt.set_instance(m)  # Pyomo -> HiGHS translation: counted as build time
        translate_s = time.perf_counter() - t0
        build_s = (build_s or 0.0) + translate_s
        options = replace(options, time_limit_s=max(0.5, options.time_limit_s - translate_s))
        t0 = time.perf_counter()
        tc, obj, bound = _run(opt, m, options, warm_start)
    except Exception as exc:  # noqa: BLE001 - any solver failure is reported, not raised
        return SolveReport(SolveStatus.ERROR, type(exc).__name__, build_s=build_s,
                           solve_s=time.perf_counter() - t0, solver_name=SOLVER_NAME,
                           message=f"HiGHS failed: {type(exc).__name__}: {exc}")
    status = _map_termination(tc, obj is not None)
    if status is SolveStatus.OPTIMAL and obj is None:
        status = SolveStatus.UNKNOWN
    raw = getattr(tc, "name", str(tc))
    share = share_bound = None
    message = None
    gpu_phase_s = time.perf_counter() - t0
    left = options.time_limit_s - gpu_phase_s
    if tiebreak and status is SolveStatus.OPTIMAL and left > 0.05:
        # phase 2 keeps phase 1's GPUs (and, replanning, at least its kept placements)
        for g in m.GPUS:
            if round(m.open[g].value or 0) == 0:
                m.open[g].fix(0)
        for j in getattr(m, "KEEPS", ()):
            m.kept[j].setlb(math.floor((m.kept[j].value or 0) + 1e-6))
        m.gpu_cost.deactivate()
        m.total_share.activate()
        try:
            tc2, share, share_bound = _run(opt, m, replace(options, time_limit_s=left), True)
            raw = f"{raw}; share phase: {getattr(tc2, 'name', str(tc2))}"
            if share is None:
                message = "the share tie-break found no solution in time; kept the GPU-optimal one"
        except Exception as exc:  # noqa: BLE001
            message = f"the share tie-break failed ({type(exc).__name__}: {exc}); kept the GPU-optimal one"
        finally:
            m.total_share.deactivate()
            m.gpu_cost.activate()
            for g in m.GPUS:
                m.open[g].unfix()
            for j in getattr(m, "KEEPS", ()):
                m.kept[j].setlb(0)
    elif tiebreak and status is SolveStatus.OPTIMAL:
        message = "no time left for the share tie-break"
    return SolveReport(
        status=status,
        termination_raw=raw,
        objective=obj,
        bound=bound,
        mip_gap=relative_gap(obj, bound),
        build_s=build_s,
        solve_s=time.perf_counter() - t0,
        solver_name=SOLVER_NAME,
        message="; ".join(x for x in (f"GPU count proven in {gpu_phase_s:.2f} s of solving"
                                      if status is SolveStatus.OPTIMAL else None, message) if x),
        share_pct=share,
        share_bound_pct=share_bound,
    )


# ---- extract ---------------------------------------------------------------------------------
def extract_slots(m: ConcreteModel) -> dict[int, tuple[list[int], list[int]]]:
    """Per used GPU slot g: (demand positions, chosen config indices) in demand order, from the loaded solution."""
    gpus: dict[int, list[tuple[int, int]]] = {}
    for (d, g, k), var in m.x.items():
        v = var.value
        if v is not None and v > 0.5:
            gpus.setdefault(g, []).append((d, k))
    return {g: ([d for d, _ in sorted(dk)], [k for _, k in sorted(dk)]) for g, dk in gpus.items()}


def extract_assignment(m: ConcreteModel) -> list[tuple[list[int], list[int]]]:
    """Per used GPU, in slot order: (demand positions, chosen config indices), from the loaded solution."""
    slots = extract_slots(m)
    return [slots[g] for g in sorted(slots)]


def assignment_demands(data: MipData, assignment: list[tuple[list[int], list[int]]]
                       ) -> tuple[list[Demand], list[tuple[list[int], list[int]]]]:
    """The chosen configurations as demands with their batch and share, and per GPU (demand indices, units)."""
    demands: list[Demand] = []
    gpus: list[tuple[list[int], list[int]]] = []
    for members, ks in assignment:
        idx, units = [], []
        for d, k in zip(members, ks, strict=True):
            md = data.demands[d]
            cfg = md.configs[k]
            demands.append(replace(md.demand, batch=cfg.batch, lower_units=cfg.units))
            idx.append(len(demands) - 1)
            units.append(cfg.units)
        gpus.append((idx, units))
    return demands, gpus


def extract_plan(m: ConcreteModel, problem: PlanningProblem, info: SolverInfo) -> Plan:
    """Turn the loaded solution into a Plan (predictions recomputed from the plan, not the solver)."""
    demands, gpus = assignment_demands(m.data, extract_assignment(m))
    return greedy.build_plan(problem, demands, gpus, PLANNER_NAME, info)


# ---- the planner -----------------------------------------------------------------------------
def cost_bound(data: MipData, report: SolveReport | None) -> float:
    """A certified lower bound on the plan cost: the share bound ceil(sum of smallest shares / 100 %),
    the largest conflict clique, and the solver's bound (GPU counts are integers). The solver's
    bound is used only when every candidate configuration was in the model: with the candidates
    capped for size it bounds the capped model, not the problem."""
    gpus = data.lower_bound_gpus()
    if report is not None and report.bound is not None and not data.configs_capped:
        gpus = max(gpus, math.ceil(report.bound / data.price - 1e-6))
    return gpus * data.price


def solve(problem: PlanningProblem, options: SolveOptions | None = None) -> Plan:
    """Plan ``problem`` exactly (within the candidate configurations) with a proven bound."""
    options = options or SolveOptions()
    t0 = time.perf_counter()
    _require_highs()
    data = prepare(problem)
    m = build_model(problem, data)
    remaining = max(1.0, options.time_limit_s - (time.perf_counter() - t0))
    report = solve_model(m, replace(options, time_limit_s=remaining))
    return finish(problem, data, m, report, time.perf_counter() - t0)


def finish(problem: PlanningProblem, data: MipData, m: ConcreteModel, report: SolveReport, wall_s: float) -> Plan:
    """Choose between the MIP's plan and the greedy one, fill the solver block, verify."""
    gplan = data.greedy_plan
    bound = cost_bound(data, report)
    notes = [f"HiGHS {report.termination_raw}"]
    if report.objective is not None and report.bound is not None:
        notes.append(f"GPU cost {report.objective:g} >= bound {report.bound:.6g}")
    if report.share_pct is not None:
        sb = report.share_bound_pct
        notes.append(f"share {report.share_pct:g} %" + (f" >= bound {sb:.6g} %" if sb is not None else ""))
    if data.configs_capped:
        notes.append("configurations per demand capped for size (optimal within the kept ones)")
    if report.message:
        notes.append(report.message)

    def info(plan: Plan, message: str) -> SolverInfo:
        cost = plan.cost_per_hour
        status = report.status
        if status is SolveStatus.OPTIMAL and cost > bound + 1e-9:
            status = SolveStatus.FEASIBLE  # optimal for the capped model only
            notes.append("optimal within the kept configurations, not proven for the problem")
        return SolverInfo(
            status=str(status), objective=cost, bound=bound, gap=relative_gap(cost, bound),
            wall_s=wall_s, build_s=report.build_s,
            solve_s=report.solve_s, message="; ".join([message, *notes]),
        )

    def greedy_plan(message: str) -> Plan:
        return replace(gplan, planner=PLANNER_NAME, solver=info(gplan, message))

    if not report.status.has_solution:
        if report.status is SolveStatus.INFEASIBLE:
            msg = ("returned the greedy plan: the MIP was declared infeasible although the greedy plan "
                   "satisfies it (a defect; please report it)")
            log.error(msg)
        else:
            msg = f"returned the greedy plan: the solver ended with '{report.status}' and no incumbent"
        return greedy_plan(msg)

    plan = extract_plan(m, problem, SolverInfo(status=str(report.status)))
    violations = verify_plan(plan, problem)
    if violations:
        log.error("DEFECT: the exact planner's plan violates the exact model: %s", violations[0].message)
        return replace(plan, solver=info(plan, f"DEFECT: the MIP plan violates the exact model "
                                               f"({violations[0].message}); please report it"))
    key = (round(plan.cost_per_hour, 9), round(plan.total_share_pct, 6))
    gkey = (round(gplan.cost_per_hour, 9), round(gplan.total_share_pct, 6))
    if key >= gkey:
        what = "proved it optimal" if report.status is SolveStatus.OPTIMAL and bound >= gplan.cost_per_hour - 1e-9 \
            else "found nothing cheaper"
        return greedy_plan(f"returned the greedy plan: the exact planner {what}")
    saved = gplan.num_gpus - plan.num_gpus
    msg = (f"{saved} GPU(s) fewer than greedy ({gplan.num_gpus})" if saved > 0 else
           f"same GPUs as greedy, {gplan.total_share_pct - plan.total_share_pct:g} % less share")
    return replace(plan, solver=info(plan, msg))
