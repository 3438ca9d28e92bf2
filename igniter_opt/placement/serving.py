"""Serving models: what "meets its SLO" means for one placement (pluggable into the kernel).

A serving model turns a placement's workload piece (SLO, rate) and configuration (batch, queue
delay) into a *latency limit*: the largest predicted batch latency (the performance model's
``latency``: t_inf, plus the per-batch serving overhead when the model has one) that still meets
the SLO. Together with "throughput >= rate" it is the whole feasibility test
(``feasibility.violates``), and because it is a limit on one number, the exact planner keeps its
linear form (``PerformanceModel.gpu_time_budget_ms`` turns it into a GPU-time budget).

- ``igniter``: the paper's rule, latency <= SLO / 2.
- ``full``: batch formation (b - 1) / R plus latency <= SLO (1 - margin).
- ``tail``: each request's end-to-end latency under random arrivals (batch formation, queueing
  behind earlier batches, service, client and network) within the SLO for at least a fraction A
  of requests (``queueing``); the limit is the largest batch service time that achieves it.

Each model also says which queue delays a placement may run with: the one ``apply`` configures for
the first two (``default_queue_delay_ms``), a small grid chosen jointly with the batch for ``tail``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from igniter_opt.domain import (
    DEFAULT_ATTAINMENT,
    DEFAULT_MARGIN,
    LatencyBudget,
    PlanningProblem,
    ServingParams,
    Workload,
)
from igniter_opt.errors import ProblemError
from igniter_opt.perfmodel.model import PerformanceModel


def default_queue_delay_ms(slo_ms: float, rate_rps: float, batch: int, budget: LatencyBudget, margin: float,
                           latency_ms: float | None) -> float:
    """The dynamic batcher's queue delay for a placement whose plan does not choose one.

    igniter: batch formation gets the half of the SLO that inference does not (SLO / 2). full and
    tail: SLO (1 - margin) - t_inf, with t_inf the predicted latency or, where unknown, the largest
    the full budget allows (which leaves (b - 1) / R for formation). Clamped to [0, SLO]; a batch
    of 1 never waits.
    """
    if batch <= 1 or not math.isfinite(slo_ms):
        return 0.0
    if budget is LatencyBudget.IGNITER:
        wait = slo_ms / 2.0
    else:
        if latency_ms is not None and math.isfinite(latency_ms):
            t_inf = latency_ms
        elif math.isfinite(rate_rps):
            t_inf = full_limit_ms(slo_ms, rate_rps, batch, margin)
        else:
            t_inf = slo_ms / 2.0
        wait = slo_ms * (1.0 - margin) - t_inf
    return min(max(wait, 0.0), slo_ms)


def full_limit_ms(slo_ms, rate_rps, batch, margin: float):  # noqa: ANN001, ANN201 - scalars or arrays
    """(b - 1) / R + t_inf <= SLO (1 - margin), solved for t_inf."""
    return slo_ms * (1.0 - margin) - 1000.0 * (batch - 1) / rate_rps


class ServingModel(ABC):
    """The pluggable part of the feasibility test: a latency limit per placement."""

    budget: LatencyBudget

    @abstractmethod
    def limit_ms(self, slo_ms: np.ndarray, rate_rps: np.ndarray, batch: np.ndarray,
                 queue_delay_ms: np.ndarray | None = None) -> np.ndarray:
        """The largest admissible predicted batch latency of each placement (vectorised)."""

    def queue_delay_candidates(self, slo_ms: np.ndarray | float, rate_rps: np.ndarray | float,
                               batch: np.ndarray) -> np.ndarray:
        """Queue delays each placement (slo, rate, batch; broadcast) may be planned with, shape
        (n, k); NaN: none chosen by the planner (``apply``'s rule applies). Only ``tail`` chooses."""
        return np.full((np.size(batch), 1), np.nan)

    def limit(self, slo_ms: float, rate_rps: float, batch: int, queue_delay_ms: float | None = None) -> float:
        """``limit_ms`` for one placement."""
        d = None if queue_delay_ms is None else np.array([queue_delay_ms], float)
        return float(self.limit_ms(np.array([slo_ms], float), np.array([rate_rps], float),
                                   np.array([batch], float), d)[0])

    def plan_fields(self) -> dict[str, object]:
        """What a plan records of this serving model (besides its budget's name)."""
        return {}

    def min_slo_ms(self, perf: PerformanceModel, model: str, rate_rps: float) -> float:
        """The smallest SLO a workload of ``model`` at ``rate_rps`` meets alone on a whole GPU at
        batch 1 (for error messages; NaN if none)."""
        lat, _ = perf.solo(model, 1, perf.max_units * perf.unit_pct)
        return self._slo_for_latency(lat)

    def _slo_for_latency(self, latency_ms: float) -> float:
        raise NotImplementedError


@dataclass(frozen=True)
class IgniterServing(ServingModel):
    """The paper's rule: latency <= SLO / 2 (the other half is for batch formation)."""

    budget: LatencyBudget = LatencyBudget.IGNITER

    def limit_ms(self, slo_ms, rate_rps, batch, queue_delay_ms=None):  # noqa: ANN001, ANN201
        return np.asarray(slo_ms, float) / 2.0 + 0.0 * np.asarray(batch, float)

    def _slo_for_latency(self, latency_ms: float) -> float:
        return 2.0 * latency_ms


@dataclass(frozen=True)
class FullServing(ServingModel):
    """Batch formation (b - 1) / R plus latency within SLO (1 - margin)."""

    margin: float = DEFAULT_MARGIN
    budget: LatencyBudget = LatencyBudget.FULL

    def limit_ms(self, slo_ms, rate_rps, batch, queue_delay_ms=None):  # noqa: ANN001, ANN201
        return full_limit_ms(np.asarray(slo_ms, float), np.asarray(rate_rps, float), np.asarray(batch, float),
                             self.margin)

    def plan_fields(self) -> dict[str, object]:
        return {"margin": self.margin}

    def _slo_for_latency(self, latency_ms: float) -> float:
        return latency_ms / (1.0 - self.margin)


# The rate at which the tail budget asks whether an SLO can be met at all: a server at 1 req/s
# never queues, so this is the SLO's floor (a higher rate can always be split over servers).
LOW_RATE_RPS = 1.0


@dataclass(frozen=True)
class TailServing(ServingModel):
    """At least ``attainment`` of the requests within the SLO, under random arrivals (``queueing``).

    The limit of a placement at (rate, batch, queue delay) is the largest batch service time whose
    predicted fraction of requests within the SLO is at least ``attainment``, divided by
    ``1 + service_headroom`` (the service time is planned that much above the performance model's
    prediction); the performance model's latency is that service time when it includes the per-batch
    serving overhead. A rate above ``max_server_rate_rps`` gets no service time (-inf), so planners
    split such a workload over more servers.
    """

    serving: ServingParams
    attainment: float = DEFAULT_ATTAINMENT
    budget: LatencyBudget = LatencyBudget.TAIL

    def limit_ms(self, slo_ms, rate_rps, batch, queue_delay_ms=None):  # noqa: ANN001, ANN201
        from igniter_opt.placement import queueing

        if queue_delay_ms is None:
            raise ValueError("the tail serving model needs each placement's queue delay")
        rate = np.asarray(rate_rps, float)
        limit = queueing.max_service_ms(rate, np.asarray(batch, float), np.asarray(queue_delay_ms, float),
                                        np.asarray(slo_ms, float), self.attainment,
                                        queueing.QueueingParams.from_serving(self.serving)
                                        ) / (1.0 + self.serving.service_headroom)
        cap = self.serving.max_server_rate_rps
        if cap is None:
            return limit
        from igniter_opt.placement.feasibility import REL_TOL  # the kernel's one tolerance (it imports this module)

        return np.where(rate <= cap * (1.0 + REL_TOL), limit, -np.inf)

    def queue_delay_candidates(self, slo_ms: np.ndarray | float, rate_rps: np.ndarray | float,
                               batch: np.ndarray) -> np.ndarray:
        from igniter_opt.placement import queueing

        b = np.asarray(batch, float).ravel()
        return queueing.queue_delay_candidates(np.broadcast_to(np.asarray(rate_rps, float), b.shape), b)

    def plan_fields(self) -> dict[str, object]:
        return {"attainment": self.attainment, "serving": self.serving}

    def min_slo_ms(self, perf: PerformanceModel, model: str, rate_rps: float, max_batch: int = 32) -> float:
        """The smallest SLO met alone on a whole GPU: the least ``attainment``-quantile of the
        request latency over batches 1..max_batch and their queue-delay candidates, at a rate low
        enough that nothing queues (a higher rate is split over several servers)."""
        from igniter_opt.placement import queueing

        rate_rps = min(rate_rps, LOW_RATE_RPS)
        b = np.arange(1, max_batch + 1, dtype=float)
        idx = np.full((b.size, 1), perf.model_index(model))
        lat, _ = perf.predict_padded(idx, b[:, None], np.full((b.size, 1), perf.max_units * perf.unit_pct))
        delays = self.queue_delay_candidates(math.inf, rate_rps, b)
        k = delays.shape[1]
        q = queueing.latency_quantile_ms(np.full(b.size * k, float(rate_rps)), np.repeat(b, k), delays.ravel(),
                                         np.repeat(lat[:, 0], k) * (1.0 + self.serving.service_headroom),
                                         self.attainment,
                                         queueing.QueueingParams.from_serving(self.serving))
        q = q[np.isfinite(q)]
        return float(q.min()) if q.size else math.nan


def serving_model_for(problem: PlanningProblem) -> ServingModel:
    """The serving model a problem is planned under."""
    budget = problem.latency_budget
    if budget is LatencyBudget.IGNITER:
        return IgniterServing()
    if budget is LatencyBudget.FULL:
        return FullServing(problem.margin)
    perf = problem.perf_model
    if perf.serving is None or perf.serving_overhead_ms is None:
        raise ProblemError(
            f"the 'tail' budget needs the serving measurements of profile '{perf.name}' (per-batch overhead, "
            "client cost, service-time variance), which it lacks; measure them with 'igniter-opt profile "
            "--serving', pass --serving-overhead-ms O (the other serving parameters then take their "
            "documented defaults), or plan with the paper's budget, --latency-budget igniter"
        )
    return TailServing(perf.serving, problem.attainment)


# Serving parameters a profile without serving measurements is given with --serving-overhead-ms:
# the per-request client and network cost and the service-time variation measured on the H100
# (docs/serving-model.md, benchmarks/results/serving_calibration_h100.md).
DEFAULT_CLIENT_MS = 1.22
DEFAULT_SERVICE_CV = 0.1


def configure_serving(perf: PerformanceModel, budget: LatencyBudget, overhead_ms: float | None = None,
                      max_utilization: float | None = None) -> PerformanceModel:
    """The performance model a problem under ``budget`` is planned with.

    ``overhead_ms`` (--serving-overhead-ms) replaces the profile's measured per-batch overhead (a
    profile without serving measurements gets the documented defaults for the rest). igniter and
    full plan with the paper's model unless an overhead or a utilization cap is given; tail always
    plans with the serving overhead (the one measured, or the one given) and no utilization cap.
    """
    serving = perf.serving
    if overhead_ms is not None:
        base = serving or ServingParams(overhead_ms, DEFAULT_CLIENT_MS, DEFAULT_SERVICE_CV,
                                        "--serving-overhead-ms with the documented client cost and variance")
        same = overhead_ms == base.overhead_ms
        serving = ServingParams(overhead_ms, base.client_ms, base.service_cv,
                                base.source if same else f"overhead {overhead_ms:g} ms given; "
                                f"client cost and variance from: {base.source}",
                                base.overhead_per_request_ms if same else 0.0, base.service_headroom,
                                base.max_server_rate_rps, base.model_overheads if same else ())
        perf = perf.with_serving(serving)
    if budget is not LatencyBudget.TAIL:
        return perf.with_serving_overhead(overhead_ms, max_utilization)
    if max_utilization is not None:
        raise ProblemError("--max-utilization goes with the igniter and full budgets: the tail budget plans every "
                           "workload to --attainment of its requests within the SLO instead")
    if serving is None:
        return perf.with_serving_overhead(None, None)
    return perf.with_serving_overhead(serving.overhead_ms, None, serving.overhead_per_request_ms,
                                      serving.model_overheads)


def unreachable_slo_error(problem: PlanningProblem, workload: Workload) -> ProblemError:
    """The error for a workload whose SLO no configuration meets even alone on a whole GPU, with
    the smallest SLO that does (rounded up to 0.01 ms, so that the SLO it names works)."""
    best = serving_model_for(problem).min_slo_ms(problem.perf_model, workload.model, workload.rate_rps)
    said = f"{math.ceil(best * 100 - 1e-9) / 100:.2f} ms" if math.isfinite(best) else "none at this rate"
    return ProblemError(
        f"workload '{workload.name}' ({workload.model}): SLO {workload.slo_ms:g} ms cannot be met even alone at 100 % "
        f"under the '{problem.latency_budget}' budget; the smallest SLO that works is {said}"
    )


def plan_serving_model(budget: LatencyBudget, margin: float | None, attainment: float | None,
                       serving: ServingParams | None) -> ServingModel:
    """The serving model a plan was made under, from what the plan records."""
    if budget is LatencyBudget.IGNITER:
        return IgniterServing()
    if budget is LatencyBudget.FULL:
        return FullServing(DEFAULT_MARGIN if margin is None else margin)
    if serving is None:
        raise ProblemError("the plan uses the 'tail' budget but records no serving measurements; re-plan it")
    return TailServing(serving, DEFAULT_ATTAINMENT if attainment is None else attainment)


__all__ = [
    "DEFAULT_ATTAINMENT", "FullServing", "IgniterServing", "ServingModel", "TailServing",
    "DEFAULT_CLIENT_MS", "DEFAULT_SERVICE_CV", "configure_serving", "default_queue_delay_ms", "full_limit_ms",
    "plan_serving_model", "serving_model_for", "unreachable_slo_error",
]
