"""Latency budgets and the paper's per-workload initialisation (design note section 3)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from igniter_opt.domain import LatencyBudget, Workload
from igniter_opt.perfmodel.model import PerformanceModel

# Shares are kept as whole numbers of the profile's share unit; this absorbs float noise in 100 / unit.
_EPS = 1e-9


def max_units(model: PerformanceModel) -> int:
    """How many share units fit in 100 % of a GPU."""
    return int(math.floor(100.0 / model.unit_pct + _EPS))


def inference_limit_ms(
    slo_ms: float, rate_rps: float, batch: int, budget: LatencyBudget, margin: float = 0.0
) -> float:
    """The largest mean inference latency a placement may have under the budget.

    igniter: t_inf <= SLO / 2.   full: (b - 1) / R + t_inf <= SLO (1 - margin).
    """
    if budget is LatencyBudget.IGNITER:
        return slo_ms / 2.0
    return slo_ms * (1.0 - margin) - 1000.0 * (batch - 1) / rate_rps


def igniter_batches(model: PerformanceModel, model_idx: np.ndarray, slo_ms: np.ndarray, rate_rps: np.ndarray) -> np.ndarray:
    """The paper's batch for many workloads: b = ceil(T2 a B / (B + d_load a)), a = rate / 1000 per ms."""
    consts = model.slot_constants(model_idx, np.ones(np.shape(model_idx)))
    d_load = consts["t_load"] * model.hardware.pcie_bandwidth_bytes_per_ms  # input bytes per request
    bw = model.hardware.pcie_bandwidth_bytes_per_ms
    a = rate_rps / 1000.0
    t2 = slo_ms / 2.0
    return np.maximum(1, np.ceil(t2 * a * bw / (bw + d_load * a) - _EPS)).astype(np.int64)


def igniter_batch(model: PerformanceModel, w: Workload) -> int:
    """The paper's batch of one workload (see ``igniter_batches``)."""
    idx = np.array([model.model_index(w.model)])
    return int(igniter_batches(model, idx, np.array([w.slo_ms]), np.array([w.rate_rps]))[0])


def lower_share_units_array(
    model: PerformanceModel, model_idx: np.ndarray, batch: np.ndarray, limit_ms: np.ndarray
) -> np.ndarray:
    """Smallest whole number of share units whose interference-free solo latency meets ``limit_ms``.

    r_lower = ceil((g / delta - k4) / unit), g = k1 b^2 + k2 b + k3,
    delta = limit - idle_1 - b (d_load + d_fb) / B - k5. Where delta <= 0 no share can meet the
    limit: the result is -1 there. Otherwise it is at least one unit (a fast model can need
    "less than nothing").
    """
    k = np.array([model.models[n].k for n in model.model_names]).reshape(-1, 5)[model_idx]
    consts = model.slot_constants(model_idx, batch.astype(float))
    g = k[..., 0] * batch * batch + k[..., 1] * batch + k[..., 2]
    delta = limit_ms - consts["idle_ms"] - (consts["t_load"] + consts["t_fb"]) - k[..., 4]
    ok = delta > 0
    units = np.ceil((g / np.where(ok, delta, 1.0) - k[..., 3]) / model.unit_pct - _EPS)
    return np.where(ok, np.maximum(1, units), -1).astype(np.int64)


def lower_share_units(model: PerformanceModel, model_name: str, batch: int, limit_ms: float) -> int | None:
    """``lower_share_units_array`` for one placement; None when no share can meet ``limit_ms``."""
    u = int(lower_share_units_array(
        model, np.array([model.model_index(model_name)]), np.array([batch]), np.array([float(limit_ms)])
    )[0])
    return None if u < 0 else u


@dataclass(frozen=True)
class Demand:
    """A piece of a workload to place: the rate it serves, its batch, lower-bound share and limit."""

    workload: Workload
    rate_rps: float
    batch: int
    lower_units: int
    limit_ms: float
    dedicated: bool = False


def min_feasible_slo_ms(model: PerformanceModel, w: Workload, budget: LatencyBudget, margin: float) -> float:
    """The smallest SLO that batch 1 at 100 % meets alone under the budget (for error messages)."""
    lat, _ = model.solo(w.model, 1, max_units(model) * model.unit_pct)
    if budget is LatencyBudget.IGNITER:
        return 2.0 * lat
    return lat / (1.0 - margin)


def solo_feasible_units(
    model: PerformanceModel,
    model_idx: np.ndarray,
    batch: np.ndarray,
    units: np.ndarray,
    limit_ms: np.ndarray,
    rate_rps: np.ndarray,
) -> np.ndarray:
    """Raise each lower bound until the placement meets its limit and rate alone (AllocGPU on a
    GPU of its own). The paper's closed form ignores the clock drop of a power-hungry model
    running alone, so its bound can be a unit or two short. Entries that need more than a whole
    GPU become ``max_units + 1``; entries < 0 (no share can do it) stay as they are.
    """
    cap = max_units(model)
    units = units.copy()
    todo = np.flatnonzero((units > 0) & (units <= cap))
    while todo.size:
        lat, thr = model.predict_padded(
            model_idx[todo, None], batch[todo, None].astype(float), units[todo, None] * model.unit_pct
        )
        bad = (lat[:, 0] > limit_ms[todo]) | (thr[:, 0] < rate_rps[todo])
        todo = todo[bad]
        units[todo] += 1
        todo = todo[units[todo] <= cap]
    return units
