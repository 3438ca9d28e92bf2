"""NVML (``import pynvml`` from nvidia-ml-py): GPU facts and a background power / SM-clock sampler.

Read-only: nothing here changes clocks, power limits, compute mode or MIG.
"""

from __future__ import annotations

import bisect
import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Any

from igniter_opt.errors import GpuUnavailableError, MeasurementError


def _nvml() -> Any:
    try:
        import pynvml
    except ImportError:
        raise GpuUnavailableError(
            "NVML is not available (no module 'pynvml'); install nvidia-ml-py on the GPU machine"
        ) from None
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # pynvml.NVMLError and friends
        raise GpuUnavailableError(
            f"NVML could not start ({exc}); is the NVIDIA driver loaded and a GPU present?"
        ) from None
    return pynvml


def _str(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def gpu_facts(index: int) -> dict[str, Any]:
    """Name, UUID, driver, max SM clock (MHz), enforced power limit (W), memory, MIG/compute mode."""
    nv = _nvml()
    try:
        count = nv.nvmlDeviceGetCount()
        if not 0 <= index < count:
            raise GpuUnavailableError(
                f"GPU {index} does not exist (NVML sees {count} GPU(s)); pass --gpu 0..{count - 1}"
            )
        h = nv.nvmlDeviceGetHandleByIndex(index)
        facts: dict[str, Any] = {
            "index": index,
            "name": _str(nv.nvmlDeviceGetName(h)),
            "uuid": _str(nv.nvmlDeviceGetUUID(h)),
            "driver": _str(nv.nvmlSystemGetDriverVersion()),
            "max_sm_clock_mhz": float(nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_SM)),
            "power_limit_w": nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0,
            "memory_total_bytes": int(nv.nvmlDeviceGetMemoryInfo(h).total),
        }
        with contextlib.suppress(Exception):  # optional; any NVML failure leaves it out
            facts["cuda_driver_version"] = int(nv.nvmlSystemGetCudaDriverVersion())
        try:
            facts["compute_mode"] = int(nv.nvmlDeviceGetComputeMode(h))
            facts["mig_mode"] = int(nv.nvmlDeviceGetMigMode(h)[0])
        except Exception:  # noqa: BLE001 - not every GPU supports MIG
            pass
        return facts
    finally:
        nv.nvmlShutdown()


@dataclass(frozen=True)
class Sample:
    t: float  # time.time()
    power_w: float
    sm_clock_mhz: float


class NvmlSampler:
    """Samples power (W) and SM clock (MHz) of one GPU every ``interval_s`` in a thread.

    Power is the instantaneous reading where the driver offers one (``NVML_FI_DEV_POWER_INSTANT``),
    else ``nvmlDeviceGetPowerUsage``. ``window(t0, t1)`` averages the samples inside a wall-clock
    window, so a measurement process only has to report when it ran.
    """

    def __init__(self, index: int, *, interval_s: float = 0.02, max_samples: int = 2_000_000) -> None:
        self.index = index
        self.interval_s = interval_s
        self.max_samples = max_samples
        self._samples: list[Sample] = []
        self._times: list[float] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nv: Any = None
        self.power_source = "nvmlDeviceGetPowerUsage"

    def start(self) -> NvmlSampler:
        self._nv = _nvml()
        nv = self._nv
        self._h = nv.nvmlDeviceGetHandleByIndex(self.index)
        self._fi = getattr(nv, "NVML_FI_DEV_POWER_INSTANT", None)
        if self._fi is not None:
            try:
                if self._read_instant() is None:
                    self._fi = None
                else:
                    self.power_source = "NVML_FI_DEV_POWER_INSTANT"
            except Exception:  # noqa: BLE001
                self._fi = None
        self._thread = threading.Thread(target=self._run, name="nvml-sampler", daemon=True)
        self._thread.start()
        return self

    def _read_instant(self) -> float | None:
        v = self._nv.nvmlDeviceGetFieldValues(self._h, [self._fi])[0]
        if getattr(v, "nvmlReturn", 0) != 0:
            return None
        return float(v.value.uiVal) / 1000.0

    def _read(self) -> Sample:
        nv = self._nv
        p = self._read_instant() if self._fi is not None else None
        if p is None:
            p = nv.nvmlDeviceGetPowerUsage(self._h) / 1000.0
        clk = float(nv.nvmlDeviceGetClockInfo(self._h, nv.NVML_CLOCK_SM))
        return Sample(time.time(), p, clk)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                s = self._read()
            except Exception:  # noqa: BLE001 - keep sampling; a gap shows up as missing samples
                s = None
            if s is not None:
                with self._lock:
                    if len(self._samples) >= self.max_samples:
                        del self._samples[: self.max_samples // 2]
                        del self._times[: self.max_samples // 2]
                    self._samples.append(s)
                    self._times.append(s.t)
            self._stop.wait(self.interval_s)

    def window(self, t0: float, t1: float, *, skip_frac: float = 0.2) -> tuple[float, float, int]:
        """Mean (power W, SM clock MHz, samples) between t0 and t1, skipping the first ``skip_frac``."""
        a = t0 + (t1 - t0) * skip_frac
        with self._lock:
            i, j = bisect.bisect_left(self._times, a), bisect.bisect_right(self._times, t1)
            sel = self._samples[i:j]
        if not sel:
            raise MeasurementError(f"no NVML samples between {a:.3f} and {t1:.3f}; the window is too short")
        return (
            sum(s.power_w for s in sel) / len(sel),
            sum(s.sm_clock_mhz for s in sel) / len(sel),
            len(sel),
        )

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._nv is not None:
            with contextlib.suppress(Exception):  # stopping anyway; a failed shutdown changes nothing
                self._nv.nvmlShutdown()
            self._nv = None

    def __enter__(self) -> NvmlSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
