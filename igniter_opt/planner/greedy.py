"""The paper's greedy planner (iGniter Algorithms 1 and 2), faithful and vectorised.

Algorithm 2, AllocGPU(set): repeat { if shares sum above 100 %: infeasible; predict; every
placement whose latency exceeds its limit gets one more share unit } until none does. A placement
whose predicted throughput is below its rate also counts as violating: under the igniter budget
the paper's batch makes t_inf <= SLO/2 imply thr >= rate, so this changes nothing there, and
under the full budget it enforces the throughput requirement.

Algorithm 1: sort demands by lower-bound share, largest first (stable). For each, run AllocGPU on
every open GPU plus the newcomer at its lower bound; the cost is the increase of the GPU's total
share; take the cheapest feasible GPU (first on ties), else open a new GPU. Nothing placed moves.

One correction to the paper: a demand's lower bound is raised until it meets its limit alone
under the full model (``solo_feasible_units``). The closed form ignores the clock drop of a
power-hungry model running alone, and without this a GPU opened for one demand can violate its
SLO. It changes nothing on the paper's 12-workload mix.

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
    igniter_batches,
    lower_share_units_array,
    max_units,
    min_feasible_slo_ms,
    solo_feasible_units,
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
    batches = np.arange(1, upto + 1, dtype=float)[:, None]
    idx = np.full(batches.shape, model.model_index(w.model))
    lat, _ = model.predict_padded(idx, batches, np.full(batches.shape, max_units(model) * model.unit_pct))
    fits = np.flatnonzero(lat[:, 0] <= limit_ms)
    return int(fits[-1]) + 1 if fits.size else None


def _replica(
    model: PerformanceModel, w: Workload, cache: dict[tuple[str, float], tuple[int, float]]
) -> tuple[int, float]:
    """(batch, rate) of one dedicated replica: the largest batch (up to 1024) whose solo latency at
    100 % meets SLO/2, serving 90 % of its predicted throughput. Depends on (model, SLO) only."""
    key = (w.model, w.slo_ms)
    if key not in cache:
        big = _largest_solo_batch(model, w, w.slo_ms / 2.0, 1024)
        if big is None:
            raise _too_tight(model, w, LatencyBudget.IGNITER, 0.0)
        _, thr = model.solo(w.model, big, max_units(model) * model.unit_pct)
        cache[key] = (big, DEDICATED_LOAD_FACTOR * thr)
    return cache[key]


def igniter_demands_many(
    model: PerformanceModel, ws: tuple[Workload, ...] | list[Workload]
) -> list[list[Demand]]:
    """The paper's initialisation under the igniter budget, for many workloads at once.

    Batch from the closed form, lower-bound share raised until it meets SLO/2 alone. A workload
    whose lower bound exceeds 100 % gets dedicated GPUs at 100 % (see ``_replica``) until the
    remaining rate fits one GPU; that remainder is planned as an ordinary workload. Returns each
    workload's demands, in input order.
    """
    n = len(ws)
    if n == 0:
        return []
    cap = max_units(model)
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
    k = 0
    todo = np.arange(n)
    while todo.size:
        col = rest[todo, k]
        b = igniter_batches(model, idx[todo], slo[todo], col)
        u = solo_feasible_units(model, idx[todo], b, lower_share_units_array(model, idx[todo], b, limit[todo]),
                                limit[todo], col)
        ok = (u > 0) & (u <= cap)
        if k == 0:
            batch0, units0 = np.zeros(n, np.int64), np.zeros(n, np.int64)
        batch0[todo[ok]], units0[todo[ok]] = b[ok], u[ok]
        fits_at[todo[ok]] = k
        todo = todo[~ok]
        if not todo.size:
            break
        for j in todo:
            if not np.isfinite(replica_rate[j]):
                big[j], replica_rate[j] = _replica(model, ws[j], cache)
        # A rate no larger than one replica's that still does not fit stops here: the last
        # replica serves it at the replica batch.
        todo = todo[rest[todo, k] > replica_rate[todo] + 1e-9]
        nxt = np.full(n, -np.inf)
        nxt[todo] = rest[todo, k] - replica_rate[todo]
        rest = np.column_stack([rest, nxt])
        k += 1

    out: list[list[Demand]] = []
    for j, w in enumerate(ws):
        f = int(fits_at[j])
        if f == 0:
            out.append([Demand(w, w.rate_rps, int(batch0[j]), int(units0[j]), float(limit[j]))])
            continue
        rr, bb = float(replica_rate[j]), int(big[j])
        if f > 0:
            ds = [Demand(w, rr, bb, cap, float(limit[j]), dedicated=True) for _ in range(f)]
            ds.append(Demand(w, float(rest[j, f]), int(batch0[j]), int(units0[j]), float(limit[j])))
        else:
            last = int(np.flatnonzero(np.isfinite(rest[j]))[-1])
            ds = [Demand(w, rr, bb, cap, float(limit[j]), dedicated=True) for _ in range(last)]
            ds.append(Demand(w, float(rest[j, last]), bb, cap, float(limit[j]), dedicated=True))
        out.append(ds)
    return out


# Per-slot constants kept in the GPU table, in this order along its last axis.
_FIELDS = ("batch", "limit", "rate", "kernels", "idle_ms", "alpha_cache", "t_load", "t_fb")
_F = {name: i for i, name in enumerate(_FIELDS)}


class _ConfigTerms:
    """(k_act, c, p) for every (model, batch, share units), looked up by one flat index.

    The flat index of (model, batch, units) is ``(model * n_batches + batch) * (cap + 1) + units``,
    so giving a slot one more share unit adds 1 to its index. The last entry is an empty slot:
    k_act = 1, c = p = 0, so padded slots add nothing to a GPU's sums.
    """

    def __init__(self, perf: PerformanceModel, max_batch: int, cap: int) -> None:
        self.n_units = cap + 1
        self.n_batches = max_batch + 1
        n_models = len(perf.model_names)
        m, b, u = np.meshgrid(
            np.arange(n_models), np.arange(self.n_batches), np.arange(self.n_units), indexing="ij"
        )
        b_safe = np.maximum(b, 1).astype(float)
        u_safe = np.maximum(u, 1) * perf.unit_pct
        k_act, c, p = perf.solo_terms(m.ravel(), b_safe.ravel(), u_safe.ravel())
        self.empty = k_act.size
        self.k_act = np.append(k_act, 1.0)
        self.c = np.append(c, 0.0)
        self.p = np.append(p, 0.0)

    def index(self, model_idx: int, batch: int, units: int) -> int:
        return (model_idx * self.n_batches + batch) * self.n_units + units


class _GpuTable:
    """Open GPUs as padded arrays (rows: GPUs, columns: slots) so AllocGPU runs on many at once."""

    def __init__(self, empty_cfg: int, capacity: int = 64, slots: int = 4) -> None:
        self.n = 0
        self.empty_cfg = empty_cfg
        self.cfg = np.full((capacity, slots), empty_cfg, np.int64)
        self.units = np.zeros((capacity, slots), np.int64)
        self.const = self._blank((capacity, slots))
        self.count = np.zeros(capacity, np.int64)
        self.used = np.zeros(capacity, np.int64)
        self.members: list[list[int]] = []  # demand indices per GPU, slot order

    @staticmethod
    def _blank(shape: tuple[int, int]) -> np.ndarray:
        const = np.zeros((*shape, len(_FIELDS)), float)
        const[..., _F["batch"]] = 1.0
        const[..., _F["limit"]] = np.inf  # an empty slot never violates anything
        return const

    def _grow(self, rows: int, cols: int) -> None:
        r0, c0 = self.cfg.shape
        if rows <= r0 and cols <= c0:
            return
        r1, c1 = max(rows, 2 * r0 if rows > r0 else r0), max(cols, 2 * c0 if cols > c0 else c0)
        cfg = np.full((r1, c1), self.empty_cfg, np.int64)
        cfg[:r0, :c0] = self.cfg
        units = np.zeros((r1, c1), np.int64)
        units[:r0, :c0] = self.units
        const = self._blank((r1, c1))
        const[:r0, :c0] = self.const
        self.cfg, self.units, self.const = cfg, units, const
        for name in ("count", "used"):
            new = np.zeros(r1, np.int64)
            new[:r0] = getattr(self, name)
            setattr(self, name, new)

    def add(self, g: int, idx: int, cfg_row: np.ndarray, units_row: np.ndarray, const: np.ndarray) -> None:
        """Put demand ``idx`` in the next slot of open GPU ``g``, with the GPU's new shares."""
        c = int(self.count[g])
        self._grow(self.n, c + 1)
        self.cfg[g, : c + 1] = cfg_row[: c + 1]
        self.units[g, : c + 1] = units_row[: c + 1]
        self.const[g, c] = const
        self.count[g] = c + 1
        self.used[g] = int(units_row[: c + 1].sum())
        self.members[g].append(idx)

    def open_gpu(self, idx: int, cfg: int, units: int, const: np.ndarray) -> None:
        """A new GPU holding only demand ``idx`` (``add`` for the common case, without arrays)."""
        self._grow(self.n + 1, 1)
        g = self.n
        self.n += 1
        self.members.append([idx])
        self.cfg[g, 0], self.units[g, 0], self.const[g, 0] = cfg, units, const
        self.count[g], self.used[g] = 1, units


