"""A simulated GPU: deterministic measurements generated from a known performance model.

It implements the same :class:`GpuBackend` interface as the real one, so the plan, checkpoints,
resume and the fits are tested without a GPU: profiling a simulated GPU and fitting the result
must give back the coefficients it was generated from.

What each measurement returns (F: max clock, f: clock, P: power demand, c: L2 demand):

- solo (b, r):   latency = (k_act(b, r) + idle_1) F / f, power = min(P, P_max), f from P
- L2 (b, r):     alpha_c h + beta_c with h = 1000 b / (latency - idle_1) as the fit computes it
- replay phases of co-located runs (GPU time): (k_act + idle_1) (1 + alpha_cache (sum c - c_i)) F / f
- loop phases (with host copies): the prediction (latency and throughput) of ``co_location_truth``,
  by default the model itself
- traced phases: per-kernel idle time (idle_1 / n_k + D(n)) F / f, D(n) = alpha_sch n + beta_sch for n >= 2

``noise`` adds seeded, per-measurement multiplicative Gaussian noise (0 = exact).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from typing import Any

from igniter_opt.errors import MeasurementError
from igniter_opt.perfmodel.model import PerformanceModel
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


class SimulatedBackend(GpuBackend):
    """Measurements of an imaginary GPU that follows ``truth`` exactly (plus optional noise)."""

    def __init__(self, truth: PerformanceModel, *, noise: float = 0.0, seed: int = 0, sm_count: int = 132,
                 fail_after: int | None = None, co_location_truth: PerformanceModel | None = None) -> None:
        self.truth = truth
        # What loop phases (co-locations with host copies) follow: ``truth`` unless a test gives
        # another form, e.g. a kernel-delay model with a known kappa for the profiler to recover.
        self.co_location_truth = co_location_truth or truth
        self.noise = noise
        self.seed = seed
        self.sm_count = sm_count
        self.fail_after = fail_after  # raise after this many measurements (tests of resume)
        self.calls: list[str] = []

    # ---- helpers ---------------------------------------------------------------------------
    def _tick(self, what: str) -> None:
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise MeasurementError(f"simulated failure before {what}")
        self.calls.append(what)

    def _jitter(self, key: str) -> float:
        if self.noise <= 0:
            return 1.0
        h = int.from_bytes(hashlib.sha256(f"{self.seed}/{key}".encode()).digest()[:8], "little")
        return 1.0 + random.Random(h).gauss(0.0, self.noise)

    def _coef(self, model: str) -> Any:
        if model not in self.truth.models:
            raise MeasurementError(f"the simulated GPU does not know model '{model}'")
        return self.truth.models[model]

    def _clock(self, demand_w: float) -> float:
        hw = self.truth.hardware
        if demand_w <= hw.max_power_w:
            return hw.max_clock_mhz
        return hw.max_clock_mhz + hw.alpha_f * (demand_w - hw.max_power_w)

    def _solo(self, model: str, batch: int, share: float) -> tuple[float, float, float]:
        c, hw = self._coef(model), self.truth.hardware
        k_act = c.active_ms(batch, share)
        h = 1000.0 * batch / k_act
        demand = hw.idle_power_w + c.alpha_p * h + c.beta_p  # one placement: floor + (beta_p - floor)
        f = self._clock(demand)
        lat = (k_act + c.idle_ms) * hw.max_clock_mhz / f
        return lat * self._jitter(f"solo/{model}/{batch}/{share:g}"), min(demand, hw.max_power_w), f

    # ---- interface -------------------------------------------------------------------------
    def gpu_info(self) -> dict[str, Any]:
        hw = self.truth.hardware
        return {"name": f"simulated ({self.truth.name})", "uuid": "GPU-simulated", "driver": "simulated",
                "max_sm_clock_mhz": hw.max_clock_mhz, "power_limit_w": hw.max_power_w, "sm_count": self.sm_count}

    def idle_power_w(self) -> float:
        self._tick("idle power")
        return self.truth.hardware.idle_power_w

    def pcie_bandwidth_bytes_per_ms(self) -> float:
        self._tick("pcie")
        return self.truth.hardware.pcie_bandwidth_bytes_per_ms

    def share_unit_pct(self, candidates: list[float]) -> tuple[float, dict[str, Any]]:
        self._tick("share unit")
        return self.truth.hardware.share_unit_pct, {"method": "simulated", "candidates": list(candidates)}

    def run_share(self, share_pct: float, solo: list[tuple[str, int]], traces: list[tuple[str, int]], *,
                  min_time_s: float, min_iters: int) -> Iterator[ShareResult]:
        yield JobSetup(models=tuple(sorted({m for m, _ in [*solo, *traces]})), setup_s=1.0)
        for m, b in solo:
            self._tick(f"solo {m} {b} {share_pct:g}")
            lat, p, f = self._solo(m, b, share_pct)
            yield SoloMeasurement(m, b, share_pct, lat, p, f, elapsed_s=max(min_time_s, min_iters * lat / 1000))
        for m, b in traces:
            self._tick(f"trace {m} {b}")
            c = self._coef(m)
            yield TraceMeasurement(m, b, share_pct, c.kernels_per_inference, c.idle_ms, elapsed_s=0.1)

    def l2(self, share_pct: float, points: list[tuple[str, int]]) -> Iterator[L2Measurement | JobSetup]:
        yield JobSetup(models=tuple(sorted({m for m, _ in points})), setup_s=1.0)
        for m, b in points:
            self._tick(f"l2 {m} {b} {share_pct:g}")
            c = self._coef(m)
            lat, _, _ = self._solo(m, b, share_pct)
            h = 1000.0 * b / (lat - c.idle_ms)
            yield L2Measurement(m, b, share_pct, c.alpha_c * h + c.beta_c, elapsed_s=2.0)

    def co_run(self, workloads: list[CoWorkload], phases: list[Phase], prepared: Any = None) -> list[PhaseResult]:
        self._tick(f"co_run {len(workloads)}")
        hw = self.truth.hardware
        F = hw.max_clock_mhz
        out = []
        for i, ph in enumerate(phases):
            slots = [(w.model, w.batches[i], w.share_pct) for w in workloads]
            cs = [self._coef(m) for m, _, _ in slots]
            k_act = [c.active_ms(b, r) for c, (_, b, r) in zip(cs, slots, strict=True)]
            h = [1000.0 * b / k for k, (_, b, _) in zip(k_act, slots, strict=True)]
            l2 = [c.alpha_c * x + c.beta_c for c, x in zip(cs, h, strict=True)]
            demand = hw.idle_power_w + hw.power_floor_w + sum(
                c.alpha_p * x + c.beta_p - hw.power_floor_w for c, x in zip(cs, h, strict=True))
            f = self._clock(demand)
            n = len(slots)
            res: list[PhaseMeasurement] = []
            if ph.op == "replay":
                for c, k, ci in zip(cs, k_act, l2, strict=True):
                    t = (k + c.idle_ms) * (1 + c.alpha_cache * (sum(l2) - ci)) * F / f
                    res.append(PhaseMeasurement(latency_ms=t, iterations=1))
            elif ph.op == "loop":
                for lat, thr in self.co_location_truth.predict_gpu(slots):
                    res.append(PhaseMeasurement(latency_ms=lat, throughput_rps=thr, loop_rps=thr, iterations=1))
            elif ph.op == "trace_loop":
                d = hw.alpha_sch * n + hw.beta_sch if n >= 2 else 0.0
                for c in cs:
                    per_kernel = (c.idle_ms / c.kernels_per_inference + d) * F / f
                    res.append(PhaseMeasurement(latency_ms=float("nan"), idle_per_kernel_ms=per_kernel,
                                              kernels=c.kernels_per_inference, iterations=1))
            else:
                raise MeasurementError(f"unknown phase op {ph.op!r}")
            out.append(PhaseResult(workloads=tuple(res), power_w=min(demand, hw.max_power_w), clock_mhz=f,
                                   elapsed_s=ph.duration_s * (i + 1)))
        return out


# Plausible coefficients for the zoo models on an H100-class GPU (fp16, CUDA graphs). They are
# invented for dry runs and tests, not measured: measured profiles live in profiles/<gpu>/.
_SYNTHETIC = {
    # k1, k2, k3, k4, k5, alpha_c, beta_c, alpha_p, beta_p, alpha_cache, idle_ms, kernels, in, out
    "alexnet": ((0.0001, 1.5, 8.0, 1.0, 0.05), 0.0008, 8.0, 0.002, 20.0, 0.0015, 0.010, 22),
    "resnet50": ((0.0005, 4.0, 60.0, 2.0, 0.30), 0.0020, 12.0, 0.020, 25.0, 0.0020, 0.030, 160),
    "vgg19": ((0.0010, 19.6, 20.0, 1.0, 0.20), 0.0200, 10.0, 0.100, 30.0, 0.0020, 0.015, 46),
    "ssd": ((0.0020, 30.0, 40.0, 2.0, 0.40), 0.0080, 14.0, 0.080, 30.0, 0.0025, 0.030, 75),
    "vit_b_16": ((0.0050, 10.0, 50.0, 2.0, 0.30), 0.0040, 15.0, 0.040, 28.0, 0.0018, 0.040, 170),
    "bert_base": ((0.0040, 8.0, 40.0, 2.0, 0.30), 0.0030, 16.0, 0.035, 26.0, 0.0018, 0.040, 190),
}


def synthetic_model(models: list[str] | None = None, name: str = "synthetic-h100") -> PerformanceModel:
    """A performance model with invented, H100-like coefficients (for ``--backend simulated``)."""
    from igniter_opt.perfmodel.model import HardwareCoefficients, ModelCoefficients
    from igniter_opt.zoo import get_spec

    names = models or list(_SYNTHETIC)
    coefs = {}
    for m in names:
        spec = get_spec(m)
        k, ac, bc, ap, bp, acache, idle, nk = _SYNTHETIC[m]
        coefs[m] = ModelCoefficients(k=k, alpha_c=ac, beta_c=bc, alpha_p=ap, beta_p=bp, alpha_cache=acache,
                                     idle_ms=idle, kernels_per_inference=nk,
                                     input_bytes=float(spec.input_bytes), output_bytes=float(spec.output_bytes))
    hw = HardwareCoefficients(max_clock_mhz=1980.0, max_power_w=700.0, idle_power_w=70.0, alpha_f=-0.8,
                              alpha_sch=0.0006, beta_sch=-0.0004, share_unit_pct=1.5152,
                              pcie_bandwidth_bytes_per_ms=2.4e7)
    return PerformanceModel(name=name, hardware=hw, models=coefs, gpu={"name": "synthetic H100-like GPU"})
