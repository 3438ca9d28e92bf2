"""Per-request latency of one Triton model instance with a dynamic batcher (issue 12).

The performance model predicts one batch's execution time; the SLO is about each request's
end-to-end latency under random arrivals. This module turns the one into the other.

The server (Triton's dynamic batcher, one model instance, max batch ``b`` = the only preferred
batch size, max queue delay ``d``; rule read from ``src/dynamic_batch_scheduler.cc`` of
triton-inference-server/core, see docs/serving-model.md): when the instance is free and requests
wait, a batch is sent at once if ``b`` requests wait or the oldest has waited ``d``; otherwise the
batcher waits until either happens. The batch takes the oldest ``min(waiting, b)`` requests.
Every batch takes ``S * X`` ms, ``S`` the service time (GPU time next to the co-runners plus the
per-batch serving overhead; the executor pads a partial batch to the captured CUDA graph of size
``b``, so a batch of ``k <= b`` takes as long as a full one) and ``X`` i.i.d., mean 1, coefficient
of variation ``service_cv`` (gamma). A request's latency is
``(dispatch of its batch - its arrival) + its batch's service time + client_ms``.

Scale invariance: measured in units of the mean gap between arrivals ``1/R``, the latency depends
only on ``(b, delta = R d / 1000, sigma = R S / 1000, service_cv, arrival process)``. The
normalised latency ``(latency - client_ms) R / 1000`` is simulated once per batch size on a grid
of ``(delta, sigma)`` and quantile levels (a ``LatencyTable``, cached in memory and on disk), and
the planner's questions are answered from it for any rate.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import sys
import zipfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from igniter_opt.domain import ServingParams
from igniter_opt.errors import InputError
from igniter_opt.ioutil import atomic_write_bytes

log = logging.getLogger(__name__)

# Bump when anything that changes a table's numbers changes (simulation, warm-up, grids' meaning).
TABLE_CODE_VERSION = 1

# Queue delays of the table: fractions f of a batch's fill time, delta = f (b - 1). Measured
# (docs/serving-model.md): choosing among these loses at most 1.3 % (mean 0.05 %) of the largest
# feasible service time against ten fractions from 0 to 3. 1.5 and 2 also cover the executor's
# default delay for plans that do not choose one (SLO / 2, f = b / (b - 1) for the paper's batch).
DELAY_FRACTIONS = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0)
# Utilisation-like rho = sigma / b of the table, denser where the tail rises steeply.
RHO_GRID = (0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7,
            0.75, 0.8, 0.825, 0.85, 0.875, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97)
# Quantile levels: 0 and 1 are the sample's minimum and maximum (they bound within_slo).
LEVELS = tuple(sorted({round(x, 4) for x in (
    *np.arange(0.0, 0.5, 0.05), *np.arange(0.5, 0.9, 0.025), *np.arange(0.9, 0.99, 0.005),
    *np.arange(0.99, 0.9995, 0.001), 1.0)}))
LEVEL_TOL = 1e-9  # an attainment this close to a level is that level

DEFAULT_N_REQUESTS = 50_000
# Warm-up from an empty system: WARMUP_SCALE / (1 - rho)^2 requests (a queue in heavy traffic
# relaxes over about 1 / (1 - rho)^2 arrivals), at least WARMUP_MIN_BATCHES batches, at most WARMUP_CAP.
WARMUP_SCALE = 5.0
WARMUP_MIN_BATCHES = 50
WARMUP_CAP = 20_000
SEGMENT_MIN = 2_000  # recorded requests per independent segment of one scenario (see simulate_normalised)
SIM_MEMORY_BYTES = 256 << 20  # scenarios are simulated in chunks that stay below this
SMALL_BATCH = 6  # up to this batch size, counting arrivals by comparison beats a binary search


class Arrival(StrEnum):
    """How requests arrive: a Poisson process, or evenly spaced."""

    POISSON = "poisson"
    CONSTANT = "constant"


@dataclass(frozen=True)
class QueueingParams:
    """What the per-request model takes besides the placement (times in ms).

    ``client_ms``: added to every request (client and network beyond the server). ``service_cv``:
    coefficient of variation of a batch's service time. ``arrival``: the arrival process.
    ``n_requests``: requests recorded per simulated scenario (after the warm-up). ``seed``: of the
    common random numbers. The per-batch serving overhead is inside the service time, not here.
    """

    client_ms: float = 0.0
    service_cv: float = 0.0
    arrival: Arrival = Arrival.POISSON
    n_requests: int = DEFAULT_N_REQUESTS
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.client_ms) and self.client_ms >= 0):
            raise InputError(f"client_ms must be a finite number >= 0, got {self.client_ms}")
        if not (math.isfinite(self.service_cv) and 0 <= self.service_cv <= 2):
            raise InputError(f"service_cv must be in [0, 2], got {self.service_cv}")
        try:
            object.__setattr__(self, "arrival", Arrival(self.arrival))
        except ValueError:
            raise InputError(f"arrival must be one of {', '.join(a.value for a in Arrival)}, "
                             f"got {self.arrival!r}") from None
        if int(self.n_requests) != self.n_requests or self.n_requests < 1000:
            raise InputError(f"n_requests must be an integer >= 1000, got {self.n_requests}")
        if int(self.seed) != self.seed or self.seed < 0:
            raise InputError(f"seed must be an integer >= 0, got {self.seed}")
        # one spelling per value (5e4 and 50000, 0 and 0.0), so that equal parameters share a cache key
        for name, kind in (("client_ms", float), ("service_cv", float), ("n_requests", int), ("seed", int)):
            object.__setattr__(self, name, kind(getattr(self, name)))

    @classmethod
    def from_serving(cls, serving: ServingParams, **overrides: object) -> QueueingParams:
        """client_ms and service_cv from a profile's serving measurements; the rest from ``overrides``."""
        fields: dict[str, object] = {"client_ms": serving.client_ms, "service_cv": serving.service_cv}
        fields.update(overrides)
        return cls(**fields)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Grids


