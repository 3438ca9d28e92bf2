"""Run a :class:`ProfilePlan` on a backend, checkpointing each measurement, and build the raw profile."""

from __future__ import annotations

import datetime as dt
import logging
import math
import statistics
import time
from pathlib import Path
from typing import Any

from igniter_opt.errors import MeasurementError, ProfileError
from igniter_opt.perfmodel.raw import (
    CachePairRecord,
    ConcurrencyRecord,
    L2Record,
    RawHardware,
    RawModel,
    RawProfile,
    SoloRecord,
)
from igniter_opt.profiling.backend import (
    CoWorkload,
    GpuBackend,
    JobSetup,
    L2Measurement,
    Phase,
    PhaseResult,
    SoloMeasurement,
)
from igniter_opt.profiling.checkpoint import CHECKPOINT_FILE, Checkpoint
from igniter_opt.profiling.plan import (
    HW_IDLE_POWER,
    HW_INFO,
    HW_PCIE,
    HW_SHARE_UNIT,
    ProfilePlan,
    conc_key,
    l2_key,
    pair_key,
    solo_key,
    trace_key,
)
from igniter_opt.zoo import get_spec

log = logging.getLogger(__name__)


class _Progress:
    """tqdm bar over measurement keys (silent when disabled)."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit="meas", desc="profiling", dynamic_ncols=True)

    def step(self, what: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(what, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_plan(
    plan: ProfilePlan, backend: GpuBackend, out_dir: str | Path, *, progress: bool = True
) -> RawProfile:
    """Measure everything of ``plan`` not yet in ``out_dir/checkpoint.jsonl``; return the raw profile.

    Each measurement is appended to the checkpoint as soon as it finishes, so an interrupted run
    (timeout, crash, Ctrl-C) keeps what it measured and the next run resumes there.
    """
    out = Path(out_dir)
    ck = Checkpoint(out / CHECKPOINT_FILE)
    keys = plan.all_keys()
    bar = _Progress(len(keys), sum(1 for k in keys if k in ck), progress)
    try:
        _measure(plan, backend, ck, bar)
    finally:
        bar.close()
    return assemble_raw(plan, ck)


def _measure(plan: ProfilePlan, backend: GpuBackend, ck: Checkpoint, bar: _Progress) -> None:
    _measure_hardware(plan, backend, ck, bar)
    setups = sum(1 for k in ck.records if k.startswith("setup/"))
    setups = _measure_solo_grid(plan, backend, ck, bar, setups)
    _measure_l2(plan, backend, ck, bar, setups)
    _measure_cache_pairs(plan, backend, ck, bar)
    _measure_concurrency(plan, backend, ck, bar)


def _measure_hardware(plan: ProfilePlan, backend: GpuBackend, ck: Checkpoint, bar: _Progress) -> None:
    """GPU facts, idle power, PCIe bandwidth and the MPS share unit, each once."""
    t = time.monotonic()
    info = backend.gpu_info()
    ck.bind_gpu(info)
    if HW_INFO not in ck:
        ck.put(HW_INFO, info, time.monotonic() - t)
        bar.step("gpu info")
    if HW_IDLE_POWER not in ck:
        t = time.monotonic()
        ck.put(HW_IDLE_POWER, {"power_w": backend.idle_power_w()}, time.monotonic() - t)
        bar.step("idle power")
    if HW_PCIE not in ck:
        t = time.monotonic()
        ck.put(HW_PCIE, {"bytes_per_ms": backend.pcie_bandwidth_bytes_per_ms()}, time.monotonic() - t)
        bar.step("pcie")
    if HW_SHARE_UNIT not in ck:
        t = time.monotonic()
        unit, evidence = backend.share_unit_pct(list(plan.share_unit_candidates))
        ck.put(HW_SHARE_UNIT, {"unit_pct": unit, **evidence}, time.monotonic() - t)
        bar.step("share unit")


def _put_setup(ck: Checkpoint, setups: int, r: JobSetup) -> int:
    """Checkpoint a measurement process's start-up time as the next ``setup/<n>``; the new count."""
    setups += 1
    ck.put(f"setup/{setups}", {"models": list(r.models), "setup_s": r.setup_s}, r.setup_s)
    return setups


def _measure_solo_grid(plan: ProfilePlan, backend: GpuBackend, ck: Checkpoint, bar: _Progress, setups: int) -> int:
    """Solo grid (and the kernel trace), one process per share with all models inside; the setup count."""
    for share in sorted(plan.shares_pct, reverse=True):
        solo = [(m, b) for m in plan.models for b in plan.batches if solo_key(m, b, share) not in ck]
        tb, ts = plan.trace_point
        traces = [(m, tb) for m in plan.models if float(ts) == float(share) and trace_key(m, tb, ts) not in ck]
        if not solo and not traces:
            continue
        for r in backend.run_share(share, solo, traces, min_time_s=plan.solo_min_time_s, min_iters=plan.solo_min_iters):
            if isinstance(r, JobSetup):
                setups = _put_setup(ck, setups, r)
            elif isinstance(r, SoloMeasurement):
                ck.put(solo_key(r.model, r.batch, share),
                       {"latency_ms": r.latency_ms, "power_w": r.power_w, "clock_mhz": r.clock_mhz}, r.elapsed_s)
                bar.step(f"solo {r.model} b{r.batch} {share:g}%")
            else:
                ck.put(trace_key(r.model, r.batch, share), {"kernels": r.kernels, "idle_ms": r.idle_ms}, r.elapsed_s)
                bar.step(f"trace {r.model}")
    return setups


