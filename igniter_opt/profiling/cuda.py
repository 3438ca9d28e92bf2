"""The real backend: every measurement in its own process under MPS, NVML sampling, ncu for L2.

- The MPS control daemon is started by the backend with private pipe and log folders
  (:class:`igniter_opt.gpu.mps.MpsDaemon`) and stopped by :meth:`CudaBackend.close`.
- Each measurement process is a client with ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` set to its
  share; it builds the models with the zoo's runner (fp16 CUDA graphs), so the profile measures
  exactly what is served. All batches of one share run in one process (the share is per process).
- Power and SM clock come from NVML samples (every 20 ms) averaged over the window in which the
  process reported measuring.
- L2 utilisation comes from ``ncu --mps client`` (metric
  ``lts__t_sectors.avg.pct_of_peak_sustained_elapsed`` weighted by kernel duration over one
  inference), with ``--clock-control none`` so that ncu does not lock the clocks.
- Every wait has a timeout; a failed or hung process is killed with its whole process group.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from igniter_opt.errors import MeasurementError
from igniter_opt.gpu.mps import MpsDaemon
from igniter_opt.gpu.nvml import NvmlSampler, gpu_facts
from igniter_opt.profiling.backend import (
    CoWorkload,
    GpuBackend,
    JobSetup,
    L2Measurement,
    Phase,
    PhaseMeasurement,
    PhaseResult,
    ShareResult,
    SoloMeasurement,
    TraceMeasurement,
)
from igniter_opt.profiling.procs import WorkerProcess, kill_all

log = logging.getLogger(__name__)

L2_METRIC = "lts__t_sectors.avg.pct_of_peak_sustained_elapsed"
DURATION_METRIC = "gpu__time_duration.sum"
MARKER_KERNEL = "spin_kernel"
_NCU_PATHS = ("/usr/local/cuda/bin/ncu",)
_TIME_UNITS = {"nsecond": 1e-6, "usecond": 1e-3, "msecond": 1.0, "second": 1e3, "ns": 1e-6, "us": 1e-3, "ms": 1.0}


def find_ncu() -> str | None:
    found = shutil.which("ncu")
    if found:
        return found
    for p in _NCU_PATHS:
        if os.access(p, os.X_OK):
            return p
    return None


def _num(text: str) -> float:
    return float(text.replace(",", "").strip())


def parse_ncu_l2(csv_text: str, n_points: int) -> list[float]:
    """Kernel-time weighted L2 % per point from ncu's CSV; points are separated by marker kernels."""
    lines = csv_text.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith('"ID"')), None)
    if start is None:
        raise MeasurementError("ncu wrote no metrics (no CSV header in its log); see the ncu log")
    kernels: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    for row in csv.DictReader(io.StringIO("\n".join(lines[start:]))):
        kid = row.get("ID")
        if kid is None:
            continue
        if kid not in kernels:
            kernels[kid] = {"name": row.get("Kernel Name", "")}
            order.append(kid)
        name, unit, value = row.get("Metric Name"), row.get("Metric Unit", ""), row.get("Metric Value", "")
        try:
            v = _num(value)
        except ValueError:
            continue
        if name == L2_METRIC:
            kernels[kid]["l2"] = v
        elif name == DURATION_METRIC:
            kernels[kid]["ms"] = v * _TIME_UNITS.get(unit.strip(), 1e-6)
    groups: list[list[dict[str, Any]]] = []
    for kid in order:
        k = kernels[kid]
        if MARKER_KERNEL in k["name"]:
            groups.append([])
        elif groups:
            groups[-1].append(k)
    if len(groups) != n_points:
        raise MeasurementError(f"ncu profiled {len(groups)} marked ranges, expected {n_points}")
    out = []
    for g in groups:
        g = [k for k in g if "l2" in k and "ms" in k]
        total = sum(k["ms"] for k in g)
        if not g or total <= 0:
            raise MeasurementError("ncu returned no kernel metrics for a point")
        out.append(sum(k["l2"] * k["ms"] for k in g) / total)
    return out


