"""Measure the serving stack of a GPU (``igniter-opt profile --serving``): what the tail budget needs.

One short run of the real path that plans are served on: three Triton servers (Python backend)
under MPS on the GPU, each serving a zoo model at its own batch with a third of the GPU, driven
with Poisson arrivals at about half of each server's predicted capacity (busy enough to batch,
far from queueing). From what ``apply`` measures:

- ``overhead_ms`` and ``overhead_per_request_ms``: Triton's time per execution minus the model's
  own run inside it (the cost of taking the inputs, running one batch at a time and building the
  responses), as a straight line in the requests per execution (least squares over the servers,
  which run different batches; both parts >= 0);
- ``client_ms``: each request's end-to-end mean minus Triton's queueing and time per execution
  (client and network), the median over the servers;
- ``service_cv``: the coefficient of variation of one execution's time, from the served model's
  execution trace (its per-execution time over Triton's mean time per execution), the median.

With ``models`` (``profile --serving --serving-models all``) every named model is served at two batches
(``MODEL_BATCHES``), three servers per run at a third of the GPU and ``MODEL_UTILIZATION`` of their
predicted capacity, so that no server is overloaded (an overloaded server's time per execution grows,
which is how the H200's SSD was first mis-measured, docs/live-tail.md). Each model gets its own
overhead line; the GPU's line is the median of the models' intercepts and slopes (robust to one model
whose serving differs), and a model whose own line is above it by more than ``OWN_OVERHEAD_MIN_MS`` at
its larger batch gets the difference as its ``model_overheads`` entry. A server that served less than
``SERVED_MIN`` of the requests per second sent to it was overloaded: it is recorded, and left out of every fit.

The result is the profile's ``serving.json``; the run's own files stay under ``<profile>/serving-run``.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from igniter_opt.domain import GpuAssignment, ModelOverheads, Placement, Plan, ServingParams
from igniter_opt.errors import MeasurementError, ProfileError
from igniter_opt.perfmodel import PerformanceModel, load_profile
from igniter_opt.perfmodel.store import write_serving

# Models served in the run (the first three the profile has, in this order of preference).
PREFERRED_MODELS = ("resnet50", "bert_base", "vgg19", "vit_b_16", "alexnet", "ssd")
BATCHES = (2, 4, 8)
TARGET_UTILIZATION = 0.5
GUESSED_OVERHEAD_MS = 2.0  # only to size the rates; what is measured replaces it
WARMUP_EXECUTIONS = 50  # the first executions of a server are not counted in the variation
# Per-model measurement: every model at two batches, servers three to a run, far from overload.
MODEL_BATCHES = (1, 4)
MODEL_UTILIZATION = 0.3
SERVERS_PER_RUN = 3
# A model's own overhead is recorded where its line is this much above the GPU's at its larger batch.
OWN_OVERHEAD_MIN_MS = 0.5
# A server that served less than this fraction of what was sent was overloaded (its times are inflated).
SERVED_MIN = 0.95


@dataclass(frozen=True)
class ServerServing:
    """What one server's run says about the serving stack (ms)."""

    workload: str
    model: str
    batch: int
    executed_batch: float
    overhead_ms: float
    client_ms: float
    service_cv: float
    valid: bool
    overloaded: bool = False  # served less than SERVED_MIN of its rate: left out of every fit


