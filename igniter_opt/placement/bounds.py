"""Share units and the solo lower bound: the least share a placement needs alone on a GPU."""

from __future__ import annotations

import numpy as np

from igniter_opt.perfmodel.model import PerformanceModel
from igniter_opt.placement.feasibility import tolerant_bounds, violates

# Shares are kept as whole numbers of the profile's share unit; this absorbs float noise in 100 / unit.
_EPS = 1e-9


def max_units(model: PerformanceModel) -> int:
    """How many share units fit in 100 % of a GPU."""
    return model.max_units


def lower_share_units_array(
    model: PerformanceModel, model_idx: np.ndarray, batch: np.ndarray, limit_ms: np.ndarray
) -> np.ndarray:
    """Smallest whole number of share units whose interference-free solo latency meets ``limit_ms``
    (the paper's r_lower, ``PerformanceModel.lower_share_pct`` rounded up to units).

    -1 where no share can meet the limit; otherwise at least one unit (a fast model can need
    "less than nothing").
    """
    pct = model.lower_share_pct(model_idx, batch.astype(float), limit_ms)
    ok = np.isfinite(pct)
    units = np.ceil(np.where(ok, pct, 0.0) / model.unit_pct - _EPS)
    return np.where(ok, np.maximum(1, units), -1).astype(np.int64)


def lower_share_units(model: PerformanceModel, model_name: str, batch: int, limit_ms: float) -> int | None:
    """``lower_share_units_array`` for one placement; None when no share can meet ``limit_ms``."""
    u = int(lower_share_units_array(
        model, np.array([model.model_index(model_name)]), np.array([batch]), np.array([float(limit_ms)])
    )[0])
    return None if u < 0 else u


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
        bad = violates(lat[:, 0], thr[:, 0], limit_ms[todo], rate_rps[todo])
        todo = todo[bad]
        units[todo] += 1
        todo = todo[units[todo] <= cap]
    return units


def solo_rate_ceiling(model: PerformanceModel, model_idx: np.ndarray, batch: np.ndarray,
                      limit_ms: np.ndarray) -> np.ndarray:
    """The most throughput (req/s) a placement can have alone on a GPU at any share whose latency
    meets ``limit_ms``; 0 where no share does. A rate whose tolerant bound is above it cannot fit
    one GPU, so ``solo_feasible_units`` need not walk its shares to find that out."""
    cap = max_units(model)
    n = len(model_idx)
    # One row per (placement, share): each row is a GPU of its own.
    units = np.tile(np.arange(1, cap + 1, dtype=float), n)[:, None]
    lat, thr = model.predict_padded(np.repeat(np.asarray(model_idx, np.intp), cap)[:, None],
                                    np.repeat(np.asarray(batch, float), cap)[:, None], units * model.unit_pct)
    latency_bound, _ = tolerant_bounds(np.asarray(limit_ms, float), np.zeros(n))
    ok = lat[:, 0].reshape(n, cap) <= latency_bound[:, None]
    return np.where(ok, thr[:, 0].reshape(n, cap), 0.0).max(axis=1, initial=0.0)
