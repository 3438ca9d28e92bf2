"""The paper's greedy planner (iGniter Algorithms 1 and 2), faithful and vectorised.

Algorithm 2, AllocGPU(set): repeat { if shares sum above 100 %: infeasible; predict; every
placement whose latency exceeds its limit gets one more share unit } until none does. A placement
whose predicted throughput is below its rate also counts as violating: under the igniter budget
the paper's batch makes t_inf <= SLO/2 imply thr >= rate, so this changes nothing there, and
under the full budget it enforces the throughput requirement.

Algorithm 1: sort demands by lower-bound share, largest first (stable). For each, run AllocGPU on
every open GPU plus the newcomer at its lower bound; the cost is the increase of the GPU's total
share; take the cheapest feasible GPU (first on ties), else open a new GPU. Nothing placed moves.

Speed-ups that do not change the result: a GPU whose free share is below the newcomer's lower
bound fails AllocGPU's first test, so it is skipped without predicting; AllocGPU runs on all
candidate GPUs at once as one padded numpy array.
"""

from __future__ import annotations

import time

import numpy as np

from igniter_opt.domain import (
    GpuAssignment,
    LatencyBudget,
    Placement,
    Plan,
    PlanningProblem,
    Prediction,
    SolverInfo,
    Workload,
)
from igniter_opt.errors import ProblemError
from igniter_opt.perfmodel.model import PerformanceModel
from igniter_opt.planner.budget import (
    Demand,
    igniter_batch,
    inference_limit_ms,
    lower_share_units,
    max_units,
    min_feasible_slo_ms,
)
from igniter_opt.solver import SolveOptions, SolveStatus

PLANNER_NAME = "greedy"
# A dedicated replica serves this fraction of its predicted throughput (the paper's rule).
DEDICATED_LOAD_FACTOR = 0.9


def _too_tight(model: PerformanceModel, w: Workload, budget: LatencyBudget, margin: float) -> ProblemError:
    best = min_feasible_slo_ms(model, w, budget, margin)
    return ProblemError(
        f"workload '{w.name}' ({w.model}): SLO {w.slo_ms:g} ms cannot be met even alone at 100 % "
        f"under the '{budget}' budget; the smallest SLO that works is {best:.2f} ms"
    )


def _largest_solo_batch(model: PerformanceModel, w: Workload, limit_ms: float, upto: int) -> int | None:
    """Largest batch <= ``upto`` whose solo latency at 100 % meets ``limit_ms``."""
    full = max_units(model) * model.unit_pct
    best = None
    for b in range(1, upto + 1):
        if model.solo(w.model, b, full)[0] <= limit_ms:
            best = b
    return best


def igniter_demands(model: PerformanceModel, w: Workload) -> list[Demand]:
    """The paper's initialisation of one workload under the igniter budget.

    A workload whose lower-bound share exceeds 100 % gets dedicated GPUs at 100 % serving 90 % of
    the largest feasible batch's predicted throughput each, until the remaining rate fits one GPU.
    """
    budget = LatencyBudget.IGNITER
    limit = w.slo_ms / 2.0
    units_cap = max_units(model)
    batch = igniter_batch(model, w)
    units = lower_share_units(model, w.model, batch, limit)
    if units is not None and units <= units_cap:
        return [Demand(w, w.rate_rps, batch, units, limit)]

    big = _largest_solo_batch(model, w, limit, batch)
    if big is None:
        raise _too_tight(model, w, budget, 0.0)
    _, thr = model.solo(w.model, big, units_cap * model.unit_pct)
    replica_rate = DEDICATED_LOAD_FACTOR * thr
    demands: list[Demand] = []
    remaining = w.rate_rps
    while remaining > 1e-9:
        rest = Workload(w.name, w.model, w.slo_ms, remaining)
        b = igniter_batch(model, rest)
        u = lower_share_units(model, w.model, b, limit)
        if u is not None and u <= units_cap:
            demands.append(Demand(w, remaining, b, u, limit))
            break
        served = min(replica_rate, remaining)
        demands.append(Demand(w, served, big, units_cap, limit, dedicated=True))
        remaining -= served
    return demands