def serving_plan(perf: PerformanceModel, gpu_name: str, models: tuple[str, ...] = (),
                 batches: tuple[int, ...] | None = None, utilization: float = TARGET_UTILIZATION) -> Plan:
    """One placement per model (the i-th at ``batches[i]``, default ``BATCHES`` in turn), an equal share of
    the GPU each, at ``utilization`` of their predicted capacity (with the profile's own overheads
    where it has them, else a guessed one)."""
    chosen = list(models) or [m for m in PREFERRED_MODELS if m in perf.models][:3]
    if not chosen:
        raise MeasurementError(f"profile '{perf.name}' has none of the zoo models {', '.join(PREFERRED_MODELS)}")
    units = perf.max_units // len(chosen)
    share = round(units * perf.unit_pct, 6)
    slots = [(m, (batches or BATCHES)[i % len(batches or BATCHES)], share) for i, m in enumerate(chosen)]
    preds = perf.predict_gpu(slots)
    known = perf.serving
    placements = []
    for (m, b, r), (lat, _) in zip(slots, preds, strict=True):
        own = GUESSED_OVERHEAD_MS if known is None else known.batch_overhead_ms(b, m)
        service = lat + max(GUESSED_OVERHEAD_MS, own)
        rate = round(utilization * 1000.0 * b / service, 1)
        placements.append(Placement(f"S-{m}-b{b}" if batches else f"S-{m}", m, slo_ms=max(50.0, 10 * service),
                                    rate_rps=rate, batch=b, share_pct=r, queue_delay_ms=1000.0 * (b - 1) / rate))
    return Plan(perf.name, "serving-measurement", "igniter", (GpuAssignment("gpu0", gpu_name, tuple(placements)),))


def model_runs(perf: PerformanceModel, gpu_name: str, models: tuple[str, ...],
               utilization: float = MODEL_UTILIZATION) -> list[Plan]:
    """The per-model measurement: every model at each of ``MODEL_BATCHES``, ``SERVERS_PER_RUN`` servers per run
    sharing the GPU equally (a last run with fewer servers gives each more), at ``utilization`` of capacity."""
    missing = [m for m in models if m not in perf.models]
    if missing:
        raise MeasurementError(f"profile '{perf.name}' lacks {', '.join(missing)} "
                               f"(it has: {', '.join(perf.model_names)})")
    servers = [(m, b) for m in models for b in MODEL_BATCHES]
    runs = [servers[i:i + SERVERS_PER_RUN] for i in range(0, len(servers), SERVERS_PER_RUN)]
    return [serving_plan(perf, gpu_name, tuple(m for m, _ in run), tuple(b for _, b in run), utilization)
            for run in runs]


def _trace_cv(path: Path, mean_exec_ms: float) -> float:
    """Standard deviation of one execution's time in the served model over Triton's mean per execution."""
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))[WARMUP_EXECUTIONS:]
    times = [float(r["input_ms"]) + float(r["run_ms"]) + float(r["respond_ms"]) for r in rows]
    if len(times) < 10 or not mean_exec_ms > 0:
        return math.nan
    return statistics.pstdev(times) / mean_exec_ms


def _overloaded(result: Any) -> bool:
    """Whether a server answered less than ``SERVED_MIN`` of the requests per second sent to it (the
    schedule's own rate where the result has it: a short Poisson run's count strays from the nominal)."""
    offered = float(getattr(result, "offered_rps", math.nan))
    if not math.isfinite(offered):
        offered = float(getattr(result, "rate_rps", 0.0) or 0.0)
    return offered > 0 and float(getattr(result, "achieved_rps", offered)) < SERVED_MIN * offered


def summarize_run(results: list[Any], out_dir: Path, servers: dict[str, str]) -> list[ServerServing]:
    """Per server, from apply's results and the execution traces (``servers``: workload -> server name)."""
    from igniter_opt.apply.deploy import exec_trace_path

    out = []
    for r in results:
        trace = exec_trace_path(out_dir, servers[r.workload])
        cv = _trace_cv(trace, r.server_infer_ms) if trace.is_file() else math.nan
        overloaded = _overloaded(r)
        out.append(ServerServing(r.workload, r.model, int(r.batch), r.executed_batch, r.server_infer_ms - r.model_ms,
                                 r.mean_ms - r.server_queue_ms - r.server_infer_ms, cv, bool(r.valid), overloaded))
    return out