def _measure_l2(plan: ProfilePlan, backend: GpuBackend, ck: Checkpoint, bar: _Progress, setups: int) -> int:
    """L2 utilisation, one ncu process per share; the setup count."""
    by_share: dict[float, list[tuple[str, int]]] = {}
    for b, s in plan.l2_points:
        for m in plan.models:
            if l2_key(m, b, s) not in ck:
                by_share.setdefault(float(s), []).append((m, b))
    for share, points in by_share.items():
        for r in backend.l2(share, points):
            if isinstance(r, JobSetup):
                setups = _put_setup(ck, setups, r)
            else:
                assert isinstance(r, L2Measurement)
                ck.put(l2_key(r.model, r.batch, share), {"l2_pct": r.l2_pct, "method": r.method}, r.elapsed_s)
                bar.step(f"l2 {r.model} b{r.batch} {share:g}%")
    return setups


def _measure_cache_pairs(plan: ProfilePlan, backend: GpuBackend, ck: Checkpoint, bar: _Progress) -> None:
    """Cache sensitivity: two copies of each model side by side."""
    pb, ps = plan.pair_point
    for m in plan.models:
        key = pair_key(m, pb, ps)
        if key in ck:
            continue
        res = backend.co_run([CoWorkload(m, ps, (pb,))] * 2, [Phase("replay", plan.co_phase_s)])[0]
        ck.put(key, {"pair_active_ms": statistics.fmean(w.latency_ms for w in res.workloads),
                     "pair_clock_mhz": res.clock_mhz, "power_w": res.power_w}, res.elapsed_s)
        bar.step(f"pair {m}")


def _measure_concurrency(plan: ProfilePlan, backend: GpuBackend, ck: Checkpoint, bar: _Progress) -> None:
    """1..n concurrent copies: power and clock at the concurrency point, then per-kernel idle time."""
    cb, cs = plan.concurrency_point
    for n in range(1, plan.max_copies + 1):
        key = conc_key(n)
        if key in ck:
            continue
        w = CoWorkload(plan.concurrency_model, cs, (cb, plan.concurrency_idle_batch))
        phases = backend.co_run([w] * n, [Phase("replay", plan.co_phase_s), Phase("trace_loop", plan.co_phase_s)])
        replay, trace = phases[0], phases[1]
        ck.put(key, {"copies": n, "power_w": replay.power_w, "clock_mhz": replay.clock_mhz,
                     "idle_per_kernel_ms": _mean_idle_per_kernel_ms(trace),
                     "latency_ms": statistics.fmean(x.latency_ms for x in replay.workloads)},
               phases[-1].elapsed_s)
        bar.step(f"{n} copies")


def _mean_idle_per_kernel_ms(trace: PhaseResult) -> float:
    """Mean per-kernel idle time over the copies of a ``trace_loop`` phase."""
    idle = [x.idle_per_kernel_ms for x in trace.workloads]
    present = [v for v in idle if v is not None]
    if len(present) != len(idle):
        raise MeasurementError("a trace_loop phase returned no per-kernel idle time; the backend must measure it")
    return statistics.fmean(present)


def profiling_cost_s(plan: ProfilePlan, ck: Checkpoint) -> dict[str, Any]:
    """Measurement time per model and for the hardware (s); process set-up is split among its models."""
    per_model = {m: 0.0 for m in plan.models}
    for m in plan.models:
        per_model[m] = sum(ck.elapsed.get(k, 0.0) for k in plan.model_keys(m))
    for key, rec in ck.records.items():
        if key.startswith("setup/"):
            ms = [m for m in rec.get("models", []) if m in per_model]
            for m in ms:
                per_model[m] += float(rec["setup_s"]) / len(ms)
    hw = sum(ck.elapsed.get(k, 0.0) for k in plan.hardware_keys())
    wall = (max(ck.times) - min(ck.times)) if len(ck.times) > 1 else 0.0
    return {"models_s": {m: round(v, 1) for m, v in per_model.items()}, "hardware_s": round(hw, 1),
            "total_s": round(sum(per_model.values()) + hw, 1), "checkpoint_span_s": round(wall, 1)}


STANDALONE_L2 = "standalone"


