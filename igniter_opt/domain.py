"""Domain types: immutable, ordered deterministically, units in the names."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from igniter_opt.solver import SolveOutcome, SolveStatus

if TYPE_CHECKING:
    from igniter_opt.perfmodel.model import PerformanceModel


class LatencyBudget(StrEnum):
    """How a workload's SLO is split between batch formation and inference.

    IGNITER: the paper's rule, inference latency <= SLO / 2, batch from the paper's closed form.
    FULL: a batch of b requests at rate R takes (b - 1) / R to form;
          (b - 1) / R + t_inf <= SLO * (1 - margin) and throughput >= rate.
    TAIL: each request's end-to-end latency under random arrivals (batch formation, queueing
          behind earlier batches, service, client and network) is within the SLO for at least a
          fraction ``attainment`` of the requests (``igniter_opt.placement.queueing``).
    """

    IGNITER = "igniter"
    FULL = "full"
    TAIL = "tail"


# Defaults of the planning problem, declared once (the CLI shows them in --help).
DEFAULT_MARGIN = 0.1
DEFAULT_ATTAINMENT = 0.99


@dataclass(frozen=True, order=True)
class Workload:
    """A stream of inference requests for one model with a latency SLO."""

    name: str
    model: str
    slo_ms: float
    rate_rps: float


@dataclass(frozen=True)
class Prediction:
    """What the model predicts for one placement.

    ``latency_ms`` and ``throughput_rps``: one batch's mean latency and the placement's throughput
    (the performance model). ``p50_ms``, ``p99_ms`` and ``within_slo`` (a fraction): each request's
    end-to-end latency under random arrivals at the placement's rate (the serving model), when the
    profile's serving measurements are known.
    """

    latency_ms: float
    throughput_rps: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    within_slo: float | None = None


@dataclass(frozen=True)
class Placement:
    """One server: (part of) a workload on one GPU with an MPS share and a batch size.

    ``rate_rps`` is the rate this placement serves (a split workload has several placements).
    ``queue_delay_ms`` is the dynamic batcher's largest wait for a fuller batch (None: the rule
    ``apply`` uses for plans that do not choose it).
    """

    workload: str
    model: str
    slo_ms: float
    rate_rps: float
    batch: int
    share_pct: float
    predicted: Prediction | None = None
    queue_delay_ms: float | None = None


@dataclass(frozen=True)
class GpuAssignment:
    """One GPU of a plan and the placements it hosts."""

    gpu_id: str
    gpu_type: str
    placements: tuple[Placement, ...]

    @property
    def total_share_pct(self) -> float:
        return sum(p.share_pct for p in self.placements)


# Per model, the serving stack's cost beyond the GPU's overhead line, measured where a model's serving
# differs (SSD's large outputs): (model, per_batch_ms, per_request_ms), sorted by model. A batch of b
# of that model costs overhead_ms + per_batch_ms + (overhead_per_request_ms + per_request_ms) * b.
ModelOverheads = tuple[tuple[str, float, float], ...]


def model_overheads_to_dict(extra: ModelOverheads) -> dict[str, dict[str, float]]:
    return {m: {"per_batch_ms": a, "per_request_ms": r} for m, a, r in extra}


def model_overheads_from_dict(d: Any) -> ModelOverheads:
    """The inverse of ``model_overheads_to_dict``; a ValueError that names what is wrong."""
    if not isinstance(d, dict):
        raise ValueError("model_overheads must map each model to {per_batch_ms, per_request_ms}")
    out = []
    for m, v in d.items():
        try:
            a, r = float(v.get("per_batch_ms", 0.0)), float(v.get("per_request_ms", 0.0))
        except (TypeError, ValueError, AttributeError):
            raise ValueError(f"model_overheads of '{m}' must be {{per_batch_ms, per_request_ms}} in ms") from None
        if not (math.isfinite(a) and math.isfinite(r) and a >= 0 and r >= 0):
            raise ValueError(f"model_overheads of '{m}' must be numbers of ms >= 0")
        out.append((str(m), a, r))
    return tuple(sorted(out))


def model_overhead_ms(extra: ModelOverheads, model: str, batch: float) -> float:
    """A batch's serving cost beyond the GPU's line for ``model`` (0 for a model without its own)."""
    return next((a + r * batch for m, a, r in extra if m == model), 0.0)


@dataclass(frozen=True)
class ServingParams:
    """How the serving stack adds to a batch's GPU time, measured per GPU type (times in ms).

    ``overhead_ms``: per batch execution, beyond the model's own time (Triton's Python backend
    takes the inputs, runs one batch at a time, builds the responses). ``client_ms``: per request,
    the client and network beyond the server's own time. ``service_cv``: coefficient of variation
    of one batch's service time. ``source`` says where the numbers come from.
    """

    overhead_ms: float
    client_ms: float = 0.0
    service_cv: float = 0.0
    source: str = ""
    # a batch's overhead grows with its requests: overhead_ms + overhead_per_request_ms * batch
    overhead_per_request_ms: float = 0.0
    # the tail budget plans each service time this fraction above the performance model's prediction:
    # the model's error next to co-runners, measured live (docs/serving-model.md)
    service_headroom: float = 0.0
    # the tail budget gives no server a higher request rate than this (None: no cap); a workload above
    # it is split over more servers. Measured live: co-runners' slow episodes queue a fast server at
    # high rates for seconds although its mean service time is unchanged (docs/live-tail.md)
    max_server_rate_rps: float | None = None
    # per model, what its serving costs beyond the line above (ModelOverheads)
    model_overheads: ModelOverheads = ()

    def batch_overhead_ms(self, batch: float, model: str | None = None) -> float:
        own = 0.0 if model is None else model_overhead_ms(self.model_overheads, model, batch)
        return self.overhead_ms + self.overhead_per_request_ms * batch + own

    def to_dict(self) -> dict[str, Any]:
        """The JSON fields of a profile's serving.json or a plan's serving block (optional ones when set)."""
        out: dict[str, Any] = {"overhead_ms": self.overhead_ms, "client_ms": self.client_ms,
                               "service_cv": self.service_cv, "source": self.source}
        if self.overhead_per_request_ms:
            out["overhead_per_request_ms"] = self.overhead_per_request_ms
        if self.service_headroom:
            out["service_headroom"] = self.service_headroom
        if self.max_server_rate_rps is not None:
            out["max_server_rate_rps"] = self.max_server_rate_rps
        if self.model_overheads:
            out["model_overheads"] = model_overheads_to_dict(self.model_overheads)
        return out

    @classmethod
    def from_dict(cls, d: Any) -> ServingParams:
        """The inverse of ``to_dict``; a ValueError that names what is wrong."""
        try:
            out = cls(float(d["overhead_ms"]), float(d.get("client_ms", 0.0)), float(d.get("service_cv", 0.0)),
                      str(d.get("source", "")), float(d.get("overhead_per_request_ms", 0.0)),
                      float(d.get("service_headroom", 0.0)),
                      None if d.get("max_server_rate_rps") is None else float(d["max_server_rate_rps"]),
                      model_overheads_from_dict(d.get("model_overheads", {})))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"missing or bad field ({type(exc).__name__}: {exc})") from None
        if not all(math.isfinite(x) and x >= 0 for x in (out.overhead_ms, out.client_ms, out.service_cv,
                                                        out.overhead_per_request_ms, out.service_headroom)):
            raise ValueError("overhead_ms, client_ms, service_cv, overhead_per_request_ms and service_headroom "
                             "must be numbers >= 0")
        cap = out.max_server_rate_rps
        if cap is not None and not (math.isfinite(cap) and cap > 0):
            raise ValueError("max_server_rate_rps must be a number > 0 (or absent for no cap)")
        return out


@dataclass(frozen=True)
class Plan:
    """A full provisioning plan: GPUs, their placements, cost and how it was found."""

    profile: str
    planner: str
    latency_budget: str
    gpus: tuple[GpuAssignment, ...]
    price_per_gpu_hour: float = 1.0
    solver: SolveOutcome = field(default_factory=lambda: SolveOutcome(SolveStatus.UNKNOWN))
    margin: float | None = None
    serving_overhead_ms: float | None = None  # planned with this overhead per batch execution (None: paper)
    serving_max_utilization: float | None = None  # and to at most this utilization per server
    serving_overhead_per_request_ms: float = 0.0  # and this much more per request of a batch
    serving_model_overheads: ModelOverheads = ()  # and, per model, its own serving cost beyond that line
    attainment: float | None = None  # tail budget: the fraction of requests planned within the SLO
    serving: ServingParams | None = None  # the serving measurements the per-request predictions used
    # True: re-verified by the exact model when written; False: written although it failed (apply
    # refuses it); None: not said (hand-written, or written before this field existed).
    verified: bool | None = None

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
    margin: float = DEFAULT_MARGIN
    attainment: float = DEFAULT_ATTAINMENT
    # Largest batch a plan may use; None: the largest the profile measured (beyond it the fit
    # extrapolates, so going further must be asked for).
    max_batch: int | None = None

    @property
    def batch_limit(self) -> int | None:
        """The largest batch plans may use (None: no bound known)."""
        return self.max_batch if self.max_batch is not None else self.perf_model.max_measured_batch

    def __post_init__(self) -> None:
        if not 0 <= self.margin < 1:
            raise ValueError(f"margin must be in [0, 1), got {self.margin}")
        if not 0 < self.attainment < 1:
            raise ValueError(f"attainment must be in (0, 1), got {self.attainment}")
        if self.max_batch is not None and self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
