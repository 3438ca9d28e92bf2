"""A plan's GPU pods and workloads as Kubernetes objects (plain dicts, in the order they are applied).

Per plan GPU, a ConfigMap and a Deployment of one pod, both named ``<prefix>-<gpu>-<revision>``:
the revision is a hash of everything the pod runs, so a GPU whose servers change gets a new
Deployment next to the old one (a plan change starts new servers before it stops old ones),
and a GPU that did not change keeps its name and ``kubectl apply`` leaves it alone. The pod asks
for one whole GPU (``nvidia.com/gpu: 1``) on a node whose ``nvidia.com/gpu.product`` is the
plan GPU's type; its one container runs the launcher (``launcher.py``): the GPU's MPS control
daemon and one tritonserver per placement with its share. Per workload, a Service over every
server of the workload (pods labelled ``serves-<workload>``, the workload's named ports), and for
a workload split over several GPUs one Service per server as well, with its weight, for routers
that split traffic by weight (a Service spreads connections evenly).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from igniter_opt import __version__
from igniter_opt.export.errors import ExportError
from igniter_opt.export.gpulabels import PRODUCT_LABEL
from igniter_opt.export.names import dns_label, digest
from igniter_opt.export.pods import EXIT_TIMEOUT_S, MODEL_ROOT, READY_PORT, GpuPod, ServerSpec
from igniter_opt.planio import placement_to_dict

LAUNCHER_SCHEMA = "igniter-opt/k8s-servers/v1"
LAUNCHER_SOURCE = Path(__file__).with_name("launcher.py")
# Label keys. 'igniter-opt' is the prefix of this tool's own labels.
NAME, INSTANCE, COMPONENT, MANAGED_BY = ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                                         "app.kubernetes.io/component", "app.kubernetes.io/managed-by")
GPU, REVISION, SERVING, SERVICE = "igniter-opt/gpu", "igniter-opt/revision", "igniter-opt/serving", "igniter-opt/service"
GPU_SERVER, WORKLOAD_SERVICE = "gpu-server", "workload-service"
GPU_RESOURCE = "nvidia.com/gpu"
CONFIGMAP_MAX_BYTES = 1_000_000  # the API server refuses ConfigMaps over 1 MiB
GRPC_PORT, HTTP_PORT = 8001, 8000  # Triton's defaults, on every Service
MPS_DIR = "/mps"
# SIGTERM, then the servers' own exit timeout, then the launcher's SIGKILL and MPS quit.
STOP_TIMEOUT_S = EXIT_TIMEOUT_S + 5
GRACE_PERIOD_S = STOP_TIMEOUT_S + 15


def serves_label(workload_name: str) -> str:
    return f"igniter-opt/serves-{workload_name}"


@dataclass(frozen=True)
class ModelStore:
    """Where the pods find their model repositories: the pod's ConfigMap, or an existing PersistentVolumeClaim."""

    claim: str | None = None  # None: ConfigMap

    @classmethod
    def parse(cls, text: str) -> ModelStore:
        if text == "configmap":
            return cls()
        kind, _, claim = text.partition(":")
        if kind == "pvc" and claim and dns_label(claim) == claim:
            return cls(claim)
        raise ExportError(f"--model-store '{text}': use 'configmap' or 'pvc:CLAIM' (an existing PersistentVolumeClaim "
                          "named by a DNS label, e.g. pvc:triton-models)")

    def describe(self) -> str:
        return "configmap" if self.claim is None else f"pvc:{self.claim}"


@dataclass(frozen=True)
class ManifestOptions:
    """What the objects depend on besides the plan."""

    prefix: str = "igniter"
    namespace: str | None = None
    image: str = f"igniter-opt-triton:{__version__}"
    model_store: ModelStore = ModelStore()


@dataclass(frozen=True)
class RenderedPod:
    """One GPU pod's objects and the files that go with them."""

    pod: GpuPod
    name: str  # of its Deployment and ConfigMap: <prefix>-<gpu>-<revision>
    revision: str
    configmap: dict[str, Any]
    deployment: dict[str, Any]
    repository_files: dict[str, str]  # for a PersistentVolumeClaim model store: path under its root -> content


def _meta(name: str, opts: ManifestOptions, labels: dict[str, str], annotations: dict[str, str] | None = None
          ) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if opts.namespace is not None:
        meta["namespace"] = opts.namespace
    meta["labels"] = {NAME: "igniter-opt", INSTANCE: opts.prefix, MANAGED_BY: "igniter-opt", **labels}
    if annotations:
        meta["annotations"] = annotations
    return meta