def l2_at_share(plan: ProfilePlan, ck: Checkpoint, model: str, batch: int, share: float) -> float:
    """The L2 % of (model, batch) at ``share`` from its checkpointed measurement.

    Measured inside MPS (``ncu --mps client``), the value is used as is. Measured by the
    substitute (a standalone ncu process with the whole GPU), the same L2 sectors are spread
    over the longer run time at the share: the % of peak is scaled by the measured solo
    latencies, ``l2(b, 100) * latency(b, 100) / latency(b, share)``.
    """
    rec = ck.records[l2_key(model, batch, share)]
    value = float(rec["l2_pct"])
    if STANDALONE_L2 not in str(rec.get("method", "")) or float(share) == 100.0:
        return value
    full, at = ck.records.get(solo_key(model, batch, 100.0)), ck.records.get(solo_key(model, batch, share))
    if full is None or at is None:
        raise ProfileError(
            f"L2 of {model} batch {batch} was measured outside MPS; rescaling it to {share:g} % needs solo "
            f"latencies at 100 % and {share:g} % (add 100 to --shares)"
        )
    return value * float(full["latency_ms"]) / float(at["latency_ms"])


def assemble_raw(plan: ProfilePlan, ck: Checkpoint) -> RawProfile:
    """Build the raw profile (``igniter-opt/profile-raw/v1``) from a complete checkpoint."""
    missing = [k for k in plan.all_keys() if k not in ck]
    if missing:
        raise ProfileError(
            f"{len(missing)} measurements are still missing (first: {missing[0]}); run the profiler again to resume"
        )
    info = dict(ck.records[HW_INFO])
    unit = ck.records[HW_SHARE_UNIT]
    models: dict[str, RawModel] = {}
    for m in plan.models:
        spec = get_spec(m)
        solo = tuple(
            SoloRecord(batch=b, share_pct=float(s), **{k: ck.records[solo_key(m, b, s)][k]
                                                        for k in ("latency_ms", "power_w", "clock_mhz")})
            for s in plan.shares_pct for b in plan.batches
        )
        l2 = tuple(L2Record(batch=b, share_pct=float(s), l2_pct=l2_at_share(plan, ck, m, b, s))
                   for b, s in plan.l2_points)
        tr = ck.records[trace_key(m, *plan.trace_point)]
        pb, ps = plan.pair_point
        pair = ck.records[pair_key(m, pb, ps)]
        models[m] = RawModel(
            input_bytes=float(spec.input_bytes),
            output_bytes=float(spec.output_bytes),
            kernels_per_inference=int(tr["kernels"]),
            idle_ms=float(tr["idle_ms"]),
            solo=solo,
            l2=l2,
            cache_pair=CachePairRecord(
                solo_active_ms=ck.records[solo_key(m, pb, ps)]["latency_ms"],
                pair_active_ms=pair["pair_active_ms"],
                pair_clock_mhz=pair["pair_clock_mhz"],
                solo_l2_pct=l2_at_share(plan, ck, m, pb, ps),
            ),
        )
    conc = tuple(
        ConcurrencyRecord(copies=n, power_w=r["power_w"], clock_mhz=r["clock_mhz"],
                          idle_per_kernel_ms=r["idle_per_kernel_ms"])
        for n in range(1, plan.max_copies + 1)
        for r in [ck.records[conc_key(n)]]
    )
    hardware = RawHardware(
        idle_power_w=float(ck.records[HW_IDLE_POWER]["power_w"]),
        max_clock_mhz=float(info["max_sm_clock_mhz"]),
        max_power_w=float(info["power_limit_w"]),
        share_unit_pct=float(unit["unit_pct"]),
        pcie_bandwidth_bytes_per_ms=float(ck.records[HW_PCIE]["bytes_per_ms"]),
        concurrency=conc,
    )
    first = min(ck.times) if ck.times else time.time()
    gpu = {
        **info,
        "measured_utc": dt.datetime.fromtimestamp(first, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "share_unit_evidence": {k: v for k, v in unit.items() if k != "unit_pct"},
        "plan": {
            "batches": list(plan.batches), "shares_pct": list(plan.shares_pct),
            "l2_points": [list(p) for p in plan.l2_points], "pair_point": list(plan.pair_point),
            "trace_point": list(plan.trace_point), "concurrency_model": plan.concurrency_model,
            "concurrency_point": list(plan.concurrency_point), "concurrency_idle_batch": plan.concurrency_idle_batch,
            "solo_min_time_s": plan.solo_min_time_s, "co_phase_s": plan.co_phase_s,
        },
        "profiling_cost_s": profiling_cost_s(plan, ck),
        "notes": {
            "solo latency_ms": "mean GPU time of one CUDA-graph replay (fp16), no host copies",
            "l2_pct": "ncu lts__t_sectors.avg.pct_of_peak_sustained_elapsed, kernel-time weighted over one inference",
            "l2_method": sorted({str(ck.records[l2_key(m, b, s)].get("method", "ncu --mps client"))
                                 for m in plan.models for b, s in plan.l2_points}),
            "l2_share_rescaling": "values measured outside MPS are rescaled to the share by solo latency "
                                  "(l2 * latency(b,100) / latency(b,share)); raw values are in checkpoint.jsonl",
            "input_bytes/output_bytes": "per sample, as copied host<->GPU (fp16 images, int64 token ids)",
        },
    }
    for name, v in (("idle", [m.idle_ms for m in models.values()]),):
        if any(not math.isfinite(x) for x in v):
            raise ProfileError(f"non-finite {name} measurement; re-measure")
    return RawProfile(gpu=gpu, hardware=hardware, models=models)
