"""The interface every GPU backend implements, and the typed measurements it returns.

Units are in the field names: ms, W, MHz, %, bytes. The real backend is
:class:`igniter_opt.profiling.cuda.CudaBackend`; :class:`igniter_opt.profiling.simulated.SimulatedBackend`
generates the same measurements from a known performance model (for tests and dry runs).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SoloMeasurement:
    """One model alone at (batch, share): mean GPU time of a graph replay, power and SM clock."""

    model: str
    batch: int
    share_pct: float
    latency_ms: float
    power_w: float
    clock_mhz: float
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class TraceMeasurement:
    """Kernel trace of one inference: kernels launched and inter-kernel idle time (ms)."""

    model: str
    batch: int
    share_pct: float
    kernels: int
    idle_ms: float
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class L2Measurement:
    """L2 utilisation (% of peak sectors, kernel-time weighted) of one inference."""

    model: str
    batch: int
    share_pct: float
    l2_pct: float
    elapsed_s: float = 0.0
    method: str = "ncu --mps client"


@dataclass(frozen=True)
class JobSetup:
    """Time a measurement process spent starting (import, model build, graph capture)."""

    models: tuple[str, ...]
    setup_s: float


# What ``GpuBackend.run_share`` yields (L2 comes from ``GpuBackend.l2``).
ShareResult = SoloMeasurement | TraceMeasurement | JobSetup


@dataclass(frozen=True)
class CoWorkload:
    """One process of a co-located run: a model at a share, with one batch size per phase."""

    model: str
    share_pct: float
    batches: tuple[int, ...]


@dataclass(frozen=True)
class Phase:
    """One synchronised phase of a co-located run.

    ``op``: ``replay`` (graph replays only: GPU time), ``loop`` (with host input/output copies:
    iGniter's inference latency and throughput) or ``trace_loop`` (replays with a kernel trace:
    per-kernel idle time).
    """

    op: str
    duration_s: float


@dataclass(frozen=True)
class PhaseMeasurement:
    """What one process measured in one phase (fields by op; ms and req/s)."""

    latency_ms: float
    throughput_rps: float | None = None
    loop_rps: float | None = None
    idle_per_kernel_ms: float | None = None
    kernels: int | None = None
    iterations: int = 0


@dataclass(frozen=True)
class PhaseResult:
    """One phase of a co-located run: per-workload results, GPU power and SM clock meanwhile."""

    workloads: tuple[PhaseMeasurement, ...]
    power_w: float
    clock_mhz: float
    elapsed_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class GpuBackend(ABC):
    """What the profiler needs from a GPU. Each method may take seconds; all are blocking."""

    @abstractmethod
    def gpu_info(self) -> dict[str, Any]:
        """Name, uuid, driver, ``max_sm_clock_mhz``, ``power_limit_w``, ``sm_count``... of the GPU."""

    @abstractmethod
    def idle_power_w(self) -> float:
        """GPU power with nothing running (W)."""

    @abstractmethod
    def pcie_bandwidth_bytes_per_ms(self) -> float:
        """Pinned host-to-device copy bandwidth (bytes/ms)."""

    @abstractmethod
    def share_unit_pct(self, candidates: list[float]) -> tuple[float, dict[str, Any]]:
        """The smallest share step (%) MPS honours, measured over ``candidates``; plus the evidence."""

    @abstractmethod
    def run_share(
        self,
        share_pct: float,
        solo: list[tuple[str, int]],
        traces: list[tuple[str, int]],
        *,
        min_time_s: float,
        min_iters: int,
    ) -> Iterator[ShareResult]:
        """Solo grid points and kernel traces of several models at one share, yielded as each finishes."""

    @abstractmethod
    def l2(self, share_pct: float, points: list[tuple[str, int]]) -> Iterator[L2Measurement | JobSetup]:
        """L2 utilisation of (model, batch) points at one share."""

    def prepare(self, workloads: list[CoWorkload]) -> Any:
        """Start a co-located run's processes ahead of time, for ``co_run(..., prepared=...)``; None
        where the backend has nothing to start early."""
        return None

    @abstractmethod
    def co_run(self, workloads: list[CoWorkload], phases: list[Phase], prepared: Any = None) -> list[PhaseResult]:
        """Run workloads together (one process each), phase by phase, all starting each phase together.

        ``prepared``: what ``prepare(workloads)`` returned, or None to start the processes now.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Stop everything the backend started (MPS daemon, samplers, processes)."""

    def __enter__(self) -> GpuBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
