"""Seeded workload generators shared by the benchmarks (registered by name)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from igniter_opt.domain import Workload

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
