"""The executor without a server: configs, ports, plan-to-process mapping, dry run, failure handling."""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import socket
import stat
import time
from dataclasses import replace
from pathlib import Path

import pytest
from _procs import live_processes
from click.testing import CliRunner
from fakes import FakeBehaviour, FakeLauncher, FakeMps

from igniter_opt.apply import deploy, run, serverstats
from igniter_opt.apply.deploy import build_deployment, check_plan
from igniter_opt.apply.gpus import GpuInfo, parse_gpu_map, resolve_gpus
from igniter_opt.apply.launcher import LaunchMode, ServerSpec, make_launcher
from igniter_opt.apply.loadgen import StreamSpec, arrival_times, split_streams
from igniter_opt.apply.models import BUILTIN_MODELS, served_model
from igniter_opt.apply.options import ApplyOptions
from igniter_opt.apply.ports import allocate_ports, port_is_free
from igniter_opt.apply.report import WorkloadTarget, percentile, summarize
from igniter_opt.apply.repository import batch_formation_budget_ms, model_config_for, model_py_for
from igniter_opt.apply.run import apply_plan
from igniter_opt.apply.triton import (
    TritonInstall,
    TritonServerConfig,
    find_tritonserver,
    prepare_backend_dir,
    server_environment,
)
from igniter_opt.cli import cli
from igniter_opt.domain import GpuAssignment, LatencyBudget, Placement, Plan, Prediction
from igniter_opt.errors import ApplyError
from igniter_opt.planio import write_plan

UUID0 = "GPU-00000000-0000-0000-0000-000000000000"
UUID1 = "GPU-11111111-1111-1111-1111-111111111111"
H100 = "NVIDIA H100 80GB HBM3"  # the shipped H100 profile's GPU name, as NVML gives it
MACHINE = [GpuInfo(0, UUID0, H100), GpuInfo(1, UUID1, H100)]


def placement(workload: str = "W1", model: str = "resnet50", *, batch: int = 4, share: float = 50.0,
              slo: float = 40.0, rate: float = 200.0, pred: float | None = 12.0) -> Placement:
    return Placement(workload, model, slo, rate, batch, share,
                     None if pred is None else Prediction(pred, 1000.0 * batch / pred))


def make_plan(*gpus: tuple[Placement, ...], budget: str = "igniter", margin: float | None = None) -> Plan:
    return Plan(profile="h100", planner="greedy", latency_budget=budget, margin=margin,
                gpus=tuple(GpuAssignment(f"gpu{i}", "H100", ps) for i, ps in enumerate(gpus)))


@pytest.fixture()
def fake_server(tmp_path: Path) -> Path:
    """An executable that stands in for tritonserver where nothing is started (dry run, fakes)."""
    p = tmp_path / "bin" / "tritonserver"
    p.parent.mkdir()
    p.write_text("#!/bin/sh\nexit 3\n")
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return p


@pytest.fixture()
def machine(monkeypatch: pytest.MonkeyPatch) -> list[GpuInfo]:
    monkeypatch.setattr(deploy, "nvml_gpus", lambda: MACHINE)
    return MACHINE


# ---- configuration -----------------------------------------------------------------------------
def test_batch_formation_budget() -> None:
    p = placement(batch=4, slo=40.0, rate=200.0, pred=12.0)
    assert batch_formation_budget_ms(p, LatencyBudget.IGNITER) == 20.0
    # full: SLO (1 - margin) - t_inf with the predicted t_inf
    assert batch_formation_budget_ms(p, LatencyBudget.FULL, 0.1) == pytest.approx(36.0 - 12.0)
    # without a prediction: the budget's own limit leaves (b - 1) / R = 15 ms
    p2 = placement(batch=4, slo=40.0, rate=200.0, pred=None)
    assert batch_formation_budget_ms(p2, LatencyBudget.FULL, 0.1) == pytest.approx(15.0)
    # clamped: never negative, a batch of 1 never waits
    assert batch_formation_budget_ms(placement(pred=50.0), LatencyBudget.FULL, 0.1) == 0.0
    assert batch_formation_budget_ms(placement(batch=1), LatencyBudget.IGNITER) == 0.0


def test_config_pbtxt_exact() -> None:
    cfg = model_config_for(placement(batch=4, slo=40.0), served_model("resnet50"), LatencyBudget.IGNITER)
    assert cfg.render() == (
        'name: "resnet50"\n'
        'backend: "python"\n'
        "max_batch_size: 4\n"
        "input [\n"
        '  { name: "input" data_type: TYPE_FP16 dims: [ 3, 224, 224 ] }\n'
        "]\n"
        "output [\n"
        '  { name: "logits" data_type: TYPE_FP16 dims: [ 1000 ] }\n'
        "]\n"
        "dynamic_batching {\n"
        "  preferred_batch_size: [ 4 ]\n"
        "  max_queue_delay_microseconds: 20000\n"
        "}\n"
        "instance_group [ { kind: KIND_GPU count: 1 } ]\n"
        'parameters: { key: "graph_batches" value: { string_value: "4" } }\n'
        'parameters: { key: "torch_threads" value: { string_value: "1" } }\n'
        'parameters: { key: "output_device" value: { string_value: "cpu" } }\n'
    )
    ssd = model_config_for(
        placement(model="ssd", batch=2), served_model("ssd"), LatencyBudget.IGNITER
    ).render()
    assert '{ name: "cls_logits" data_type: TYPE_FP16 dims: [ 8732, 91 ] }' in ssd
    bert = model_config_for(
        placement(model="bert_base"), served_model("bert_base"), LatencyBudget.IGNITER
    ).render()
    assert '{ name: "input_ids" data_type: TYPE_INT64 dims: [ 128 ] }' in bert


def test_model_py_imports_zoo_lazily_and_keeps_numpy_out() -> None:
    cfg = model_config_for(placement(), served_model("resnet50"), LatencyBudget.IGNITER)
    src = model_py_for(cfg, echo=False, site_dirs=["/x/site-packages"])
    compile(src, "model.py", "exec")
    head, _, body = src.partition("def initialize")
    assert "igniter_opt" not in head and "torch" not in head.replace("torch is", "")
    assert "from igniter_opt.zoo import ModelRunner" in body
    assert "to_dlpack()" in body and "Tensor.from_dlpack" in body
    assert "numpy" not in src and "as_numpy" not in src
    assert "SITE_DIRS = ['/x/site-packages']" in src
    echo = model_py_for(model_config_for(placement(), served_model("x", echo=True), LatencyBudget.IGNITER,
                                         echo_ms=2), echo=True, site_dirs=[])
    compile(echo, "model.py", "exec")
    assert "numpy" not in echo and "Tensor.from_dlpack" in echo


