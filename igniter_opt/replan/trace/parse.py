"""Reading a rate trace and the rates each step provisions for (see the package docstring)."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from igniter_opt.domain import Workload
from igniter_opt.errors import InputError
from igniter_opt.planio import read_csv_rows, read_workload_specs

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


TRACE_COLUMNS = ("time_s", "workload", "rate_rps")


def _spec_of(p: Path, row: int, name: str, rec: dict[str, str], specs: dict[str, tuple[str, float]] | None,
             workloads: object) -> tuple[str, float]:
    """A workload's (model, slo_ms) on its first row: from --workloads, or the row's own columns."""
    if specs is not None:
        if name not in specs:
            raise InputError(f"{p}: row {row}: unknown workload '{name}'; it is not in {workloads} "
                             f"(which has: {', '.join(sorted(specs))})")
        return specs[name]
    model, slo = rec.get("model", ""), rec.get("slo_ms", "")
    if not (model and slo):
        raise InputError(f"{p}: row {row}: unknown workload '{name}': no model and slo_ms; give them "
                         "on its first row (columns model,slo_ms) or pass --workloads")
    s = _num(slo)
    if not math.isfinite(s) or s <= 0:
        raise InputError(f"{p}: row {row} ('{name}'): slo_ms must be a positive number, got {slo!r}")
    return model, s


def _event(p: Path, row: int, rec: dict[str, str], prev_t: float, prev_row: int) -> tuple[float, str, float]:
    """(time_s, workload, rate_rps) of one row, validated; rows in time order."""
    name = rec["workload"]
    if not name:
        raise InputError(f"{p}: row {row}: empty workload name")
    t = _num(rec["time_s"])
    if not math.isfinite(t) or t < 0:
        raise InputError(f"{p}: row {row} ('{name}'): time_s must be a number >= 0, got {rec['time_s']!r}")
    if t < prev_t:
        raise InputError(f"{p}: row {row} ('{name}'): time_s {t:g} comes after time_s {prev_t:g} (row {prev_row}); "
                         "rows must be in time order")
    if rec["rate_rps"] == "":
        raise InputError(f"{p}: row {row} ('{name}'): rate_rps is missing; give a rate >= 0 (0 stops it)")
    rate = _num(rec["rate_rps"])
    if not math.isfinite(rate) or rate < 0:
        raise InputError(f"{p}: row {row} ('{name}'): rate_rps must be a number >= 0, got {rec['rate_rps']!r}")
    return t, name, rate


def _events(p: Path, rows: list[tuple[int, dict[str, str]]], specs: dict[str, tuple[str, float]] | None,
            workloads: object) -> tuple[list[tuple[float, str, float]], dict[str, tuple[str, float]]]:
    """Every row as an event, and each workload's (model, slo_ms) in order of first appearance."""
    known: dict[str, tuple[str, float]] = {}
    seen: dict[tuple[float, str], int] = {}
    events: list[tuple[float, str, float]] = []
    prev_t, prev_row = -math.inf, 0
    for row, rec in rows:
        t, name, rate = _event(p, row, rec, prev_t, prev_row)
        prev_t, prev_row = t, row
        if (t, name) in seen:
            raise InputError(f"{p}: row {row}: second rate for '{name}' at time_s {t:g} (first at row {seen[t, name]})")
        seen[t, name] = row
        if name not in known:
            known[name] = _spec_of(p, row, name, rec, specs, workloads)
        km, ks = known[name]
        model, slo = rec.get("model", ""), rec.get("slo_ms", "")
        if (model and model != km) or (slo and _num(slo) != ks):
            raise InputError(f"{p}: row {row} ('{name}'): model/slo_ms {model or km}/{slo or ks:g} differ from "
                             f"{km}/{ks:g} given before; a workload keeps its model and SLO")
        events.append((t, name, rate))
    return events, known


def _rates(events: list[tuple[float, str, float]], order: list[str]) -> tuple[list[float], np.ndarray]:
    """The distinct times and every workload's rate from each on (a step function)."""
    times = sorted({t for t, _, _ in events})
    col = {n: j for j, n in enumerate(order)}
    rates = np.zeros((len(times), len(order)))
    by_time: dict[float, list[tuple[str, float]]] = {}
    for t, n, r in events:
        by_time.setdefault(t, []).append((n, r))
    last = np.zeros(len(order))
    for i, t in enumerate(times):
        for n, r in by_time[t]:
            last[col[n]] = r
        rates[i] = last
    return times, rates


def read_trace(path: str | os.PathLike[str], workloads: str | os.PathLike[str] | None = None,
               *, every_s: float | None = None) -> Trace:
    """Read and validate a trace (see the package docstring); every error names its row."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such trace file; pass a CSV with header time_s,workload,rate_rps")
    specs = read_workload_specs(workloads) if workloads is not None else None
    rows = read_csv_rows(p, TRACE_COLUMNS, "trace")
    if not rows:
        raise InputError(f"{p}: no rows; a trace needs at least one time_s,workload,rate_rps row")
    events, known = _events(p, rows, specs, workloads)
    order = list(known)
    times, rates = _rates(events, order)
    if len(times) > 1:
        period = float(np.median(np.diff(times)))
    elif every_s is not None:
        period = float(every_s)
    else:
        raise InputError(f"{p}: the trace has a single time ({times[0]:g} s); add a later row or pass --every "
                         "to say how long it lasts")
    peak = rates.max(axis=0)
    wl = tuple(Workload(n, known[n][0], known[n][1], float(peak[j])) for j, n in enumerate(order))
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