class _GpuTable:
    """Open GPUs as padded arrays (rows: GPUs, columns: slots) so AllocGPU runs on many at once."""

    def __init__(self, capacity: int = 64, slots: int = 4) -> None:
        self.n = 0
        self.model = np.zeros((capacity, slots), np.intp)
        self.batch = np.zeros((capacity, slots), float)
        self.units = np.zeros((capacity, slots), np.int64)
        self.limit = np.zeros((capacity, slots), float)
        self.rate = np.zeros((capacity, slots), float)
        self.count = np.zeros(capacity, np.int64)
        self.used = np.zeros(capacity, np.int64)
        self.members: list[list[int]] = []  # demand indices per GPU, slot order

    def _grow(self, rows: int, cols: int) -> None:
        r0, c0 = self.model.shape
        if rows <= r0 and cols <= c0:
            return
        r1, c1 = max(rows, 2 * r0 if rows > r0 else r0), max(cols, 2 * c0 if cols > c0 else c0)
        for name in ("model", "batch", "units", "limit", "rate"):
            old = getattr(self, name)
            new = np.zeros((r1, c1), old.dtype)
            new[:r0, :c0] = old
            setattr(self, name, new)
        for name in ("count", "used"):
            old = getattr(self, name)
            new = np.zeros(r1, old.dtype)
            new[:r0] = old
            setattr(self, name, new)

    def open(self, idx: int, model_idx: int, d: Demand) -> None:
        self._grow(self.n + 1, 1)
        g = self.n
        self.n += 1
        units = d.lower_units
        self.model[g, 0], self.batch[g, 0], self.units[g, 0] = model_idx, d.batch, units
        self.limit[g, 0], self.rate[g, 0] = d.limit_ms, d.rate_rps
        self.count[g], self.used[g] = 1, units
        self.members.append([idx])

    def commit(self, g: int, idx: int, row_units: np.ndarray, model_idx: int, d: Demand) -> None:
        c = int(self.count[g])
        self._grow(self.n, c + 1)
        self.model[g, c], self.batch[g, c], self.limit[g, c], self.rate[g, c] = (
            model_idx, d.batch, d.limit_ms, d.rate_rps,
        )
        self.units[g, : c + 1] = row_units[: c + 1]
        self.count[g] = c + 1
        self.used[g] = int(row_units[: c + 1].sum())
        self.members[g].append(idx)


