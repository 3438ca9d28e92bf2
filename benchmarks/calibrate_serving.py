"""Calibrate the per-request latency model on the live H100 runs (issue 12, item 5).

``python benchmarks/calibrate_serving.py [--results benchmarks/results] [-o benchmarks/results]``

Reads what the executor measured (no GPU needed):

- ``live_runs/*/summary.json`` + ``deployment.json``: per run and workload the offered rate, batch,
  configured ``max_queue_delay_us``, Triton's time per execution (``server_infer_ms``), the model's
  own time (``model_ms``), the server's mean queueing per request (``server_queue_ms``) and the
  client's within-SLO fraction, p50, p99 and mean; ``live_h100.csv`` says which device call (host
  session) each run was;
- ``live_multi/live_h100x2.csv`` and its plans (two GPUs; the queue delay is the executor's rule for
  the plan's budget, ``batch_formation_budget_ms``);
- ``live_diff_h100/summary.csv``, phase ``before`` only: the plan of J_greedy_igniter_o3.5 in
  another session, without server statistics; its rows borrow that run's service times and are
  reported apart. The later phases ran servers whose service time was never measured.

Derives the H100's serving parameters (per-batch overhead = server time - model time per
execution; client_ms = end-to-end mean - server queueing - server time; service_cv by fitting the
p99 of the rows the model should explain), predicts every run and workload with
``igniter_opt.placement.queueing`` and writes ``serving_calibration_h100.csv`` and ``.md``.
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import json
import math
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from igniter_opt.apply.repository import batch_formation_budget_ms
from igniter_opt.domain import LatencyBudget
from igniter_opt.ioutil import atomic_write_text
from igniter_opt.placement import queueing as q
from igniter_opt.planio import read_plan

CV_GRID = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)
EXCESS_QUEUE = 1.25  # measured server queueing above this multiple of the model's: an unmodelled delay
TOP = q.RHO_GRID[-1]
BANDS = ((0.0, 0.65, "< 0.65"), (0.65, 0.8, "0.65-0.8"), (0.8, TOP, f"0.8-{TOP}"),
         (TOP, math.inf, f">= {TOP} (beyond the table)"))
DIRECT_REQUESTS = 200_000  # steady-state simulation at a row's exact point

Row = dict[str, float | str]


@dataclass(frozen=True)
class Observation:
    """One workload of one live run: what was configured and what was measured (ms, req/s)."""

    run: str
    call: str
    workload: str
    model: str
    rate_rps: float
    batch: int
    queue_delay_ms: float
    slo_ms: float
    requests: int
    service_ms: float  # Triton's mean time per execution
    model_ms: float  # the model's own time per execution inside model.py
    server_queue_ms: float  # Triton's mean queueing per request (batch formation + waiting)
    executed_batch: float
    within_slo: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    send_lag_p99_ms: float
    service_from: str = ""  # where service_ms comes from when the run did not measure it

    @property
    def utilisation(self) -> float:
        return self.rate_rps * self.service_ms / (1000.0 * self.batch)

    @property
    def client_ms(self) -> float:
        return self.mean_ms - self.server_queue_ms - self.service_ms

    @property
    def overhead_ms(self) -> float:
        return self.service_ms - self.model_ms

    def normalised(self) -> tuple[float, float]:
        """(delta, sigma): queue delay and service time in units of the mean gap between arrivals."""
        return self.rate_rps * self.queue_delay_ms / 1000.0, self.rate_rps * self.service_ms / 1000.0


def _num(v: object) -> float:
    return math.nan if v in (None, "") else float(v)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Reading the runs


def read_live_runs(results: Path) -> list[Observation]:
    """Every workload of ``live_runs/*`` (summary.json + deployment.json)."""
    with open(results / "live_h100.csv", newline="") as fh:
        calls = {r["run"]: r["device_call"] for r in csv.DictReader(fh)}
    out = []
    for run_dir in sorted((results / "live_runs").iterdir()):
        summary = json.loads((run_dir / "summary.json").read_text())
        servers = json.loads((run_dir / "deployment.json").read_text())["servers"]
        delay = {s["workload"]: s["max_queue_delay_us"] / 1000.0 for s in servers}
        for w in summary["workloads"]:
            out.append(Observation(
                run=run_dir.name, call=calls.get(run_dir.name, "?"), workload=w["workload"], model=w["model"],
                rate_rps=float(w["rate_rps"]), batch=int(w["batch"]), queue_delay_ms=delay[w["workload"]],
                slo_ms=float(w["slo_ms"]), requests=int(w["requests"]), service_ms=_num(w["server_infer_ms"]),
                model_ms=_num(w["model_ms"]), server_queue_ms=_num(w["server_queue_ms"]),
                executed_batch=_num(w["executed_batch"]), within_slo=float(w["within_slo"]),
                p50_ms=float(w["p50_ms"]), p99_ms=float(w["p99_ms"]), mean_ms=_num(w["mean_ms"]),
                send_lag_p99_ms=_num(w["send_lag_p99_ms"])))
    return out


def _plan_delays(plan_path: Path) -> dict[str, float]:
    """Queue delay (ms) per workload, as the executor configured it for this plan."""
    plan = read_plan(plan_path)
    budget, margin = LatencyBudget(plan.latency_budget), plan.margin or 0.0
    return {p.workload: math.floor(1000.0 * batch_formation_budget_ms(p, budget, margin)) / 1000.0
            for _, p in plan.placements()}


def read_live_multi(results: Path) -> list[Observation]:
    """Every workload of the two-GPU runs (``live_multi``)."""
    folder, out = results / "live_multi", []
    with open(folder / "live_h100x2.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            delay = _plan_delays(folder / f"{r['run']}.json")
            out.append(Observation(
                run=r["run"], call=r["device_call"], workload=r["workload"], model=r["model"],
                rate_rps=float(r["rate_rps"]), batch=int(r["batch"]), queue_delay_ms=delay[r["workload"]],
                slo_ms=float(r["slo_ms"]), requests=int(r["requests"]),
                service_ms=_num(r["measured_mean_ms"]), model_ms=_num(r["model_ms"]),
                server_queue_ms=_num(r["queue_ms"]), executed_batch=_num(r["executed_batch"]),
                within_slo=float(r["within_slo"]),
                p50_ms=float(r["p50_ms"]), p99_ms=float(r["p99_ms"]), mean_ms=_num(r["e2e_mean_ms"]),
                send_lag_p99_ms=_num(r["send_lag_p99_ms"])))
    return out


def read_live_diff_before(results: Path, measured: list[Observation]) -> list[Observation]:
    """Phase ``before`` of ``live_diff_h100``, with the service times of the run of the same plan."""
    folder, donor = results / "live_diff_h100", "J_greedy_igniter_o3.5"
    delay = _plan_delays(folder / "old_plan.json")
    same_plan = {o.workload: o for o in measured if o.run == donor}
    out = []
    with open(folder / "summary.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            d = same_plan.get(r["workload"])
            if r["phase"] != "before" or d is None:
                continue
            if (d.batch, d.rate_rps) != (int(r["batch"]), float(r["rate_rps"])):
                raise SystemExit(f"live_diff_h100 {r['workload']} is not the plan of {donor}")
            out.append(replace(
                d, run="live_diff_h100 (before)", call="D", queue_delay_ms=delay[r["workload"]],
                requests=int(r["requests"]), server_queue_ms=math.nan, within_slo=float(r["within_slo"]),
                p50_ms=float(r["p50_ms"]), p99_ms=float(r["p99_ms"]), mean_ms=math.nan,
                send_lag_p99_ms=math.nan, service_from=donor))
    return out


# ---------------------------------------------------------------------------------------------
# The model's predictions


def _metrics(normalised: np.ndarray, o: Observation, params: q.QueueingParams) -> dict[str, float]:
    lat = params.client_ms + 1000.0 * normalised / o.rate_rps
    return {"within": float(np.mean(lat <= o.slo_ms)), "p50": float(np.quantile(lat, 0.5)),
            "p99": float(np.quantile(lat, 0.99)),
            "queue": float(np.mean(lat - params.client_ms)) - o.service_ms}  # the multipliers' mean is 1


@functools.cache
def steady_state(o: Observation, params: q.QueueingParams) -> dict[str, float]:
    """The model at the row's exact point: a steady-state simulation (nan past utilisation 1)."""
    if o.utilisation >= 1:
        return dict.fromkeys(("within", "p50", "p99", "queue"), math.nan)
    delta, sigma = o.normalised()
    lat = q.simulate_normalised(o.batch, delta, sigma, service_cv=params.service_cv, arrival=params.arrival,
                                n_requests=DIRECT_REQUESTS, seed=params.seed)
    return _metrics(lat, o, params)


def finite_run(o: Observation, params: q.QueueingParams) -> dict[str, float]:
    """A simulated run of the measured number of requests from an empty server (for overloaded rows)."""
    arrivals, mult = q.normalised_stream(o.requests, params.arrival, params.service_cv, params.seed)
    delta, sigma = o.normalised()
    lat = q.simulate_stream(o.batch, np.array([delta]), np.array([sigma]), arrivals, mult)[0]
    return _metrics(lat, o, params)


def predict(o: Observation, params: q.QueueingParams) -> Row:
    """The model's view of one row, and the table's (what a planner reads; nan outside its grids).

    The model is the steady-state simulation at the row's exact point; past utilisation 1 there is
    no steady state, and a simulated run of the measured length shows what such a run does.
    """
    p50, p99, within = (float(x) for x in q.request_latency(
        o.rate_rps, o.batch, o.queue_delay_ms, o.service_ms, o.slo_ms, params))
    model, source = steady_state(o, params), "steady state"
    if o.utilisation >= 1:
        model, source = finite_run(o, params), "run of the measured length"
    return {"model_within_slo": model["within"], "model_p50_ms": model["p50"], "model_p99_ms": model["p99"],
            "model_queue_ms": model["queue"], "model_from": source,
            "table_within_slo": within, "table_p50_ms": p50, "table_p99_ms": p99}


def excess_queue(o: Observation, client_ms: float) -> float:
    """Measured server queueing over the model's mean queueing (service cv 0).

    Above EXCESS_QUEUE the server was held up by something the model does not have (host stalls, ...).
    """
    if not (o.utilisation < 1 and math.isfinite(o.server_queue_ms)):
        return math.nan
    return o.server_queue_ms / steady_state(o, q.QueueingParams(client_ms=client_ms))["queue"]


# ---------------------------------------------------------------------------------------------
# Parameters


def derive_parameters(measured: list[Observation]) -> dict[str, object]:
    """The H100's serving parameters from the runs' own measurements (see the module docstring)."""
    timed = [o for o in measured if math.isfinite(o.model_ms) and math.isfinite(o.service_ms)]
    stable = [o for o in timed if o.utilisation < TOP]
    slope, intercept = np.polyfit([o.executed_batch for o in timed], [o.overhead_ms for o in timed], 1)

    def median_by(rows: list[Observation], key: Callable[[Observation], str],
                  value: Callable[[Observation], float]) -> dict[str, float]:
        keys = sorted({key(o) for o in rows})
        return {k: statistics.median(value(o) for o in rows if key(o) == k) for k in keys}

    return {
        "overhead_ms": statistics.median(o.overhead_ms for o in timed),
        "overhead_range_ms": (min(o.overhead_ms for o in timed), max(o.overhead_ms for o in timed)),
        "overhead_fit": (float(intercept), float(slope)),
        "overhead_by_call": median_by(timed, lambda o: o.call, lambda o: o.overhead_ms),
        "client_ms": statistics.median(o.client_ms for o in stable),
        "client_range_ms": (min(o.client_ms for o in stable), max(o.client_ms for o in stable)),
        "client_by_model": median_by(stable, lambda o: o.model, lambda o: o.client_ms),
        "client_by_call": median_by(stable, lambda o: o.call, lambda o: o.client_ms),
        "n_overhead": len(timed), "n_client": len(stable),
    }


def sweep_service_cv(explained: list[Observation], client_ms: float) -> list[dict[str, float]]:
    """p99 and within-SLO errors of the model for each service cv of CV_GRID."""
    out = []
    for cv in CV_GRID:
        got = [steady_state(o, q.QueueingParams(client_ms=client_ms, service_cv=cv)) for o in explained]
        e99 = np.abs([g["p99"] - o.p99_ms for g, o in zip(got, explained, strict=True)])
        ew = 100.0 * np.abs([g["within"] - o.within_slo for g, o in zip(got, explained, strict=True)])
        out.append({"service_cv": cv, "p99_mean_abs_ms": float(e99.mean()),
                    "p99_max_abs_ms": float(e99.max()), "within_mean_abs_pt": float(ew.mean()),
                    "within_max_abs_pt": float(ew.max())})
    return out


# ---------------------------------------------------------------------------------------------
# Rows and report


def calibration_rows(obs: list[Observation], params: q.QueueingParams) -> list[Row]:
    rows = []
    for o in obs:
        row: Row = {
            "run": o.run, "call": o.call, "workload": o.workload, "model": o.model, "rate_rps": o.rate_rps,
            "batch": o.batch, "queue_delay_ms": o.queue_delay_ms,
            "delay_fraction": o.rate_rps * o.queue_delay_ms / (1000.0 * max(o.batch - 1, 1)),
            "service_ms": o.service_ms, "service_from": o.service_from or "measured",
            "utilisation": o.utilisation, "executed_batch": o.executed_batch, "client_ms": o.client_ms,
            "server_queue_ms": o.server_queue_ms, "excess_queue": excess_queue(o, params.client_ms),
            "slo_ms": o.slo_ms, "within_slo": o.within_slo, "p50_ms": o.p50_ms, "p99_ms": o.p99_ms,
            "send_lag_p99_ms": o.send_lag_p99_ms}
        row.update(predict(o, params))
        rows.append(row)
    return rows


def _v(r: Row, key: str) -> float:
    return float(r[key])


def _fmt(x: float, fmt: str) -> str:
    return "inf" if x == math.inf else ("-" if math.isnan(x) else format(x, fmt))


def _span(rows: list[Row], f: Callable[[Row], float], fmt: str = ".1f") -> str:
    v = [f(r) for r in rows if math.isfinite(f(r))]
    return f"{min(v):{fmt}} to {max(v):{fmt}}" if v else "-"


def _by_call(rows: list[Row], key: str) -> str:
    calls = sorted({str(r["call"]) for r in rows})
    return ", ".join(f"{c} {_span([r for r in rows if r['call'] == c], lambda r: _v(r, key), '.2f')}"
                     for c in calls)


def _error_line(label: str, rows: list[Row]) -> str:
    def stat(metric: str, scale: float, fmt: str) -> str:
        e = [abs(_v(r, f"model_{metric}") - _v(r, metric)) * scale for r in rows]
        e = [x for x in e if math.isfinite(x)]
        return f"{statistics.median(e):{fmt}} | {max(e):{fmt}}" if e else "- | -"

    return (f"| {label} | {len(rows)} | {stat('within_slo', 100.0, '.1f')} | {stat('p50_ms', 1.0, '.2f')} | "
            f"{stat('p99_ms', 1.0, '.1f')} |")


def _row_line(r: Row) -> str:
    def pct(k: str) -> str:
        return _fmt(100.0 * _v(r, k), ".1f")

    return (f"| {r['run']} | {r['call']} | {r['workload']} | {r['batch']} | "
            f"{_fmt(_v(r, 'rate_rps'), '.0f')} | "
            f"{_fmt(_v(r, 'queue_delay_ms'), '.1f')} ({_fmt(_v(r, 'delay_fraction'), '.2f')}) | "
            f"{_fmt(_v(r, 'service_ms'), '.2f')} | {_fmt(_v(r, 'utilisation'), '.3f')} | "
            f"{_fmt(_v(r, 'excess_queue'), '.2f')} | "
            f"{pct('within_slo')} / {pct('model_within_slo')} / {pct('table_within_slo')} | "
            f"{_fmt(_v(r, 'p50_ms'), '.1f')} / {_fmt(_v(r, 'model_p50_ms'), '.1f')} | "
            f"{_fmt(_v(r, 'p99_ms'), '.1f')} / {_fmt(_v(r, 'model_p99_ms'), '.1f')} / "
            f"{_fmt(_v(r, 'table_p99_ms'), '.1f')} |")


ROW_HEADER = ("| run | call | workload | b | rate | delay ms (f) | S ms | utilisation | excess queue | "
              "within SLO %: measured / model / table | p50 ms: measured / model | "
              "p99 ms: measured / model / table |\n|---|---|---|---|---|---|---|---|---|---|---|---|")
ERROR_HEADER = ("| rows | n | within SLO: median (points) | max | p50: median (ms) | max | "
                "p99: median (ms) | max |\n|---|---|---|---|---|---|---|---|")


def _parameter_lines(derived: dict[str, object], params: q.QueueingParams) -> list[str]:
    d: dict[str, object] = derived
    fit_a, fit_c = d["overhead_fit"]  # type: ignore[misc]
    lo, hi = d["overhead_range_ms"]  # type: ignore[misc]
    clo, chi = d["client_range_ms"]  # type: ignore[misc]
    by_call = ", ".join(f"{c} {v:.2f}" for c, v in d["overhead_by_call"].items())  # type: ignore[attr-defined]
    by_model = ", ".join(f"{m} {v:.2f}" for m, v in d["client_by_model"].items())  # type: ignore[attr-defined]
    return [
        "## Serving parameters of the H100 (for profiles/h100, from the executor's measurements)", "",
        "| parameter | value | how |", "|---|---|---|",
        f"| overhead_ms | {d['overhead_ms']:.2f} | median of Triton's time per execution minus the model's "
        f"own time per execution (`server_infer_ms - model_ms`) over {d['n_overhead']} workload-runs; range "
        f"{lo:.2f}-{hi:.2f}; by session (device call) {by_call}; it grows with the requests per execution "
        f"k: {fit_a:.2f} + {fit_c:.2f} k ms (least squares) |",
        f"| client_ms | {d['client_ms']:.2f} | median of the end-to-end mean minus Triton's queueing and "
        f"time per execution (`mean_ms - server_queue_ms - server_infer_ms`) over the {d['n_client']} "
        f"workload-runs below utilisation {TOP}; range {clo:.2f}-{chi:.2f}; by model {by_model} (BERT's "
        "inputs are small) |",
        f"| service_cv | {params.service_cv:g} | the runs kept only the mean time per execution; the cv of "
        "the sweep below whose p99 fits best the rows the model explains (below utilisation "
        f"{TOP}, excess queue <= {EXCESS_QUEUE}) |", ""]


def _sweep_lines(sweep: list[dict[str, float]], n: int) -> list[str]:
    return [f"### Service cv sweep ({n} rows the model explains)", "",
            "| service_cv | p99: mean abs error (ms) | max | within SLO: mean abs error (points) | max |",
            "|---|---|---|---|---|",
            *(f"| {s['service_cv']:g} | {s['p99_mean_abs_ms']:.2f} | {s['p99_max_abs_ms']:.2f} | "
              f"{s['within_mean_abs_pt']:.2f} | {s['within_max_abs_pt']:.2f} |" for s in sweep), ""]


def _error_lines(rows: list[Row], borrowed: list[Row]) -> list[str]:
    lines = ["## Errors of the model (absolute, model - measured)", "",
             "Excess queue = Triton's measured mean queueing per request over the model's (service cv 0); "
             f"above {EXCESS_QUEUE} the server was held up by something the model does not have.", "",
             ERROR_HEADER, _error_line("all rows with a measured service time", rows)]
    for a, b, label in BANDS:
        band = [r for r in rows if a <= _v(r, "utilisation") < b]
        if band:
            lines.append(_error_line(f"utilisation {label}", band))
    lines += [_error_line(f"excess queue <= {EXCESS_QUEUE}", [r for r in rows
                                                             if _v(r, "excess_queue") <= EXCESS_QUEUE]),
              _error_line(f"excess queue > {EXCESS_QUEUE}", [r for r in rows
                                                            if _v(r, "excess_queue") > EXCESS_QUEUE])]
    if borrowed:
        lines.append(_error_line("live_diff_h100 before (borrowed service time)", borrowed))
    both = [r for r in rows if math.isfinite(_v(r, "table_within_slo")) and r["model_from"] == "steady state"]
    d_within = _span(both, lambda r: 100 * (_v(r, "table_within_slo") - _v(r, "model_within_slo")), "+.2f")
    d_p99 = _span(both, lambda r: _v(r, "table_p99_ms") - _v(r, "model_p99_ms"), "+.2f")
    lines += ["", f"The table (what a planner reads: {q.DEFAULT_N_REQUESTS} requests per scenario, linear "
              f"between grid points) against the model at each row's exact point ({DIRECT_REQUESTS} "
              f"requests), over the {len(both)} rows in the table's range: within SLO {d_within} points, "
              f"p99 {d_p99} ms. "
              "The rows' delays are the executor's SLO / 2, between the grid's delay fractions (f below), so "
              "this is the interpolation in the delay and sampling; at the grid's delays (the ones a planner "
              "chooses) the table is the simulation itself.", ""]
    return lines


def _misses_lines(rows: list[Row]) -> list[str]:
    """What the model misses, with the figures of these runs that show it."""
    moderate = [r for r in rows if _v(r, "utilisation") < 0.8]
    stalled = [r for r in moderate if _v(r, "excess_queue") > EXCESS_QUEUE]
    calm = [r for r in moderate if _v(r, "excess_queue") <= EXCESS_QUEUE]
    over = [r for r in rows if _v(r, "utilisation") >= 1]

    def gap(rows: list[Row], metric: str, scale: float = 1.0, fmt: str = ".1f", signed: bool = False) -> str:
        def one(r: Row) -> float:
            d = scale * (_v(r, f"model_{metric}") - _v(r, metric))
            return d if signed else abs(d)

        return _span(rows, one, fmt)

    return [
        "## What the model misses", "",
        f"- **Host stalls.** Excess queue below utilisation 0.8, by session (device call): "
        f"{_by_call(moderate, 'excess_queue')}. The latency plots of the stalled sessions' runs "
        "(`live_runs/I_*/latency.png`) show spikes to 40-70 ms about every 1.5 s on all three workloads at "
        f"once. In those {len(stalled)} rows the model's p50 is off by {gap(stalled, 'p50_ms', fmt='.2f')} "
        f"ms, but within SLO is {gap(stalled, 'within_slo', 100.0, signed=True)} points below the model and "
        f"p99 {_span(stalled, lambda r: _v(r, 'p99_ms'))} ms against the model's "
        f"{_span(stalled, lambda r: _v(r, 'model_p99_ms'))} ms. Where the server queued as the model says "
        f"({len(calm)} rows) within SLO is off by {gap(calm, 'within_slo', 100.0, '.2f')} points and p99 by "
        f"{gap(calm, 'p99_ms', fmt='.2f')} ms.",
        f"- **Client lag.** The load generator's send lag (p99, ms) by session: "
        f"{_by_call(rows, 'send_lag_p99_ms')}. A late send makes arrivals burstier than Poisson; the model "
        "assumes they are not.",
        "- **Service-time variance.** The runs kept only the mean time per execution: service_cv is "
        "inferred from the p99 of the few rows the model explains and stands for every model, batch and "
        "co-runner mix.",
        f"- **Overload.** Past utilisation 1 ({len(over)} rows) there is no steady state and the table says "
        f"0 within SLO; the runs measured {_span(over, lambda r: 100 * _v(r, 'within_slo'))} %, a simulated "
        "run of the same length from an empty server "
        f"{_span(over, lambda r: 100 * _v(r, 'model_within_slo'))} %.",
        "- **Co-runner correlation.** Each server's service time is its own measured mean; bursts of a "
        "co-located server that slow this one at the same moment are not modelled.", ""]


def render_markdown(rows: list[Row], borrowed: list[Row], derived: dict[str, object],
                    sweep: list[dict[str, float]], n_explained: int, params: q.QueueingParams,
                    gpu: str) -> str:
    lines = [
        f"# Serving-model calibration: {gpu} (serving_calibration_h100.csv)", "",
        "Written by `python benchmarks/calibrate_serving.py` from the live runs' own measurements "
        "(`live_runs/`, `live_multi/`, `live_diff_h100/`). Model: `igniter_opt.placement.queueing` "
        f"(table code version {q.TABLE_CODE_VERSION}, seed {params.seed}), Poisson arrivals at the offered "
        "rate, the configured queue delay, service time = Triton's measured mean time per execution, "
        f"client_ms = {params.client_ms:.2f}, service_cv = {params.service_cv:g}. \"Model\": a steady-state "
        f"simulation ({DIRECT_REQUESTS} requests) at each row's exact point; past utilisation 1 there is no "
        "steady state, and a simulated run of the measured length from an empty server stands in. "
        "\"Table\": what the planner reads (`request_latency`). See docs/serving-model.md.", "",
        *_parameter_lines(derived, params), *_sweep_lines(sweep, n_explained), *_error_lines(rows, borrowed),
        "## Per run and workload", "", ROW_HEADER, *(_row_line(r) for r in rows)]
    if borrowed:
        lines += ["", "Phase `before` of `live_diff_h100` (the J_greedy_igniter_o3.5 plan in another "
                  "session, 30 s, no server statistics): service times borrowed from "
                  "J_greedy_igniter_o3.5.", "",
                  ROW_HEADER, *(_row_line(r) for r in borrowed)]
    return "\n".join([*lines, "", *_misses_lines(rows)])


def write_csv(path: Path, rows: list[Row]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="benchmarks/results", help="folder of the live results")
    ap.add_argument("-o", "--output", default="benchmarks/results", help="folder for the calibration files")
    args = ap.parse_args()
    results, out = Path(args.results), Path(args.output)
    measured = read_live_runs(results) + read_live_multi(results)
    timed = [o for o in measured if math.isfinite(o.service_ms)]
    derived = derive_parameters(timed)
    client = round(float(derived["client_ms"]), 2)  # type: ignore[arg-type]
    explained = [o for o in timed if o.utilisation < TOP and excess_queue(o, client) <= EXCESS_QUEUE]
    sweep = sweep_service_cv(explained, client)
    best_cv = min(sweep, key=lambda s: s["p99_mean_abs_ms"])["service_cv"]
    params = q.QueueingParams(client_ms=client, service_cv=best_cv)
    rows = calibration_rows(timed, params)
    borrowed = calibration_rows(read_live_diff_before(results, measured), params)
    first_run = sorted((results / "live_runs").iterdir())[0]
    gpu = next(iter(json.loads((first_run / "summary.json").read_text())["gpus"].values()))["name"]
    write_csv(out / "serving_calibration_h100.csv", rows + borrowed)
    atomic_write_text(out / "serving_calibration_h100.md",
                      render_markdown(rows, borrowed, derived, sweep, len(explained), params, gpu))
    skipped = [f"{o.run}/{o.workload}" for o in measured if not math.isfinite(o.service_ms)]
    print(f"wrote {out / 'serving_calibration_h100.csv'} and .md: {len(rows)} rows, {len(borrowed)} with a "
          f"borrowed service time, without server statistics: {', '.join(skipped) or 'none'}; client_ms "
          f"{client}, service_cv {params.service_cv:g}, overhead_ms {derived['overhead_ms']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