def test_unknown_model_lists_the_zoo() -> None:
    with pytest.raises(
        ApplyError, match=r"model 'yolo' is not in the model zoo .*alexnet.*; plan only zoo models"
    ):
        served_model("yolo")
    assert set(BUILTIN_MODELS) == {"alexnet", "resnet50", "vgg19", "ssd", "vit_b_16", "bert_base"}


def test_server_config_whitelists_and_renders_in_order() -> None:
    c = TritonServerConfig().update({"grpc-port": 2, "model-repository": "/r", "strict-readiness": True})
    assert c.to_argv("/bin/ts") == [
        "/bin/ts",
        "--model-repository=/r",
        "--grpc-port=2",
        "--strict-readiness=true",
    ]
    with pytest.raises(ApplyError, match="--model-store is not supported"):
        c["model-store"] = "/x"


# ---- finding the server ------------------------------------------------------------------------
def _fake_wheel(root: Path) -> Path:
    ts = root / "pytriton" / "tritonserver"
    (ts / "bin").mkdir(parents=True)
    (ts / "bin" / "tritonserver").write_text("#!/bin/sh\n")
    (ts / "bin" / "tritonserver").chmod(0o755)
    (ts / "backends" / "python").mkdir(parents=True)
    (ts / "backends" / "python" / "libtriton_python.so").write_text("so")
    (ts / "backends" / "python" / "triton_python_backend_utils.py").write_text("# utils")
    for v in ("3.11", "3.12"):
        (ts / "python_backend_stubs" / v).mkdir(parents=True)
        (ts / "python_backend_stubs" / v / "triton_python_backend_stub").write_text(f"stub {v}")
    (root / "nvidia_pytriton.libs").mkdir()
    return ts / "bin" / "tritonserver"


def test_find_tritonserver_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = _fake_wheel(tmp_path / "site")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr("igniter_opt.apply.triton._pytriton_root", lambda: tmp_path / "site" / "pytriton")
    inst = find_tritonserver()
    assert inst.source == "wheel" and inst.binary == binary
    assert inst.lib_dirs == (tmp_path / "site" / "nvidia_pytriton.libs",)
    assert (
        inst.stub_for("3.12")
        == binary.parent.parent / "python_backend_stubs" / "3.12" / "triton_python_backend_stub"
    )
    monkeypatch.setenv("PATH", str(binary.parent))
    assert find_tritonserver().source == "path"
    assert find_tritonserver(binary).source == "option"
    with pytest.raises(ApplyError, match=r"--tritonserver .*nope: no such executable file"):
        find_tritonserver(tmp_path / "nope")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr("igniter_opt.apply.triton._pytriton_root", lambda: None)
    with pytest.raises(
        ApplyError, match=r"^tritonserver not found: pass --tritonserver PATH, .*nvidia-pytriton==0.7.0"
    ):
        find_tritonserver()


def test_backend_dir_and_environment(tmp_path: Path) -> None:
    inst = TritonInstall(
        binary=_fake_wheel(tmp_path / "site"),
        python_backend=tmp_path / "site/pytriton/tritonserver/backends/python",
        stubs=tmp_path / "site/pytriton/tritonserver/python_backend_stubs",
        lib_dirs=(tmp_path / "site/nvidia_pytriton.libs",),
    )
    d = prepare_backend_dir(inst, tmp_path / "be", "3.12")
    assert sorted(p.name for p in (d / "python").iterdir()) == [
        "libtriton_python.so", "triton_python_backend_stub", "triton_python_backend_utils.py"]
    assert (d / "python" / "triton_python_backend_stub").read_text() == "stub 3.12"
    with pytest.raises(ApplyError, match="no triton_python_backend_stub for Python 3.7"):
        prepare_backend_dir(inst, tmp_path / "be2", "3.7")
    env = server_environment(inst, {"LD_LIBRARY_PATH": "/old", "HOME": "/h"})
    parts = env["LD_LIBRARY_PATH"].split(os.pathsep)
    assert (
        parts[0] == str(tmp_path / "site/nvidia_pytriton.libs")
        and parts[-1] == "/old"
        and env["HOME"] == "/h"
    )


# ---- ports -------------------------------------------------------------------------------------
def test_allocate_ports_distinct_and_free() -> None:
    ports = allocate_ports(4)
    flat = [p for sp in ports for p in sp.as_tuple()]
    assert len(flat) == 12 == len(set(flat))
    assert all(port_is_free(p) for p in flat)


def test_base_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        if busy > 65000:
            pytest.skip("kernel picked a port too high to test a base port below it")
        base = busy - 1
        for p in range(base, base + 6):  # the test needs the others free
            if p != busy and not port_is_free(p):
                pytest.skip("neighbouring port in use")
        with pytest.raises(ApplyError, match=rf"^port {busy} on 127.0.0.1 is in use; .*--base-port"):
            allocate_ports(2, base)
    assert [sp.as_tuple() for sp in allocate_ports(1, base)] == [(base, base + 1, base + 2)]


# ---- plan -> processes -------------------------------------------------------------------------
def test_plan_to_process_mapping(tmp_path: Path, fake_server: Path) -> None:
    plan = make_plan(
        (placement("W1", batch=4, share=30), placement("W2", "vgg19", batch=2, share=70, rate=450.0)),
        (placement("W1", batch=4, share=25, rate=100.0),),
    )
    mps = FakeMps()
    dep = build_deployment(
        plan,
        ApplyOptions(
            out_dir=tmp_path / "out",
            tritonserver=str(fake_server),
            duration_s=10,
            gpus=f"gpu1={UUID0},gpu0=1",
        ),
        machine_gpus=MACHINE,
        mps=mps,
        base_env={"CUDA_VISIBLE_DEVICES": "7", "X": "1"},
    )
    assert [s.spec.name for s in dep.servers] == ["s0-gpu0-W1", "s1-gpu0-W2", "s2-gpu1-W1"]
    s0, s1, s2 = dep.servers
    assert s0.spec.env["CUDA_VISIBLE_DEVICES"] == UUID1 and s2.spec.env["CUDA_VISIBLE_DEVICES"] == UUID0
    assert [s.spec.env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] for s in dep.servers] == ["30", "70", "25"]
    assert s0.spec.env["X"] == "1"
    ports = [p for s in dep.servers for p in s.spec.ports.as_tuple()]
    assert len(set(ports)) == 9
    assert f"--grpc-port={s1.spec.ports.grpc}" in s1.spec.argv and "--grpc-address=127.0.0.1" in s1.spec.argv
    assert f"--model-repository={tmp_path / 'out' / 'repository' / 's1-gpu0-W2'}" in s1.spec.argv
    # 450 req/s is more than one process keeps: three streams of 150, phase-shifted
    w2 = [st for st in dep.streams if st.workload == "W2"]
    assert [st.stream for st in w2] == ["s1-gpu0-W2.0", "s1-gpu0-W2.1", "s1-gpu0-W2.2"]
    assert all(st.rate_rps == 150.0 and st.url == s1.spec.grpc_url for st in w2)
    assert len({st.seed for st in dep.streams}) == len(dep.streams)
    assert [(t.workload, t.batch, t.share_pct, t.rate_rps) for t in dep.targets] == [
        ("W1", "4+4", "30+25", 300.0), ("W2", "2", "70", 450.0)]
    assert dep.targets[0].predicted_ms == 12.0
    assert mps.calls == [] and not (tmp_path / "out").exists()  # nothing started or written


