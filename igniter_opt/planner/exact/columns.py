"""Columns: one GPU's configuration, judged by the placement kernel.

A column is a multiset of slots (piece type, batch, share units, queue delay) for one GPU, judged
from the performance model's prediction of the whole GPU (``PerformanceModel.predict_padded``)
and the kernel's one test (``placement.violates``): it is feasible when its units fit in 100 %
and every slot meets its latency limit and its piece's rate next to the others. Its worth to the
master is, per piece type, how many of its slots are of that type (at most what the piece type's
split option needs).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from igniter_opt.domain import PlanningProblem
from igniter_opt.placement import violates
from igniter_opt.placement.serving import ServingModel
from igniter_opt.planner.exact.pieces import PieceType


class ColSlot(NamedTuple):
    """One placement of a column: a piece type at a batch, share units and queue delay (None:
    apply's rule)."""

    piece: int
    batch: int
    units: int
    delay: float | None = None


@dataclass(frozen=True)
class Column:
    """A feasible GPU configuration and its worth per piece type (``coef``: (piece, a) pairs)."""

    slots: tuple[ColSlot, ...]
    coef: tuple[tuple[int, float], ...]
    throughput_rps: tuple[float, ...]  # per slot, next to the others

    @property
    def units(self) -> int:
        return sum(s.units for s in self.slots)


def column_key(slots: Sequence[ColSlot]) -> tuple[ColSlot, ...]:
    """The identity of a configuration: its slots in a fixed order."""
    return tuple(sorted(slots, key=lambda s: (s.piece, s.batch, s.units, -1.0 if s.delay is None else s.delay)))


@dataclass(frozen=True)
class PieceSpace:
    """The problem seen through its piece types: per piece type its model, SLO, rate and kind."""

    problem: PlanningProblem
    rule: ServingModel
    pieces: tuple[PieceType, ...]

    @property
    def cap_units(self) -> int:
        return self.problem.perf_model.max_units

    @functools.cached_property
    def piece_arrays(self) -> dict[str, np.ndarray]:
        """Per piece type its model index, SLO, rate and requirement (read-only arrays, built once:
        ``evaluate`` reads them on every call, 14 000 calls in a 1000-workload replan)."""
        perf = self.problem.perf_model
        ws = self.problem.workloads
        arrays = {
            "model": np.array([perf.model_index(ws[p.workload].model) for p in self.pieces], np.intp),
            "slo": np.array([ws[p.workload].slo_ms for p in self.pieces], float),
            "rate": np.array([p.rate_rps for p in self.pieces], float),
            "requirement": np.array([p.requirement for p in self.pieces], float),
        }
        for a in arrays.values():
            a.flags.writeable = False
        return arrays


def _padded(slot_lists: list[tuple[ColSlot, ...]]) -> dict[str, np.ndarray]:
    n, width = len(slot_lists), max(1, max(len(s) for s in slot_lists))
    piece = np.zeros((n, width), np.intp)
    batch = np.ones((n, width))
    units = np.zeros((n, width))
    delay = np.full((n, width), np.nan)
    mask = np.zeros((n, width), bool)
    for r, slots in enumerate(slot_lists):
        for j, s in enumerate(slots):
            piece[r, j], batch[r, j], units[r, j] = s.piece, s.batch, s.units
            delay[r, j] = np.nan if s.delay is None else s.delay
            mask[r, j] = True
    return {"piece": piece, "batch": batch, "units": units, "delay": delay, "mask": mask}


def evaluate(space: PieceSpace, slot_lists: Sequence[Sequence[ColSlot]]) -> list[Column | None]:
    """Each configuration as a ``Column``, or None where the kernel says it does not fit."""
    if not slot_lists:
        return []
    perf = space.problem.perf_model
    keys = [column_key(s) for s in slot_lists]
    a = _padded(keys)
    pa = space.piece_arrays
    mask = a["mask"]
    lat, thr = perf.predict_padded(pa["model"][a["piece"]], a["batch"], a["units"] * perf.unit_pct, mask)
    slo, rate = pa["slo"][a["piece"]], pa["rate"][a["piece"]]
    limit = np.full(mask.shape, np.inf)
    limit[mask] = space.rule.limit_ms(slo[mask], rate[mask], a["batch"][mask], a["delay"][mask])
    bad = np.zeros(mask.shape, bool)
    bad[mask] = violates(lat[mask], thr[mask], limit[mask], rate[mask])
    fits = (a["units"].sum(axis=1) <= space.cap_units) & ~bad.any(axis=1)
    return [_column(keys[r], thr[r, : len(keys[r])], pa) if fits[r] else None for r in range(len(keys))]


def _column(slots: tuple[ColSlot, ...], thr: np.ndarray, pa: dict[str, np.ndarray]) -> Column:
    worth: dict[int, float] = {}
    for s in slots:
        worth[s.piece] = worth.get(s.piece, 0.0) + 1.0
    coef = tuple((p, min(v, float(pa["requirement"][p]))) for p, v in sorted(worth.items()))
    return Column(slots, coef, tuple(float(x) for x in thr))


def column_worth(col: Column, duals: np.ndarray) -> float:
    """sum_t duals[t] a_t: what the column is worth at the master's duals (per GPU)."""
    return math.fsum(duals[p] * a for p, a in col.coef)