def _best_gpu(
    perf: PerformanceModel,
    terms: _ConfigTerms,
    cap: int,
    cfg: np.ndarray,
    units: np.ndarray,
    const: np.ndarray,
    n: np.ndarray,
    used: np.ndarray,
) -> tuple[int, np.ndarray, np.ndarray] | None:
    """Algorithm 2 on every candidate GPU at once; the cheapest feasible one (first on ties).

    Returns (row, final cfg, final units) or None. Rows are dropped as soon as they cannot win:
    a row's increase only grows while it iterates, so a row whose increase so far exceeds the best
    finished one, or equals it but comes later, can never be chosen. This returns exactly what
    running AllocGPU to the end on every row and taking the first minimum would.
    """
    active = np.arange(units.shape[0])
    best_row, best_inc = -1, np.iinfo(np.int64).max
    first = True  # candidates were chosen so that the first round is within capacity
    while active.size:
        if not first:
            active = active[units[active].sum(axis=1) <= cap]
            if not active.size:
                break
        f, k, nn = (cfg, const, n) if first else (cfg[active], const[active], n[active])
        lat, thr = perf.co_located(
            terms.k_act[f], terms.c[f], terms.p[f], nn, k[..., _F["batch"]], k[..., _F["kernels"]],
            k[..., _F["idle_ms"]], k[..., _F["alpha_cache"]], k[..., _F["t_load"]], k[..., _F["t_fb"]],
        )
        viol = (lat > k[..., _F["limit"]]) | (thr < k[..., _F["rate"]])
        done = ~viol.any(axis=1)
        if first and done.any():
            # Nothing was raised yet: every finished row grew by exactly the newcomer's lower bound,
            # the least any row can, so the first of them wins.
            j = int(np.argmax(done))
            return j, cfg[j], units[j]
        first = False
        if done.any():
            finished = active[done]
            inc = units[finished].sum(axis=1) - used[finished]
            j = int(np.argmin(inc))  # rows are in GPU order: first on ties
            if inc[j] < best_inc or (inc[j] == best_inc and finished[j] < best_row):
                best_row, best_inc = int(finished[j]), int(inc[j])
        active, viol = active[~done], viol[~done]
        units[active] += viol
        cfg[active] += viol
        if best_row >= 0 and active.size:
            inc = units[active].sum(axis=1) - used[active]
            active = active[(inc < best_inc) | ((inc == best_inc) & (active < best_row))]
    if best_row < 0:
        return None
    return best_row, cfg[best_row], units[best_row]


