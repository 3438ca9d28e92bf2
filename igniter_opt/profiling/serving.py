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

The result is the profile's ``serving.json``; the run's own files stay under ``<profile>/serving-run``.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from igniter_opt.domain import GpuAssignment, Placement, Plan, ServingParams
from igniter_opt.errors import MeasurementError, ProfileError
from igniter_opt.perfmodel import PerformanceModel, load_profile
from igniter_opt.perfmodel.store import write_serving

# Models served in the run (the first three the profile has, in this order of preference).
PREFERRED_MODELS = ("resnet50", "bert_base", "vgg19", "vit_b_16", "alexnet", "ssd")
BATCHES = (2, 4, 8)
TARGET_UTILIZATION = 0.5
GUESSED_OVERHEAD_MS = 2.0  # only to size the rates; what is measured replaces it
WARMUP_EXECUTIONS = 50  # the first executions of a server are not counted in the variation


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


def serving_plan(perf: PerformanceModel, gpu_name: str, models: tuple[str, ...] = ()) -> Plan:
    """Three placements, a third of the GPU each, at half their predicted capacity."""
    chosen = list(models) or [m for m in PREFERRED_MODELS if m in perf.models][:3]
    if not chosen:
        raise MeasurementError(f"profile '{perf.name}' has none of the zoo models {', '.join(PREFERRED_MODELS)}")
    units = perf.max_units // len(chosen)
    share = round(units * perf.unit_pct, 6)
    slots = [(m, BATCHES[i % len(BATCHES)], share) for i, m in enumerate(chosen)]
    preds = perf.predict_gpu(slots)
    placements = []
    for (m, b, r), (lat, _) in zip(slots, preds, strict=True):
        service = lat + GUESSED_OVERHEAD_MS
        rate = round(TARGET_UTILIZATION * 1000.0 * b / service, 1)
        placements.append(Placement(f"S-{m}", m, slo_ms=max(50.0, 10 * service), rate_rps=rate, batch=b,
                                    share_pct=r, queue_delay_ms=1000.0 * (b - 1) / rate))
    return Plan(perf.name, "serving-measurement", "igniter", (GpuAssignment("gpu0", gpu_name, tuple(placements)),))


def _trace_cv(path: Path, mean_exec_ms: float) -> float:
    """Standard deviation of one execution's time in the served model over Triton's mean per execution."""
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))[WARMUP_EXECUTIONS:]
    times = [float(r["input_ms"]) + float(r["run_ms"]) + float(r["respond_ms"]) for r in rows]
    if len(times) < 10 or not mean_exec_ms > 0:
        return math.nan
    return statistics.pstdev(times) / mean_exec_ms


def summarize_run(results: list[Any], out_dir: Path, servers: dict[str, str]) -> list[ServerServing]:
    """Per server, from apply's results and the execution traces (``servers``: workload -> server name)."""
    from igniter_opt.apply.deploy import exec_trace_path

    out = []
    for r in results:
        trace = exec_trace_path(out_dir, servers[r.workload])
        cv = _trace_cv(trace, r.server_infer_ms) if trace.is_file() else math.nan
        out.append(ServerServing(r.workload, r.model, int(r.batch), r.executed_batch, r.server_infer_ms - r.model_ms,
                                 r.mean_ms - r.server_queue_ms - r.server_infer_ms, cv, bool(r.valid)))
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


def serving_params(per_server: list[ServerServing], source: str) -> ServingParams:
    """From the servers whose load went out on time: the overhead line, the median client cost and cv."""
    usable = [s for s in per_server if s.valid and math.isfinite(s.overhead_ms) and math.isfinite(s.client_ms)]
    if not usable:
        raise MeasurementError("no server's run was valid (the load generator lagged, or nothing was measured); "
                               "see the run's summary.json, and run again on a quieter host")
    cvs = [s.service_cv for s in usable if math.isfinite(s.service_cv)]
    base, per_request = overhead_line(usable)
    return ServingParams(round(base, 4), round(max(0.0, statistics.median(s.client_ms for s in usable)), 4),
                         round(statistics.median(cvs), 4) if cvs else 0.0, source, round(per_request, 4))


def measure_serving(profile_dir: Path, *, duration_s: float = 20.0, load_generator: str = "perf_analyzer",
                    gpus: str | None = None, tritonserver: str | None = None, echo_ms: float | None = None,
                    max_lag_ms: float | None = None, progress: Any = None) -> tuple[ServingParams, list[ServerServing]]:
    """Run the measurement on this machine's GPU and write ``<profile>/serving.json``.

    ``echo_ms``: serve apply's CPU stand-in instead of the zoo models (tests the path without a GPU;
    what it measures is the stand-in's serving cost, not a GPU's)."""
    from igniter_opt.apply import ApplyOptions, apply_plan, build_deployment

    if not profile_dir.is_dir():
        raise ProfileError(f"{profile_dir} is not a profile folder: --serving alone measures the serving stack of "
                           "an existing profile; profile the GPU first (--models ... -o that folder)")
    perf = load_profile(profile_dir)
    gpu_name = str(perf.gpu.get("name", perf.name))
    plan = serving_plan(perf, gpu_name)
    run_dir = profile_dir / "serving-run"
    extra = {} if max_lag_ms is None else {"max_lag_ms": max_lag_ms}
    options = ApplyOptions(out_dir=run_dir, duration_s=duration_s, load_generator=load_generator, gpus=gpus,
                           tritonserver=tritonserver, echo_ms=echo_ms, **extra)
    dep = build_deployment(plan, options)
    result = apply_plan(dep, progress=progress)
    if not result.ok:
        raise MeasurementError(f"the serving run failed: {(result.errors or [result.interrupted])[0]}; "
                               f"files in {run_dir}")
    servers = {s.placement.workload: s.spec.name for s in dep.servers}
    per_server = summarize_run(result.results, run_dir, servers)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    source = (f"igniter-opt profile --serving on {gpu_name} ({when}): {len(per_server)} Triton Python-backend "
              f"servers, {duration_s:g} s of Poisson load with {load_generator}")
    params = serving_params(per_server, source)
    write_serving(params, profile_dir, {"gpu": gpu_name, "measured_utc": when, "load_generator": load_generator,
                                        "servers": [s.__dict__ for s in per_server]})
    return params, per_server