def _alloc_gpus(
    perf: PerformanceModel,
    unit_pct: float,
    cap: int,
    model_idx: np.ndarray,
    batch: np.ndarray,
    units: np.ndarray,
    limit: np.ndarray,
    rate: np.ndarray,
    mask: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Algorithm 2 on many candidate GPUs at once. Returns (feasible per row, final units)."""
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
        lat, thr = perf.predict_padded(model_idx[rows], batch[rows], units[rows] * unit_pct, mask[rows])
        viol = mask[rows] & ((lat > limit[rows]) | (thr < rate[rows]))
        done = ~viol.any(axis=1)
        feasible[rows[done]] = True
        active[rows[done]] = False
        units[rows[~done]] += viol[~done]
    return feasible, units


def place(perf: PerformanceModel, demands: list[Demand]) -> list[tuple[list[int], list[int]]]:
    """Algorithm 1 over ``demands`` (already initialised). Returns per GPU (demand indices, units)."""
    unit_pct = perf.unit_pct
    cap = max_units(perf)
    order = sorted(range(len(demands)), key=lambda i: -demands[i].lower_units)  # stable
    table = _GpuTable()
    midx = [perf.model_index(d.workload.model) for d in demands]
    for i in order:
        d = demands[i]
        best_g = -1
        if table.n:
            free = cap - table.used[: table.n]
            cand = np.flatnonzero(free >= d.lower_units)
            if cand.size:
                counts = table.count[cand]
                width = int(counts.max()) + 1
                m = np.zeros((cand.size, width), np.intp)
                b = np.zeros((cand.size, width), float)
                u = np.zeros((cand.size, width), np.int64)
                lim = np.zeros((cand.size, width), float)
                rt = np.zeros((cand.size, width), float)
                cols = min(width, table.model.shape[1])
                m[:, :cols] = table.model[cand, :cols]
                b[:, :cols] = table.batch[cand, :cols]
                u[:, :cols] = table.units[cand, :cols]
                lim[:, :cols] = table.limit[cand, :cols]
                rt[:, :cols] = table.rate[cand, :cols]
                mask = np.arange(width)[None, :] < counts[:, None]
                rows = np.arange(cand.size)
                m[rows, counts], b[rows, counts], u[rows, counts] = midx[i], d.batch, d.lower_units
                lim[rows, counts], rt[rows, counts] = d.limit_ms, d.rate_rps
                mask[rows, counts] = True
                u = np.where(mask, u, 0)
                ok, final = _alloc_gpus(perf, unit_pct, cap, m, b, u, lim, rt, mask)
                if ok.any():
                    increase = final.sum(axis=1) - table.used[cand]
                    increase = np.where(ok, increase, np.iinfo(np.int64).max)
                    j = int(np.argmin(increase))  # first on ties
                    best_g = int(cand[j])
                    table.commit(best_g, i, final[j], midx[i], d)
        if best_g < 0:
            table.open(i, midx[i], d)
    return [
        (table.members[g], [int(x) for x in table.units[g, : table.count[g]]]) for g in range(table.n)
    ]


def build_plan(
    problem: PlanningProblem,
    demands: list[Demand],
    gpus: list[tuple[list[int], list[int]]],
    planner: str,
    solver: SolverInfo,
) -> Plan:
    """Turn per-GPU (demand indices, share units) into a Plan with predictions filled in."""
    perf = problem.perf_model
    gpu_type = str(perf.gpu.get("name", perf.name))
    out = []
    for n, (members, units) in enumerate(gpus):
        slots = [(demands[i].workload.model, demands[i].batch, u * perf.unit_pct) for i, u in zip(members, units, strict=True)]
        preds = perf.predict_gpu(slots)
        placements = tuple(
            Placement(
                workload=demands[i].workload.name,
                model=demands[i].workload.model,
                slo_ms=demands[i].workload.slo_ms,
                rate_rps=demands[i].rate_rps,
                batch=demands[i].batch,
                share_pct=round(u * perf.unit_pct, 6),
                predicted=Prediction(latency_ms=lat, throughput_rps=thr),
            )
            for i, u, (lat, thr) in zip(members, units, preds, strict=True)
        )
        out.append(GpuAssignment(gpu_id=f"gpu{n}", gpu_type=gpu_type, placements=placements))
    return Plan(
        profile=perf.name,
        planner=planner,
        latency_budget=str(problem.latency_budget),
        gpus=tuple(out),
        price_per_gpu_hour=perf.hardware.price_per_gpu_hour,
        solver=solver,
        margin=problem.margin if problem.latency_budget is LatencyBudget.FULL else None,
    )


def full_budget_demands(model: PerformanceModel, w: Workload, margin: float) -> list[Demand]:
    """Greedy initialisation under the full budget: the batch that needs the smallest solo share.

    Ties go to the smaller batch. A workload no single GPU can carry is split into equal replicas,
    the fewest that fit.
    """
    budget = LatencyBudget.FULL
    cap = max_units(model)
    for replicas in range(1, 10_000):
        rate = w.rate_rps / replicas
        best: tuple[int, int, float] | None = None
        bmax = max(1, int(rate * w.slo_ms * (1 - margin) / 1000.0) + 1)
        for b in range(1, min(bmax, 512) + 1):
            limit = inference_limit_ms(w.slo_ms, rate, b, budget, margin)
            u = lower_share_units(model, w.model, b, limit)
            if u is None or u > cap:
                continue
            lat, thr = model.solo(w.model, b, u * model.unit_pct)
            while thr < rate and u < cap:
                u += 1
                lat, thr = model.solo(w.model, b, u * model.unit_pct)
            if thr < rate:
                continue
            if best is None or u < best[1]:
                best = (b, u, limit)
        if best is not None:
            b, u, limit = best
            return [Demand(w, rate, b, u, limit, dedicated=replicas > 1) for _ in range(replicas)]
        if replicas == 1 and lower_share_units(model, w.model, 1, inference_limit_ms(w.slo_ms, rate, 1, budget, margin)) is None:
            raise _too_tight(model, w, budget, margin)
    raise _too_tight(model, w, budget, margin)


def initial_demands(problem: PlanningProblem) -> list[Demand]:
    """Every workload's demands under the problem's latency budget, in input order."""
    perf = problem.perf_model
    demands: list[Demand] = []
    for w in problem.workloads:
        perf.model_index(w.model)  # clear error for an unknown model
        if problem.latency_budget is LatencyBudget.IGNITER:
            demands.extend(igniter_demands(perf, w))
        else:
            demands.extend(full_budget_demands(perf, w, problem.margin))
    return demands


def solve(problem: PlanningProblem, options: SolveOptions | None = None) -> Plan:
    """Plan ``problem`` with the paper's greedy algorithm."""
    del options  # the greedy planner has no tunable search
    t0 = time.perf_counter()
    demands = initial_demands(problem)
    gpus = place(problem.perf_model, demands)
    wall = time.perf_counter() - t0
    n = len(gpus)
    info = SolverInfo(
        status=str(SolveStatus.HEURISTIC),
        objective=n * problem.perf_model.hardware.price_per_gpu_hour,
        wall_s=wall,
    )
    return build_plan(problem, demands, gpus, PLANNER_NAME, info)
