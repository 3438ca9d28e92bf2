"""Domain types: immutable, ordered deterministically, units in the names."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from igniter_opt.perfmodel.model import PerformanceModel


class LatencyBudget(StrEnum):
    """How a workload's SLO is split between batch formation and inference.

    IGNITER: the paper's rule, inference latency <= SLO / 2, batch from the paper's closed form.
    FULL: a batch of b requests at rate R takes (b - 1) / R to form;
          (b - 1) / R + t_inf <= SLO * (1 - margin) and throughput >= rate.
    """

    IGNITER = "igniter"
    FULL = "full"


@dataclass(frozen=True, order=True)
class Workload:
    """A stream of inference requests for one model with a latency SLO."""

    name: str
    model: str
    slo_ms: float
    rate_rps: float


@dataclass(frozen=True)
class Prediction:
    """Predicted mean inference latency and throughput of one placement."""

    latency_ms: float
    throughput_rps: float


@dataclass(frozen=True)
class Placement:
    """One server: (part of) a workload on one GPU with an MPS share and a batch size.

    ``rate_rps`` is the rate this placement serves (a split workload has several placements).
    """

    workload: str
    model: str
    slo_ms: float
    rate_rps: float
    batch: int
    share_pct: float
    predicted: Prediction | None = None


@dataclass(frozen=True)
class GpuAssignment:
    """One GPU of a plan and the placements it hosts."""

    gpu_id: str
    gpu_type: str
    placements: tuple[Placement, ...]

    @property
    def total_share_pct(self) -> float:
        return sum(p.share_pct for p in self.placements)


@dataclass(frozen=True)
class SolverInfo:
    """What the planner reports about its own search (the greedy planner fills what applies)."""

    status: str
    objective: float | None = None
    bound: float | None = None
    gap: float | None = None
    wall_s: float | None = None
    build_s: float | None = None
    solve_s: float | None = None
    message: str | None = None


@dataclass(frozen=True)
class Plan:
    """A full provisioning plan: GPUs, their placements, cost and how it was found."""

    profile: str
    planner: str
    latency_budget: str
    gpus: tuple[GpuAssignment, ...]
    price_per_gpu_hour: float = 1.0
    solver: SolverInfo = field(default_factory=lambda: SolverInfo(status="unknown"))
    margin: float | None = None
    serving_overhead_ms: float | None = None  # planned with this overhead per batch execution (None: paper)
    serving_max_utilization: float | None = None  # and to at most this utilization per server

    @property
    def num_gpus(self) -> int:
        return len(self.gpus)

    @property
    def cost_per_hour(self) -> float:
        return self.num_gpus * self.price_per_gpu_hour

    @property
    def total_share_pct(self) -> float:
        return sum(g.total_share_pct for g in self.gpus)

    def placements(self) -> list[tuple[str, Placement]]:
        """Every (gpu_id, placement) pair in plan order."""
        return [(g.gpu_id, p) for g in self.gpus for p in g.placements]


@dataclass(frozen=True)
class PlanningProblem:
    """Workloads to place on GPUs of one profiled type under a latency budget."""

    workloads: tuple[Workload, ...]
    perf_model: PerformanceModel
    latency_budget: LatencyBudget = LatencyBudget.IGNITER
    margin: float = 0.1

    def __post_init__(self) -> None:
        if not 0 <= self.margin < 1:
            raise ValueError(f"margin must be in [0, 1), got {self.margin}")
