"""Seeded workload generators shared by the benchmarks (registered by name)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from igniter_opt.domain import LatencyBudget, Workload
from igniter_opt.perfmodel.model import PerformanceModel
from igniter_opt.placement import lower_share_units, max_units
from igniter_opt.planio import EXAMPLE_WORKLOADS, read_workloads
from igniter_opt.planner.greedy import igniter_batch

# SLO ranges per model as in the paper's Table 3 mix; rates as in its evaluation (50..1200 req/s).
PAPER_SLO_RANGES_MS = {"alexnet": (10, 20), "resnet50": (20, 40), "vgg19": (20, 40), "ssd": (25, 55)}
PAPER_RATE_RANGE_RPS = (50, 1200)


def paper_like(n: int, seed: int) -> tuple[Workload, ...]:
    """``n`` workloads over the paper's four models, SLO and rate drawn uniformly (integers)."""
    rng = np.random.default_rng(seed)
    models = list(PAPER_SLO_RANGES_MS)
    lo_r, hi_r = PAPER_RATE_RANGE_RPS
    out = []
    for i in range(n):
        m = models[int(rng.integers(len(models)))]
        lo, hi = PAPER_SLO_RANGES_MS[m]
        out.append(Workload(f"w{i}", m, float(rng.integers(lo, hi + 1)), float(rng.integers(lo_r, hi_r + 1))))
    return tuple(out)


GENERATORS: dict[str, Callable[[int, int], tuple[Workload, ...]]] = {"paper_like": paper_like}


# ---- greedy vs exact ----------------------------------------------------------------------------
SLO_RANGE_MS = (10.0, 60.0)
RATE_RANGE_RPS = (50.0, 1200.0)


def _fits_one_gpu(perf: PerformanceModel, w: Workload) -> bool:
    """Plannable without splitting: at the paper's batch and 100 %, latency <= SLO/2 and throughput >= rate."""
    b = igniter_batch(perf, w)
    u = lower_share_units(perf, w.model, b, w.slo_ms / 2.0)
    if u is None or u > max_units(perf):
        return False
    lat, thr = perf.solo(w.model, b, max_units(perf) * perf.unit_pct)
    return lat <= w.slo_ms / 2.0 and thr >= w.rate_rps


def random_mix(perf: PerformanceModel, n: int, seed: int) -> tuple[Workload, ...]:
    """``n`` workloads over the profile's models, SLO uniform in 10-60 ms, rate log-uniform in 50-1200 req/s.

    A draw that one GPU cannot carry alone (at the paper's batch and 100 %) has its rate scaled
    down by 0.8 until it fits, so the mix is plannable without splitting; a draw whose SLO cannot
    be met at all is redrawn.
    """
    rng = np.random.default_rng(seed)
    models = perf.model_names
    out: list[Workload] = []
    while len(out) < n:
        model = models[int(rng.integers(len(models)))]
        slo = float(np.round(rng.uniform(*SLO_RANGE_MS), 1))
        rate = float(np.round(math.exp(rng.uniform(math.log(RATE_RANGE_RPS[0]), math.log(RATE_RANGE_RPS[1]))), 0))
        w = Workload(f"R{len(out) + 1}", model, slo, rate)
        if lower_share_units(perf, model, 1, slo / 2.0) is None:
            continue
        tries = 0
        while not _fits_one_gpu(perf, w) and tries < 30:
            w = Workload(w.name, model, slo, max(1.0, round(w.rate_rps * 0.8, 0)))
            tries += 1
        if _fits_one_gpu(perf, w):
            out.append(w)
    return tuple(out)


def paper_mix(perf: PerformanceModel, n: int = 12, seed: int = 0) -> tuple[Workload, ...]:
    del perf, n, seed
    return read_workloads(EXAMPLE_WORKLOADS)


# Generators that need the profile (to keep every mix plannable), for the greedy-vs-exact benchmark.
PROFILE_GENERATORS: dict[str, Callable[[PerformanceModel, int, int], tuple[Workload, ...]]] = {
    "paper": paper_mix,
    "random": random_mix,
}

# (suite, generator, sizes, seeds, budgets (budget, margin), time limit s)
SUITES = [
    ("paper", "paper", [12], [0], [(LatencyBudget.IGNITER, 0.1), (LatencyBudget.FULL, 0.0), (LatencyBudget.FULL, 0.1)],
     30.0),
    ("random-10", "random", [10], [0, 1, 2, 3, 4], [(LatencyBudget.IGNITER, 0.1)], 30.0),
    ("random-25", "random", [25], [0, 1, 2, 3, 4], [(LatencyBudget.IGNITER, 0.1)], 60.0),
    ("random-50", "random", [50], [0, 1, 2, 3, 4], [(LatencyBudget.IGNITER, 0.1)], 60.0),
    ("random-100", "random", [100], [0, 1, 2, 3, 4], [(LatencyBudget.IGNITER, 0.1)], 120.0),
    ("random-200", "random", [200], [0, 1, 2, 3, 4], [(LatencyBudget.IGNITER, 0.1)], 120.0),
    ("random-1000", "random", [1000], [0, 1, 2, 3, 4], [(LatencyBudget.IGNITER, 0.1)], 600.0),
]