def servers_json(pod: GpuPod) -> dict[str, Any]:
    """The launcher's configuration: MPS folders and control command, probe port, every server."""
    return {
        "schema": LAUNCHER_SCHEMA,
        "gpu": pod.gpu_id,
        "gpu_type": pod.gpu_type,
        "mps_control": ["nvidia-cuda-mps-control"],
        "mps_pipe_dir": f"{MPS_DIR}/pipe",
        "mps_log_dir": f"{MPS_DIR}/log",
        "ready_port": READY_PORT,
        "stop_timeout_s": STOP_TIMEOUT_S,
        "servers": [
            {"name": s.name, "workload": s.placement.workload, "model": s.model_name, "batch": s.placement.batch,
             "share_pct": s.placement.share_pct, "queue_delay_us": s.queue_delay_us, "http_port": s.http_port,
             "argv": s.argv()}
            for s in pod.servers
        ],
    }


def _configmap_data(pod: GpuPod, opts: ManifestOptions) -> dict[str, str]:
    data = {"launch.py": LAUNCHER_SOURCE.read_text(encoding="utf-8"),
            "servers.json": json.dumps(servers_json(pod), indent=2) + "\n"}
    if opts.model_store.claim is None:
        for s in pod.servers:
            data[f"{s.name}.config.pbtxt"] = s.config_pbtxt
            data[f"{s.name}.model.py"] = s.model_py
    return data


def _ports(s: ServerSpec) -> list[dict[str, Any]]:
    return [{"name": f"{s.port_stem}-http", "containerPort": s.http_port},
            {"name": f"{s.port_stem}-grpc", "containerPort": s.grpc_port},
            {"containerPort": s.metrics_port}]


def _volumes(pod: GpuPod, name: str, opts: ManifestOptions) -> list[dict[str, Any]]:
    launcher = {"name": "launcher", "configMap": {"name": name, "items": [
        {"key": "launch.py", "path": "launch.py"}, {"key": "servers.json", "path": "servers.json"}]}}
    if opts.model_store.claim is None:
        items = [{"key": f"{s.name}.{f.rsplit('/', 1)[-1]}", "path": f"{s.name}/{f}"}
                 for s in pod.servers for f in s.repository_files()]
        models: dict[str, Any] = {"name": "models", "configMap": {"name": name, "items": items}}
    else:
        models = {"name": "models", "persistentVolumeClaim": {"claimName": opts.model_store.claim, "readOnly": True}}
    return [launcher, models, {"name": "mps", "emptyDir": {}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}}]


def _container(pod: GpuPod, name: str, opts: ManifestOptions) -> dict[str, Any]:
    models_mount: dict[str, Any] = {"name": "models", "mountPath": MODEL_ROOT, "readOnly": True}
    if opts.model_store.claim is not None:
        models_mount["subPath"] = name  # each revision's repositories in a folder of their own
    return {
        "name": "servers",
        "image": opts.image,
        "command": ["python3", "/igniter/launch.py", "/igniter/servers.json"],
        "ports": [{"name": "ready", "containerPort": READY_PORT}] + [p for s in pod.servers for p in _ports(s)],
        "resources": {"limits": {GPU_RESOURCE: 1}},
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "ready"}, "periodSeconds": 5,
                           "timeoutSeconds": 2, "failureThreshold": 2},
        "volumeMounts": [{"name": "launcher", "mountPath": "/igniter", "readOnly": True}, models_mount,
                         {"name": "mps", "mountPath": MPS_DIR}, {"name": "dshm", "mountPath": "/dev/shm"}],
    }


def _pod_labels(pod: GpuPod, revision: str) -> dict[str, str]:
    return {COMPONENT: GPU_SERVER, GPU: pod.gpu_name, REVISION: revision}


def _annotations(pod: GpuPod) -> dict[str, str]:
    servers = "; ".join(f"{s.name} {s.placement.workload} {s.model_name} batch {s.placement.batch} "
                        f"share {s.placement.share_pct:g} %" for s in pod.servers)
    return {"igniter-opt/plan-gpu": pod.gpu_id, "igniter-opt/gpu-type": pod.gpu_type, "igniter-opt/servers": servers}


def _deployment(pod: GpuPod, name: str, revision: str, opts: ManifestOptions) -> dict[str, Any]:
    selector = {INSTANCE: opts.prefix, **_pod_labels(pod, revision)}
    template_labels = {NAME: "igniter-opt", **selector, SERVING: "true",
                       **{serves_label(s.workload_name): "true" for s in pod.servers}}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, opts, _pod_labels(pod, revision), _annotations(pod)),
        "spec": {
            "replicas": 1,
            # a new pod of the same revision must not wait for a second GPU while the old one holds its own
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": template_labels, "annotations": _annotations(pod)},
                "spec": {
                    "nodeSelector": {PRODUCT_LABEL: pod.product_label},
                    "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
                    "terminationGracePeriodSeconds": GRACE_PERIOD_S,
                    "enableServiceLinks": False,
                    "containers": [_container(pod, name, opts)],
                    "volumes": _volumes(pod, name, opts),
                },
            },
        },
    }


