"""Seeded rate traces for ``igniter-opt replan-trace`` (registered by name).

``paper_mix_diurnal``: the paper's 12-workload mix (``examples/paper-table3.csv``: models, SLOs and
base rates) over one day, a rate every 15 minutes. Each workload follows a diurnal curve from its
base rate at night to ``peak_factor`` times it in the afternoon (its own amplitude, within +-20 %,
and peak hour, 14:00-18:00), with multiplicative noise (lognormal, sigma 0.08) and bursts (on
average 1.5 a day per workload, 15 to 60 minutes long, x1.3 to x2 on top of the curve). W11 is a
business-hours service: it starts at 08:00 and stops at 20:00, so the trace also has a workload
appearing and disappearing.

    python benchmarks/make_trace.py                       # writes examples/trace_paper_mix.csv
    python benchmarks/make_trace.py --seed 7 -o /tmp/t.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from igniter_opt.ioutil import atomic_write_text
from igniter_opt.planio import EXAMPLE_WORKLOADS, read_workloads

DEFAULT_OUT = HERE.parent / "examples" / "trace_paper_mix.csv"


def paper_mix_diurnal(seed: int = 2026, *, hours: float = 24.0, step_s: int = 900, peak_factor: float = 8.0,
                      bursts_per_day: float = 1.5) -> list[tuple[int, str, float, str, float]]:
    """Rows (time_s, workload, rate_rps, model, slo_ms), in time order."""
    rng = np.random.default_rng(seed)
    workloads = read_workloads(EXAMPLE_WORKLOADS)
    times = np.arange(0, int(hours * 3600), step_s)
    h = times / 3600.0
    rows: list[tuple[int, str, float, str, float]] = []
    curves = {}
    for w in workloads:
        amp = peak_factor * rng.uniform(0.8, 1.2)
        peak_h = rng.uniform(14.0, 18.0)
        shape = 0.5 * (1.0 + np.cos(2.0 * np.pi * (h - peak_h) / 24.0))  # 1 at the peak, 0 twelve hours away
        factor = 1.0 + (amp - 1.0) * shape**1.5
        factor *= rng.lognormal(0.0, 0.08, size=times.size)
        for _ in range(rng.poisson(bursts_per_day * hours / 24.0)):
            start = rng.uniform(0.0, hours)
            length = rng.choice([0.25, 0.5, 0.75, 1.0])
            factor[(h >= start) & (h < start + length)] *= rng.uniform(1.3, 2.0)
        if w.name == "W11":
            factor[(h < 8.0) | (h >= 20.0)] = 0.0
        curves[w.name] = np.round(w.rate_rps * factor, 1)
    for i, t in enumerate(times):
        for w in workloads:
            rows.append((int(t), w.name, float(curves[w.name][i]), w.model, w.slo_ms))
    return rows


TRACES: dict[str, tuple[Callable[..., list[tuple[int, str, float, str, float]]], int]] = {
    "paper_mix_diurnal": (paper_mix_diurnal, 2026),
}


def to_csv(rows: list[tuple[int, str, float, str, float]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["time_s", "workload", "rate_rps", "model", "slo_ms"])
    for t, name, rate, model, slo in rows:
        w.writerow([t, name, f"{rate:g}", model, f"{slo:g}"])
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", choices=list(TRACES), default="paper_mix_diurnal")
    ap.add_argument("--seed", type=int, default=None, help="default: the trace's registered seed")
    ap.add_argument("-o", "--output", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    gen, seed = TRACES[args.trace]
    rows = gen(seed if args.seed is None else args.seed)
    atomic_write_text(args.output, to_csv(rows))
    times, workloads = {r[0] for r in rows}, {r[1] for r in rows}
    print(f"wrote {args.output}: {len(rows)} rows, {len(times)} times, {len(workloads)} workloads")


if __name__ == "__main__":
    main()
