"""Reading a rate trace and the rates each step provisions for (see the package docstring)."""

from __future__ import annotations

import csv
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from igniter_opt.domain import Workload
from igniter_opt.errors import InputError
from igniter_opt.planio import read_workload_specs

log = logging.getLogger(__name__)



# ---- the trace ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Trace:
    """Rates over time: ``rates[t, w]`` is workload w's rate (req/s) from ``times_s[t]`` on.

    ``workloads`` carry their model and SLO; their ``rate_rps`` is the peak over the trace.
    """

    workloads: tuple[Workload, ...]
    times_s: tuple[float, ...]
    rates: np.ndarray = field(repr=False)
    end_s: float
    source: str = "<trace>"

    def rates_at(self, t_s: float) -> np.ndarray:
        """Every workload's rate at time ``t_s`` (zeros before the trace starts)."""
        i = int(np.searchsorted(np.asarray(self.times_s), t_s, side="right")) - 1
        return np.zeros(len(self.workloads)) if i < 0 else self.rates[i]

    def change_times(self, start_s: float, end_s: float) -> list[float]:
        """Trace times in [start_s, end_s), with start_s first."""
        return [start_s] + [t for t in self.times_s if start_s < t < end_s]


def _num(value: str | None) -> float:
    try:
        return float(value) if value is not None and value.strip() != "" else math.nan
    except ValueError:
        return math.nan


def read_trace(path: str | os.PathLike[str], workloads: str | os.PathLike[str] | None = None,
               *, every_s: float | None = None) -> Trace:
    """Read and validate a trace (see the module docstring); every error names its row."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such trace file; pass a CSV with header time_s,workload,rate_rps")
    specs = read_workload_specs(workloads) if workloads is not None else None
    with p.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, skipinitialspace=True)
        cols = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in ("time_s", "workload", "rate_rps") if c not in cols]
        if missing:
            raise InputError(f"{p}: missing column(s) {', '.join(missing)}; the header must be "
                             "time_s,workload,rate_rps (and optionally model,slo_ms)")
        rows = [{str(k).strip(): (v or "").strip() for k, v in rec.items() if k is not None} for rec in reader]
    if not rows:
        raise InputError(f"{p}: no rows; a trace needs at least one time_s,workload,rate_rps row")
    known: dict[str, tuple[str, float]] = {}
    order: list[str] = []
    seen: dict[tuple[float, str], int] = {}
    events: list[tuple[float, str, float]] = []
    prev_t, prev_row = -math.inf, 0
    for row, rec in enumerate(rows, start=2):  # row 1 is the header
        name = rec["workload"]
        if not name:
            raise InputError(f"{p}: row {row}: empty workload name")
        t = _num(rec["time_s"])
        if not math.isfinite(t) or t < 0:
            raise InputError(f"{p}: row {row} ('{name}'): time_s must be a number >= 0, got {rec['time_s']!r}")
        if t < prev_t:
            raise InputError(f"{p}: row {row} ('{name}'): time_s {t:g} comes after time_s {prev_t:g} (row {prev_row}); "
                             "rows must be in time order")
        prev_t, prev_row = t, row
        if rec["rate_rps"] == "":
            raise InputError(f"{p}: row {row} ('{name}'): rate_rps is missing; give a rate >= 0 (0 stops it)")
        rate = _num(rec["rate_rps"])
        if not math.isfinite(rate) or rate < 0:
            raise InputError(f"{p}: row {row} ('{name}'): rate_rps must be a number >= 0, got {rec['rate_rps']!r}")
        if (t, name) in seen:
            raise InputError(f"{p}: row {row}: second rate for '{name}' at time_s {t:g} (first at row {seen[t, name]})")
        seen[t, name] = row
        model, slo = rec.get("model", ""), rec.get("slo_ms", "")
        if name not in known:
            if specs is not None:
                if name not in specs:
                    raise InputError(f"{p}: row {row}: unknown workload '{name}'; it is not in {workloads} "
                                     f"(which has: {', '.join(sorted(specs))})")
                known[name] = specs[name]
            elif model and slo:
                s = _num(slo)
                if not math.isfinite(s) or s <= 0:
                    raise InputError(f"{p}: row {row} ('{name}'): slo_ms must be a positive number, got {slo!r}")
                known[name] = (model, s)
            else:
                raise InputError(f"{p}: row {row}: unknown workload '{name}': no model and slo_ms; give them "
                                 "on its first row (columns model,slo_ms) or pass --workloads")
            order.append(name)
        km, ks = known[name]
        if (model and model != km) or (slo and _num(slo) != ks):
            raise InputError(f"{p}: row {row} ('{name}'): model/slo_ms {model or km}/{slo or ks:g} differ from "
                             f"{km}/{ks:g} given before; a workload keeps its model and SLO")
        events.append((t, name, rate))
    times = sorted({t for t, _, _ in events})
    col = {n: j for j, n in enumerate(order)}
    rates = np.zeros((len(times), len(order)))
    ti = {t: i for i, t in enumerate(times)}
    last = np.zeros(len(order))
    by_time: dict[float, list[tuple[str, float]]] = {}
    for t, n, r in events:
        by_time.setdefault(t, []).append((n, r))
    for t in times:
        for n, r in by_time[t]:
            last[col[n]] = r
        rates[ti[t]] = last
    if len(times) > 1:
        period = float(np.median(np.diff(times)))
    elif every_s is not None:
        period = float(every_s)
    else:
        raise InputError(f"{p}: the trace has a single time ({times[0]:g} s); add a later row or pass --every "
                         "to say how long it lasts")
    peak = rates.max(axis=0)
    wl = tuple(Workload(n, known[n][0], known[n][1], float(peak[col[n]])) for n in order)
    return Trace(wl, tuple(times), rates, times[-1] + period, str(p))


def step_times(trace: Trace, every_s: float | None) -> list[float]:
    """Start times of the steps (see the module docstring)."""
    if every_s is None:
        return list(trace.times_s)
    if not every_s > 0:
        raise InputError(f"--every must be > 0 s, got {every_s:g}")
    t0 = trace.times_s[0]
    n = max(1, math.ceil((trace.end_s - t0) / every_s - 1e-9))
    return [t0 + k * every_s for k in range(n)]


def step_rates(trace: Trace, start_s: float, end_s: float, plan_for: str) -> np.ndarray:
    """The rates a step provisions for: the interval's peak, or its rate at the start."""
    if plan_for == "start":
        return trace.rates_at(start_s)
    return np.max([trace.rates_at(t) for t in trace.change_times(start_s, end_s)], axis=0)