def place(perf: PerformanceModel, demands: list[Demand]) -> list[tuple[list[int], list[int]]]:
    """Algorithm 1 over ``demands`` (already initialised). Returns per GPU (demand indices, units)."""
    cap = max_units(perf)
    order = sorted(range(len(demands)), key=lambda i: -demands[i].lower_units)  # stable
    terms = _ConfigTerms(perf, max((d.batch for d in demands), default=1), cap)
    table = _GpuTable(terms.empty)
    midx = np.array([perf.model_index(d.workload.model) for d in demands], np.intp)
    batches = np.array([d.batch for d in demands], float)
    consts = perf.slot_constants(midx, batches)
    slot_const = np.column_stack(
        [batches, [d.limit_ms for d in demands], [d.rate_rps for d in demands], *(consts[f] for f in _FIELDS[3:])]
    )
    # GPUs with at least one free unit, in GPU order: only they can take anyone (full GPUs, most of
    # them dedicated replicas, are never tried again).
    spare = np.empty(0, np.intp)
    for i in order:
        d = demands[i]
        const = slot_const[i]
        new_cfg = terms.index(int(midx[i]), d.batch, d.lower_units)
        cand = spare[cap - table.used[spare] >= d.lower_units]
        if cand.size:
            counts = table.count[cand]
            width = int(counts.max()) + 1
            table._grow(table.n, width)
            rows = np.arange(cand.size)
            cfg = table.cfg[cand, :width]
            units = table.units[cand, :width]
            const_rows = table.const[cand, :width]
            cfg[rows, counts], units[rows, counts], const_rows[rows, counts] = new_cfg, d.lower_units, const
            best = _best_gpu(perf, terms, cap, cfg, units, const_rows, (counts + 1)[:, None], table.used[cand])
            if best is not None:
                j, cfg_row, units_row = best
                g = int(cand[j])
                table.add(g, i, cfg_row, units_row, const)
                if table.used[g] >= cap:
                    spare = spare[spare != g]
                continue
        table.open_gpu(i, new_cfg, d.lower_units, const)
        if d.lower_units < cap:
            spare = np.append(spare, table.n - 1)
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
        **perf.serving_plan_fields(),
    )


