"""igniter-opt export k8s: manifests that validate strictly against the Kubernetes schemas and match the
plan, a plan change in the order apply --diff makes it, the pod's launcher run with stand-ins for
tritonserver and MPS, and every bad input refused with one line, exit code 1 and nothing written."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from igniter_opt.cli import cli
from igniter_opt.export import output as output_module
from igniter_opt.export.gpulabels import gfd_product_label
from igniter_opt.export.names import dns_label
from igniter_opt.export.yamltext import dump, dump_all

# The paper's budget: these commands default to tail since it held live (docs/live-tail.md).
IGNITER = ["--latency-budget", "igniter"]

REPO = Path(__file__).resolve().parents[1]
FAKE_MPS = REPO / "tests" / "fake_gpu" / "fake_mps_control.py"
K8S_VERSION = "1.30"  # every manifest is validated against this Kubernetes version's schemas
H100_LABEL = "NVIDIA-H100-80GB-HBM3"

# Kubernetes' own rules for what the schemas do not check (the API server does): object names,
# label keys and values, container port names (IANA service names).
DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9]|-(?=[a-z0-9]))*$")


# ---- helpers and fixtures ------------------------------------------------------------------------
Plans = dict[str, Path]


def run(args: list[str]) -> Any:
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def solve(tmp: Path, name: str, csv_text: str | None = None) -> Path:
    """A plan made the way a user makes one: igniter-opt solve -o on the shipped H100 profile."""
    out = tmp / f"{name}.json"
    args = ["solve", *IGNITER, "--profile", "h100", "-o", str(out)]
    if csv_text is not None:
        (tmp / f"{name}.csv").write_text(csv_text)
        args += ["--workloads", str(tmp / f"{name}.csv")]
    res = run(args)
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> Plans:
    tmp = tmp_path_factory.mktemp("plans")
    return {
        "paper": solve(tmp, "paper"),  # the paper's 12 workloads: 2 H100s
        # one workload too large for one GPU: split over three GPUs at unequal rates
        "split": solve(tmp, "split", "name,model,slo_ms,rate_rps\n"
                                     "big vgg,vgg19,20,12000\nr50,resnet50,30,600\n"),
    }


def edited(src: Path, dst: Path, edit: Any) -> Path:
    d = json.loads(src.read_text())
    edit(d)
    dst.write_text(json.dumps(d))
    return dst


def docs_of(out: Path) -> list[dict[str, Any]]:
    return [d for f in sorted((out / "manifests").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def configmap_for(docs: list[dict[str, Any]], dep: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"] == dep["metadata"]["name"])


def servers_of(docs: list[dict[str, Any]], dep: dict[str, Any]) -> dict[str, Any]:
    return json.loads(configmap_for(docs, dep)["data"]["servers.json"])


def deployment_of(docs: list[dict[str, Any]], gpu_id: str) -> dict[str, Any]:
    deps = [d for d in of_kind(docs, "Deployment") if plan_gpu(d) == gpu_id]
    assert len(deps) == 1
    return deps[0]


def plan_gpu(obj: dict[str, Any]) -> str:
    return obj["metadata"]["annotations"]["igniter-opt/plan-gpu"]


def share_of_gpu1(share: float, **more: Any) -> Any:
    """An edit of the paper plan: gpu1's only placement (W3) gets another share (and batch)."""
    return lambda d: d["gpus"][1]["placements"][0].update(share=share, **more)


def listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def export(plan: Path, out: Path, *extra: str) -> Any:
    return run(["export", "k8s", str(plan), "-o", str(out), *extra])


def check_kubernetes_rules(doc: dict[str, Any]) -> None:
    """What the API server checks beyond the schemas: names, labels, selectors, port names."""
    meta = doc["metadata"]
    assert DNS_1123_LABEL.match(meta["name"]) and len(meta["name"]) <= 63, meta["name"]
    label_sets = [meta.get("labels", {})]
    if doc["kind"] == "Deployment":
        tmpl = doc["spec"]["template"]
        label_sets += [tmpl["metadata"]["labels"], doc["spec"]["selector"]["matchLabels"]]
        assert doc["spec"]["selector"]["matchLabels"].items() <= tmpl["metadata"]["labels"].items()
        for c in tmpl["spec"]["containers"]:
            for p in c["ports"]:
                assert "name" not in p or (PORT_NAME.match(p["name"]) and len(p["name"]) <= 15), p
    if doc["kind"] == "Service":
        label_sets.append(doc["spec"]["selector"])
        assert DNS_1123_LABEL.match(meta["name"]) and meta["name"][0].isalpha()  # a DNS-1035 label
    for labels in label_sets:
        for k, v in labels.items():
            prefix, _, name = k.rpartition("/")
            assert LABEL_NAME.match(name) and len(name) <= 63, k
            assert not prefix or all(DNS_1123_LABEL.match(x) for x in prefix.split(".")), k
            assert isinstance(v, str) and LABEL_VALUE.match(v) and len(v) <= 63, (k, v)