class CudaBackend(GpuBackend):
    """Measures a real NVIDIA GPU (see the module docstring)."""

    def __init__(
        self,
        gpu_index: int = 0,
        *,
        log_dir: str | os.PathLike[str],
        worker_cmd: list[str] | None = None,
        mps: MpsDaemon | None = None,
        sampler: NvmlSampler | Any = None,
        facts: dict[str, Any] | None = None,
        ncu: str | None = None,
        setup_timeout_s: float = 300.0,
        op_timeout_s: float = 120.0,
        ncu_timeout_s: float = 600.0,
    ) -> None:
        self.gpu_index = gpu_index
        self.log_dir = Path(log_dir)  # made when the first worker starts: a run that fails before leaves none
        self.worker_cmd = worker_cmd
        self.setup_timeout_s = setup_timeout_s
        self.op_timeout_s = op_timeout_s
        self.ncu_timeout_s = ncu_timeout_s
        self._facts = facts if facts is not None else gpu_facts(gpu_index)  # fails clearly without NVML/GPU
        self._ncu = ncu
        self.mps = mps or MpsDaemon()
        self.sampler = sampler or NvmlSampler(gpu_index)
        self._started = False
        self._hw: dict[str, Any] | None = None
        self._idle_power: float | None = None
        self._n = 0

    # ---- lifecycle -------------------------------------------------------------------------
    def _start(self) -> None:
        if self._started:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.sampler.start()
        try:
            # Idle power before any client exists.
            t0 = time.time()
            time.sleep(1.5)
            self._idle_power = self.sampler.window(t0, time.time(), skip_frac=0.3)[0]
            self.mps.start()
        except BaseException:
            self.sampler.stop()
            raise
        self._started = True

    def close(self) -> None:
        kill_all()
        try:
            self.mps.stop()
        finally:
            self.sampler.stop()
            self._started = False

    def _env(self, share_pct: float | None) -> dict[str, str]:
        env = self.mps.client_env(share_pct)
        env["CUDA_VISIBLE_DEVICES"] = str(self._facts.get("uuid", self.gpu_index))
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("IGNITER_PRELOAD", "torchvision")  # accuracy runs add transformers
        return env

    def spawn(self, tag: str, share_pct: float | None, prefix: list[str] | None = None) -> WorkerProcess:
        """Start a measurement process (it imports torch, then waits for its job)."""
        self._start()
        self._n += 1
        name = f"{tag}@{share_pct:g}%" if share_pct is not None else tag
        return WorkerProcess(
            name, self._env(share_pct), cmd=self.worker_cmd, prefix=prefix,
            log_path=self.log_dir / "workers.log",
        )

    def _start_job(self, w: WorkerProcess, job: dict[str, Any]) -> dict[str, Any]:
        w.expect("imported", self.setup_timeout_s)
        w.send(job)
        return w.expect("ready", self.setup_timeout_s)

    # ---- hardware ----------------------------------------------------------------------------
    def _hardware(self) -> dict[str, Any]:
        if self._hw is None:
            w = self.spawn("hardware", 100.0)
            try:
                ops = [{"id": "info", "op": "info"}, {"id": "pcie", "op": "pcie"}]
                ready = self._start_job(w, {"models": {}, "ops": ops})
                info = w.expect("result", self.op_timeout_s)
                pcie = w.expect("result", self.op_timeout_s)
                w.expect("done", self.op_timeout_s)
                w.wait()
            finally:
                w.kill()
            self._hw = {"ready": ready, "info": info, "pcie": pcie}
        return self._hw

    def gpu_info(self) -> dict[str, Any]:
        info = self._hardware()["info"]
        return {
            **self._facts,
            "sm_count": info["sm_count"],
            "torch": info["torch"],
            "cuda_runtime": info["cuda"],
            "power_source": getattr(self.sampler, "power_source", "nvml"),
        }

    def idle_power_w(self) -> float:
        self._start()
        assert self._idle_power is not None
        return self._idle_power

    def pcie_bandwidth_bytes_per_ms(self) -> float:
        return float(self._hardware()["pcie"]["bytes_per_ms"])

    def share_unit_pct(self, candidates: list[float]) -> tuple[float, dict[str, Any]]:
        """Probe each candidate share with a compute-bound matmul; read the SMs the process got.

        The unit is the smallest share step that changes the SM count the process sees (or, if
        the count does not change, the smallest step that changes the matmul time by > 2 %).
        """
        cands = sorted({float(c) for c in candidates})
        workers = [self.spawn("share-probe", c) for c in cands]  # all import torch in parallel
        rows = []
        try:
            for c, w in zip(cands, workers, strict=True):
                self._start_job(w, {"models": {}, "ops": [{"id": "probe", "op": "probe"}]})
                r = w.expect("result", self.op_timeout_s)
                w.expect("done", self.op_timeout_s)
                w.wait()
                rows.append({"share_pct": c, "sm_count": r["sm_count"], "median_ms": r["median_ms"]})
        finally:
            for w in workers:
                w.kill()
        return unit_from_probes(rows, total_sms=self.gpu_info()["sm_count"])

    # ---- per-share grid -----------------------------------------------------------------------
    def run_share(
        self,
        share_pct: float,
        solo: list[tuple[str, int]],
        traces: list[tuple[str, int]],
        *,
        min_time_s: float,
        min_iters: int,
    ) -> Iterator[ShareResult]:
        models: dict[str, set[int]] = {}
        for m, b in [*solo, *traces]:
            models.setdefault(m, set()).add(b)
        ops: list[dict[str, Any]] = [
            {"id": f"solo/{m}/{b}", "op": "solo", "model": m, "batch": b,
             "min_time_s": min_time_s, "min_iters": min_iters}
            for m, b in solo
        ] + [{"id": f"trace/{m}/{b}", "op": "trace", "model": m, "batch": b} for m, b in traces]
        t_spawn = time.time()
        w = self.spawn("grid", share_pct)
        try:
            self._start_job(w, {"models": {m: sorted(bs) for m, bs in models.items()}, "ops": ops})
            yield JobSetup(models=tuple(models), setup_s=time.time() - t_spawn)
            for op in ops:
                r = w.expect("result", self.op_timeout_s)
                if r["id"] != op["id"]:
                    raise MeasurementError(f"{w.name}: answer for {r['id']}, expected {op['id']}")
                if op["op"] == "solo":
                    power, clock, _ = self.sampler.window(r["t0"], r["t1"])
                    yield SoloMeasurement(op["model"], op["batch"], share_pct, r["latency_ms"], power, clock,
                                          r["elapsed_s"])
                else:
                    yield TraceMeasurement(op["model"], op["batch"], share_pct, int(r["kernels"]), r["idle_ms"],
                                           r["elapsed_s"])
            w.expect("done", self.op_timeout_s)
            w.wait()
        finally:
            w.kill()

    # ---- L2 ------------------------------------------------------------------------------------
    def l2(self, share_pct: float, points: list[tuple[str, int]]) -> Iterator[L2Measurement | JobSetup]:
        """L2 % with ncu inside MPS (``--mps client``); if ncu cannot profile there, a standalone
        process (outside MPS, whole GPU) is profiled instead and the record says so."""
        ncu = self._ncu or find_ncu()
        if ncu is None:
            raise MeasurementError("ncu (Nsight Compute) not found; install it or put it on PATH to measure L2")
        if os.environ.get("IGNITER_OPT_NCU_IN_MPS", "1") == "0":  # known to fail on this machine: skip the try
            yield from self._l2_ncu(ncu, share_pct, points, mps=False)
            return
        try:
            yield from self._l2_ncu(ncu, share_pct, points, mps=True)
        except MeasurementError as exc:
            log.warning("ncu inside MPS failed (%s); profiling L2 in a standalone process", exc)
            yield from self._l2_ncu(ncu, share_pct, points, mps=False)

    def _l2_ncu(self, ncu: str, share_pct: float, points: list[tuple[str, int]], *, mps: bool
                ) -> Iterator[L2Measurement | JobSetup]:
        models: dict[str, set[int]] = {}
        for m, b in points:
            models.setdefault(m, set()).add(b)
        self._n += 1
        prefix = [ncu, *(["--mps", "client"] if mps else []), "--target-processes", "all",
                  "--profile-from-start", "off", "--clock-control", "none", "--cache-control", "none",
                  "--metrics", f"{L2_METRIC},{DURATION_METRIC}", "--csv"]
        self._start()
        if mps:
            env = self._env(share_pct)
        else:
            env = {k: v for k, v in self._env(None).items() if not k.startswith("CUDA_MPS_")}
            env["CUDA_MPS_PIPE_DIRECTORY"] = str(self.log_dir / "no-mps")  # no daemon there: standalone
        t_spawn = time.time()
        name = f"l2@{share_pct:g}%" if mps else "l2-standalone"
        w = WorkerProcess(name, env, cmd=self.worker_cmd, prefix=prefix, log_path=self.log_dir / "workers.log",
                          keep_stdout=True)
        try:
            self._start_job(w, {"models": {m: sorted(bs) for m, bs in models.items()},
                                "ops": [{"id": "l2", "op": "l2", "points": [[m, b] for m, b in points]}]})
            t0 = time.time()
            w.expect("result", self.ncu_timeout_s)
            w.expect("done", self.op_timeout_s)
            w.wait(timeout_s=120)
        finally:
            w.kill()
        text = "\n".join(w.stdout_lines)
        (self.log_dir / f"ncu-{self._n:03d}-{share_pct:g}.csv").write_text(text)
        values = parse_ncu_l2(text, len(points))
        yield JobSetup(models=tuple(models), setup_s=t0 - t_spawn)
        per = (time.time() - t0) / max(len(points), 1)
        method = "ncu --mps client" if mps else "ncu, standalone process outside MPS (whole GPU)"
        for (m, b), v in zip(points, values, strict=True):
            yield L2Measurement(m, b, share_pct, v, per, method=method)

    # ---- co-located runs ------------------------------------------------------------------------
    def prepare(self, workloads: list[CoWorkload]) -> list[WorkerProcess]:
        """Start the processes of a co-located run ahead of time (they import torch meanwhile)."""
        return [self.spawn(f"co{i}-{w.model}", w.share_pct) for i, w in enumerate(workloads)]

    def co_run(
        self, workloads: list[CoWorkload], phases: list[Phase], prepared: list[WorkerProcess] | None = None
    ) -> list[PhaseResult]:
        if not workloads or not phases:
            raise MeasurementError("a co-located run needs at least one workload and one phase")
        for w in workloads:
            if len(w.batches) != len(phases):
                raise MeasurementError(f"{w.model}: {len(w.batches)} batches for {len(phases)} phases")
        procs = prepared or self.prepare(workloads)
        t_start = time.time()
        try:
            for wl, p in zip(workloads, procs, strict=True):
                ops = [
                    {"id": f"p{i}", "op": ph.op, "model": wl.model, "batch": wl.batches[i], "duration_s": ph.duration_s,
                     "min_time_s": ph.duration_s, "min_iters": 1, "sync": True}
                    for i, ph in enumerate(phases)
                ]
                p.expect("imported", self.setup_timeout_s)
                p.send({"models": {wl.model: sorted(set(wl.batches))}, "ops": ops})
            for p in procs:
                p.expect("ready", self.setup_timeout_s)
            results = []
            for i, ph in enumerate(phases):
                for p in procs:
                    p.expect("waiting", self.op_timeout_s)
                for p in procs:
                    p.send("go")
                rs = [p.expect("result", ph.duration_s + self.op_timeout_s) for p in procs]
                t0 = max(r["t0"] for r in rs)
                t1 = min(r["t1"] for r in rs)
                if t1 <= t0:
                    raise MeasurementError(f"phase {i}: the processes did not overlap in time")
                power, clock, _ = self.sampler.window(t0, t1)
                results.append(PhaseResult(
                    workloads=tuple(_phase_measurement(ph.op, r) for r in rs),
                    power_w=power, clock_mhz=clock, elapsed_s=time.time() - t_start,
                    extra={"overlap_s": t1 - t0},
                ))
            for p in procs:
                p.expect("done", self.op_timeout_s)
            for p in procs:  # all measured: end them together rather than one exit after another
                p.terminate()
            for p in procs:
                p.wait()
            return results
        finally:
            for p in procs:
                p.kill()