def overhead_line(per_server: list[ServerServing]) -> tuple[float, float]:
    """(overhead_ms, overhead_per_request_ms): least squares of the overhead on the requests per
    execution, both parts >= 0; the median alone where the servers ran one batch size."""
    k = [s.executed_batch for s in per_server]
    o = [s.overhead_ms for s in per_server]
    if len(set(k)) < 2:
        return max(0.0, statistics.median(o)), 0.0
    k_mean, o_mean = statistics.fmean(k), statistics.fmean(o)
    slope = sum((a - k_mean) * (b - o_mean) for a, b in zip(k, o, strict=True)) / sum((a - k_mean) ** 2 for a in k)
    slope = max(0.0, slope)
    return max(0.0, o_mean - slope * k_mean), slope


def model_overheads_from(usable: list[ServerServing]) -> tuple[tuple[float, float], ModelOverheads]:
    """(the GPU's line, each model's own overhead beyond it) from servers of models measured at two
    batches or more: per model its own line; the GPU's is the median intercept and slope over the
    models; a model whose own line is above it by more than ``OWN_OVERHEAD_MIN_MS`` at its larger
    batch keeps the difference (each part >= 0)."""
    lines, largest = {}, {}
    for m in sorted({s.model for s in usable}):
        mine = [s for s in usable if s.model == m]
        if len({s.executed_batch for s in mine}) >= 2:
            lines[m] = overhead_line(mine)
            largest[m] = max(s.executed_batch for s in mine)
    if not lines:
        return overhead_line(usable), ()
    base = statistics.median(a for a, _ in lines.values())
    slope = statistics.median(r for _, r in lines.values())
    own = []
    for m, (a, r) in lines.items():
        if a + r * largest[m] - (base + slope * largest[m]) > OWN_OVERHEAD_MIN_MS:
            own.append((m, round(max(0.0, a - base), 4), round(max(0.0, r - slope), 4)))
    return (base, slope), tuple(own)


def serving_params(per_server: list[ServerServing], source: str) -> ServingParams:
    """From the servers whose load went out on time and that kept up with it: the overhead line (and
    the models' own overheads, where models ran at two batches), the median client cost and cv."""
    usable = [s for s in per_server if s.valid and not s.overloaded and math.isfinite(s.overhead_ms)
              and math.isfinite(s.client_ms)]
    if not usable:
        raise MeasurementError("no server's run was valid (the load generator lagged, a server could not keep up, or "
                               "nothing was measured); see the run's summary.json, and run again on a quieter host")
    cvs = [s.service_cv for s in usable if math.isfinite(s.service_cv)]
    (base, per_request), own = model_overheads_from(usable)
    return ServingParams(round(base, 4), round(max(0.0, statistics.median(s.client_ms for s in usable)), 4),
                         round(statistics.median(cvs), 4) if cvs else 0.0, source, round(per_request, 4),
                         model_overheads=own)


# Fields of serving.json calibrated on live runs (benchmarks/live_tail.py): a new measurement keeps them.
CALIBRATED = ("service_headroom", "service_headroom_source", "max_server_rate_rps", "max_server_rate_source")


def _keep_calibration(params: ServingParams, old: dict[str, Any]) -> tuple[ServingParams, dict[str, Any]]:
    """``params`` with what the old serving.json had calibrated on live runs (the cv, headroom and rate cap,
    with their sources); the new solo cv is kept beside it as ``service_cv_solo``."""
    extra = {k: old[k] for k in CALIBRATED if k in old}
    if "service_cv_source" not in old:
        return replace(params, service_headroom=float(old.get("service_headroom", 0.0)),
                       max_server_rate_rps=old.get("max_server_rate_rps")), extra
    extra |= {"service_cv_source": old["service_cv_source"], "service_cv_solo": params.service_cv}
    return replace(params, service_cv=float(old["service_cv"]),
                   service_headroom=float(old.get("service_headroom", 0.0)),
                   max_server_rate_rps=old.get("max_server_rate_rps")), extra