# ---- validation against the Kubernetes schemas ---------------------------------------------------
def test_every_manifest_validates_strictly(plans: Plans, tmp_path: Path) -> None:
    new = edited(plans["paper"], tmp_path / "new.json", share_of_gpu1(3.0304))
    outs = []
    res = export(plans["paper"], tmp_path / "paper")
    assert res.exit_code == 0, res.output
    outs.append(tmp_path / "paper")
    res = export(plans["split"], tmp_path / "split", "--namespace", "inference",
                 "--model-store", "pvc:models")
    assert res.exit_code == 0, res.output
    outs.append(tmp_path / "split")
    res = run(["export", "k8s", "--diff", str(plans["paper"]), str(new), "-o", str(tmp_path / "diff")])
    assert res.exit_code == 0, res.output
    outs.append(tmp_path / "diff")
    kinds = set()
    for out in outs:
        for doc in docs_of(out):
            assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True) == K8S_VERSION
            if doc["kind"] != "Namespace":
                check_kubernetes_rules(doc)
            kinds.add(doc["kind"])
    assert kinds == {"Namespace", "ConfigMap", "Deployment", "Service"}


def test_strict_validation_rejects_an_unknown_field(plans: Plans, tmp_path: Path) -> None:
    """The check above can fail: one unknown field in a generated pod spec is refused."""
    assert export(plans["paper"], tmp_path / "out").exit_code == 0
    dep = of_kind(docs_of(tmp_path / "out"), "Deployment")[0]
    dep["spec"]["template"]["spec"]["containers"][0]["mpsShare"] = 50
    with pytest.raises(kubernetes_validate.ValidationError, match="mpsShare"):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)