def _phase_measurement(op: str, r: dict[str, Any]) -> PhaseMeasurement:
    if op == "trace_loop":
        return PhaseMeasurement(latency_ms=float("nan"), idle_per_kernel_ms=r["idle_per_kernel_ms"],
                              kernels=int(r["kernels"]), iterations=int(r["traced"]))
    if op == "loop":
        return PhaseMeasurement(latency_ms=r["latency_ms"], throughput_rps=r["throughput_rps"], loop_rps=r["loop_rps"],
                              iterations=int(r["n"]))
    return PhaseMeasurement(latency_ms=r["latency_ms"], iterations=int(r["n"]))


def unit_from_probes(rows: list[dict[str, Any]], *, total_sms: int) -> tuple[float, dict[str, Any]]:
    """The share unit from probe rows (share_pct, sm_count, median_ms); see ``share_unit_pct``."""
    rows = sorted(rows, key=lambda r: r["share_pct"])
    if len(rows) < 2:
        raise MeasurementError("share-unit probe needs at least 2 candidate shares")
    counts = [int(r["sm_count"]) for r in rows]
    steps = sorted({b - a for a, b in zip(counts, counts[1:], strict=False) if b > a})
    if steps:
        unit = 100.0 * steps[0] / total_sms
        method = "SM count reported to the MPS client"
    else:
        change = [
            rows[i + 1]["share_pct"]
            for i in range(len(rows) - 1)
            if rows[i + 1]["median_ms"] < rows[i]["median_ms"] * 0.98
        ]
        gaps = sorted(b - a for a, b in zip(change, change[1:], strict=False))
        unit = gaps[0] if gaps else rows[-1]["share_pct"] - rows[0]["share_pct"]
        method = "matmul time steps"
    return round(unit, 4), {"method": method, "probes": rows, "total_sms": total_sms}
