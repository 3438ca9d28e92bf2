"""AllocGPU (the paper's Algorithm 2), vectorised over many GPUs, with frozen slots.

AllocGPU(set on one GPU): repeat { if the shares sum above 100 %: infeasible; predict; every
placement that violates its limit or rate (``feasibility.violates``) gets one more share unit }
until none violates. A *frozen* slot (a running server kept as it is) never changes: if it
violates, the GPU is infeasible.

Rows are GPUs and columns their slots. Each slot is a flat index into ``ConfigTerms``, the
table of every (model, batch, units) configuration's solo terms, so raising a slot by one unit
adds 1 to its index; frozen slots have entries of their own at the table's end. Shares are
counted in (float) units of the profile's share unit, whole numbers except for frozen shares.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from igniter_opt.perfmodel.model import PerformanceModel
from igniter_opt.placement.feasibility import SHARE_TOL_PCT, exceeds, tolerant_bounds

# Per-slot constants kept along the last axis of a slot table, in this order (``violations``
# reads them by position: it is the hot loop of the greedy planner). "limit" and "rate" are kept
# as the tolerant bounds of ``feasibility.tolerant_bounds``.
FIELDS = ("batch", "limit", "rate", "kernels", "idle_ms", "alpha_cache", "t_load", "t_fb", "overhead_ms")
F = {name: i for i, name in enumerate(FIELDS)}


class ConfigTerms:
    """(k_act, c, p) for every (model, batch, share units), looked up by one flat index.

    The flat index of (model, batch, units) is ``(model * n_batches + batch) * (cap + 1) + units``,
    so giving a slot one more share unit adds 1 to its index. ``empty`` is an empty slot: k_act = 1,
    c = p = 0, so padded slots add nothing to a GPU's sums. ``add_fixed`` appends an entry for a
    share that is not a whole number of units (a frozen slot).
    """

    def __init__(self, perf: PerformanceModel, max_batch: int, cap: int) -> None:
        self.n_units = cap + 1
        self.n_batches = max_batch + 1
        n_models = len(perf.model_names)
        m, b, u = np.meshgrid(np.arange(n_models), np.arange(self.n_batches), np.arange(self.n_units), indexing="ij")
        b_safe = np.maximum(b, 1).astype(float)
        u_safe = np.maximum(u, 1) * perf.unit_pct
        k_act, c, p = perf.solo_terms(m.ravel(), b_safe.ravel(), u_safe.ravel())
        self.perf = perf
        self.empty = k_act.size
        self.k_act = np.append(k_act, 1.0)
        self.c = np.append(c, 0.0)
        self.p = np.append(p, 0.0)

    def index(self, model_idx: int, batch: int, units: int) -> int:
        return (model_idx * self.n_batches + batch) * self.n_units + units

    def add_fixed(self, model_idx: int, batch: int, share_pct: float) -> int:
        """A new entry for (model, batch) at exactly ``share_pct``; its index."""
        k_act, c, p = self.perf.solo_terms(np.array([model_idx]), np.array([float(batch)]), np.array([share_pct]))
        self.k_act = np.append(self.k_act, k_act)
        self.c = np.append(self.c, c)
        self.p = np.append(self.p, p)
        return self.k_act.size - 1


def slot_constants(perf: PerformanceModel, model_idx: np.ndarray, batch: np.ndarray, limit_ms: np.ndarray,
                   rate_rps: np.ndarray) -> np.ndarray:
    """Per-slot constants (``FIELDS``), shape (n, len(FIELDS)); limit and rate as tolerant bounds."""
    batch = np.asarray(batch, float)
    consts = perf.slot_constants(model_idx, batch)
    latency_bound, rate_bound = tolerant_bounds(limit_ms, rate_rps)
    return np.column_stack([batch, latency_bound, rate_bound, *(consts[f] for f in FIELDS[3:])])


def blank_constants(shape: tuple[int, int]) -> np.ndarray:
    """Constants of empty slots: batch 1, no limit (an empty slot never violates anything)."""
    const = np.zeros((*shape, len(FIELDS)), float)
    const[..., F["batch"]] = 1.0
    const[..., F["limit"]] = np.inf
    return const


def violations(terms: ConfigTerms, cfg: np.ndarray, const: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Which slots of each row violate their limit or rate next to their row's other slots (the
    performance model's co-location, judged by the kernel's one test)."""
    lat, thr = terms.perf.co_located(
        terms.k_act[cfg], terms.c[cfg], terms.p[cfg], n, const[..., 0], const[..., 3], const[..., 4], const[..., 5],
        const[..., 6], const[..., 7], const[..., 8],
    )
    return exceeds(lat, thr, const[..., 1], const[..., 2])