def test_plan_gpus_go_to_gpus_of_the_profiles_type(tmp_path: Path, fake_server: Path) -> None:
    """The plan's GPUs map to this machine's GPUs of its profile's type (NVML name), in index order;
    another type only where --gpus says so, and then the deployment says it."""
    a100 = "NVIDIA A100-SXM4-80GB"
    machine = [GpuInfo(0, "GPU-a", a100), GpuInfo(1, "GPU-b", H100), GpuInfo(2, "GPU-c", H100)]
    two = make_plan((placement(),), (placement("W2"),))
    opts = ApplyOptions(out_dir=tmp_path / "out", tritonserver=str(fake_server))
    dep = build_deployment(two, opts, machine_gpus=machine, mps=FakeMps())
    assert [s.gpu_uuid for s in dep.servers] == ["GPU-b", "GPU-c"]
    with pytest.raises(ApplyError, match=r"made for NVIDIA H100 80GB HBM3 GPUs and needs 2 of them, but this machine "
                                         r"has 1 .*or map plan GPUs explicitly with --gpus"):
        build_deployment(two, opts, machine_gpus=machine[:2], mps=FakeMps())
    dep = build_deployment(two, replace(opts, gpus="gpu0=0"), machine_gpus=machine[:2], mps=FakeMps())
    assert [s.gpu_uuid for s in dep.servers] == ["GPU-a", "GPU-b"]
    assert any("gpu0 runs on GPU 0 (NVIDIA A100-SXM4-80GB) although the plan was made for NVIDIA H100 80GB HBM3"
               in a for a in dep.assumptions)
    dry = build_deployment(two, opts, machine_gpus=lambda: None, mps=FakeMps(), dry_run=True)
    assert any("GPUs of type NVIDIA H100 80GB HBM3 (the profile's) in plan order" in a for a in dry.assumptions)


def test_validation_errors(tmp_path: Path, fake_server: Path) -> None:
    opts = ApplyOptions(out_dir=tmp_path / "out", tritonserver=str(fake_server))
    with pytest.raises(
        ApplyError,
        match=r"^gpu0: shares sum to 110.00 % > 100 % \(W1 60.00 \+ W2 50.00\); lower a share or move a "
              r"placement to another GPU$",
    ):
        check_plan(make_plan((placement("W1", share=60), placement("W2", share=50))), echo=False)
    with pytest.raises(ApplyError, match="model 'yolo' is not in the model zoo"):
        check_plan(make_plan((placement(model="yolo"),)), echo=False)
    check_plan(make_plan((placement(model="yolo"),)), echo=True)  # the stand-in serves any name
    with pytest.raises(ApplyError, match="rate_rps and slo_ms must be positive numbers"):
        check_plan(make_plan((placement(rate=math.nan),)), echo=False)
    two = make_plan((placement(),), (placement("W2"),))
    with pytest.raises(ApplyError, match=r"^the plan was made for NVIDIA H100 80GB HBM3 GPUs and needs 2 of them, "
                                         r"but this machine has 1 \(GPUs: 0=NVIDIA H100 80GB HBM3\)"):
        build_deployment(two, opts, machine_gpus=MACHINE[:1], mps=FakeMps())
    with pytest.raises(ApplyError, match=r"^plan GPU gpu1 -> GPU 1, which does not exist on this machine "
                                         r"\(GPUs: 0=GPU-0+.*\); the plan needs 2 GPU\(s\)$"):
        build_deployment(two, replace(opts, gpus="gpu1=1"), machine_gpus=MACHINE[:1], mps=FakeMps())
    with pytest.raises(ApplyError, match=r"cannot list this machine's GPUs \(NVML unavailable\)"):
        build_deployment(two, opts, machine_gpus=lambda: None, mps=FakeMps())
    with pytest.raises(ApplyError, match="two plan GPUs map to the same GPU"):
        build_deployment(two, ApplyOptions(out_dir=tmp_path, tritonserver=str(fake_server), gpus="gpu0=1,gpu1=1"),
                         machine_gpus=MACHINE, mps=FakeMps())
    with pytest.raises(ApplyError, match="--gpus names gpu5, which the plan does not have"):
        resolve_gpus(["gpu0"], MACHINE, parse_gpu_map("gpu5=0"))
    with pytest.raises(ApplyError, match="is not PLAN_GPU=UUID_OR_INDEX"):
        parse_gpu_map("gpu0")
    assert not (tmp_path / "out").exists()


# ---- load generator (no server) ----------------------------------------------------------------
def test_arrival_times() -> None:
    c = arrival_times(100.0, 1.0, "constant", 0, 10_000)
    assert len(c) == 100 and c[0] == 0.0 and c[1] == pytest.approx(0.01)
    p = arrival_times(1000.0, 10.0, "poisson", 1, 100_000)
    assert 9_700 < len(p) < 10_300 and all(0 < a < b < 10.0 for a, b in itertools.pairwise(p))
    gaps = [b - a for a, b in itertools.pairwise(p)]
    assert sum(gaps) / len(gaps) == pytest.approx(0.001, rel=0.05)
    assert p == arrival_times(1000.0, 10.0, "poisson", 1, 100_000)  # seeded
    assert len(arrival_times(1000.0, 10.0, "poisson", 1, 50)) == 50  # bounded in count
    base = StreamSpec("s", "W", "srv", "127.0.0.1:1", "m", (), (), 300.0, 1.0, "constant", 3, 400, 1.0, 1.0)
    parts = split_streams(base, 200.0)
    merged = sorted(
        t
        for s in parts
        for t in arrival_times(s.rate_rps, 1.0, "constant", s.seed, s.max_requests, s.phase_s)
    )
    assert len(parts) == 2 and len(merged) == 300
    assert max(b - a for a, b in itertools.pairwise(merged)) == pytest.approx(1 / 300)


