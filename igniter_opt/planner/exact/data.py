"""The exact planner's data stage: from a problem (and a start) to everything the model needs.

``prepare`` chains named steps: the start packing (greedy's, or a replan's), each demand's
candidate configurations (``configs``), the start repaired to hold under the MIP's safety margin,
reachable per-GPU bounds, the non-dominated candidates, conflict cliques, the GPU-slot layout,
size capping, and the MIP start relabelled to the slots.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace

import numpy as np

from igniter_opt.domain import Plan, PlanningProblem
from igniter_opt.placement import Demand, GpuPacking, Packing, Slot, assemble_plan, verify_plan
from igniter_opt.placement.alloc import ConfigTerms, alloc_rows, blank_constants, slot_constants
from igniter_opt.placement.serving import ServingModel, serving_model_for
from igniter_opt.planner import greedy
from igniter_opt.planner.exact.configs import (
    Bounds,
    Config,
    ConfigTable,
    batch_range,
    busy_power_w,
    config_key,
    config_table,
    prune,
    unplaceable,
)
from igniter_opt.solver import SolveOutcome, SolveStatus

log = logging.getLogger(__name__)

# Above this many assignment binaries, each demand keeps fewer configurations (smallest shares first).
DEFAULT_MAX_ASSIGN_VARS = 15_000
MIN_CONFIGS_PER_DEMAND = 2
# The MIP start (a repaired greedy plan) keeps at least this much slack, more than the MIP's safety.
REPAIR_MARGIN_MS = 1e-3
REPAIR_RATE_REL = 1e-4


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
class KeepOption:
    """A running placement a replan may keep: on GPU slot ``slot`` with ``batch``, ``units`` and
    ``queue_delay_ms``, taken by any one of ``demands`` (input indices of its workload's demands).
    ``count`` identical running placements share one option."""

    slot: int
    demands: tuple[int, ...]
    batch: int
    units: int
    count: int = 1
    queue_delay_ms: float | None = None


@dataclass(frozen=True)
class Migration:
    """What turns the MIP into a replanning MIP (see the package docstring).

    GPU slots ``0 .. fixed_slots - 1`` are the running GPUs; ``start_slots`` says which of them
    each GPU of the start is on (None: a new GPU); at least ``fresh_slots`` interchangeable slots
    follow for new GPUs. Of the ``old_placements`` running placements, each one not kept costs ``cost``.
    """

    fixed_slots: int
    fresh_slots: int
    keeps: tuple[KeepOption, ...]
    cost: float
    old_placements: int
    start_slots: tuple[int | None, ...] = ()


@dataclass(frozen=True)
class MipData:
    """Everything ``build_model`` needs, computed once from the problem."""

    problem: PlanningProblem
    demands: tuple[MipDemand, ...]  # sorted: largest lower-bound share first
    num_gpus: int  # GPU slots
    cap_units: int
    bounds: Bounds
    start_plan: Plan  # the plan to beat: the start's (or its repaired copy if it violates the model)
    warm: dict[int, tuple[int, int]] = field(default_factory=dict)  # demand -> (gpu slot, config index)
    configs_capped: bool = False
    start_repairs: int = 0  # start GPUs whose shares were raised (or split) to meet the exact model
    cliques: tuple[tuple[int, ...], ...] = ()  # sets of demand positions no two of which can share a GPU
    max_clique: int = 0
    fixed_slots: int = 0  # replanning: slots 0..fixed_slots-1 are running GPUs
    keeps: tuple[tuple[int, tuple[tuple[int, int], ...], int], ...] = ()  # (slot, ((position, config), ...), count)
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


# ---- the start -------------------------------------------------------------------------------
def _slot_arrays(problem: PlanningProblem, rule: ServingModel, packing: Packing, terms: ConfigTerms, cap: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The packing's GPUs as kernel rows (configuration, units, constants) with tightened limits."""
    perf = problem.perf_model
    width = max(len(g.slots) for g in packing.gpus)
    n = packing.num_gpus
    cfg = np.full((n, width), terms.empty, np.int64)
    units = np.zeros((n, width))
    const = blank_constants((n, width))
    for g, gpu in enumerate(packing.gpus):
        for s, slot in enumerate(gpu.slots):
            d = packing.demands[slot.demand]
            m = perf.model_index(d.workload.model)
            limit = rule.limit(d.workload.slo_ms, d.rate_rps, slot.batch, slot.queue_delay_ms)
            cfg[g, s], units[g, s] = terms.index(m, slot.batch, slot.units), slot.units
            const[g, s] = slot_constants(perf, np.array([m]), np.array([slot.batch]),
                                         np.array([limit - REPAIR_MARGIN_MS]),
                                         np.array([d.rate_rps * (1 + REPAIR_RATE_REL)]))[0]
    return cfg, units, const


def _smallest_solo(t: ConfigTable, rate_rps: float) -> int:
    """The solo-feasible configuration with the fewest units (then the smallest batch), with the repair's slack."""
    ok = np.flatnonzero(t.solo_ok & (t.lat <= t.limit - REPAIR_MARGIN_MS) & (t.thr >= rate_rps * (1 + REPAIR_RATE_REL)))
    if ok.size == 0:
        ok = np.flatnonzero(t.solo_ok)
    return int(ok[np.lexsort((t.batch[ok], t.units[ok]))[0]])


def repair_start(problem: PlanningProblem, rule: ServingModel, packing: Packing, tables: list[ConfigTable]
                 ) -> tuple[Packing, int, list[int]]:
    """Make the start meet the exact model with the MIP's safety margin, for the MIP start.

    The MIP's rows keep a small safety margin, so a start GPU that meets its limits with less
    slack than that would not be a valid MIP start. AllocGPU (the kernel's) runs on every start GPU
    with limits tightened by ``REPAIR_MARGIN_MS``; a GPU that cannot be repaired is split into one
    GPU per demand at the demand's smallest solo-feasible configuration. A start that violates the
    exact model outright is repaired the same way. Returns (packing, GPUs changed, the start GPU
    each output GPU comes from).
    """
    perf = problem.perf_model
    cap = perf.max_units
    if not packing.gpus:
        return packing, 0, []
    terms = ConfigTerms(perf, max(s.batch for _, s in packing.slots()), cap)
    ok, _, final = alloc_rows(terms, cap, *_slot_arrays(problem, rule, packing, terms, cap))
    out: list[GpuPacking] = []
    origins: list[int] = []
    changed = 0
    for g, gpu in enumerate(packing.gpus):
        if ok[g]:
            slots = tuple(s._replace(units=int(round(final[g, j]))) for j, s in enumerate(gpu.slots))
            changed += slots != gpu.slots
            out.append(GpuPacking(slots, gpu.gpu_id))
            origins.append(g)
            continue
        changed += 1
        for s in gpu.slots:
            t = tables[s.demand]
            j = _smallest_solo(t, packing.demands[s.demand].rate_rps)
            c = t.config(j)
            out.append(GpuPacking((Slot(s.demand, c.units, c.batch, c.queue_delay_ms),)))
            origins.append(g)
    if changed:
        log.info("MIP start: %d GPU(s) repaired to meet the exact model", changed)
    return Packing(packing.demands, tuple(out)), changed, origins


# ---- reachable bounds ------------------------------------------------------------------------
def upper_hull(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Indices of the upper convex hull of the points (u_k, v_k) (monotone chain), every point that
    maximises v - lambda u for some lambda among them."""
    order = np.lexsort((-v, u))  # by u, the largest v first within one u
    # a smaller v at the same u is never the maximum: one point per u (a few dozen units, of hundreds of points)
    order = order[np.r_[True, u[order][1:] != u[order][:-1]]] if order.size else order
    hull: list[int] = []
    for i in order.tolist():
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # drop b when it lies on or below the segment from a to i
            if (v[b] - v[a]) * (u[i] - u[a]) <= (v[i] - v[a]) * (u[b] - u[a]):
                hull.pop()
            else:
                break
        hull.append(int(i))
    return np.array(hull, dtype=np.intp)


def resource_bound(per_demand: list[tuple[np.ndarray, np.ndarray]], cap: int,
                   copies: list[int] | None = None) -> float:
    """Upper bound on sum of a resource over one GPU: max sum v s.t. sum units <= cap, one config
    each (or up to ``copies[d]`` placements of demand d, each with a config of its own).

    Lagrangian dual: min over lambda >= 0 of lambda cap + sum_d copies_d max(0, max_k (v_k - lambda u_k)).
    """
    if not per_demand:
        return 0.0
    copies = copies or [1] * len(per_demand)
    ratios = np.concatenate([v / u for u, v in per_demand] + [np.zeros(1)])
    lams = np.unique(np.clip(ratios, 0.0, None))
    # max_k (v_k - lambda u_k) is attained on the upper convex hull of the points (u_k, v_k), a few
    # of the hundreds of configurations: keep those only, all demands in one flat array.
    hulls = [upper_hull(u, v) for u, v in per_demand]
    hu = np.concatenate([u[h] for (u, _), h in zip(per_demand, hulls, strict=True)])
    hv = np.concatenate([v[h] for (_, v), h in zip(per_demand, hulls, strict=True)])
    starts = np.cumsum([0] + [h.size for h in hulls[:-1]])
    mult = np.asarray(copies, float)

    def dual(i: int) -> float:
        best = np.maximum.reduceat(hv - lams[i] * hu, starts)
        return float(lams[i] * cap + np.dot(mult, np.maximum(0.0, best)))

    # The dual is convex in lambda, so over the sorted candidate lambdas (its breakpoints, where its
    # minimum lies) it is a convex sequence: bisect on its differences for the smallest value.
    lo, hi = 0, lams.size - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if dual(mid + 1) >= dual(mid):
            hi = mid
        else:
            lo = mid + 1
    return dual(lo)


def reachable_bounds(problem: PlanningProblem, tables: list[ConfigTable], copies: list[int] | None = None) -> Bounds:
    """Largest members, scheduling increment, L2 and power any set of demands reaches on one GPU
    (with up to ``copies[d]`` placements of demand d; default one)."""
    hw = problem.perf_model.hardware
    cap = problem.perf_model.max_units
    copies = copies or [1] * len(tables)
    smallest = np.array([int(t.units[t.solo_ok].min()) for t in tables])
    order = np.argsort(smallest, kind="stable")
    fill = np.cumsum(np.repeat(smallest[order], np.asarray(copies)[order]))
    members = max(1, int(np.searchsorted(fill, cap, side="right")))
    # D(n) = alpha_sch n + beta_sch is linear in n: its largest value over 2..members is at an end
    max_sched = max(0.0, hw.alpha_sch * members + hw.beta_sch, 2 * hw.alpha_sch + hw.beta_sch) if members >= 2 else 0.0
    max_cache = resource_bound([(t.units[t.solo_ok].astype(float), t.cache[t.solo_ok]) for t in tables], cap, copies)
    max_power = busy_power_w(hw) + resource_bound(
        [(t.units[t.solo_ok].astype(float), t.power[t.solo_ok]) for t in tables], cap, copies)
    min_ratio = min(1.0, 1.0 + hw.alpha_f / hw.max_clock_mhz * (max_power - hw.max_power_w))
    return Bounds(members, max_sched, max(0.0, max_cache), max_power, max(min_ratio, 1e-6))


# ---- candidates and conflicts ----------------------------------------------------------------
def candidate_demands(problem: PlanningProblem, packing: Packing, tables: list[ConfigTable], bounds: Bounds,
                      keep_cfgs: dict[int, set[tuple[int, float, int]]]) -> list[MipDemand]:
    """Each demand's non-dominated configurations, plus the start's (so the MIP start is valid) and
    the running placements it could keep (replanning)."""
    perf = problem.perf_model
    start = {s.demand: config_key(s.batch, s.queue_delay_ms, s.units) for _, s in packing.slots()}
    out = []
    for i, (d, t) in enumerate(zip(packing.demands, tables, strict=True)):
        c = perf.models[d.workload.model]
        sel = {int(j) for j in prune(t, float(c.kernels_per_inference), c.idle_ms, c.alpha_cache, bounds)}
        index = t.index()
        for key in ({start[i]} if i in start else set()) | keep_cfgs.get(i, set()):
            j = index.get(key)
            if j is not None and (t.solo_ok[j] or key == start.get(i)):
                sel.add(j)
        order = sorted(sel, key=lambda j: (t.units[j], t.batch[j], np.nan_to_num(t.delay[j], nan=-1.0)))
        out.append(MipDemand(d, float(c.kernels_per_inference), c.idle_ms, c.alpha_cache,
                             tuple(t.config(j) for j in order)))
    return out


def pair_conflicts(mds: list[MipDemand], cap: int, problem: PlanningProblem) -> np.ndarray:
    """conflict[i, j]: demands i and j cannot share a GPU in any pair of their configurations.

    A pair is checked under the least interference it can meet together (the two alone: n = 2,
    each other's L2 and power), with the same linear rows as the MIP; more company only adds
    interference, so a conflicting pair conflicts on every GPU.
    """
    hw = problem.perf_model.hardware
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


def clique_cover(conf: np.ndarray, num_gpus: int, max_nonzeros: int = 400_000
                 ) -> tuple[tuple[tuple[int, ...], ...], int]:
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


# ---- layout, size, start ---------------------------------------------------------------------
def slot_layout(packing: Packing, origins: list[int], migration: Migration | None) -> tuple[int, int, list[int | None]]:
    """(fixed slots, GPU slots, the running slot of each start GPU or None): replanning pins the
    running GPUs to their slots; without a migration every slot is interchangeable."""
    start_slot: list[int | None] = [None] * packing.num_gpus
    if migration is None:
        return 0, packing.num_gpus, start_slot
    seen: set[int] = set()
    for o, g in enumerate(origins):
        slot = migration.start_slots[g] if g < len(migration.start_slots) else None
        if slot is not None and slot not in seen:
            start_slot[o] = slot
            seen.add(slot)
    fresh = max(migration.fresh_slots, sum(x is None for x in start_slot))
    return migration.fixed_slots, migration.fixed_slots + fresh, start_slot


def cap_configs(sorted_mds: list[MipDemand], order: list[int], fixed: int, num_gpus: int, max_assign_vars: int,
                start_keys: dict[int, tuple[int, float, int]], keepable: dict[int, set[tuple[int, float, int]]]
                ) -> tuple[list[MipDemand], bool]:
    """Keep each demand's smallest-share configurations while the assignment binaries (about
    sum_d K_d * (F + min(d + 1, G - F))) exceed ``max_assign_vars``; the start's configuration
    (in place of the last kept one) and the keepable ones (replanning) always stay."""
    def n_slots(pos: int) -> int:
        return fixed + min(pos + 1, num_gpus - fixed)

    if sum(len(m.configs) * n_slots(pos) for pos, m in enumerate(sorted_mds)) <= max_assign_vars:
        return sorted_mds, False
    slots = sum(n_slots(pos) for pos in range(len(sorted_mds)))
    k_max = max(MIN_CONFIGS_PER_DEMAND, max_assign_vars // max(slots, 1))
    trimmed = []
    for pos, m in enumerate(sorted_mds):
        start = [c for c in m.configs if c.key == start_keys.get(order[pos])]
        must = start + [c for c in m.configs if c.key in keepable.get(order[pos], set()) and c not in start]
        keep = list(m.configs[:k_max])
        if start and start[0] not in keep:
            keep[-1] = start[0]
        keep += [c for c in must if c not in keep]
        trimmed.append(replace(m, configs=tuple(sorted(set(keep), key=lambda c: (c.units, c.batch, c.key[1])))))
    return trimmed, True


def warm_start(packing: Packing, sorted_mds: list[MipDemand], order: list[int], fixed: int,
               start_slot: list[int | None]) -> dict[int, tuple[int, int]]:
    """The start as (demand position -> (GPU slot, config index)); new GPUs relabelled so that they
    appear in order of their first (sorted) demand; a running GPU keeps its slot."""
    pos_of = {orig: pos for pos, orig in enumerate(order)}
    first: dict[int, int] = {}
    for g, gpu in enumerate(packing.gpus):
        if start_slot[g] is None:
            first[g] = min(pos_of[s.demand] for s in gpu.slots)
    relabel = {g: fixed + new for new, g in enumerate(sorted(first, key=lambda g: first[g]))}
    relabel.update({g: slot for g, slot in enumerate(start_slot) if slot is not None})
    warm = {}
    for g, s in packing.slots():
        pos = pos_of[s.demand]
        key = config_key(s.batch, s.queue_delay_ms, s.units)
        warm[pos] = (relabel[g], next(j for j, c in enumerate(sorted_mds[pos].configs) if c.key == key))
    return warm


def keep_rows(migration: Migration | None, sorted_mds: list[MipDemand], order: list[int], fixed: int
              ) -> tuple[tuple[int, tuple[tuple[int, int], ...], int], ...]:
    """Each keep option as (slot, ((demand position, config index), ...), count)."""
    pos_of = {orig: pos for pos, orig in enumerate(order)}
    out = []
    for opt in migration.keeps if migration else ():
        key = config_key(opt.batch, opt.queue_delay_ms, opt.units)
        cands = tuple((pos_of[i], k) for i in opt.demands
                      for k, c in enumerate(sorted_mds[pos_of[i]].configs) if c.key == key)
        if cands and opt.slot < fixed:
            out.append((opt.slot, cands, opt.count))
    return tuple(out)


def start_plans(problem: PlanningProblem, packing: Packing, repaired: Packing, changed: int) -> Plan:
    """The plan to beat: the start's own (if it meets the exact model), else its repaired copy."""
    info = SolveOutcome(SolveStatus.HEURISTIC)
    plan = assemble_plan(problem, packing, greedy.PLANNER_NAME, info)
    if changed and verify_plan(plan, problem):
        plan = assemble_plan(problem, repaired, greedy.PLANNER_NAME, info)
    return plan


def prepare(problem: PlanningProblem, *, max_assign_vars: int = DEFAULT_MAX_ASSIGN_VARS,
            start: Packing | None = None, migration: Migration | None = None) -> MipData:
    """Demands, candidate configurations, reachable bounds, conflicts and the MIP start.

    ``start``: the packing to start from (default: the greedy planner's). With ``migration``
    (replanning), every keep option's configuration stays a candidate of each of its demands for
    which it is feasible alone, and the GPU slots are laid out as it says.
    """
    perf = problem.perf_model
    rule = serving_model_for(problem)
    cap = perf.max_units
    if start is None:
        start = greedy.place(perf, greedy.initial_demands(problem))
    keep_cfgs: dict[int, set[tuple[int, float, int]]] = {}
    for opt in migration.keeps if migration else ():
        for i in opt.demands:
            if 1 <= opt.units <= cap:
                keep_cfgs.setdefault(i, set()).add(config_key(opt.batch, opt.queue_delay_ms, opt.units))
    tables = []
    for i, d in enumerate(start.demands):
        extra = tuple((b, None if dl < 0 else dl) for b, dl, _ in keep_cfgs.get(i, ()))
        top = max([batch_range(perf, problem, d), *(b for b, _ in extra)])
        t = config_table(perf, rule, d, top, cap, extra)
        if not t.solo_ok.any():
            raise unplaceable(d, t)
        tables.append(t)
    repaired, changed, origins = repair_start(problem, rule, start, tables)
    start_plan = start_plans(problem, start, repaired, changed)
    bounds = reachable_bounds(problem, tables)
    mds = candidate_demands(problem, repaired, tables, bounds, keep_cfgs)
    order = sorted(range(len(mds)), key=lambda i: (-mds[i].min_units, i))
    fixed, num_gpus, start_slot = slot_layout(repaired, origins, migration)
    # pairwise conflicts on the full (uncapped) candidate lists: valid for the real problem
    cliques, biggest = clique_cover(pair_conflicts([mds[i] for i in order], cap, problem), num_gpus)
    start_keys = {s.demand: config_key(s.batch, s.queue_delay_ms, s.units) for _, s in repaired.slots()}
    sorted_mds, capped = cap_configs([mds[i] for i in order], order, fixed, num_gpus, max_assign_vars, start_keys,
                                     keep_cfgs)
    return MipData(problem, tuple(sorted_mds), num_gpus, cap, bounds, start_plan,
                   warm_start(repaired, sorted_mds, order, fixed, start_slot), capped, changed, cliques, biggest,
                   fixed_slots=fixed, keeps=keep_rows(migration, sorted_mds, order, fixed),
                   migration_cost=migration.cost if migration else 0.0,
                   old_placements=migration.old_placements if migration else 0)
