"""Latency budgets and the paper's per-workload initialisation (design note section 3)."""

from __future__ import annotations

import math
from dataclasses import dataclass

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


def igniter_batch(model: PerformanceModel, w: Workload) -> int:
    """The paper's batch: b = ceil(T2 a B / (B + d_load a)), with a = rate / 1000 per ms."""
    c = model.models[w.model]
    bw = model.hardware.pcie_bandwidth_bytes_per_ms
    a = w.rate_rps / 1000.0
    t2 = w.slo_ms / 2.0
    return max(1, math.ceil(t2 * a * bw / (bw + c.input_bytes * a) - _EPS))


def lower_share_units(model: PerformanceModel, model_name: str, batch: int, limit_ms: float) -> int | None:
    """Smallest whole number of share units whose interference-free solo latency meets ``limit_ms``.

    r_lower = ceil((g / delta - k4) / unit), g = k1 b^2 + k2 b + k3,
    delta = limit - idle_1 - b (d_load + d_fb) / B - k5. Returns None when delta <= 0 (no share
    can meet it). The result is at least one unit (a fast model can need "less than nothing").
    """
    c = model.models[model_name]
    k1, k2, k3, k4, k5 = c.k
    bw = model.hardware.pcie_bandwidth_bytes_per_ms
    g = k1 * batch * batch + k2 * batch + k3
    delta = limit_ms - c.idle_ms - batch * (c.input_bytes + c.output_bytes) / bw - k5
    if delta <= 0:
        return None
    units = math.ceil((g / delta - k4) / model.unit_pct - _EPS)
    return max(1, units)


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