def test_summarize_counts_failures_as_misses() -> None:
    recs = [
        {
            "workload": "W1",
            "status": "ok",
            "latency_ms": str(x),
            "sent_s": str(i / 10),
            "scheduled_s": str(i / 10),
            "received_s": str(i / 10 + x / 1000),
        }
        for i, x in enumerate([5.0, 10.0, 15.0, 30.0])
    ]
    recs.append(
        {
            "workload": "W1",
            "status": "timeout",
            "latency_ms": "1000",
            "sent_s": "0.5",
            "scheduled_s": "0.5",
            "received_s": "1.0",
        }
    )
    t = WorkloadTarget("W1", "resnet50", "4", "50", 200.0, 20.0, 8.0)
    (r,) = summarize(recs, [t], {"W1": {"infer_ms": 7.5, "queue_ms": 1.0}})
    assert (r.requests, r.ok, r.failed) == (5, 4, 1)
    assert r.within_slo == pytest.approx(3 / 5)
    assert r.p50_ms == 12.5 and r.mean_ms == 15.0 and r.achieved_rps == 4.0
    assert r.server_infer_ms == 7.5 and r.predicted_ms == 8.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 99) == pytest.approx(3.97)


# ---- failure handling with fakes ---------------------------------------------------------------
def _deploy(tmp_path: Path, fake_server: Path, mps: FakeMps):
    plan = make_plan(
        (placement("W1", share=40), placement("W2", "vgg19", share=40)), (placement("W3", share=90),)
    )
    return build_deployment(plan, ApplyOptions(out_dir=tmp_path / "out", tritonserver=str(fake_server)),
                            machine_gpus=MACHINE, mps=mps)


