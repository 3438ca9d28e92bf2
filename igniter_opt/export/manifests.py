"""A plan GPU as Kubernetes objects: its ConfigMap and the Deployment of its one pod (plain dicts).

Both are named ``<prefix>-<gpu>-<revision>``, where the revision is a hash of everything the
pod runs: a GPU whose servers change gets a new Deployment next to the old one (so that a plan
change can start new servers before it stops the old ones), and a GPU that did not change keeps
its name, which ``kubectl apply`` leaves alone. The pod asks for one whole GPU
(``nvidia.com/gpu: 1``) on a node whose ``nvidia.com/gpu.product`` is the plan GPU's type. Its
one container runs the launcher (``launcher.py``): the GPU's MPS control daemon and one
tritonserver per placement with its MPS share. The ConfigMap holds the launcher, its
``servers.json`` and (unless a volume holds them) every server's model repository.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from igniter_opt import __version__
from igniter_opt.export.errors import ExportError
from igniter_opt.export.gpulabels import PRODUCT_LABEL
from igniter_opt.export.names import digest, dns_label
from igniter_opt.export.pods import EXIT_TIMEOUT_S, MODEL_ROOT, READY_PORT, GpuPod, ServerSpec
from igniter_opt.planio import placement_to_dict

LAUNCHER_SCHEMA = "igniter-opt/k8s-servers/v1"
LAUNCHER_SOURCE = Path(__file__).with_name("launcher.py")
# The recommended labels, and this tool's own (prefix 'igniter-opt').
NAME = "app.kubernetes.io/name"
INSTANCE = "app.kubernetes.io/instance"
COMPONENT = "app.kubernetes.io/component"
MANAGED_BY = "app.kubernetes.io/managed-by"
GPU = "igniter-opt/gpu"
REVISION = "igniter-opt/revision"
SERVING = "igniter-opt/serving"  # "false" takes a pod out of every Service (the switch of a plan change)
GPU_SERVER = "gpu-server"  # the component of GPU pods and their ConfigMaps
GPU_RESOURCE = "nvidia.com/gpu"
PLAN_GPU = "igniter-opt/plan-gpu"  # annotation: the plan's GPU id
CONFIGMAP_MAX_BYTES = 1_000_000  # the API server refuses a ConfigMap over 1 MiB
MPS_DIR = "/mps"
# On SIGTERM the launcher gives the servers their exit timeout and a little more, then kills
# what is left and quits MPS; the kubelet waits a little longer still.
STOP_TIMEOUT_S = EXIT_TIMEOUT_S + 5
GRACE_PERIOD_S = STOP_TIMEOUT_S + 15


def serves_label(workload_name: str) -> str:
    """The pod label that puts a pod's server of this workload behind the workload's Service."""
    return f"igniter-opt/serves-{workload_name}"


@dataclass(frozen=True)
class ModelStore:
    """Where pods find their model repositories: their ConfigMap, or an existing PersistentVolumeClaim."""

    claim: str | None = None  # None: the ConfigMap

    @classmethod
    def parse(cls, text: str) -> ModelStore:
        if text == "configmap":
            return cls()
        kind, _, claim = text.partition(":")
        if kind == "pvc" and claim and dns_label(claim) == claim:
            return cls(claim)
        raise ExportError(f"--model-store '{text}': use 'configmap' or 'pvc:CLAIM' (an existing "
                          "PersistentVolumeClaim named by a DNS label, e.g. pvc:triton-models)")

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
    repository_files: dict[str, str]  # volume model store: {path under the volume's root: content}


def metadata(name: str, opts: ManifestOptions, labels: dict[str, str],
             annotations: dict[str, str] | None = None) -> dict[str, Any]:
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
            {"name": s.name, "workload": s.placement.workload, "model": s.model_name,
             "batch": s.placement.batch, "share_pct": s.placement.share_pct,
             "queue_delay_us": s.queue_delay_us, "http_port": s.http_port, "argv": s.argv()}
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
        items = [{"key": f"{s.name}.{path.rsplit('/', 1)[-1]}", "path": f"{s.name}/{path}"}
                 for s in pod.servers for path in s.repository_files()]
        models: dict[str, Any] = {"name": "models", "configMap": {"name": name, "items": items}}
    else:
        claim = {"claimName": opts.model_store.claim, "readOnly": True}
        models = {"name": "models", "persistentVolumeClaim": claim}
    # /dev/shm: the MPS server and Triton's Python backend pass data through shared memory
    return [launcher, models, {"name": "mps", "emptyDir": {}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}}]


def _container(pod: GpuPod, name: str, opts: ManifestOptions) -> dict[str, Any]:
    models_mount: dict[str, Any] = {"name": "models", "mountPath": MODEL_ROOT, "readOnly": True}
    if opts.model_store.claim is not None:
        models_mount["subPath"] = name  # each revision's repositories in a folder of their own
    ports = [{"name": "ready", "containerPort": READY_PORT}] + [p for s in pod.servers for p in _ports(s)]
    return {
        "name": "servers",
        "image": opts.image,
        "command": ["python3", "/igniter/launch.py", "/igniter/servers.json"],
        "ports": ports,
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
    return {PLAN_GPU: pod.gpu_id, "igniter-opt/gpu-type": pod.gpu_type, "igniter-opt/servers": servers}


def _deployment(pod: GpuPod, name: str, revision: str, opts: ManifestOptions) -> dict[str, Any]:
    selector = {INSTANCE: opts.prefix, **_pod_labels(pod, revision)}
    template_labels = {NAME: "igniter-opt", **selector, SERVING: "true",
                       **{serves_label(s.workload_name): "true" for s in pod.servers}}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(name, opts, _pod_labels(pod, revision), _annotations(pod)),
        "spec": {
            "replicas": 1,
            # an edit in place (kubectl set image) must not need a second GPU: the old pod goes first
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": template_labels, "annotations": _annotations(pod)},
                "spec": {
                    "nodeSelector": {PRODUCT_LABEL: pod.product_label},
                    # GPU nodes are often tainted so that only pods that ask for GPUs land there
                    "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
                    "terminationGracePeriodSeconds": GRACE_PERIOD_S,
                    # the pod's pause process, not the launcher, is PID 1 and reaps orphans (the MPS
                    # daemon, a dead server's backend stubs)
                    "shareProcessNamespace": True,
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
    repo_files = {f"{s.name}/{path}": text
                  for s in pod.servers for path, text in s.repository_files().items()}
    content = {"pod": servers_json(pod), "data": data, "repository": repo_files, "image": opts.image,
               "product": pod.product_label, "store": opts.model_store.describe(), "gpu": pod.gpu_name}
    revision = digest(json.dumps(content, sort_keys=True), 10)
    name = f"{opts.prefix}-{pod.gpu_name}-{revision}"
    size = sum(len(k) + len(v.encode("utf-8")) for k, v in data.items())
    if size > CONFIGMAP_MAX_BYTES:
        raise ExportError(f"GPU {pod.gpu_id}: its model repositories take {size} bytes, over a ConfigMap's "
                          "1 MiB; pass --model-store pvc:CLAIM")
    configmap = {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": metadata(name, opts, _pod_labels(pod, revision), {PLAN_GPU: pod.gpu_id}),
                 "immutable": True, "data": data}
    files = {f"{name}/{path}": text for path, text in repo_files.items()} if opts.model_store.claim else {}
    return RenderedPod(pod, name, revision, configmap, _deployment(pod, name, revision, opts), files)


def namespace_object(namespace: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {MANAGED_BY: "igniter-opt"}}}


def placement_summary(s: ServerSpec) -> dict[str, Any]:
    """A server's placement as the plan file writes it, with its queue delay (for the export's record)."""
    return {"server": s.name, **placement_to_dict(s.placement), "queue_delay_us": s.queue_delay_us}