# ---- the manifests against the plan --------------------------------------------------------------
def test_one_whole_gpu_pod_per_plan_gpu_with_one_mps_limited_server_per_placement(
        plans: Plans, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert export(plans["paper"], out).exit_code == 0
    plan = json.loads(plans["paper"].read_text())
    docs = docs_of(out)
    assert len(of_kind(docs, "Deployment")) == len(plan["gpus"]) == 2
    for g in plan["gpus"]:
        dep = deployment_of(docs, g["id"])
        pod = dep["spec"]["template"]["spec"]
        assert dep["spec"]["replicas"] == 1
        assert pod["nodeSelector"] == {"nvidia.com/gpu.product": H100_LABEL}
        [container] = pod["containers"]
        assert container["resources"] == {"limits": {"nvidia.com/gpu": 1}}
        assert container["command"] == ["python3", "/igniter/launch.py", "/igniter/servers.json"]
        cfg = servers_of(docs, dep)
        assert cfg["mps_control"] == ["nvidia-cuda-mps-control"]
        assert len(cfg["servers"]) == len(g["placements"])
        data = configmap_for(docs, dep)["data"]
        [models] = [v for v in pod["volumes"] if v["name"] == "models"]
        items = {i["key"]: i["path"] for i in models["configMap"]["items"]}
        ports = [p["containerPort"] for p in container["ports"]]
        assert len(ports) == len(set(ports)) == 1 + 3 * len(g["placements"])
        for i, (p, s) in enumerate(zip(g["placements"], cfg["servers"], strict=True)):
            assert (s["name"], s["workload"], s["batch"]) == (f"s{i}", p["workload"], p["batch"])
            assert s["share_pct"] == p["share"]  # the server's CUDA_MPS_ACTIVE_THREAD_PERCENTAGE
            flags = dict(a.removeprefix("--").split("=", 1) for a in s["argv"][1:])
            assert s["argv"][0] == "tritonserver"
            assert flags["model-repository"] == f"/models/s{i}"
            assert int(flags["http-port"]) == s["http_port"] and flags["strict-readiness"] == "true"
            # the igniter budget: a batch may wait half the SLO to form; a batch of 1 never waits
            delay_us = math.floor(p["slo_ms"] * 500) if p["batch"] > 1 else 0
            assert s["queue_delay_us"] == delay_us
            config = data[f"s{i}.config.pbtxt"]
            assert f'name: "{p["model"]}"' in config and 'backend: "python"' in config
            assert f"max_batch_size: {p['batch']}" in config
            assert f"max_queue_delay_microseconds: {delay_us}" in config
            assert "from igniter_opt.zoo import ModelRunner" in data[f"s{i}.model.py"]
            assert items[f"s{i}.config.pbtxt"] == f"s{i}/{p['model']}/config.pbtxt"
            assert items[f"s{i}.model.py"] == f"s{i}/{p['model']}/1/model.py"


def test_services_reach_exactly_the_servers_of_their_workload(plans: Plans, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert export(plans["split"], out).exit_code == 0
    plan = json.loads(plans["split"].read_text())
    docs = docs_of(out)
    deps = of_kind(docs, "Deployment")
    for svc in of_kind(docs, "Service"):
        workload = svc["metadata"]["annotations"]["igniter-opt/workload"]
        selector = svc["spec"]["selector"].items()
        selected = [d for d in deps if selector <= d["spec"]["template"]["metadata"]["labels"].items()]
        if "igniter-opt/plan-gpu" in svc["metadata"]["annotations"]:  # a per-server Service
            expected = [plan_gpu(svc)]
        else:
            expected = [g["id"] for g in plan["gpus"]
                        if any(p["workload"] == workload for p in g["placements"])]
        assert sorted(plan_gpu(d) for d in selected) == sorted(expected)
        for dep in selected:  # the named target ports are that workload's server's ports in each pod
            [container] = dep["spec"]["template"]["spec"]["containers"]
            ports = {p.get("name"): p["containerPort"] for p in container["ports"]}
            server = next(s for s in servers_of(docs, dep)["servers"] if s["workload"] == workload)
            by_name = {p["name"]: p for p in svc["spec"]["ports"]}
            assert ports[by_name["http"]["targetPort"]] == server["http_port"]
            assert ports[by_name["grpc"]["targetPort"]] == server["http_port"] + 1
            assert (by_name["grpc"]["port"], by_name["http"]["port"]) == (8001, 8000)


def test_a_split_workload_gets_weighted_per_server_services_and_a_note(plans: Plans,
                                                                      tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = export(plans["split"], out)
    assert res.exit_code == 0, res.output
    plan = json.loads(plans["split"].read_text())
    rates = [p["rate_rps"] for g in plan["gpus"] for p in g["placements"] if p["workload"] == "big vgg"]
    assert len(rates) == 3 and len(set(rates)) == 2
    services = {s["metadata"]["name"]: s for s in of_kind(docs_of(out), "Service")}
    assert sorted(services) == ["big-vgg", "big-vgg-gpu0", "big-vgg-gpu1", "big-vgg-gpu2", "r50"]
    weights = [int(services[f"big-vgg-gpu{i}"]["metadata"]["annotations"]["igniter-opt/weight"])
               for i in range(3)]
    assert weights == [round(r) for r in rates]
    split = "/".join(f"{r:g}" for r in rates)
    assert res.output.splitlines() == [
        f"verified: {plans['split']} meets every limit and rate under profile 'h100'",
        "names: workload 'big vgg' -> 'big-vgg'",
        f"wrote {out}/: 3 GPU pod(s) (nvidia.com/gpu.product={H100_LABEL}), 5 Service(s), steps.sh, "
        "DEPLOY.md, export.json",
        f"note: workload 'big vgg': 3 servers at unequal rates ({split} req/s): the Service spreads "
        "connections evenly; route by the weights of the per-server Services (big-vgg-gpu0, big-vgg-gpu1, "
        "big-vgg-gpu2); see DEPLOY.md",
        f"deploy: bash {out}/steps.sh",
    ]


def test_a_fleet_plan_selects_each_gpus_type(plans: Plans, tmp_path: Path) -> None:
    fleet = edited(plans["paper"], tmp_path / "fleet.json",
                   lambda d: d["gpus"][1].update(type="NVIDIA A100-SXM4-80GB"))
    assert export(fleet, tmp_path / "out").exit_code == 0
    docs = docs_of(tmp_path / "out")
    selectors = {g: deployment_of(docs, g)["spec"]["template"]["spec"]["nodeSelector"]
                 for g in ("gpu0", "gpu1")}
    assert selectors == {"gpu0": {"nvidia.com/gpu.product": H100_LABEL},
                         "gpu1": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}}


def test_gpu_feature_discovery_product_labels() -> None:
    assert gfd_product_label("NVIDIA H100 80GB HBM3") == "NVIDIA-H100-80GB-HBM3"
    assert gfd_product_label("Tesla V100-SXM2-16GB") == "Tesla-V100-SXM2-16GB"
    assert gfd_product_label("NVIDIA GeForce RTX 3090  Ti") == "NVIDIA-GeForce-RTX-3090-Ti"
    assert gfd_product_label("NVIDIA RTX A6000 (beta)") == "NVIDIA-RTX-A6000-beta"


def test_a_volume_model_store_writes_the_repositories_for_the_claim(plans: Plans,
                                                                    tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert export(plans["paper"], out, "--model-store", "pvc:triton-models").exit_code == 0
    docs = docs_of(out)
    for dep in of_kind(docs, "Deployment"):
        name = dep["metadata"]["name"]
        pod = dep["spec"]["template"]["spec"]
        models = next(v for v in pod["volumes"] if v["name"] == "models")
        claim = {"claimName": "triton-models", "readOnly": True}
        assert models == {"name": "models", "persistentVolumeClaim": claim}
        mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "models")
        assert mount == {"name": "models", "mountPath": "/models", "readOnly": True, "subPath": name}
        assert sorted(configmap_for(docs, dep)["data"]) == ["launch.py", "servers.json"]
        for s in servers_of(docs, dep)["servers"]:
            config = (out / "model-repository" / name / s["name"] / s["model"] / "config.pbtxt").read_text()
            assert f"max_batch_size: {s['batch']}" in config
            assert (out / "model-repository" / name / s["name"] / s["model"] / "1" / "model.py").is_file()


def test_the_same_plan_exports_the_same_files(plans: Plans, tmp_path: Path) -> None:
    assert export(plans["paper"], tmp_path / "a").exit_code == 0
    assert export(plans["paper"], tmp_path / "b").exit_code == 0
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    for f in files:
        expected = (tmp_path / "a" / f).read_text().replace(str(tmp_path / "a"), "")
        assert (tmp_path / "b" / f).read_text().replace(str(tmp_path / "b"), "") == expected, f
    assert os.access(tmp_path / "a" / "steps.sh", os.X_OK)
    assert subprocess.run(["bash", "-n", str(tmp_path / "a" / "steps.sh")], check=False).returncode == 0


# ---- plan changes ----------------------------------------------------------------------------------
def steps_commands(out: Path) -> list[str]:
    return [line for line in (out / "steps.sh").read_text().splitlines() if line.startswith("kubectl ")]


def test_diff_starts_new_servers_first_then_switches_then_deletes_the_old(plans: Plans,
                                                                         tmp_path: Path) -> None:
    # W2 on gpu0 gets another share: gpu0's pod is replaced (its other placements restart in the new
    # pod); gpu1 is untouched; W3 disappears.
    def change(d: dict[str, Any]) -> None:
        d["gpus"][0]["placements"] = [dict(p, share=4.5456) if p["workload"] == "W2" else p
                                      for p in d["gpus"][0]["placements"]]
        d["gpus"] = d["gpus"][:1]

    new = edited(plans["paper"], tmp_path / "new.json", change)
    out = tmp_path / "out"
    res = run(["export", "k8s", "--diff", str(plans["paper"]), str(new), "-o", str(out),
               "--namespace", "prod"])
    assert res.exit_code == 0, res.output
    record = json.loads((out / "export.json").read_text())
    old_out = tmp_path / "old"
    assert export(plans["paper"], old_out, "--namespace", "prod").exit_code == 0
    old_record = json.loads((old_out / "export.json").read_text())
    old_deps = {g["plan_gpu"]: g["deployment"] for g in old_record["gpus"]}
    [new_gpu0] = record["gpus"]
    assert new_gpu0["deployment"] != old_deps["gpu0"]
    assert record["change"]["pods"] == {"started": [new_gpu0["deployment"]], "kept": [],
                                        "deleted": [old_deps["gpu0"], old_deps["gpu1"]]}
    kept_on_gpu0 = [p["workload"] for p in json.loads(plans["paper"].read_text())["gpus"][0]["placements"]
                    if p["workload"] != "W2"]
    assert record["change"]["kept_but_restarted"] == kept_on_gpu0
    selector = (f"'app.kubernetes.io/instance=igniter,app.kubernetes.io/component=gpu-server,"
                f"igniter-opt/revision notin ({new_gpu0['revision']})'")
    services = sorted(s for s in record["services"])
    assert steps_commands(out) == [
        "kubectl apply -f manifests/00-namespace.yaml",
        f"kubectl apply -f manifests/10-{new_gpu0['deployment']}.yaml",
        f"kubectl rollout status deployment/{new_gpu0['deployment']} -n prod --timeout=900s",
        "kubectl apply -f manifests/20-services.yaml",
        f"kubectl label pods -n prod -l {selector} igniter-opt/serving=false --overwrite",
        f"kubectl delete deployments,configmaps -n prod -l {selector} --cascade=foreground --wait=true",
        "kubectl delete services -n prod -l 'app.kubernetes.io/instance=igniter,app.kubernetes.io/component="
        f"workload-service,igniter-opt/service notin ({','.join(services)})'",
    ]
    assert "w3" not in services and len(services) == 11
    assert res.output.splitlines()[-3:] == [
        "change: GPU pods 1 started, 0 kept, 2 deleted; placements 10 kept, 1 resized, 1 stopped",
        f"note: kept placement(s) {', '.join(kept_on_gpu0)} restart in their GPU's new pod",
        f"deploy: bash {out}/steps.sh",
    ]
    # the old pods' selector keeps the new pod and catches the old ones
    revisions = shlex.split(selector)[0].split("notin ")[1].strip("()").split(",")
    assert revisions == [new_gpu0["revision"]]
    assert old_record["gpus"][0]["revision"] not in revisions


def test_diff_keeps_an_unchanged_gpu_pod(plans: Plans, tmp_path: Path) -> None:
    new = edited(plans["paper"], tmp_path / "new.json", share_of_gpu1(3.0304))
    out = tmp_path / "out"
    assert run(["export", "k8s", "--diff", str(plans["paper"]), str(new), "-o", str(out)]).exit_code == 0
    record = json.loads((out / "export.json").read_text())
    gpu0, gpu1 = record["gpus"]
    assert record["change"]["pods"]["kept"] == [gpu0["deployment"]]
    assert record["change"]["pods"]["started"] == [gpu1["deployment"]]
    assert record["change"]["placements"]["summary"]["resized"] == 1
    cmds = steps_commands(out)
    assert f"kubectl apply -f manifests/10-{gpu1['deployment']}.yaml" in cmds
    assert not any(gpu0["deployment"] in c for c in cmds)  # the kept pod is neither applied nor waited for
    assert (out / "manifests" / f"10-{gpu0['deployment']}.yaml").is_file()  # but the manifests are complete
    # the old pods' selector spares both of the new plan's pods, the kept one included
    label = next(c for c in cmds if c.startswith("kubectl label pods"))
    assert f"igniter-opt/revision notin ({','.join(sorted([gpu0['revision'], gpu1['revision']]))})'" in label


def test_a_plain_export_deploys_then_removes_what_an_earlier_plan_left(plans: Plans, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert export(plans["paper"], out).exit_code == 0
    record = json.loads((out / "export.json").read_text())
    deps = [g["deployment"] for g in record["gpus"]]
    revisions = ",".join(sorted(g["revision"] for g in record["gpus"]))
    old_pods = (f"'app.kubernetes.io/instance=igniter,app.kubernetes.io/component=gpu-server,"
                f"igniter-opt/revision notin ({revisions})'")
    services = ",".join(sorted(record["services"]))
    assert steps_commands(out) == [
        *(f"kubectl apply -f manifests/10-{d}.yaml" for d in deps),
        *(f"kubectl rollout status deployment/{d} --timeout=900s" for d in deps),
        "kubectl apply -f manifests/20-services.yaml",
        f"kubectl label pods -l {old_pods} igniter-opt/serving=false --overwrite",
        f"kubectl delete deployments,configmaps -l {old_pods} --cascade=foreground --wait=true",
        "kubectl delete services -l 'app.kubernetes.io/instance=igniter,app.kubernetes.io/component="
        f"workload-service,igniter-opt/service notin ({services})'",
    ]


# ---- the launcher, run with stand-ins for tritonserver and MPS -----------------------------------
FAKE_TRITON = '''
import http.server, json, os, signal, sys, threading
port = int(next(a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--http-port=")))
with open(os.path.join(os.environ["FAKE_RECORD_DIR"], f"{port}.json"), "w") as fh:
    json.dump({"argv": sys.argv[1:], "pid": os.getpid(),
               "share": os.environ.get("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"),
               "pipe": os.environ.get("CUDA_MPS_PIPE_DIRECTORY")}, fh)
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/v2/health/ready" else 404)
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", port), Health)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
if os.environ.get("FAKE_CRASH_PORT") == str(port):
    threading.Timer(0.5, lambda: os._exit(3)).start()
print("serving", flush=True)
server.serve_forever()
'''


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture()
def pod_config(plans: Plans, tmp_path: Path) -> tuple[Path, dict[str, Any], Path]:
    """gpu0's exported servers.json and launch.py, with every server's binary replaced by the stand-in."""
    out = tmp_path / "out"
    assert export(plans["paper"], out).exit_code == 0
    docs = docs_of(out)
    dep = deployment_of(docs, "gpu0")
    cfg = servers_of(docs, dep)
    (tmp_path / "fake_triton.py").write_text(FAKE_TRITON)
    ports = free_ports(len(cfg["servers"]) + 1)
    for s, port in zip(cfg["servers"], ports, strict=False):
        s["argv"] = [sys.executable, str(tmp_path / "fake_triton.py"), f"--http-port={port}",
                     *[a for a in s["argv"][1:] if not a.startswith("--http-port=")]]
        s["http_port"] = port
    cfg.update(mps_control=[sys.executable, str(FAKE_MPS)], mps_pipe_dir=str(tmp_path / "mps" / "pipe"),
               mps_log_dir=str(tmp_path / "mps" / "log"), ready_port=ports[-1], stop_timeout_s=5)
    path = tmp_path / "servers.json"
    path.write_text(json.dumps(cfg))
    launch = tmp_path / "launch.py"
    launch.write_text(configmap_for(docs, dep)["data"]["launch.py"])
    (tmp_path / "rec").mkdir()
    return path, cfg, launch


def start_launcher(path: Path, launch: Path, tmp: Path, **env: str) -> subprocess.Popen[str]:
    full = {**os.environ, "FAKE_RECORD_DIR": str(tmp / "rec"), "FAKE_MPS_LOG": str(tmp / "mps.log"), **env}
    return subprocess.Popen([sys.executable, str(launch), str(path)], env=full, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def ready_status(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_launcher_runs_mps_and_every_server_with_its_share(pod_config: Any, tmp_path: Path) -> None:
    path, cfg, launch = pod_config
    proc = start_launcher(path, launch, tmp_path)
    try:
        deadline = time.monotonic() + 30
        while ready_status(cfg["ready_port"]) != 200:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
            time.sleep(0.2)
        assert (tmp_path / "mps" / "pipe" / "control").exists()  # MPS started before the servers
        records = {s["name"]: json.loads((tmp_path / "rec" / f"{s['http_port']}.json").read_text())
                   for s in cfg["servers"]}
        for s in cfg["servers"]:
            r = records[s["name"]]
            assert float(r["share"]) == pytest.approx(s["share_pct"], abs=1e-9)
            assert r["pipe"] == cfg["mps_pipe_dir"]
            assert f"--model-repository=/models/{s['name']}" in r["argv"]
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert "[launcher] SIGTERM: stopping every server" in output
    assert "[s0] serving" in output  # each server's output relayed with its name
    assert (tmp_path / "mps.log").read_text() == "quit\n"
    assert all(gone(r["pid"]) for r in records.values())


def test_launcher_stops_everything_when_a_server_dies(pod_config: Any, tmp_path: Path) -> None:
    path, cfg, launch = pod_config
    proc = start_launcher(path, launch, tmp_path, FAKE_CRASH_PORT=str(cfg["servers"][1]["http_port"]))
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, output
    workload = cfg["servers"][1]["workload"]
    assert f"[launcher] s1 (workload {workload}) exited with code 3; stopping the others" in output
    assert (tmp_path / "mps.log").read_text() == "quit\n"
    pids = [json.loads(f.read_text())["pid"] for f in (tmp_path / "rec").iterdir()]
    assert len(pids) == len(cfg["servers"]) and all(gone(p) for p in pids)


def test_launcher_starts_no_server_when_mps_fails(pod_config: Any, tmp_path: Path) -> None:
    path, _, launch = pod_config
    proc = start_launcher(path, launch, tmp_path, FAKE_MPS_FAIL="1")
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert ("[launcher] error: MPS control daemon failed to start (exit 1): An instance of this daemon is "
            "already running") in output
    assert list((tmp_path / "rec").iterdir()) == []


# ---- bad input: one line, exit code 1, nothing written --------------------------------------------
def refused(res: Any, message: str, out: Path) -> None:
    assert (res.exit_code, res.output) == (1, f"Error: {message}\n")
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]  # no temporary folder


def test_a_plan_that_fails_verification_is_refused_unless_allowed(plans: Plans, tmp_path: Path) -> None:
    bad = edited(plans["paper"], tmp_path / "bad.json", share_of_gpu1(0.5, batch=32))
    out = tmp_path / "out"
    res = export(bad, out)
    first = r"W3 on gpu1: predicted \d+\.\d{3} ms > limit 10\.000 ms \(\+1 more\)"
    assert res.exit_code == 1
    failed = rf"{re.escape(str(bad))} fails verification under profile 'h100': {first}"
    assert re.fullmatch(rf"Error: {failed}; fix the plan, or pass --allow-unverified to export it anyway\n",
                        res.output), res.output
    refused(res, res.output.removeprefix("Error: ").rstrip("\n"), out)
    res = export(bad, out, "--allow-unverified")
    assert res.exit_code == 0, res.output
    warning = res.output.splitlines()[0]
    assert re.fullmatch(rf"warning: {failed}; exported anyway \(--allow-unverified\)", warning)
    assert json.loads((out / "export.json").read_text())["verification"]["ok"] is False


def test_a_plan_that_cannot_be_verified_is_refused_unless_a_profile_is_given(plans: Plans,
                                                                             tmp_path: Path) -> None:
    nameless = edited(plans["paper"], tmp_path / "p.json", lambda d: d.update(profile=""))
    out = tmp_path / "out"
    refused(export(nameless, out), f"{nameless}: cannot verify the plan (the plan names no profile to "
                                   "verify it with; pass --profile); pass --profile, or --allow-unverified "
                                   "to export it unverified", out)
    res = export(nameless, out, "--profile", "h100")
    assert res.exit_code == 0 and res.output.startswith(f"verified: {nameless} meets every limit")


def test_names_that_are_not_kubernetes_names_are_mapped_and_printed(plans: Plans, tmp_path: Path) -> None:
    odd = "9 Überlange Workload Name, mit Sonderzeichen (v2) und mehr"

    def rename(d: dict[str, Any]) -> None:
        d["gpus"][0]["id"] = "GPU_0"
        d["gpus"][0]["placements"][0]["workload"] = odd

    plan = edited(plans["paper"], tmp_path / "p.json", rename)
    res = export(plan, tmp_path / "out")
    assert res.exit_code == 0, res.output
    long_name = dns_label(odd, max_len=40, lead="w")
    assert re.fullmatch(r"w-9-berlange-workload-name-mit-so-[0-9a-f]{6}", long_name)
    lines = res.output.splitlines()
    others = ", ".join(f"'W{i}' -> 'w{i}'" for i in (7, 8, 10, 5, 4, 9, 1, 6, 11, 2, 3))
    assert lines[1] == f"names: workload '{odd}' -> '{long_name}', {others}"
    assert lines[2] == "names: GPU 'GPU_0' -> 'gpu-0'"
    services = [s["metadata"]["name"] for s in of_kind(docs_of(tmp_path / "out"), "Service")]
    assert long_name in services


def test_two_names_that_become_one_kubernetes_name_are_refused(plans: Plans, tmp_path: Path) -> None:
    plan = edited(plans["paper"], tmp_path / "p.json",
                  lambda d: d["gpus"][1]["placements"][0].update(workload="w1"))
    out = tmp_path / "out"
    refused(export(plan, out, "--allow-unverified"),
            "workloads 'W1' and 'w1' both become the Kubernetes name 'w1'; rename one of them in the plan",
            out)


def test_a_gpu_type_without_a_known_label_needs_gpu_label(plans: Plans, tmp_path: Path) -> None:
    plan = edited(plans["paper"], tmp_path / "p.json", lambda d: [g.update(type="h100") for g in d["gpus"]])
    out = tmp_path / "out"
    refused(export(plan, out), "GPU type 'h100' (plan GPU gpu0) has no known nvidia.com/gpu.product label; "
                               "pass --gpu-label 'h100=<label>' with the value on its nodes (kubectl get "
                               "nodes -L nvidia.com/gpu.product)", out)
    refused(export(plan, out, "--gpu-label", "H100=NVIDIA-H100-80GB-HBM3"),
            "--gpu-label names GPU type 'H100', which the plan does not use; its GPU types: 'h100'", out)
    refused(export(plan, out, "--gpu-label", "h100=NVIDIA H100"),
            "--gpu-label 'h100=NVIDIA H100': 'NVIDIA H100' is not a valid label value (at most 63 letters, "
            "digits, '-', '_' and '.', alphanumeric at both ends)", out)
    res = export(plan, out, "--gpu-label", f"h100={H100_LABEL}")
    assert res.exit_code == 0, res.output
    for dep in of_kind(docs_of(out), "Deployment"):
        assert dep["spec"]["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": H100_LABEL}


def test_bad_options_are_refused(plans: Plans, tmp_path: Path) -> None:
    out = tmp_path / "out"
    refused(export(plans["paper"], out, "--name", "My_Plan"),
            "--name 'My_Plan' is not a valid prefix: use at most 20 lowercase letters, digits and '-', "
            "starting with a letter (e.g. my-plan)", out)
    refused(export(plans["paper"], out, "--namespace", "Prod"),
            "--namespace 'Prod' is not a valid namespace name: use at most 63 lowercase letters, digits and "
            "'-', alphanumeric at both ends (e.g. prod)", out)
    refused(export(plans["paper"], out, "--model-store", "s3://bucket"),
            "--model-store 's3://bucket': use 'configmap' or 'pvc:CLAIM' (an existing PersistentVolumeClaim "
            "named by a DNS label, e.g. pvc:triton-models)", out)
    res = run(["export", "k8s", "-o", str(out)])
    assert res.exit_code == 2 and "give either PLAN.json or --diff OLD.json NEW.json" in res.output


def test_an_output_folder_that_is_not_empty_is_refused_unless_forced(plans: Plans,
                                                                     tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    res = export(plans["paper"], out)
    assert (res.exit_code, res.output) == (1, f"Error: -o {out}: the folder exists and is not empty; pass "
                                              "--force to replace an earlier export, or choose another "
                                              "folder\n")
    res = export(plans["paper"], out, "--force")
    assert (res.exit_code, res.output) == (1, f"Error: -o {out}: the folder holds no earlier export "
                                              "(export.json), so --force will not replace it; choose another "
                                              "folder\n")
    assert listing(out) == ["mine.txt"]
    # an earlier export is replaced whole: nothing of it is left
    (out / "mine.txt").unlink()
    assert export(plans["split"], out).exit_code == 0
    split_files = listing(out / "manifests")
    assert export(plans["paper"], out).exit_code == 1
    assert export(plans["paper"], out, "--force").exit_code == 0
    assert not set(split_files) & set(listing(out / "manifests")) - {"20-services.yaml"}
    assert listing(tmp_path) == ["out"]
    blocker = tmp_path / "file"
    blocker.write_text("")
    res = export(plans["paper"], blocker)
    assert (res.exit_code, res.output) == (1, f"Error: -o {blocker}: a file is in the way; choose a folder\n")


def test_a_failure_while_writing_leaves_the_earlier_export_as_it_was(plans: Plans, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    assert export(plans["split"], out).exit_code == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    written: list[Path] = []
    real = output_module.atomic_write_text

    def failing(path: Any, text: str) -> Path:
        if len(written) == 3:
            raise OSError(28, "No space left on device")
        written.append(Path(path))
        return real(path, text)

    monkeypatch.setattr(output_module, "atomic_write_text", failing)
    with pytest.raises(OSError, match="No space left"):
        CliRunner().invoke(cli, ["export", "k8s", str(plans["paper"]), "-o", str(out), "--force"],
                           catch_exceptions=False)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert listing(tmp_path) == ["out"]  # neither the half-written folder nor the set-aside one is left


@pytest.mark.parametrize("module", ["services", "steps", "deploydoc"])
def test_every_export_module_imports_first(module: str) -> None:
    """No circular import within igniter_opt.export, whichever module is imported first."""
    res = subprocess.run([sys.executable, "-c", f"import igniter_opt.export.{module}"], capture_output=True,
                         text=True, check=False)
    assert res.returncode == 0, res.stderr


# ---- the YAML writer -----------------------------------------------------------------------------
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
_lines = st.lists(st.sampled_from(["", " ", "  x", "a: b", "- c", "#d", "\t", "é", '"q"', "'", "|", "---"]),
                  max_size=6).map("\n".join)
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                     st.floats(allow_nan=False, allow_infinity=False), _text, _lines,
                     st.sampled_from(["yes", "No", "on", "null", "~", "1e3", "0x1f", "2024-01-01", "-",
                                      "a/b.c", "true", "1e-05", "\x85", "\u2028"]))
_documents = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                             st.dictionaries(_text, inner, max_size=4)),
                          max_leaves=20)


def test_a_key_ending_in_a_newline_is_quoted() -> None:
    """A regex's "$" matches before a final newline: such a key must not be written plain."""
    assert yaml.safe_load(dump({"A\n": None, "": None})) == {"A\n": None, "": None}


@settings(max_examples=300, deadline=None)
@given(_documents)
def test_yaml_text_reads_back_as_what_was_written(doc: Any) -> None:
    assert yaml.safe_load(dump(doc)) == doc
    assert list(yaml.safe_load_all(dump_all([doc, {"k": doc}]))) == [doc, {"k": doc}]


def test_yaml_text_keeps_multiline_strings_readable() -> None:
    text = dump({"data": {"config.pbtxt": 'name: "x"\nmax_batch_size: 8\n'}})
    assert text == 'data:\n  config.pbtxt: |\n    name: "x"\n    max_batch_size: 8\n'