@pytest.mark.parametrize(("bad", "message"), [
    (FakeBehaviour.EXIT_AT_START, "server s1-gpu0-W2 exited with code 1 before it was ready"),
    (FakeBehaviour.NEVER_READY, "server s1-gpu0-W2 was not ready after"),
])
def test_server_failure_stops_everything(tmp_path: Path, fake_server: Path, bad: FakeBehaviour, message: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run, "prepare_backend_dir", lambda install, dest: dest)
    mps = FakeMps()
    dep = _deploy(tmp_path, fake_server, mps)
    calls: list[tuple[str, str]] = []
    launchers: list[FakeLauncher] = []

    def factory(spec: ServerSpec) -> FakeLauncher:
        lc = FakeLauncher(spec, bad if spec.name == "s1-gpu0-W2" else FakeBehaviour.OK, calls)
        launchers.append(lc)
        return lc

    stale = tmp_path / "out" / "repository" / "s0-gpu0-W1" / "vgg19" / "config.pbtxt"  # an earlier run's
    stale.parent.mkdir(parents=True)
    stale.write_text("old")
    (tmp_path / "out" / "requests.csv").write_text("old")
    result = apply_plan(dep, launcher_factory=factory)
    assert not stale.exists() and not (tmp_path / "out" / "requests.csv").exists()
    assert result.errors and result.errors[0].startswith(message)
    assert not result.ok and result.results == [] and result.files == []
    assert [c for c in calls if c[0] == "start"] == [
        ("start", n) for n in ("s0-gpu0-W1", "s1-gpu0-W2", "s2-gpu1-W3")
    ]
    assert sorted(c[1] for c in calls if c[0] == "stop") == ["s0-gpu0-W1", "s1-gpu0-W2", "s2-gpu1-W3"]
    assert not any(lc.running for lc in launchers)
    assert mps.calls == ["start", "stop"] and not mps.running
    # what was generated before the start stays for inspection
    rec = json.loads((tmp_path / "out" / "deployment.json").read_text())
    assert [s["name"] for s in rec["servers"]] == ["s0-gpu0-W1", "s1-gpu0-W2", "s2-gpu1-W3"]
    assert [(s["gpu_uuid"], s["gpu_name"], s["share_pct"]) for s in rec["servers"]] == [
        (UUID0, H100, 40.0), (UUID0, H100, 40.0), (UUID1, H100, 90.0)]
    assert rec["servers"][0]["env"]["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "40"
    assert (tmp_path / "out/repository/s0-gpu0-W1/resnet50/config.pbtxt").is_file()


def test_mps_failure_starts_no_server(
    tmp_path: Path, fake_server: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run, "prepare_backend_dir", lambda install, dest: dest)
    mps = FakeMps(fail_start=True)
    calls: list[tuple[str, str]] = []
    result = apply_plan(
        _deploy(tmp_path, fake_server, mps), launcher_factory=lambda s: FakeLauncher(s, calls=calls)
    )
    assert result.errors == ["MPS control daemon failed to start (fake)"] and calls == []


def test_local_launcher_server_that_exits_at_start(tmp_path: Path, fake_server: Path) -> None:
    """The real launcher on a binary that exits at once: clear error naming the exit code, nothing left."""
    spec = ServerSpec(
        "s0", (str(fake_server),), dict(os.environ), {}, allocate_ports(1)[0], tmp_path / "s0.log", "m"
    )
    lc = make_launcher(LaunchMode.LOCAL)(spec)
    lc.start()
    with pytest.raises(ApplyError, match=r"^server s0 exited with code 3 before it was ready"):
        lc.wait_ready(10)
    lc.stop()
    assert not lc.is_running()


def test_local_launcher_never_ready_is_stopped(tmp_path: Path) -> None:
    script = tmp_path / "hang.sh"
    script.write_text("#!/bin/sh\necho starting\nsleep 60 & wait\n")  # a child too: the whole group must go
    script.chmod(0o755)
    spec = ServerSpec(
        "s0", (str(script),), dict(os.environ), {}, allocate_ports(1)[0], tmp_path / "s0.log", "m"
    )
    lc = make_launcher(LaunchMode.LOCAL)(spec)
    lc.start()
    with pytest.raises(ApplyError, match=r"^server s0 was not ready after 0.5 s .*starting"):
        lc.wait_ready(0.5)
    pid = lc.pid
    lc.stop()
    assert not lc.is_running()
    assert live_processes(lambda pgid, cmd: pgid == pid) == []  # the child sleep went with the group


def test_missing_mps_control_is_an_error_before_anything_starts(tmp_path: Path, fake_server: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("igniter_opt.gpu.mps._SEARCH_PATH", ())
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    plan = make_plan((placement(),))
    dep = build_deployment(plan, ApplyOptions(out_dir=tmp_path / "out", tritonserver=str(fake_server)),
                           machine_gpus=MACHINE)
    calls: list[tuple[str, str]] = []
    with pytest.raises(ApplyError, match=r"^nvidia-cuda-mps-control not found on PATH"):
        apply_plan(dep, launcher_factory=lambda s: FakeLauncher(s, calls=calls))
    assert calls == [] and not (tmp_path / "out").exists()


# ---- CLI ---------------------------------------------------------------------------------------
def test_cli_dry_run_exact(tmp_path: Path, fake_server: Path, machine: list[GpuInfo],
                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deploy, "site_dirs", lambda: ["/site"])
    monkeypatch.setattr("igniter_opt.apply.triton.libpython_dir", lambda: Path("/pylib"))
    monkeypatch.setenv("LD_LIBRARY_PATH", "")
    plan_path = tmp_path / "plan.json"
    write_plan(make_plan((placement("W1", batch=4, share=37.5, slo=40.0, rate=200.0),)), plan_path)
    out = tmp_path / "o"
    base = 41000
    if not all(port_is_free(p) for p in range(base, base + 3)):
        pytest.skip("ports 41000-41002 in use")
    res = CliRunner().invoke(cli, ["apply", str(plan_path), "--dry-run", "--tritonserver", str(fake_server),
                                   "--out", str(out), "--base-port", str(base), "--duration", "30"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    o = out.resolve()
    repo = o / "repository" / "s0-gpu0-W1"
    dep_cfg = deploy.model_config_for(
        placement("W1", batch=4, share=37.5, slo=40.0, rate=200.0),
        served_model("resnet50"),
        LatencyBudget.IGNITER,
    )
    pipe = deploy.mps_dirs(o)[0]
    model_py_lines = len(deploy.model_py_for(dep_cfg, echo=False, site_dirs=["/site"]).splitlines())
    assert res.output.splitlines() == [
        "dry run: nothing is started or written",
        "plan: 1 GPU(s), 1 server(s), planner greedy, budget igniter, profile h100",
        f"models: {deploy.zoo_models()[1]} list",
        f"tritonserver: {fake_server} (option)",
        f"backend directory: {o}/backends (python backend, stub for Python {deploy.python_version()})",
        f"MPS: CUDA_MPS_PIPE_DIRECTORY={pipe} CUDA_MPS_LOG_DIRECTORY={o}/mps/log nvidia-cuda-mps-control -d",
        (
            f"     echo quit | CUDA_MPS_PIPE_DIRECTORY={pipe} CUDA_MPS_LOG_DIRECTORY={o}/mps/log "
            "nvidia-cuda-mps-control   (at the end)"
        ),
        "",
        (
            f"server s0-gpu0-W1: workload W1, model resnet50, gpu0 ({UUID0}, NVIDIA H100 80GB HBM3), share 37.5 %, "
            "batch 4, 200 req/s, SLO 40 ms"
        ),
        "  ports: http 41000, grpc 41001, metrics 41002 on 127.0.0.1",
        "  queue delay: 20 ms (the plan has none: its latency budget's rule)",
        (
            f"  env: LD_LIBRARY_PATH=/pylib CUDA_VISIBLE_DEVICES={UUID0} CUDA_MPS_PIPE_DIRECTORY={pipe} "
            f"CUDA_MPS_LOG_DIRECTORY={o}/mps/log CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=37.5"
        ),
        (
            f"  command: {fake_server} --model-repository={repo} --backend-directory={o}/backends "
            "--http-address=127.0.0.1 --http-port=41000 --grpc-address=127.0.0.1 --grpc-port=41001 "
            "--metrics-address=127.0.0.1 --metrics-port=41002 --allow-gpu-metrics=false "
            "--strict-readiness=true --exit-timeout-secs=5"
        ),
        f"  log: {o}/logs/s0-gpu0-W1.log",
        f"  {repo}/resnet50/config.pbtxt:",
        '    name: "resnet50"',
        '    backend: "python"',
        "    max_batch_size: 4",
        "    input [",
        '      { name: "input" data_type: TYPE_FP16 dims: [ 3, 224, 224 ] }',
        "    ]",
        "    output [",
        '      { name: "logits" data_type: TYPE_FP16 dims: [ 1000 ] }',
        "    ]",
        "    dynamic_batching {",
        "      preferred_batch_size: [ 4 ]",
        "      max_queue_delay_microseconds: 20000",
        "    }",
        "    instance_group [ { kind: KIND_GPU count: 1 } ]",
        '    parameters: { key: "graph_batches" value: { string_value: "4" } }',
        '    parameters: { key: "torch_threads" value: { string_value: "1" } }',
        '    parameters: { key: "output_device" value: { string_value: "cpu" } }',
        f'    parameters: {{ key: "exec_trace" value: {{ string_value: "{o}/logs/s0-gpu0-W1.exec.csv" }} }}',
        f"  {repo}/resnet50/1/model.py: generated ({model_py_lines} lines)",
        "",
        "load generator: python",
        "load s0-gpu0-W1: W1 -> 127.0.0.1:41001 model resnet50, 200 req/s poisson for 30 s "
        "(at most 12010 requests)",
        f"results: {o}/requests.csv, summary.csv, summary.json, latency.png",
    ]
    assert not out.exists()


def _cli_error(args: list[str]) -> str:
    res = CliRunner().invoke(cli, ["apply", *args])
    assert res.exit_code == 1, res.output
    assert res.output.count("\n") == 1, res.output
    return res.output.rstrip("\n")


def test_cli_bad_input_is_one_line_and_starts_nothing(
    tmp_path: Path, fake_server: Path, machine: list[GpuInfo], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "o"
    common = ["--out", str(out), "--tritonserver", str(fake_server)]
    p = tmp_path / "p.json"
    write_plan(make_plan((placement("W1", share=60), placement("W2", share=50))), p)
    assert (
        _cli_error([str(p), *common])
        == "Error: gpu0: shares sum to 110.00 % > 100 % (W1 60.00 + W2 50.00); lower a share or move a placement "
           "to another GPU"
    )
    write_plan(make_plan((placement(model="yolo"),)), p)
    assert _cli_error([str(p), *common]).startswith("Error: model 'yolo' is not in the model zoo")
    write_plan(make_plan((placement(),), (placement("W2"),), (placement("W3"),)), p)
    assert _cli_error([str(p), *common]).startswith("Error: the plan was made for NVIDIA H100 80GB HBM3 GPUs and "
                                                    "needs 3 of them, but this machine has 2")
    write_plan(make_plan((placement(),)), p)
    assert _cli_error([str(p), "--out", str(out), "--tritonserver", str(tmp_path / "none")]) == (
        f"Error: --tritonserver {tmp_path / 'none'}: no such executable file")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr("igniter_opt.apply.triton._pytriton_root", lambda: None)
    assert _cli_error([str(p), "--out", str(out)]).startswith("Error: tritonserver not found")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        assert _cli_error([str(p), *common, "--base-port", str(busy)]).startswith(
            f"Error: port {busy} on 127.0.0.1 is in use")
    assert not out.exists()


def test_zoo_model_py_batches_and_splits_through_dlpack(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The served zoo model.py run in-process with stand-ins: pb_utils, torch (numpy arrays), the runner."""
    import sys
    import types

    np = pytest.importorskip("numpy")
    import igniter_opt.zoo

    built: list[tuple[str, list[int]]] = []
    calls: list[tuple[list[int], bool]] = []
    threads: list[int] = []

    class Runner:
        def __init__(self, name: str, batches: list[int]) -> None:
            built.append((name, batches))

        def build(self) -> Runner:
            return self

        def infer_parts(self, parts, *, to_host):  # two outputs, like ssd
            calls.append(([p.shape[0] for p in parts], to_host))
            x = np.concatenate(parts)
            return ((x * 2).view(TorchLike), (x[:, :1] + 1).view(TorchLike))

    class TorchLike(np.ndarray):
        def contiguous(self):
            return np.ascontiguousarray(self)

    class In:
        def __init__(self, a):
            self.a = a

        def to_dlpack(self):
            return self.a

    class Out:
        @staticmethod
        def from_dlpack(name, t):
            return (name, np.from_dlpack(t))

    pb = types.SimpleNamespace(
        get_input_tensor_by_name=lambda r, n: In(r[n]),
        Tensor=Out,
        InferenceResponse=lambda output_tensors: output_tensors,
    )
    torch = types.ModuleType("torch")
    torch.from_dlpack = np.from_dlpack
    torch.set_num_threads = threads.append
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setattr(igniter_opt.zoo, "ModelRunner", Runner, raising=False)

    model = served_model("ssd")
    trace = tmp_path / "exec.csv"
    cfg = model_config_for(placement(model="ssd", batch=4), model, LatencyBudget.IGNITER, exec_trace=trace)
    ns: dict = {}
    exec(compile(model_py_for(cfg, echo=False, site_dirs=[]), "model.py", "exec"), ns)  # noqa: S102
    m = ns["TritonPythonModel"]()
    config = {"name": "ssd", "input": [{"name": "input"}],
              "output": [{"name": "bbox_regression"}, {"name": "cls_logits"}],
              "parameters": {k: {"string_value": v} for k, v in cfg.parameters}}
    m.initialize({"model_config": json.dumps(config)})
    assert built == [("ssd", [4])] and threads == [1]
    reqs = [{"input": np.full((1, 3), 1.0)}, {"input": np.full((2, 3), 2.0)}]
    responses = m.execute(reqs)
    # the requests' tensors go to the runner as they are (no host concatenation); outputs come back on host
    assert calls == [([1, 2], True)]
    assert [[name for name, _ in r] for r in responses] == [["bbox_regression", "cls_logits"]] * 2
    assert responses[0][0][1].tolist() == [[2.0, 2.0, 2.0]]
    assert responses[1][0][1].tolist() == [[4.0, 4.0, 4.0]] * 2 and responses[1][1][1].tolist() == [[3.0]] * 2
    m.execute(reqs[:1])
    m.finalize()
    rows = list(csv.DictReader(trace.open()))
    assert [(r["requests"], r["samples"]) for r in rows] == [("2", "3"), ("1", "1")]
    assert all(float(r[k]) >= 0 for r in rows for k in ("input_ms", "run_ms", "respond_ms"))
    assert (
        serverstats.read_exec_trace(trace)["traced"] == 2
        and serverstats.read_exec_trace(tmp_path / "none.csv") == {}
    )


def test_monitor_stops_load_when_a_server_dies(tmp_path: Path) -> None:
    import threading

    spec = ServerSpec("s0", ("x",), {}, {}, allocate_ports(1)[0], tmp_path / "s0.log", "m")
    lc = FakeLauncher(spec)
    lc.start()

    class Gen:
        stopped = False

        def stop(self) -> None:
            self.stopped = True

    gen, errors, done = Gen(), [], threading.Event()
    t = threading.Thread(target=run.watch_servers, args=([lc], gen, errors, done))
    t.start()
    lc.running = False  # the server dies
    t.join(timeout=5)
    assert gen.stopped and errors == [f"server s0 exited during the run; log {tmp_path / 's0.log'}"]


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_load_generator_reports_a_server_that_is_not_there(tmp_path: Path, method: str) -> None:
    """Both start methods: a stream whose warm-up fails is a one-line error, its process is gone."""
    pytest.importorskip("tritonclient.grpc.aio")
    from igniter_opt.apply.loadgen import LoadGenerator

    port = allocate_ports(1)[0].grpc  # nothing listens there
    spec = StreamSpec(
        "s0",
        "W1",
        "srv",
        f"127.0.0.1:{port}",
        "m",
        served_model("m", echo=True).inputs,
        ("OUTPUT",),
        10.0,
        1.0,
        "constant",
        0,
        20,
        1.0,
        1.0,
    )
    gen = LoadGenerator([spec], tmp_path / "parts", start_method=method)
    t0 = time.monotonic()
    outcome = gen.run()
    assert time.monotonic() - t0 < 45
    assert len(outcome.errors) == 1
    assert outcome.errors[0].startswith(
        f"load generator for stream s0 failed: ApplyError: warm-up request to m at 127.0.0.1:{port} failed"
    )
    assert outcome.records == [] and outcome.start_epoch is None
    assert all(not p.is_alive() for p in gen.procs)


def test_load_generator_refuses_other_hosts(tmp_path: Path) -> None:
    from igniter_opt.apply.loadgen import LoadGenerator

    spec = StreamSpec("s0", "W1", "srv", "10.0.0.1:8001", "m", (), (), 10.0, 1.0, "constant", 0, 20, 1.0, 1.0)
    outcome = LoadGenerator([spec], tmp_path / "parts").run()
    assert outcome.errors == [("load generator for stream s0 failed: ApplyError: load generator targets only "
                              "127.0.0.1, not 10.0.0.1:8001")]


def test_builtin_model_list_matches_the_zoo() -> None:
    """The fallback list (used where the zoo has no registry) must not drift from the zoo."""
    from igniter_opt.apply.models import zoo_models

    models, source = zoo_models()
    if source != "zoo":
        pytest.skip("igniter_opt.zoo has no registry here")
    assert models == BUILTIN_MODELS


def _dry_run_args(plan_path: Path, fake_server: Path, out: Path) -> list[str]:
    """``apply PLAN --dry-run`` with the stand-in server binary and an output folder."""
    return ["apply", str(plan_path), "--dry-run", "--tritonserver", str(fake_server), "--out", str(out)]


def test_cli_dry_run_of_a_two_gpu_plan_binds_each_server_to_its_gpu(tmp_path: Path, fake_server: Path,
                                                                     machine: list[GpuInfo]) -> None:
    """Each server's env line names its own GPU's UUID (default order and an explicit map), ports differ."""
    plan_path = tmp_path / "plan.json"
    write_plan(make_plan((placement("A", share=60.0), placement("B", "vgg19", share=30.0)),
                         (placement("C", "bert_base", share=90.0),)), plan_path)

    def servers(*extra: str) -> dict[str, tuple[str, str]]:
        res = CliRunner().invoke(cli, [*_dry_run_args(plan_path, fake_server, tmp_path / "o"), *extra],
                                 catch_exceptions=False)
        assert res.exit_code == 0, res.output
        out: dict[str, tuple[str, str]] = {}
        name = ""
        for line in res.output.splitlines():
            if line.startswith("server "):
                name = line.split()[1].rstrip(":")
            elif line.startswith("  env:") and name:
                env = dict(kv.split("=", 1) for kv in line.split()[1:])
                out[name] = (env["CUDA_VISIBLE_DEVICES"], env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"])
            elif line.startswith("  ports:") and name:
                out[name + ":ports"] = (line, "")
        return out

    s = servers()
    assert [s[n] for n in ("s0-gpu0-A", "s1-gpu0-B", "s2-gpu1-C")] == [
        (UUID0, "60"),
        (UUID0, "30"),
        (UUID1, "90"),
    ]
    assert len({s[n + ":ports"] for n in ("s0-gpu0-A", "s1-gpu0-B", "s2-gpu1-C")}) == 3
    swapped = servers("--gpus", "gpu0=1,gpu1=0")
    assert [swapped[n][0] for n in ("s0-gpu0-A", "s1-gpu0-B", "s2-gpu1-C")] == [UUID1, UUID1, UUID0]
    assert not (tmp_path / "o").exists()


def test_stream_rate_step_and_split() -> None:
    """A plan change's stream: its rate until step_s, the new rate after; split over processes at the peak."""
    from dataclasses import replace

    from igniter_opt.apply.loadgen import stream_arrival_times

    base = StreamSpec("s0", "W1", "srv", "127.0.0.1:1", "m", served_model("m", echo=True).inputs, ("OUTPUT",),
                      20.0, 10.0, "constant", 0, 10_000, 1.0, 1.0)
    stepped = replace(base, step_s=4.0, rate_after_rps=50.0)
    times = stream_arrival_times(stepped)
    assert sum(t < 4.0 for t in times) == 80 and sum(t >= 4.0 for t in times) == 300
    assert times == sorted(times) and times[-1] < 10.0
    assert stream_arrival_times(base) == pytest.approx([i / 20.0 for i in range(200)])  # no step: as before
    stopped = replace(base, step_s=4.0, rate_after_rps=0.0)
    assert max(stream_arrival_times(stopped)) < 4.0
    parts = split_streams(stepped, 30.0)  # the peak (50 req/s) decides: 2 processes
    assert len(parts) == 2 and all(p.rate_rps == 10.0 and p.rate_after_rps == 25.0 for p in parts)
    poisson = stream_arrival_times(replace(stepped, arrival="poisson", seed=3))
    before = sum(t < 4.0 for t in poisson)
    assert 50 < before < 110 and 240 < len(poisson) - before < 360


# ---- queue delay from the plan (issue 12) ---------------------------------------------------------
def test_queue_delay_from_the_plan_or_the_budget_rule() -> None:
    from dataclasses import replace

    from igniter_opt.apply.repository import queue_delay_us

    p = placement(batch=4, slo=40.0)
    assert queue_delay_us(p, LatencyBudget.IGNITER) == (20000, "budget")  # SLO / 2
    assert queue_delay_us(replace(p, queue_delay_ms=2.5), LatencyBudget.IGNITER) == (2500, "plan")
    # floor(1000 x ms), not fooled by binary rounding: 1.005 ms is 1004.999... in floating point
    assert queue_delay_us(replace(p, queue_delay_ms=1.005), LatencyBudget.IGNITER) == (1005, "plan")
    assert queue_delay_us(replace(p, queue_delay_ms=0.0004), LatencyBudget.IGNITER) == (0, "plan")
    # the plan's choice wins, also where the rule would not wait (batch 1)
    assert queue_delay_us(replace(placement(batch=1), queue_delay_ms=3.0), LatencyBudget.FULL) == (
        3000,
        "plan",
    )
    cfg = model_config_for(replace(p, queue_delay_ms=7.25), served_model("resnet50"), LatencyBudget.IGNITER)
    assert "  max_queue_delay_microseconds: 7250\n" in cfg.render() and cfg.queue_delay_source == "plan"


def test_queue_delay_in_dry_run_and_deployment_json(tmp_path: Path, fake_server: Path, machine: list[GpuInfo],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    plan = make_plan(
        (replace(placement("W1", share=40), queue_delay_ms=2.5), placement("W2", "vgg19", share=40))
    )
    plan_path = write_plan(plan, tmp_path / "plan.json")
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["apply", str(plan_path), "--dry-run", "--tritonserver", str(fake_server),
                                   "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    delays = [ln for ln in res.output.splitlines() if "queue delay" in ln or "max_queue_delay" in ln]
    assert delays == ["  queue delay: 2.5 ms (from the plan)", "      max_queue_delay_microseconds: 2500",
                      "  queue delay: 20 ms (the plan has none: its latency budget's rule)",
                      "      max_queue_delay_microseconds: 20000"]
    monkeypatch.setattr(run, "prepare_backend_dir", lambda install, dest: dest)
    dep = build_deployment(
        plan, ApplyOptions(out_dir=out, tritonserver=str(fake_server)), machine_gpus=MACHINE, mps=FakeMps()
    )
    apply_plan(dep, launcher_factory=lambda s: FakeLauncher(s, FakeBehaviour.EXIT_AT_START))
    rec = json.loads((out / "deployment.json").read_text())
    assert [(s["max_queue_delay_us"], s["queue_delay_source"]) for s in rec["servers"]] == [(2500, "plan"),
                                                                                         (20000, "budget")]
    assert (
        "max_queue_delay_microseconds: 2500"
        in (out / "repository/s0-gpu0-W1/resnet50/config.pbtxt").read_text()
    )


# ---- the dry run on the planning machine (issue 14.5) ------------------------------------------------
def test_dry_run_without_gpu_or_tritonserver_says_what_it_assumed(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """This GPU-less machine, no --gpus, no tritonserver: exit 0, the GPUs and the binary are assumed."""
    from igniter_opt.apply.gpus import nvml_gpus

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr("igniter_opt.apply.triton._pytriton_root", lambda: None)
    plan_path = write_plan(make_plan((placement("A", share=60.0),), (placement("B", "vgg19", share=90.0),)),
                           tmp_path / "plan.json")
    args = ["apply", str(plan_path), "--dry-run", "--out", str(tmp_path / "o")]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    tritonserver = (
        "assumed: the GPU machine's tritonserver (none here; apply uses tritonserver on PATH there, else "
        "the nvidia-pytriton==0.7.0 wheel's)"
    )
    if nvml_gpus() is None:  # as on the development machine
        assert lines[2:4] == [
            f"assumed: GPUs of type {H100} (the profile's) in plan order (gpu0 -> GPU 0, gpu1 -> GPU 1); no NVML here",
            tritonserver,
        ]
        assert " CUDA_VISIBLE_DEVICES=1 " in next(
            ln for ln in lines if ln.startswith("  env:") and "=90" in ln
        )
        assert "gpu1 (1, assumed), share 90 %" in res.output
    assert tritonserver in lines and "tritonserver: tritonserver (assumed)" in lines
    assert not (tmp_path / "o").exists()
    # the same without --dry-run is an error: a real run needs the real machine
    monkeypatch.setattr(deploy, "nvml_gpus", lambda: None)
    assert _cli_error(args[1:2] + args[3:]).startswith(
        "Error: cannot list this machine's GPUs (NVML unavailable)"
    )


def test_dry_run_assumes_only_facts_of_the_gpu_machine(
    tmp_path: Path, fake_server: Path, machine: list[GpuInfo], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plan for more GPUs than this machine has: assumed; a wrong --gpus is still an error."""
    plan_path = write_plan(
        make_plan((placement(),), (placement("W2"),), (placement("W3"),)), tmp_path / "plan.json"
    )
    base = _dry_run_args(plan_path, fake_server, tmp_path / "o")
    res = CliRunner().invoke(cli, [*base, "--gpus", f"gpu0={UUID1}"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[2] == (
        f"assumed: GPUs of type {H100} (the profile's) in plan order (gpu0 -> {UUID1}, gpu1 -> GPU 1, gpu2 -> GPU 2); "
        "this machine has 2 GPU(s), not GPU 2"
    )
    assert f"tritonserver: {fake_server} (option)" in res.output
    assert _cli_error([*base[1:], "--gpus", "gpu7=0"]).startswith(
        "Error: --gpus names gpu7, which the plan does not"
    )
    assert (
        _cli_error([*base[1:], "--gpus", "gpu0=1"])
        == "Error: two plan GPUs map to the same GPU 1; each plan GPU needs its own"
    )
    dep = build_deployment(
        make_plan((placement(),)),
        ApplyOptions(out_dir=tmp_path / "o"),
        machine_gpus=lambda: None,
        mps=FakeMps(),
        dry_run=True,
    )
    with pytest.raises(
        ApplyError, match=r"^this deployment was worked out for a dry run \(it assumes GPUs of type .* in plan"
    ):
        apply_plan(dep, launcher_factory=FakeLauncher)
    assert not (tmp_path / "o").exists()


def test_dry_run_of_a_plan_change_without_gpu(
    tmp_path: Path, fake_server: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deploy, "nvml_gpus", lambda: None)
    old = write_plan(make_plan((placement("W1", share=40),)), tmp_path / "old.json")
    new = write_plan(make_plan((placement("W1", share=60),)), tmp_path / "new.json")
    res = CliRunner().invoke(cli, ["apply", "--diff", str(old), str(new), "--dry-run", "--tritonserver",
                                   str(fake_server), "--out", str(tmp_path / "o")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "resized 1" in res.output and "CUDA_VISIBLE_DEVICES=0 " in res.output


# ---- load generator lag and validity (issue 12.7) --------------------------------------------------
def test_lag_per_request_and_validity(tmp_path: Path) -> None:
    recs = [{"workload": "W1", "status": "ok", "latency_ms": "5", "sent_s": str(i / 100 + lag / 1000),
             "scheduled_s": str(i / 100), "lag_ms": str(lag), "received_s": str(i / 100 + 0.006)}
            for i, lag in enumerate([0.01] * 98 + [0.5, 30.0])]
    t = WorkloadTarget("W1", "resnet50", "4", "50", 100.0, 20.0, 8.0)
    (r,) = summarize(recs, [t], max_lag_ms=1.0)
    assert r.generator_lag_p50_ms == pytest.approx(0.01) and r.generator_lag_max_ms == 30.0
    assert r.generator_lag_p99_ms == pytest.approx(0.5 + 0.01 * 29.5, rel=1e-6)  # interpolated, as numpy
    assert r.valid
    (late,) = summarize(recs, [t], max_lag_ms=0.5)
    assert not late.valid
    # records from before lag_ms existed: the lag comes from the send and schedule times
    old = [{k: v for k, v in x.items() if k != "lag_ms"} for x in recs]
    assert summarize(old, [t], max_lag_ms=1.0)[0].generator_lag_max_ms == pytest.approx(30.0)
    (none,) = summarize([], [t])
    assert not none.valid  # nothing sent is no measurement


def test_an_invalid_run_is_reported_as_invalid(
    tmp_path: Path,
    fake_server: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fakes import FakeLoad

    from igniter_opt.apply.run import render_result

    monkeypatch.setattr(run, "prepare_backend_dir", lambda install, dest: dest)
    plan = make_plan((placement("W1", share=40, rate=100.0), placement("W2", "vgg19", share=40, rate=50.0)))
    opts = ApplyOptions(out_dir=tmp_path / "out", tritonserver=str(fake_server), duration_s=0.5,
                        arrival="constant", max_lag_ms=2.0)
    dep = build_deployment(plan, opts, machine_gpus=MACHINE, mps=FakeMps())
    result = apply_plan(dep, launcher_factory=FakeLauncher, load_factory=FakeLoad.factory(lag_ms=3.0))
    assert result.ok and not result.valid and [r.valid for r in result.results] == [False, False]
    text = render_result(result)
    table = text.splitlines()
    assert table[0].endswith("ran batch  lag p99 ms  valid")
    assert [row.split()[-2:] for row in table[2:4]] == [["3.00", "NO"], ["3.00", "NO"]]
    assert (
        "INVALID: W1: the load generator sent its requests late (lag p99 3.00 ms, max 3.00 ms > 2 ms), so "
        "its latencies include the generator's own delay"
    ) in text
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["valid"] is False and summary["max_lag_ms"] == 2.0
    assert [(w["valid"], w["generator_lag_p99_ms"]) for w in summary["workloads"]] == [
        (False, 3.0),
        (False, 3.0),
    ]
    rows = (tmp_path / "out" / "requests.csv").read_text().splitlines()
    assert (
        rows[0] == "stream,workload,server,seq,scheduled_s,sent_s,lag_ms,received_s,latency_ms,status,error"
    )
    assert len(rows) == 1 + 50 + 25 and all(r.split(",")[6] == "3.0" for r in rows[1:])
    on_time = apply_plan(build_deployment(plan, opts, machine_gpus=MACHINE, mps=FakeMps()),
                         launcher_factory=FakeLauncher, load_factory=FakeLoad.factory(lag_ms=0.2))
    assert on_time.valid and "INVALID" not in render_result(on_time)


def test_max_lag_option_is_checked() -> None:
    with pytest.raises(ApplyError, match=r"^--max-lag-ms must be a positive number of ms, got 0$"):
        ApplyOptions(max_lag_ms=0.0)