def render_pod(pod: GpuPod, opts: ManifestOptions) -> RenderedPod:
    """The ConfigMap and Deployment of one GPU pod, named after a hash of everything they hold."""
    data = _configmap_data(pod, opts)
    repo_files = {f"{s.name}/{path}": text for s in pod.servers for path, text in s.repository_files().items()}
    content = {"pod": servers_json(pod), "data": data, "repository": repo_files, "image": opts.image,
               "product": pod.product_label, "store": opts.model_store.describe(), "gpu": pod.gpu_name}
    revision = digest(json.dumps(content, sort_keys=True), 10)
    name = f"{opts.prefix}-{pod.gpu_name}-{revision}"
    size = sum(len(k) + len(v.encode("utf-8")) for k, v in data.items())
    if size > CONFIGMAP_MAX_BYTES:
        raise ExportError(f"GPU {pod.gpu_id}: its model repositories take {size} bytes, over a ConfigMap's 1 MiB; "
                          "pass --model-store pvc:CLAIM")
    configmap = {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": _meta(name, opts, _pod_labels(pod, revision), {"igniter-opt/plan-gpu": pod.gpu_id}),
                 "immutable": True, "data": data}
    files = {f"{name}/{path}": text for path, text in repo_files.items()} if opts.model_store.claim else {}
    return RenderedPod(pod, name, revision, configmap, _deployment(pod, name, revision, opts), files)


@dataclass(frozen=True)
class Endpoint:
    """One server of a workload: where it runs and the rate the plan sends it."""

    gpu_id: str
    gpu_name: str
    server: ServerSpec


def _service(name: str, opts: ManifestOptions, selector: dict[str, str], stem: str, labels: dict[str, str],
             annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, opts, {COMPONENT: WORKLOAD_SERVICE, SERVICE: name, **labels}, annotations),
        "spec": {
            "selector": {INSTANCE: opts.prefix, SERVING: "true", **selector},
            "ports": [{"name": "grpc", "port": GRPC_PORT, "targetPort": f"{stem}-grpc", "protocol": "TCP"},
                      {"name": "http", "port": HTTP_PORT, "targetPort": f"{stem}-http", "protocol": "TCP"}],
        },
    }


def traffic_note(endpoints: list[Endpoint]) -> str:
    """How Kubernetes spreads a workload's traffic against how the plan splits it."""
    rates = [e.server.placement.rate_rps for e in endpoints]
    if len(rates) == 1:
        return "one server"
    split = "/".join(f"{r:g}" for r in rates)
    if max(rates) - min(rates) <= 1e-6 * max(rates):
        return f"{len(rates)} servers at equal rates ({split} req/s): the Service's even spread matches the plan"
    return (f"{len(rates)} servers at unequal rates ({split} req/s): the Service spreads connections evenly; "
            "route by the weights of the per-server Services")


def workload_services(pods: tuple[GpuPod, ...], opts: ManifestOptions) -> list[dict[str, Any]]:
    """Per workload, its Service; for a workload on several GPUs, one weighted Service per server too."""
    by_workload: dict[str, list[Endpoint]] = {}
    for pod in pods:
        for s in pod.servers:
            by_workload.setdefault(s.workload_name, []).append(Endpoint(pod.gpu_id, pod.gpu_name, s))
    out: list[dict[str, Any]] = []
    for wname, eps in by_workload.items():
        p0 = eps[0].server.placement
        total = sum(e.server.placement.rate_rps for e in eps)
        annotations = {"igniter-opt/workload": p0.workload, "igniter-opt/model": p0.model,
                       "igniter-opt/slo-ms": f"{p0.slo_ms:g}", "igniter-opt/rate-rps": f"{total:g}",
                       "igniter-opt/servers": ", ".join(f"{e.gpu_id} {e.server.placement.rate_rps:g} req/s"
                                                        for e in eps),
                       "igniter-opt/traffic": traffic_note(eps)}
        selector = {serves_label(wname): "true"}
        out.append(_service(wname, opts, selector, eps[0].server.port_stem, {}, annotations))
        if len(eps) > 1:
            for e in eps:
                rate = e.server.placement.rate_rps
                out.append(_service(
                    dns_label(f"{wname}-{e.gpu_name}"), opts, {**selector, GPU: e.gpu_name}, e.server.port_stem,
                    {"igniter-opt/workload-service": wname},
                    {"igniter-opt/workload": p0.workload, "igniter-opt/plan-gpu": e.gpu_id,
                     "igniter-opt/rate-rps": f"{rate:g}", "igniter-opt/weight": str(max(1, round(rate)))}))
    names = [svc["metadata"]["name"] for svc in out]
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash is not None:
        raise ExportError(f"two Services would be named '{clash}' (a workload's name and another's per-server "
                          "Service '<workload>-<gpu>'); rename the workload in the plan")
    return out


def namespace_object(namespace: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {MANAGED_BY: "igniter-opt"}}}


def placement_summary(s: ServerSpec) -> dict[str, Any]:
    """A server's placement as the plan file writes it (for the export's own record)."""
    return {"server": s.name, **placement_to_dict(s.placement), "queue_delay_us": s.queue_delay_us}