def delay_grid(batch: int) -> np.ndarray:
    """Normalised queue delays delta of the table for ``batch`` (only 0 for a batch of 1: it never waits)."""
    if batch <= 1:
        return np.zeros(1)
    return np.asarray(DELAY_FRACTIONS) * (batch - 1)


def sigma_grid(batch: int) -> np.ndarray:
    """Normalised service times sigma of the table for ``batch``."""
    return np.asarray(RHO_GRID) * batch


def queue_delay_candidates(rate_rps: np.ndarray | float, batch: np.ndarray | int) -> np.ndarray:
    """Queue delays (ms) on the table's grid, shape ``(*shape, len(DELAY_FRACTIONS))``.

    ``1000 f (b - 1) / R`` for each fraction f: the delays the planner may choose with the batch
    (all 0 for a batch of 1).
    """
    rate, b = np.broadcast_arrays(np.asarray(rate_rps, dtype=float), np.asarray(batch))
    _check_rate_batch(rate, b)
    fill_ms = 1000.0 * np.maximum(b - 1, 0) / rate
    return fill_ms[..., None] * np.asarray(DELAY_FRACTIONS)


# ---------------------------------------------------------------------------------------------
# Simulation


def normalised_stream(n: int, arrival: Arrival | str = Arrival.POISSON, service_cv: float = 0.0,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Arrival times (mean gap 1) and service multipliers (mean 1) of requests 0..n-1.

    The common random numbers of every scenario. Arrivals and multipliers come from separate
    generators, so that the arrivals do not change with ``service_cv`` and a longer stream
    extends a shorter one.
    """
    arrival = Arrival(arrival)
    if arrival is Arrival.POISSON:
        arrivals = np.cumsum(np.random.default_rng([seed, 0]).exponential(size=n))
    else:
        arrivals = np.arange(n, dtype=float)
    if service_cv == 0:
        multipliers = np.ones(n)
    else:
        shape = 1.0 / service_cv**2
        multipliers = np.random.default_rng([seed, 1]).gamma(shape, 1.0 / shape, size=n)
    return arrivals, multipliers


def simulate_stream(batch: int, delta: np.ndarray, sigma: np.ndarray, arrivals: np.ndarray,
                    multipliers: np.ndarray) -> np.ndarray:
    """Normalised latencies of every request of one run from an empty system, per scenario.

    ``delta``, ``sigma``: 1-d arrays of equal length (one scenario each); ``arrivals``,
    ``multipliers``: of one stream (``normalised_stream``). Returns ``(len(delta), len(arrivals))``.
    Transient runs (a measured run's length, utilisation >= 1) are fine here.
    """
    delta, sigma = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (delta, sigma))
    n = arrivals.size
    zeros = np.zeros(delta.size, dtype=np.int64)
    padded = np.concatenate([arrivals, np.full(batch, np.inf)])
    lat = _run_lanes(batch, delta, sigma, padded, multipliers, zeros, zeros, zeros + n)
    return lat.reshape(delta.size, n) - arrivals


def warmup_requests(rho: np.ndarray, batch: int) -> np.ndarray:
    """Requests simulated from an empty system and discarded before recording, per scenario."""
    rho = np.minimum(np.asarray(rho, dtype=float), 0.999)
    w = np.maximum(np.ceil(WARMUP_SCALE / (1.0 - rho) ** 2), WARMUP_MIN_BATCHES * batch)
    return np.minimum(w, WARMUP_CAP).astype(np.int64)


def simulate_normalised(batch: np.ndarray | int, delta: np.ndarray | float, sigma: np.ndarray | float, *,
                        service_cv: float = 0.0, arrival: Arrival | str = Arrival.POISSON,
                        n_requests: int = DEFAULT_N_REQUESTS, seed: int = 0,
                        levels: np.ndarray | tuple[float, ...] | None = None) -> np.ndarray:
    """Steady-state normalised latencies (or their quantiles) of many scenarios at once.

    ``batch``, ``delta``, ``sigma``: arrays of one shape (broadcast), one scenario each, each with
    ``sigma < batch`` (utilisation below 1). Every scenario sees the same stream of arrivals and
    service multipliers, so results are smooth in ``sigma``. The recorded requests are
    ``WARMUP_CAP .. WARMUP_CAP + n_requests - 1`` of the stream (which goes on for a batch
    more, so that no batch is cut short by its end), cut into segments of at least
    ``SEGMENT_MIN`` requests that are simulated side by side, each after its own warm-up of the
    requests just before it (``warmup_requests``): a scenario's result does not depend on which
    other scenarios are simulated with it.

    Returns ``(*shape, n_requests)`` latencies, or with ``levels`` ``(*shape, len(levels))``
    quantiles (numpy's linear interpolation between order statistics).
    """
    b, d, s = np.broadcast_arrays(np.asarray(batch), np.asarray(delta, dtype=float),
                                  np.asarray(sigma, dtype=float))
    _check_scenarios(b, d, s)
    # the requests after the recorded ones exist too: the last batches may take them
    length = WARMUP_CAP + n_requests + (int(b.max()) if b.size else 0)
    arrivals, multipliers = normalised_stream(length, arrival, service_cv, seed)
    width = n_requests if levels is None else len(levels)
    out = np.empty((*b.shape, width))
    flat_b, flat_d, flat_s, flat_out = b.ravel(), d.ravel(), s.ravel(), out.reshape(-1, width)
    for bb in np.unique(flat_b):
        idx = np.nonzero(flat_b == bb)[0]
        for chunk in _chunks(idx, int(bb), flat_s[idx] / bb, n_requests):
            lat = _steady_latencies(int(bb), flat_d[chunk], flat_s[chunk], arrivals, multipliers, n_requests)
            flat_out[chunk] = lat if levels is None else _quantiles(lat, np.asarray(levels, dtype=float))
    return out


def _check_scenarios(b: np.ndarray, d: np.ndarray, s: np.ndarray) -> None:
    if b.size == 0:
        return
    if not (np.all(b == np.round(b)) and b.min() >= 1):
        raise InputError("batch must hold integers >= 1")
    if not (np.all(np.isfinite(d)) and d.min() >= 0 and np.all(np.isfinite(s)) and s.min() >= 0):
        raise InputError("delta and sigma must be finite and >= 0")
    if np.any(s >= b):
        raise InputError("sigma must be below batch (utilisation below 1): there is no steady state "
                         "otherwise; use simulate_stream for a transient run")


def _chunks(idx: np.ndarray, batch: int, rho: np.ndarray, n: int) -> list[np.ndarray]:
    """Groups of scenarios whose simulation stays below SIM_MEMORY_BYTES."""
    warm = warmup_requests(rho, batch)
    segments = -(-n // np.maximum(warm, SEGMENT_MIN))
    # per scenario: a batch record per simulated request at most (16 B), latency and key per recorded one
    need = 16 * (n + segments * warm) + 24 * n
    groups, start, acc = [], 0, 0
    for j, x in enumerate(need):
        if acc and acc + x > SIM_MEMORY_BYTES:
            groups.append(idx[start:j])
            start, acc = j, 0
        acc += int(x)
    groups.append(idx[start:])
    return groups


def _steady_latencies(batch: int, delta: np.ndarray, sigma: np.ndarray, arrivals: np.ndarray,
                      multipliers: np.ndarray, n: int) -> np.ndarray:
    """(scenarios, n) latencies of requests WARMUP_CAP.. of the stream (see simulate_normalised)."""
    warm = warmup_requests(sigma / batch, batch)
    recorded = arrivals[WARMUP_CAP:WARMUP_CAP + n]
    if batch == 1:  # a FIFO single-server queue: Lindley's recursion in closed form
        span = [slice(WARMUP_CAP - w, WARMUP_CAP + n) for w in warm]
        return np.stack([_lindley(sg, arrivals[sp], multipliers[sp])[w:]
                         for sg, sp, w in zip(sigma, span, warm, strict=True)])
    length = np.maximum(warm, SEGMENT_MIN)
    per = -(-n // length)
    scen = np.repeat(np.arange(delta.size), per)
    seg = np.arange(scen.size) - np.repeat(np.cumsum(per) - per, per)
    record = WARMUP_CAP + seg * length[scen]
    end = np.minimum(record + length[scen], WARMUP_CAP + n)
    padded = np.concatenate([arrivals, np.full(batch, np.inf)])
    dispatch_plus_service = _run_lanes(batch, delta[scen], sigma[scen], padded, multipliers,
                                       record - warm[scen], record, end)
    return dispatch_plus_service.reshape(delta.size, n) - recorded


def _lindley(sigma: float, arrivals: np.ndarray, multipliers: np.ndarray) -> np.ndarray:
    """Latencies of a FIFO single server from empty: dispatch D_n = max(a_n, D_{n-1} + s_{n-1}).

    With C_n = s_0 + ... + s_{n-1}: D_n = C_n + max_{j <= n} (a_j - C_j) (Lindley's recursion
    unrolled into a prefix maximum).
    """
    service = sigma * multipliers
    cum = np.concatenate([[0.0], np.cumsum(service[:-1])])
    dispatch = cum + np.maximum.accumulate(arrivals - cum)
    return dispatch - arrivals + service


def _run_lanes(batch: int, delta: np.ndarray, sigma: np.ndarray, arrivals: np.ndarray,
               multipliers: np.ndarray, start: np.ndarray, record: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Dispatch + service time of the batch of every recorded request, lanes side by side.

    Lane l starts empty at request ``start[l]`` and records requests ``record[l] .. end[l] - 1``;
    ``arrivals`` is padded with ``batch`` times +inf. One loop step forms one batch in every
    unfinished lane. A batch is kept once (its dispatch and service in a buffer); the recorded
    request at which it starts (or the lane's first recorded request, for a batch that began in the
    warm-up) gets the key (lane, batch id), and a running maximum over the keys then gives every
    recorded request its batch. Returns the recorded requests of all lanes, concatenated.
    """
    lengths = end - record
    offset = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    capacity = int((end - start).sum())  # each batch serves >= 1 request of its lane
    if capacity >= 1 << 32 or start.size >= 1 << 30:
        raise InputError("too many simulated requests in one call; lower n_requests")
    dispatch_buf, service_buf = np.empty(capacity), np.empty(capacity)
    key = np.zeros(int(lengths.sum()), dtype=np.int64)
    head, free = start.astype(np.int64), np.full(start.size, -np.inf)
    shift, first = offset - record, offset.copy()
    lane_key = np.arange(start.size, dtype=np.int64) << 32
    end, delta, sigma = end.astype(np.int64), delta.copy(), sigma.copy()
    ids, used = np.arange(start.size, dtype=np.int64), 0
    while head.size:
        n_lanes = head.size
        arrived = arrivals[head]
        dispatch = np.maximum(free, np.minimum(arrived + delta, arrivals[head + batch - 1]))
        service = sigma * multipliers[head]
        dispatch_buf[used:used + n_lanes] = dispatch
        service_buf[used:used + n_lanes] = service
        key[np.maximum(head + shift, first)] = lane_key + (used + ids[:n_lanes])
        used += n_lanes
        free = dispatch + service
        head += _batch_sizes(arrivals, head, dispatch, batch)
        done = head >= end
        if done.any():
            keep = ~done
            head, free, delta, sigma, end, shift, first, lane_key = (
                v[keep] for v in (head, free, delta, sigma, end, shift, first, lane_key))
    batch_of = np.maximum.accumulate(key) & 0xFFFFFFFF
    return dispatch_buf[batch_of] + service_buf[batch_of]


def _batch_sizes(arrivals: np.ndarray, head: np.ndarray, dispatch: np.ndarray, batch: int) -> np.ndarray:
    """How many of requests head, head + 1, ... (at most ``batch``) have arrived by ``dispatch`` (>= 1)."""
    if batch <= SMALL_BATCH:
        k = np.ones(head.size, dtype=np.int64)
        for j in range(1, batch):
            k += arrivals[head + j] <= dispatch
        return k
    return np.minimum(np.searchsorted(arrivals, dispatch, side="right") - head, batch)


def _quantiles(lat: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Row-wise quantiles by numpy's linear method, from one sort (faster than np.quantile here)."""
    srt = np.sort(lat, axis=1)
    pos = levels * (srt.shape[1] - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, srt.shape[1] - 1)
    w = pos - lo
    return srt[:, lo] * (1.0 - w) + srt[:, hi] * w


# ---------------------------------------------------------------------------------------------
# The table


@dataclass(frozen=True, eq=False)
class LatencyTable:
    """Normalised latency quantiles of one batch size: ``quantiles[i_delta, i_sigma, i_level]``.

    Non-decreasing in sigma and in the level. ``delta``, ``sigma``: the grids (``delay_grid``,
    ``sigma_grid``); ``levels``: ascending quantile levels, from 0 (the sample's minimum) to 1.
    """

    batch: int
    delta: np.ndarray
    sigma: np.ndarray
    levels: np.ndarray
    quantiles: np.ndarray

    def level_index(self, attainment: float) -> int:
        """Index of ``attainment`` among the levels (InputError when it is not one)."""
        hit = np.nonzero(np.abs(self.levels - attainment) <= LEVEL_TOL)[0]
        if hit.size == 0:
            raise InputError(f"level {attainment} is not in this table; build one with it "
                             "(latency_table(levels=levels_with(...)))")
        return int(hit[0])

    def _delta_weights(self, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Left delta index and right weight per delta; a batch of 1 never waits, so its delta is ignored."""
        if self.delta.size == 1:
            return np.zeros(delta.size, dtype=np.int64), np.zeros(delta.size)
        lo, w = _bracket(self.delta, delta)
        return lo, w

    def curve(self, delta: np.ndarray, level: int) -> np.ndarray:
        """The quantile at level index ``level`` on the whole sigma grid, ``(n, n_sigma)``, linear in delta.

        nan outside the delta grid.
        """
        q = self.quantiles[:, :, level]
        if self.delta.size == 1:
            return np.broadcast_to(q[0], (np.size(delta), q.shape[1])).copy()
        lo, w = self._delta_weights(np.asarray(delta, dtype=float))
        return q[lo] * (1.0 - w)[:, None] + q[lo + 1] * w[:, None]

    def at(self, delta: np.ndarray, sigma: np.ndarray) -> np.ndarray:
        """Quantiles at each (delta, sigma), ``(n, n_levels)``, bilinear; nan outside the grids."""
        d_lo, wd = self._delta_weights(np.asarray(delta, dtype=float))
        s_lo, ws = _bracket(self.sigma, np.asarray(sigma, dtype=float))
        d_hi = np.minimum(d_lo + 1, self.delta.size - 1)
        q = self.quantiles
        wd, ws = wd[:, None], ws[:, None]
        return ((q[d_lo, s_lo] * (1.0 - ws) + q[d_lo, s_lo + 1] * ws) * (1.0 - wd)
                + (q[d_hi, s_lo] * (1.0 - ws) + q[d_hi, s_lo + 1] * ws) * wd)


# A point this close (relative to the grid's span) past a grid's end is on it: a queue delay or
# service time read back from a plan file (rounded to 1e-6 ms) lands on the edge it was planned at.
GRID_EDGE_TOL = 1e-6


def _bracket(grid: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each x: the grid interval's left index and the weight of its right end (nan outside the grid)."""
    lo = np.clip(np.searchsorted(grid, x, side="right") - 1, 0, grid.size - 2)
    w = (x - grid[lo]) / (grid[lo + 1] - grid[lo])
    tol = GRID_EDGE_TOL * (grid[-1] - grid[0])
    inside = (x >= grid[0] - tol) & (x <= grid[-1] + tol)
    return lo, np.where(inside, np.clip(w, 0.0, 1.0), np.nan)


def build_table(batch: int, params: QueueingParams, levels: tuple[float, ...] = LEVELS) -> LatencyTable:
    """Simulate the table of one batch size (no cache; ``latency_table`` caches)."""
    delta, sigma = delay_grid(batch), sigma_grid(batch)
    dd, ss = np.meshgrid(delta, sigma, indexing="ij")
    lv = np.asarray(levels, dtype=float)
    q = simulate_normalised(np.full(dd.shape, batch), dd, ss, service_cv=params.service_cv,
                            arrival=params.arrival, n_requests=params.n_requests, seed=params.seed, levels=lv)
    # sampling noise may dent the curves: a running maximum makes them monotone in sigma, then in level
    q = np.maximum.accumulate(np.maximum.accumulate(q, axis=1), axis=2)
    return LatencyTable(batch, delta, sigma, lv, q)


_TABLES: dict[tuple[str, int], LatencyTable] = {}


def clear_memory_cache() -> None:
    """Forget the tables held in memory (the disk cache stays)."""
    _TABLES.clear()


def cache_dir() -> Path:
    """The table cache: ``$IGNITER_OPT_CACHE/serving-model``, else ``~/.cache/igniter-opt/serving-model``."""
    root = os.environ.get("IGNITER_OPT_CACHE") or Path.home() / ".cache" / "igniter-opt"
    return Path(root) / "serving-model"


def _table_meta(params: QueueingParams, levels: tuple[float, ...]) -> dict[str, object]:
    """Everything a table's numbers depend on (besides its batch size)."""
    return {"table_code_version": TABLE_CODE_VERSION, "delay_fractions": list(DELAY_FRACTIONS),
            "rho_grid": list(RHO_GRID), "levels": [float(x) for x in levels], "n_requests": params.n_requests,
            "seed": params.seed, "service_cv": params.service_cv, "arrival": params.arrival.value,
            "warmup": [WARMUP_SCALE, WARMUP_MIN_BATCHES, WARMUP_CAP, SEGMENT_MIN]}


def _meta_key(meta: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]


def cache_path(batch: int, params: QueueingParams, levels: tuple[float, ...] = LEVELS) -> Path:
    """The file that holds the table of ``batch`` for ``params`` and ``levels``."""
    return cache_dir() / f"b{batch:03d}-{_meta_key(_table_meta(params, levels))}.npz"


def latency_tables(batches: np.ndarray | list[int], params: QueueingParams,
                   levels: tuple[float, ...] = LEVELS) -> dict[int, LatencyTable]:
    """The tables of these batch sizes, from memory, else from disk, else simulated (and cached).

    Simulating shows a progress bar on stderr (on a terminal) once it takes more than a second.
    """
    meta = _table_meta(params, levels)
    key = _meta_key(meta)
    wanted = [int(b) for b in np.unique(np.asarray(batches))]
    missing = []
    for b in wanted:
        if (key, b) not in _TABLES:
            table = _read_cached(cache_path(b, params, levels), b, meta)
            if table is None:
                missing.append(b)
            else:
                _TABLES[key, b] = table
    if missing:
        from tqdm import tqdm

        with tqdm(missing, desc="serving model", unit="batch", delay=1.0, file=sys.stderr,
                  disable=None) as bar:
            for b in bar:
                bar.set_postfix_str(f"b={b}", refresh=False)
                _TABLES[key, b] = table = build_table(b, params, levels)
                _write_cached(cache_path(b, params, levels), table, meta)
    return {b: _TABLES[key, b] for b in wanted}


def latency_table(batch: int, params: QueueingParams, levels: tuple[float, ...] = LEVELS) -> LatencyTable:
    """The table of one batch size (see ``latency_tables``)."""
    return latency_tables([batch], params, levels)[batch]


def _write_cached(path: Path, table: LatencyTable, meta: dict[str, object]) -> None:
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps(meta, sort_keys=True)), batch=np.array(table.batch),
             delta=table.delta, sigma=table.sigma, levels=table.levels, quantiles=table.quantiles)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as exc:
        log.warning("could not write the serving-model cache %s (%s); the table is kept in memory only",
                    path, exc)


def _read_cached(path: Path, batch: int, meta: dict[str, object]) -> LatencyTable | None:
    """The cached table, or None when there is none or it is unusable (then with a warning)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if json.loads(str(z["meta"])) != json.loads(json.dumps(meta)):
                raise ValueError("it was made with other settings")
            table = LatencyTable(int(z["batch"]), z["delta"], z["sigma"], z["levels"], z["quantiles"])
        _check_table(table, batch)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("serving-model cache %s is unusable (%s); recomputing it", path, exc)
        return None
    return table


def _check_table(t: LatencyTable, batch: int) -> None:
    shape = (delay_grid(batch).size, sigma_grid(batch).size, t.levels.size)
    if t.batch != batch or t.quantiles.shape != shape:
        raise ValueError(f"batch {t.batch} and shape {t.quantiles.shape}, expected {batch} and {shape}")
    if not (np.allclose(t.delta, delay_grid(batch)) and np.allclose(t.sigma, sigma_grid(batch))):
        raise ValueError("its grids differ from this version's")
    q = t.quantiles
    if not (np.all(np.isfinite(q)) and np.all(np.diff(q, axis=1) >= 0) and np.all(np.diff(q, axis=2) >= 0)):
        raise ValueError("its quantiles are not finite and monotone")


# ---------------------------------------------------------------------------------------------
# What the planners ask (vectorised over placements; times in ms, rates in requests/s)


def _check_rate_batch(rate: np.ndarray, batch: np.ndarray) -> None:
    if not np.all(np.isfinite(rate) & (rate > 0)):
        raise InputError("rate_rps must be finite and > 0")
    if not np.all((batch == np.round(batch)) & (batch >= 1)):
        raise InputError("batch must hold integers >= 1")


def _check_delay(delay: np.ndarray) -> None:
    if not np.all(np.isfinite(delay) & (delay >= 0)):
        raise InputError("queue_delay_ms must be finite and >= 0")


def request_latency(rate_rps: np.ndarray | float, batch: np.ndarray | int, queue_delay_ms: np.ndarray | float,
                    service_ms: np.ndarray | float, slo_ms: np.ndarray | float,
                    params: QueueingParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per placement: (p50_ms, p99_ms, within_slo) of each request's end-to-end latency.

    From the table of the batch, linear in sigma and delta (docs/serving-model.md).
    ``within_slo``: the fraction of requests with latency <= ``slo_ms``, the piecewise-linear
    inverse of the quantiles over the level grid, so that ``within_slo >= A`` exactly when the
    A-quantile <= ``slo_ms`` for every level A of the grid. Utilisation ``R S / (1000 b)`` >= 1:
    no steady state (inf, inf, 0). Outside the table (utilisation above its grid, a delay above
    ``2 (b - 1) / R``, service nan): nan.
    """
    rate, b, delay, service, slo = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (
        rate_rps, batch, queue_delay_ms, service_ms, slo_ms)))
    _check_rate_batch(rate, b)
    _check_delay(delay)
    if np.any(service < 0) or np.any(np.isnan(slo)):
        raise InputError("service_ms must be >= 0 and slo_ms a number")
    p50, p99, within = (np.full(rate.shape, np.nan) for _ in range(3))
    tables = latency_tables(b, params)
    i50, i99 = (next(iter(tables.values())).level_index(a) for a in (0.5, 0.99))
    for bb, table in tables.items():
        m = b == bb
        r = rate[m]
        q = table.at(r * delay[m] / 1000.0, r * service[m] / 1000.0)
        p50[m] = params.client_ms + 1000.0 * q[:, i50] / r
        p99[m] = params.client_ms + 1000.0 * q[:, i99] / r
        within[m] = _fraction_within(q, table.levels, (slo[m] - params.client_ms) * r / 1000.0)
    overloaded = rate * service >= 1000.0 * b
    p50[overloaded], p99[overloaded], within[overloaded] = np.inf, np.inf, 0.0
    return p50, p99, within


def latency_quantile_ms(rate_rps: np.ndarray | float, batch: np.ndarray | int, queue_delay_ms: np.ndarray | float,
                        service_ms: np.ndarray | float, level: float, params: QueueingParams) -> np.ndarray:
    """Per placement: the ``level``-quantile of each request's end-to-end latency (ms), from the
    table (the attainment's own table when ``level`` is not on the default grid); inf when
    overloaded, nan outside the table."""
    rate, b, delay, service = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (
        rate_rps, batch, queue_delay_ms, service_ms)))
    _check_rate_batch(rate, b)
    _check_delay(delay)
    levels = levels_with(level)
    out = np.full(rate.shape, np.nan)
    for bb, table in latency_tables(b, params, levels).items():
        m = b == bb
        r = rate[m]
        q = table.at(r * delay[m] / 1000.0, r * service[m] / 1000.0)
        out[m] = params.client_ms + 1000.0 * q[:, table.level_index(level)] / r
    out[rate * service >= 1000.0 * b] = np.inf
    return out