def cap_with_tolerance(terms: ConfigTerms, cap: int) -> float:
    """The capacity in units, with the share tolerance (frozen shares are any percentage)."""
    return cap + SHARE_TOL_PCT / terms.perf.unit_pct


class RowRace(NamedTuple):
    """Rows that race within their group for the highest score ``worth / (final units - used)`` (the lowest row
    first on ties), for ``alloc_rows`` to give up the rows that can no longer win."""

    group: np.ndarray  # per row: its group
    worth: np.ndarray  # per row
    used: np.ndarray  # per row: units that do not count against it


def alloc_rows(terms: ConfigTerms, cap: int, cfg: np.ndarray, units: np.ndarray, const: np.ndarray,
               frozen: np.ndarray | None = None, race: RowRace | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AllocGPU on every row to the end. Returns (feasible per row, final cfg, final units).

    With ``race``, a row is given up (reported infeasible, its cfg and units where they were) once a finished row
    of its group scores more than it still can (or as much, before it): its units only grow, so its score only
    falls, and it could never be its group's winner; every group's winner is the same as without ``race``."""
    cfg, units = cfg.copy(), units.astype(float).copy()
    n = (cfg != terms.empty).sum(axis=1, keepdims=True)
    feasible = np.zeros(cfg.shape[0], bool)
    active = np.arange(cfg.shape[0])
    limit = cap_with_tolerance(terms, cap)
    lead = None if race is None else _RaceLead(race)
    while active.size:
        active = active[units[active].sum(axis=1) <= limit]
        if not active.size:
            break
        viol = violations(terms, cfg[active], const[active], n[active])
        if frozen is not None:
            stuck = (viol & frozen[active]).any(axis=1)
            active, viol = active[~stuck], viol[~stuck]
        done = ~viol.any(axis=1)
        feasible[active[done]] = True
        if lead is not None:
            lead.finished(active[done], units[active[done]].sum(axis=1))
        active, viol = active[~done], viol[~done]
        units[active] += viol
        cfg[active] += viol
        if lead is not None:
            active = lead.still_racing(active, units[active].sum(axis=1))
    return feasible, cfg, units


class _RaceLead:
    """Per group of a ``RowRace``, the best finished row so far and its score."""

    def __init__(self, race: RowRace) -> None:
        self.race = race
        self.groups, self.of_row = np.unique(race.group, return_inverse=True)
        self.score = np.full(self.groups.size, -np.inf)
        self.row = np.full(self.groups.size, np.iinfo(np.intp).max)

    def _scores(self, rows: np.ndarray, units_sum: np.ndarray) -> np.ndarray:
        return self.race.worth[rows] / np.maximum(units_sum - self.race.used[rows], 1e-9)

    def finished(self, rows: np.ndarray, units_sum: np.ndarray) -> None:
        if not rows.size:
            return
        score, g = self._scores(rows, units_sum), self.of_row[rows]
        order = np.lexsort((rows, -score, g))
        first = order[np.r_[True, g[order][1:] != g[order][:-1]]]  # per group: highest score, then lowest row
        r, sc, gg = rows[first], score[first], g[first]
        better = (sc > self.score[gg]) | ((sc == self.score[gg]) & (r < self.row[gg]))
        self.score[gg[better]], self.row[gg[better]] = sc[better], r[better]

    def still_racing(self, rows: np.ndarray, units_sum: np.ndarray) -> np.ndarray:
        """The rows that may still win: their score now (it only falls) above their group's leader's, or equal
        and before it."""
        most, g = self._scores(rows, units_sum), self.of_row[rows]
        return rows[(most > self.score[g]) | ((most == self.score[g]) & (rows < self.row[g]))]


def cheapest_feasible_row(
    terms: ConfigTerms, cap: int, cfg: np.ndarray, units: np.ndarray, const: np.ndarray, n: np.ndarray,
    used: np.ndarray, frozen: np.ndarray | None = None,
) -> tuple[int, np.ndarray, np.ndarray] | None:
    """AllocGPU on every candidate row at once; the one whose share grows least (first on ties).

    Algorithm 1's choice: ``used`` is each row's share before the newcomer. Returns (row, final
    cfg, final units) or None. Rows are dropped as soon as they cannot win: a row's increase only
    grows while it iterates, so a row whose increase so far exceeds the best finished one, or
    equals it but comes later, can never be chosen. This returns exactly what running AllocGPU
    to the end on every row and taking the first minimum would. Candidates must be within
    capacity at the start (the newcomer at its lower bound). ``cfg`` and ``units`` may be changed.
    """
    # The rows still iterating are kept packed at the front (one compaction per round): indexing
    # thousands of candidate GPUs by an index array in every step cost more than AllocGPU itself.
    rows = Rows(np.arange(units.shape[0]), cfg, units, const, n, used, frozen)
    best: tuple[int, np.ndarray, np.ndarray] | None = None
    best_inc = np.inf
    limit = cap_with_tolerance(terms, cap)
    first = True
    while rows.size:
        viol = violations(terms, rows.cfg, rows.const, rows.n)
        iterating = ~(viol & rows.frozen).any(axis=1) if rows.frozen is not None else np.ones(rows.size, bool)
        done = iterating & ~viol.any(axis=1)
        if first and done.any():
            # Nothing was raised yet: every finished row grew by exactly the newcomer's lower bound,
            # the least any row can, so the first of them wins.
            j = int(np.argmax(done))
            return int(rows.row[j]), rows.cfg[j], rows.units[j]
        first = False
        if done.any():
            finished = np.flatnonzero(done)
            inc = rows.units[finished].sum(axis=1) - rows.used[finished]
            j = int(np.argmin(inc))  # rows are in GPU order: first on ties
            row = int(rows.row[finished[j]])
            if inc[j] < best_inc or (inc[j] == best_inc and best is not None and row < best[0]):
                best, best_inc = (row, rows.cfg[finished[j]].copy(), rows.units[finished[j]].copy()), float(inc[j])
        iterating &= ~done
        np.add(rows.units, viol, out=rows.units)
        np.add(rows.cfg, viol, out=rows.cfg)
        total = rows.units.sum(axis=1)
        iterating &= total <= limit
        if best is not None:
            inc = total - rows.used
            iterating &= (inc < best_inc) | ((inc == best_inc) & (rows.row < best[0]))
        rows = rows.keep(iterating)
    return best


class Rows(NamedTuple):
    """Candidate rows of ``cheapest_feasible_row`` still iterating, packed: ``row`` is each one's row."""

    row: np.ndarray
    cfg: np.ndarray
    units: np.ndarray
    const: np.ndarray
    n: np.ndarray
    used: np.ndarray
    frozen: np.ndarray | None

    @property
    def size(self) -> int:
        return self.row.size

    def keep(self, mask: np.ndarray) -> Rows:
        if mask.all():
            return self
        return Rows(self.row[mask], self.cfg[mask], self.units[mask], self.const[mask], self.n[mask], self.used[mask],
                    None if self.frozen is None else self.frozen[mask])