def full_budget_demands(model: PerformanceModel, w: Workload, margin: float) -> list[Demand]:
    """Greedy initialisation under the full budget: the batch that needs the smallest share alone.

    For each batch b, the limit is SLO (1 - margin) - (b - 1)/R and the share the smallest that
    meets it and the rate alone; ties go to the smaller batch. A workload no single GPU can carry
    is split into equal replicas, the fewest that fit.
    """
    budget = LatencyBudget.FULL
    cap = max_units(model)
    midx = model.model_index(w.model)
    for replicas in range(1, 10_000):
        rate = w.rate_rps / replicas
        # (b - 1)/R must leave room for inference: b < 1 + R * SLO (1 - margin)
        bmax = min(512, max(1, int(rate * w.slo_ms * (1 - margin) / 1000.0) + 1))
        b = np.arange(1, bmax + 1)
        limit = w.slo_ms * (1.0 - margin) - 1000.0 * (b - 1) / rate
        idx = np.full(b.shape, midx)
        rates = np.full(b.shape, rate)
        units = solo_feasible_units(model, idx, b, lower_share_units_array(model, idx, b, limit), limit, rates)
        ok = np.flatnonzero((units > 0) & (units <= cap))
        if ok.size:
            j = ok[np.argmin(units[ok])]  # first (smallest batch) on ties
            return [
                Demand(w, rate, int(b[j]), int(units[j]), float(limit[j]), dedicated=replicas > 1)
                for _ in range(replicas)
            ]
        if replicas == 1 and units[0] < 0:
            raise _too_tight(model, w, budget, margin)
    raise _too_tight(model, w, budget, margin)


def initial_demands(problem: PlanningProblem) -> list[Demand]:
    """Every workload's demands under the problem's latency budget, in input order."""
    perf = problem.perf_model
    ws = problem.workloads
    np.array([perf.model_index(w.model) for w in ws], np.intp)  # clear error for an unknown model
    if problem.latency_budget is LatencyBudget.FULL:
        return [d for w in ws for d in full_budget_demands(perf, w, problem.margin)]
    return [d for ds in igniter_demands_many(perf, ws) for d in ds]


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