def measure_serving(profile_dir: Path, *, duration_s: float = 20.0, load_generator: str = "perf_analyzer",
                    gpus: str | None = None, tritonserver: str | None = None, echo_ms: float | None = None,
                    max_lag_ms: float | None = None, progress: Any = None, models: tuple[str, ...] = (),
                    utilization: float | None = None) -> tuple[ServingParams, list[ServerServing]]:
    """Run the measurement on this machine's GPU and write ``<profile>/serving.json``.

    ``models``: measure each of them (``("all",)``: every model of the profile) at two batches (several
    runs, see the module docstring); without,
    one run of three models at one batch each. What an earlier serving.json calibrated on live runs
    (``CALIBRATED``, and a calibrated service cv) is kept. ``echo_ms``: serve apply's CPU stand-in
    instead of the zoo models (tests the path without a GPU; what it measures is the stand-in's
    serving cost, not a GPU's). ``utilization``: the load as a fraction of each server's predicted
    capacity (default ``TARGET_UTILIZATION``, per model ``MODEL_UTILIZATION``); the stand-in, slower
    than the GPU the rates are sized for, needs a lower one."""
    import json

    from igniter_opt.apply import ApplyOptions, apply_plan, build_deployment

    if not profile_dir.is_dir():
        raise ProfileError(f"{profile_dir} is not a profile folder: --serving alone measures the serving stack of "
                           "an existing profile; profile the GPU first (--models ... -o that folder)")
    perf = load_profile(profile_dir)
    gpu_name = str(perf.gpu.get("name", perf.name))
    if models == ("all",):
        models = tuple(perf.model_names)
    if utilization is not None and not 0 < utilization <= 1:
        raise MeasurementError(f"utilization must be in (0, 1], got {utilization:g}")
    plans = (model_runs(perf, gpu_name, models, utilization or MODEL_UTILIZATION) if models
             else [serving_plan(perf, gpu_name, utilization=utilization or TARGET_UTILIZATION)])
    extra = {} if max_lag_ms is None else {"max_lag_ms": max_lag_ms}
    per_server: list[ServerServing] = []
    for i, plan in enumerate(plans):
        run_dir = profile_dir / ("serving-run" if len(plans) == 1 else f"serving-run/run{i + 1}")
        options = ApplyOptions(out_dir=run_dir, duration_s=duration_s, load_generator=load_generator, gpus=gpus,
                               tritonserver=tritonserver, echo_ms=echo_ms, **extra)
        dep = build_deployment(plan, options)
        if progress is not None and len(plans) > 1:
            progress(f"serving run {i + 1} of {len(plans)}: "
                     + ", ".join(f"{p.model} b{p.batch}" for _, p in plan.placements()))
        result = apply_plan(dep, progress=progress)
        if not result.ok:
            raise MeasurementError(f"the serving run failed: {(result.errors or [result.interrupted])[0]}; "
                                   f"files in {run_dir}")
        servers = {s.placement.workload: s.spec.name for s in dep.servers}
        per_server += summarize_run(result.results, run_dir, servers)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    how = f"{len(plans)} run(s), each model at batches {', '.join(map(str, MODEL_BATCHES))}" if models else "one run"
    source = (f"igniter-opt profile --serving on {gpu_name} ({when}): {len(per_server)} Triton Python-backend "
              f"servers ({how}), {duration_s:g} s of Poisson load with {load_generator}")
    params = serving_params(per_server, source)
    old_path = profile_dir / "serving.json"
    try:
        old = json.loads(old_path.read_text()) if old_path.is_file() else {}
    except (OSError, ValueError):
        old = {}  # an unreadable earlier file has nothing to keep
    params, kept = _keep_calibration(params, old)
    write_serving(params, profile_dir, {"gpu": gpu_name, "measured_utc": when, "load_generator": load_generator,
                                        **kept, "servers": [s.__dict__ for s in per_server]})
    return params, per_server