def _fraction_within(q: np.ndarray, levels: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Piecewise-linear inverse of each row's quantile curve (``q`` over ``levels``) at ``x``; nan stays nan.

    Below the minimum: 0; at or above the maximum: 1; between levels j and j + 1 (q_j <= x < q_{j+1}):
    linear, and strictly below level j + 1, so that the result is >= level j exactly when q_j <= x.
    """
    n_le = (q <= x[:, None]).sum(axis=1)  # q is non-decreasing along a row: the levels it passes
    j = np.clip(n_le - 1, 0, levels.size - 2)
    rows = np.arange(q.shape[0])
    q_lo, q_hi = q[rows, j], q[rows, j + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(q_hi > q_lo, (x - q_lo) / (q_hi - q_lo), 0.0)
    frac = np.minimum(levels[j] + (levels[j + 1] - levels[j]) * np.clip(t, 0.0, 1.0),
                      np.nextafter(levels[j + 1], -np.inf))
    frac = np.where(n_le == 0, 0.0, np.where(n_le == levels.size, 1.0, frac))
    return np.where(np.isnan(q).any(axis=1) | np.isnan(x), np.nan, frac)


def levels_with(attainment: float) -> tuple[float, ...]:
    """The default levels, plus ``attainment`` when it is not one of them."""
    if any(abs(x - attainment) <= LEVEL_TOL for x in LEVELS):
        return LEVELS
    return tuple(sorted((*LEVELS, float(attainment))))


def max_service_ms(rate_rps: np.ndarray | float, batch: np.ndarray | int, queue_delay_ms: np.ndarray | float,
                   slo_ms: np.ndarray | float, attainment: float, params: QueueingParams) -> np.ndarray:
    """Per placement: the largest service time S (ms) with ``within_slo >= attainment``.

    Feasibility is monotone in S (the table is monotone in sigma), and the sigma -> quantile map
    of the table is piecewise linear, so it is inverted exactly: ``S <= S_max`` exactly when
    ``request_latency(..., S, ...)`` gives ``within_slo >= attainment`` (up to float rounding).
    An attainment off the level grid gets a table of its own (``levels_with``). -inf: no S works
    (the batching delay alone breaks the SLO); capped at the top of the table's utilisation grid
    (``RHO_GRID[-1] * 1000 b / R``); nan for a delay outside the table.
    """
    if not 0 < attainment < 1:
        raise InputError(f"attainment must be in (0, 1), got {attainment}")
    rate, b, delay, slo = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (
        rate_rps, batch, queue_delay_ms, slo_ms)))
    _check_rate_batch(rate, b)
    _check_delay(delay)
    levels = levels_with(attainment)
    shape = rate.shape
    tables = latency_tables(b, params, levels)
    # Placements sorted by batch, then by their delay's place on the batch's grid, so that each
    # (batch, grid delay) curve serves one contiguous run: a planner asks about millions of
    # placements at once, and a mask per curve cost more than the curves' own arithmetic.
    order = _sorted_by(b.ravel())
    rate, b, delay, slo = (v.ravel() if order is None else v.ravel()[order] for v in (rate, b, delay, slo))
    starts = np.searchsorted(b, np.array(list(tables), float), side="left")
    ends = np.r_[starts[1:], b.size]
    out = np.full(rate.shape, np.nan)
    for table, start, end in zip(tables.values(), starts, ends, strict=True):
        part = slice(start, end)
        r = rate[part]
        level = table.level_index(attainment)
        delta = r * delay[part] / 1000.0
        budget = (slo[part] - params.client_ms) * r / 1000.0  # normalised latency the SLO leaves
        on_grid = _grid_index(table.delta, delta)
        by_delay = _sorted_by(on_grid + 1)
        if by_delay is not None:
            r, delta, budget, on_grid = r[by_delay], delta[by_delay], budget[by_delay], on_grid[by_delay]
        res = np.empty(r.size)
        cuts = np.r_[0, np.flatnonzero(on_grid[1:] != on_grid[:-1]) + 1, r.size]
        for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
            j, run = int(on_grid[lo]), slice(lo, hi)
            if j >= 0:  # planners' delays: one shared curve per grid delay
                s_max = _largest_sigma_on_curve(table.quantiles[j, :, level], table.sigma, budget[run])
            else:
                s_max = _largest_sigma_within(table.curve(delta[run], level), table.sigma, budget[run])
            res[run] = 1000.0 * s_max / r[run]
        out[part if by_delay is None else start + by_delay] = res
    if order is None:
        return out.reshape(shape)
    result = np.empty_like(out)
    result[order] = out
    return result.reshape(shape)


def _sorted_by(key: np.ndarray) -> np.ndarray | None:
    """The stable order of small non-negative integers (batches, grid indices): numpy sorts int16
    keys by radix, in linear time. None: already in order (as a planner asks), nothing to move."""
    if key.size < 2 or (key[1:] >= key[:-1]).all():
        return None
    if key.max() < np.iinfo(np.int16).max:
        return np.argsort(key.astype(np.int16), kind="stable")
    return np.argsort(key, kind="stable")


def _grid_index(grid: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Index of the grid point each x is on (within ``GRID_EDGE_TOL`` of the grid's span), else -1."""
    if grid.size == 1:
        return np.zeros(x.size, np.int64)
    j = np.clip(np.rint(np.interp(x, grid, np.arange(grid.size))).astype(np.int64), 0, grid.size - 1)
    tol = GRID_EDGE_TOL * (grid[-1] - grid[0])
    return np.where(np.abs(x - grid[j]) <= tol, j, -1)


def _largest_sigma_on_curve(curve: np.ndarray, sigma: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``_largest_sigma_within`` for many x against one curve (a binary search, not a comparison per point)."""
    if np.isnan(curve).any():
        return np.full(x.shape, np.nan)
    n_le = np.searchsorted(curve, x, side="right")
    j = np.clip(n_le - 1, 0, sigma.size - 2)
    c_lo, c_hi = curve[j], curve[j + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(c_hi > c_lo, (x - c_lo) / (c_hi - c_lo), 1.0)
    s = sigma[j] + (sigma[j + 1] - sigma[j]) * np.clip(t, 0.0, 1.0)
    s = np.where(n_le == 0, -np.inf, np.where(n_le == sigma.size, sigma[-1], s))
    return np.where(np.isnan(x), np.nan, s)


def _largest_sigma_within(curve: np.ndarray, sigma: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Per row: the largest sigma where the non-decreasing piecewise-linear ``curve`` over ``sigma`` is <= x.

    -inf where even the first point is above x; nan where the row is nan.
    """
    n_le = (curve <= x[:, None]).sum(axis=1)
    j = np.clip(n_le - 1, 0, sigma.size - 2)
    rows = np.arange(curve.shape[0])
    c_lo, c_hi = curve[rows, j], curve[rows, j + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(c_hi > c_lo, (x - c_lo) / (c_hi - c_lo), 1.0)
    s = sigma[j] + (sigma[j + 1] - sigma[j]) * np.clip(t, 0.0, 1.0)
    s = np.where(n_le == 0, -np.inf, np.where(n_le == sigma.size, sigma[-1], s))
    return np.where(np.isnan(curve).any(axis=1) | np.isnan(x), np.nan, s)


__all__ = ["DELAY_FRACTIONS", "LEVELS", "RHO_GRID", "Arrival", "LatencyTable", "QueueingParams",
           "build_table", "cache_dir", "cache_path", "clear_memory_cache", "delay_grid", "latency_quantile_ms",
           "latency_table",
           "latency_tables", "levels_with", "max_service_ms", "normalised_stream", "queue_delay_candidates",
           "request_latency", "sigma_grid", "simulate_normalised", "simulate_stream", "warmup_requests"]
