"""What runs on each GPU of a plan: one Triton server per placement, as ``igniter-opt apply`` runs it.

Per placement, the same model repository as ``apply`` (``config.pbtxt`` with the planned batch
and queue delay, the zoo's Python-backend ``model.py``), the same MPS share, and the server
flags that matter in a pod, restated here: the repository, three ports per server (HTTP, gRPC,
metrics; numbered from 8000 in the order of the GPU's placements), strict readiness (ready only
once the model is loaded), no GPU metrics (one GPU, many servers), and the time the server
waits for requests in flight when it is stopped. The servers listen on every address of the pod
(Services reach them at the pod's IP). The ``tritonserver`` of the image and its default
backend folder are used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from igniter_opt.apply.models import served_model
from igniter_opt.apply.repository import batch_formation_budget_ms, model_config_for, model_py_for
from igniter_opt.domain import LatencyBudget, Placement, Plan
from igniter_opt.errors import ApplyError
from igniter_opt.export.errors import ExportError
from igniter_opt.export.names import KubeNames, port_stem

TRITONSERVER = "tritonserver"  # on PATH in NVIDIA's Triton images (/opt/tritonserver/bin)
MODEL_ROOT = "/models"
FIRST_PORT = 8000
PORTS_PER_SERVER = 3
READY_PORT = 7999  # the launcher's readiness endpoint, below every server port
EXIT_TIMEOUT_S = 30  # a stopped server finishes its requests in flight for at most this long


@dataclass(frozen=True)
class ServerSpec:
    """One placement's server in its GPU's pod."""

    name: str  # s0, s1, ... in the order of the GPU's placements
    placement: Placement
    workload_name: str  # the workload's Kubernetes name
    model_name: str  # the served model (the repository's folder)
    queue_delay_us: int
    http_port: int
    config_pbtxt: str
    model_py: str

    @property
    def grpc_port(self) -> int:
        return self.http_port + 1

    @property
    def metrics_port(self) -> int:
        return self.http_port + 2

    @property
    def port_stem(self) -> str:
        return port_stem(self.workload_name)

    @property
    def repository(self) -> str:
        return f"{MODEL_ROOT}/{self.name}"

    def repository_files(self) -> dict[str, str]:
        """{path in the server's repository: content}: Triton's ``<model>/config.pbtxt``, ``<model>/1/``."""
        m = self.model_name
        return {f"{m}/config.pbtxt": self.config_pbtxt, f"{m}/1/model.py": self.model_py}

    def argv(self) -> list[str]:
        flags = {
            "model-repository": self.repository,
            "http-port": self.http_port,
            "grpc-port": self.grpc_port,
            "metrics-port": self.metrics_port,
            "allow-gpu-metrics": "false",
            "strict-readiness": "true",
            "exit-timeout-secs": EXIT_TIMEOUT_S,
        }
        return [TRITONSERVER] + [f"--{k}={v}" for k, v in flags.items()]


@dataclass(frozen=True)
class GpuPod:
    """One plan GPU: a whole GPU of its type, its MPS daemon and its servers."""

    gpu_id: str
    gpu_name: str  # the GPU id's Kubernetes name
    gpu_type: str
    product_label: str  # the nvidia.com/gpu.product value its node must have
    servers: tuple[ServerSpec, ...]


def queue_delay_us(p: Placement, budget: LatencyBudget, margin: float) -> int:
    """The dynamic batcher's largest wait: the plan's own where it chose one, else the budget's rule."""
    ms = p.queue_delay_ms if p.queue_delay_ms is not None else batch_formation_budget_ms(p, budget, margin)
    return math.floor(1000.0 * ms)


def check_placements(plan: Plan) -> None:
    """Refuse what no pod can serve: no placements, a rate or SLO missing, a workload twice on one GPU."""
    if not plan.placements():
        raise ExportError("the plan has no placements; nothing to export")
    for g in plan.gpus:
        seen: set[str] = set()
        for p in g.placements:
            if not all(math.isfinite(x) and x > 0 for x in (p.rate_rps, p.slo_ms)):
                raise ExportError(f"placement {p.workload} on {g.gpu_id}: rate_rps and slo_ms must be "
                                  "positive numbers (the queue delay and the traffic weights follow from "
                                  f"them), got {p.rate_rps:g} and {p.slo_ms:g}; write them into the plan")
            if p.workload in seen:
                raise ExportError(f"workload {p.workload} has two placements on GPU {g.gpu_id}; a Service "
                                  "reaches one server per workload in a pod: merge them into one placement")
            seen.add(p.workload)


def _server(i: int, p: Placement, names: KubeNames, budget: LatencyBudget, margin: float,
            gpu_id: str) -> ServerSpec:
    try:
        model = served_model(p.model)
    except ApplyError:
        raise ExportError(f"placement {p.workload} on {gpu_id}: model '{p.model}' is not in the model zoo "
                          "(igniter_opt.zoo), and the served model.py runs zoo models only") from None
    delay_us = queue_delay_us(p, budget, margin)
    config = model_config_for(p, model, budget, margin)
    if config.max_queue_delay_us != delay_us:  # the plan chose its own queue delay
        config = replace(config, max_queue_delay_us=delay_us)
    return ServerSpec(
        name=f"s{i}", placement=p, workload_name=names.workloads[p.workload], model_name=model.name,
        queue_delay_us=delay_us, http_port=FIRST_PORT + PORTS_PER_SERVER * i, config_pbtxt=config.render(),
        model_py=model_py_for(config, echo=False, site_dirs=[]),
    )


def build_pods(plan: Plan, names: KubeNames, product_labels: dict[str, str]) -> tuple[GpuPod, ...]:
    """Every GPU of ``plan`` as a pod: its servers in the order of its placements."""
    check_placements(plan)
    budget = LatencyBudget(plan.latency_budget)
    margin = plan.margin or 0.0
    pods = []
    for g in plan.gpus:
        servers = tuple(_server(i, p, names, budget, margin, g.gpu_id) for i, p in enumerate(g.placements))
        pods.append(GpuPod(g.gpu_id, names.gpus[g.gpu_id], g.gpu_type, product_labels[g.gpu_type], servers))
    return tuple(pods)
