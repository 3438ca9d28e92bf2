"""A plan's workloads as Kubernetes Services, and where a Service cannot split traffic as the plan does.

Per workload, one Service over every server of the workload: it selects the pods labelled
``serves-<workload>`` (and ``serving``) and targets the workload's named ports, which are the
same in every pod, so it reaches the workload's server wherever the plan put it. kube-proxy
spreads the connections to a Service evenly at random over its ready endpoints; it cannot weight
them. That matches the plan where a workload has one server, or several at equal rates. For a
workload whose servers have unequal rates, each server also gets a Service of its own, annotated
with its weight (its rate in requests per second), for a router that splits traffic by weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from igniter_opt.export.errors import ExportError
from igniter_opt.export.manifests import (
    COMPONENT,
    GPU,
    INSTANCE,
    SERVING,
    ManifestOptions,
    metadata,
    serves_label,
)
from igniter_opt.export.names import dns_label
from igniter_opt.export.pods import GpuPod, ServerSpec

SERVICE = "igniter-opt/service"  # label: the Service's own name (to find the ones a plan change drops)
WORKLOAD_SERVICE = "workload-service"  # the component of every Service
PER_SERVER_OF = "igniter-opt/workload-service"  # label of a per-server Service: its workload's Service
GRPC_PORT, HTTP_PORT = 8001, 8000  # Triton's defaults, on every Service
# annotations
WORKLOAD, TRAFFIC, WEIGHT, PLAN_GPU = ("igniter-opt/workload", "igniter-opt/traffic", "igniter-opt/weight",
                                       "igniter-opt/plan-gpu")


@dataclass(frozen=True)
class Endpoint:
    """One server of a workload and the plan GPU it runs on."""

    gpu_id: str
    gpu_name: str
    server: ServerSpec


def traffic_note(endpoints: list[Endpoint]) -> str:
    """How a Service spreads a workload's traffic, against how the plan splits it."""
    rates = [e.server.placement.rate_rps for e in endpoints]
    if len(rates) == 1:
        return "one server"
    split = "/".join(f"{r:g}" for r in rates)
    if max(rates) - min(rates) <= 1e-6 * max(rates):
        return f"{len(rates)} servers at equal rates ({split} req/s): an even spread matches the plan"
    return (f"{len(rates)} servers at unequal rates ({split} req/s): the Service spreads connections evenly; "
            "route by the weights of the per-server Services")


def _service(name: str, opts: ManifestOptions, selector: dict[str, str], stem: str, labels: dict[str, str],
             annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(name, opts, {COMPONENT: WORKLOAD_SERVICE, SERVICE: name, **labels}, annotations),
        "spec": {
            "selector": {INSTANCE: opts.prefix, SERVING: "true", **selector},
            "ports": [{"name": "grpc", "port": GRPC_PORT, "targetPort": f"{stem}-grpc", "protocol": "TCP"},
                      {"name": "http", "port": HTTP_PORT, "targetPort": f"{stem}-http", "protocol": "TCP"}],
        },
    }


def _workload_service(wname: str, eps: list[Endpoint], opts: ManifestOptions) -> dict[str, Any]:
    p = eps[0].server.placement
    total = sum(e.server.placement.rate_rps for e in eps)
    annotations = {WORKLOAD: p.workload, "igniter-opt/model": p.model, "igniter-opt/slo-ms": f"{p.slo_ms:g}",
                   "igniter-opt/rate-rps": f"{total:g}",
                   "igniter-opt/servers": ", ".join(f"{e.gpu_id} {e.server.placement.rate_rps:g} req/s"
                                                    for e in eps),
                   TRAFFIC: traffic_note(eps)}
    return _service(wname, opts, {serves_label(wname): "true"}, eps[0].server.port_stem, {}, annotations)


def _per_server_service(wname: str, e: Endpoint, opts: ManifestOptions) -> dict[str, Any]:
    rate = e.server.placement.rate_rps
    annotations = {WORKLOAD: e.server.placement.workload, PLAN_GPU: e.gpu_id,
                   "igniter-opt/rate-rps": f"{rate:g}", WEIGHT: str(max(1, round(rate)))}
    selector = {serves_label(wname): "true", GPU: e.gpu_name}
    return _service(dns_label(f"{wname}-{e.gpu_name}"), opts, selector, e.server.port_stem,
                    {PER_SERVER_OF: wname}, annotations)


def workload_services(pods: tuple[GpuPod, ...], opts: ManifestOptions) -> list[dict[str, Any]]:
    """Per workload, its Service; for one on several GPUs at unequal rates, one Service per server too."""
    by_workload: dict[str, list[Endpoint]] = {}
    for pod in pods:
        for s in pod.servers:
            by_workload.setdefault(s.workload_name, []).append(Endpoint(pod.gpu_id, pod.gpu_name, s))
    out: list[dict[str, Any]] = []
    for wname, eps in by_workload.items():
        out.append(_workload_service(wname, eps, opts))
        if "unequal" in out[-1]["metadata"]["annotations"][TRAFFIC]:
            out += [_per_server_service(wname, e, opts) for e in eps]
    names = [svc["metadata"]["name"] for svc in out]
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash is not None:
        raise ExportError(f"two Services would be named '{clash}' (a workload and another workload's "
                          "per-server Service '<workload>-<gpu>'); rename the workload in the plan")
    return out


def traffic_notes(services: list[dict[str, Any]]) -> list[str]:
    """One line per workload whose servers' rates differ: its Service cannot split traffic by rate."""
    notes = []
    for svc in services:
        meta = svc["metadata"]
        note = meta["annotations"].get(TRAFFIC, "")
        if "unequal" in note:
            per_server = [x["metadata"]["name"] for x in services
                          if x["metadata"]["labels"].get(PER_SERVER_OF) == meta["name"]]
            workload = meta["annotations"][WORKLOAD]
            notes.append(f"note: workload '{workload}': {note} ({', '.join(per_server)}); see DEPLOY.md")
    return notes
