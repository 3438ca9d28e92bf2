"""The profiler without a GPU: plan, checkpoints and resume, fit recovery on the simulated GPU,
the raw format, the command, and failure handling of the real backend driven by fakes."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from igniter_opt.errors import GpuUnavailableError, InputError, MeasurementError, MpsError, ProfileError
from igniter_opt.gpu.mps import MpsDaemon
from igniter_opt.perfmodel.fit import fit_profile
from igniter_opt.perfmodel.model import PerformanceModel
from igniter_opt.perfmodel.raw import load_raw, raw_from_dict
from igniter_opt.profiling import procs
from igniter_opt.profiling.checkpoint import CHECKPOINT_FILE, Checkpoint
from igniter_opt.profiling.cli import profile
from igniter_opt.profiling.cuda import CudaBackend, parse_ncu_l2, unit_from_probes
from igniter_opt.profiling.plan import ProfilePlan, solo_key
from igniter_opt.profiling.profiler import assemble_raw, run_plan
from igniter_opt.profiling.simulated import SimulatedBackend, synthetic_model

FAKES = Path(__file__).parent / "fake_gpu"
SMALL = dict(batches=(1, 8, 32), shares_pct=(10.0, 50.0, 100.0), max_copies=3,
             share_unit_candidates=(10.0, 11.0, 12.0))


def small_plan(models: tuple[str, ...] = ("alexnet", "vgg19")) -> ProfilePlan:
    return ProfilePlan(models=models, **SMALL)


# ---- plan ------------------------------------------------------------------------------------
def test_default_plan_covers_issue_grid() -> None:
    plan = ProfilePlan(models=("resnet50",))
    assert plan.batches == (1, 2, 4, 8, 16, 32)
    assert plan.shares_pct == (10.0, 20.0, 30.0, 50.0, 70.0, 100.0)
    keys = plan.all_keys()
    assert len(keys) == len(set(keys))
    # 4 hardware facts + 5 concurrency levels + 36 solo + trace + 3 L2 + pair
    assert len(keys) == 4 + 5 + 36 + 1 + 3 + 1
    assert solo_key("resnet50", 32, 70.0) in keys


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(models=("nope",)), "unknown model 'nope'"),
        (dict(models=()), "no models"),
        (dict(models=("alexnet",), shares_pct=(0.0, 50.0, 100.0)), "shares must be in (0, 100]"),
        (dict(models=("alexnet",), pair_point=(8, 70.0), l2_points=((8, 70.0), (1, 10.0))), "share <= 50"),
        (dict(models=("alexnet",), pair_point=(4, 50.0)), "must be one of the L2 points"),
        (dict(models=("alexnet",), max_copies=6), "exceed 100 %"),
        (dict(models=("alexnet",), batches=(1, 2, 3), shares_pct=(100.0,), l2_points=((1, 100.0), (2, 100.0)),
              pair_point=(1, 100.0)), "at least 5"),
    ],
)
def test_plan_rejects_bad_input(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace("]", r"\]")):
        ProfilePlan(**kwargs)


# ---- simulated GPU: fits recover the truth ------------------------------------------------------
def _close(a: float, b: float, rel: float = 1e-6, abs_: float = 1e-9) -> bool:
    return abs(a - b) <= max(rel * abs(b), abs_)


def test_fit_recovers_simulated_coefficients(tmp_path: Path) -> None:
    truth = synthetic_model(["alexnet", "vgg19", "ssd"])
    plan = ProfilePlan(models=("alexnet", "vgg19", "ssd"))
    raw = run_plan(plan, SimulatedBackend(truth), tmp_path, progress=False)
    fitted = fit_profile(raw, "recovered")
    for name, t in truth.models.items():
        f = fitted.models[name]
        for fk, tk in zip(f.k, t.k, strict=True):
            assert _close(fk, tk, rel=1e-4, abs_=1e-6), (name, f.k, t.k)
        for attr in ("alpha_c", "beta_c", "alpha_p", "beta_p", "alpha_cache", "idle_ms", "input_bytes",
                     "output_bytes"):
            assert _close(getattr(f, attr), getattr(t, attr), rel=1e-6), (name, attr)
        assert f.kernels_per_inference == t.kernels_per_inference
    hw_t, hw_f = truth.hardware, fitted.hardware
    # 5 copies of VGG-19 at batch 32 exceed the power limit: the clock drop is fitted exactly.
    assert raw.hardware.concurrency[-1].clock_mhz < hw_t.max_clock_mhz
    assert _close(hw_f.alpha_f, hw_t.alpha_f, rel=1e-9)
    for attr in ("idle_power_w", "share_unit_pct", "pcie_bandwidth_bytes_per_ms", "max_clock_mhz", "max_power_w"):
        assert getattr(hw_f, attr) == getattr(hw_t, attr)
    # The paper corrects the batch-1 idle times with the batch-32 clock: exact only while unthrottled.
    assert _close(hw_f.alpha_sch, hw_t.alpha_sch, rel=0.05)


def test_scheduling_delay_recovered_exactly_without_throttling(tmp_path: Path) -> None:
    truth = synthetic_model(["vgg19"])
    truth = dataclasses.replace(truth, hardware=dataclasses.replace(truth.hardware, max_power_w=2000.0))
    raw = run_plan(ProfilePlan(models=("vgg19",), **SMALL), SimulatedBackend(truth), tmp_path, progress=False)
    hw = fit_profile(raw, "x").hardware
    assert hw.alpha_f == 0.0
    assert _close(hw.alpha_sch, truth.hardware.alpha_sch, rel=1e-9)
    assert _close(hw.beta_sch, truth.hardware.beta_sch, rel=1e-9)


def test_recovered_model_predicts_like_the_truth_with_noise(tmp_path: Path) -> None:
    truth = synthetic_model(["resnet50", "bert_base", "vgg19"])  # vgg19: the concurrency runs
    raw = run_plan(ProfilePlan(models=("resnet50", "bert_base")), SimulatedBackend(truth, noise=0.01, seed=3),
                   tmp_path, progress=False)
    fitted = fit_profile(raw, "noisy")
    mix = [("resnet50", 6, 35.0), ("bert_base", 12, 40.0)]
    for (lt, tt), (lf, tf) in zip(truth.predict_gpu(mix), fitted.predict_gpu(mix), strict=True):
        assert abs(lf - lt) / lt < 0.05
        assert abs(tf - tt) / tt < 0.05


# ---- checkpoints and resume ---------------------------------------------------------------------
def test_cut_off_run_resumes_where_it_stopped(tmp_path: Path) -> None:
    truth = synthetic_model(["alexnet", "vgg19"])
    plan = small_plan()
    first = SimulatedBackend(truth, fail_after=20)
    with pytest.raises(MeasurementError, match="simulated failure"):
        run_plan(plan, first, tmp_path / "cut", progress=False)
    ck = Checkpoint(tmp_path / "cut" / CHECKPOINT_FILE)
    measured = [k for k in plan.all_keys() if k in ck]
    assert 15 <= len(measured) < len(plan.all_keys())

    second = SimulatedBackend(truth)
    resumed = run_plan(plan, second, tmp_path / "cut", progress=False)
    # Nothing measured twice: the second run did only what was missing.
    assert len(first.calls) == 20
    assert len(first.calls) + len(second.calls) == _count_calls(plan, truth)
    whole = run_plan(plan, SimulatedBackend(truth), tmp_path / "whole", progress=False)
    a, b = resumed.to_dict(), whole.to_dict()
    a["gpu"].pop("measured_utc"), b["gpu"].pop("measured_utc")
    a["gpu"].pop("profiling_cost_s"), b["gpu"].pop("profiling_cost_s")
    assert a == b


def _count_calls(plan: ProfilePlan, truth: PerformanceModel) -> int:
    be = SimulatedBackend(truth)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        run_plan(plan, be, d, progress=False)
    return len(be.calls)


def test_checkpoint_ignores_torn_last_line_and_rejects_corruption(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT_FILE
    ck = Checkpoint(path)
    ck.bind_gpu({"name": "GPU A", "uuid": "u"})
    ck.put("solo/alexnet/1/10", {"latency_ms": 1.0}, 0.5)
    with path.open("a") as fh:
        fh.write('{"key": "solo/alexnet/8/10", "val')  # the run died mid-write
    again = Checkpoint(path)
    assert "solo/alexnet/1/10" in again and "solo/alexnet/8/10" not in again
    assert again.elapsed["solo/alexnet/1/10"] == 0.5
    path.write_text('{"key": "_gpu", "value": {"name": "GPU A"}}\nnot json\n{"key": "x", "value": {}}\n')
    with pytest.raises(ProfileError, match=r":2: corrupt checkpoint line"):
        Checkpoint(path)


def test_checkpoint_refuses_another_card(tmp_path: Path) -> None:
    ck = Checkpoint(tmp_path / CHECKPOINT_FILE)
    ck.bind_gpu({"name": "NVIDIA H100 80GB HBM3"})
    with pytest.raises(ProfileError, match="must not mix cards"):
        Checkpoint(tmp_path / CHECKPOINT_FILE).bind_gpu({"name": "NVIDIA H200"})


def test_assemble_refuses_incomplete_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(MeasurementError):
        run_plan(small_plan(), SimulatedBackend(synthetic_model(), fail_after=5), tmp_path, progress=False)
    with pytest.raises(ProfileError, match="measurements are still missing"):
        assemble_raw(small_plan(), Checkpoint(tmp_path / CHECKPOINT_FILE))


# ---- raw format --------------------------------------------------------------------------------
def test_raw_round_trip_and_units(tmp_path: Path) -> None:
    raw = run_plan(small_plan(), SimulatedBackend(synthetic_model()), tmp_path, progress=False)
    d = raw.to_dict()
    assert d["schema"] == "igniter-opt/profile-raw/v1"
    again = raw_from_dict(json.loads(json.dumps(d)))
    assert again.to_dict() == d
    m = d["models"]["vgg19"]
    assert m["input_bytes"] == 3 * 224 * 224 * 2 and m["output_bytes"] == 1000 * 2
    assert set(m["solo"][0]) == {"batch", "share_pct", "latency_ms", "power_w", "clock_mhz"}
    assert d["gpu"]["plan"]["batches"] == [1, 8, 32]
    assert set(d["gpu"]["profiling_cost_s"]["models_s"]) == {"alexnet", "vgg19"}


def test_measured_h100_profile_loads_and_fits() -> None:
    repo = Path(__file__).resolve().parents[1]
    raw = load_raw(repo / "profiles" / "h100" / "raw.json")
    assert raw.gpu["name"] == "NVIDIA H100 80GB HBM3"
    assert set(raw.models) == {"alexnet", "resnet50", "vgg19", "ssd", "vit_b_16", "bert_base"}
    assert len(raw.models["resnet50"].solo) == 36
    model = fit_profile(raw, "h100")
    (lat, thr), = model.predict_gpu([("resnet50", 32, 100.0)])
    assert 3.0 < lat < 6.0 and thr > 5000


# ---- the command -------------------------------------------------------------------------------
def test_profile_command_simulated(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    res = CliRunner().invoke(profile, ["--models", "alexnet,vgg19", "-o", str(out), "--backend", "simulated",
                                       "--batches", "1,8,32", "--shares", "10,50,100", "--max-copies", "3",
                                       "--no-progress"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert res.output == f"wrote raw.json and coefficients.json to {out}\n"
    assert (out / "raw.json").is_file() and (out / "coefficients.json").is_file()
    assert json.loads((out / "coefficients.json").read_text())["models"].keys() == {"alexnet", "vgg19"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--models", "alexnet,foo"], "Error: unknown model 'foo'; the zoo has: alexnet, resnet50"),
        (["--models", "alexnet", "--batches", "1,x"], "Error: --batches: expected comma-separated integers"),
        (["--models", "alexnet", "--max-copies", "9"], "Error: 9 copies at 20 % exceed 100 %"),
    ],
)
def test_profile_command_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    res = CliRunner().invoke(profile, [*args, "-o", str(tmp_path / "x"), "--backend", "simulated", "--no-progress"])
    assert res.exit_code == 1
    assert res.output.startswith(message), res.output
    assert len(res.output.strip().splitlines()) == 1


def test_profile_command_without_nvml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    res = CliRunner().invoke(profile, ["--models", "alexnet", "-o", str(tmp_path / "x"), "--no-progress"])
    assert res.exit_code == 1
    assert res.output == "Error: NVML is not available (no module 'pynvml'); install nvidia-ml-py on the GPU machine\n"


# ---- the real backend, driven by fakes ---------------------------------------------------------
def _exe(path: Path, script: Path) -> str:
    path.write_text(f"#!/bin/sh\nexec {sys.executable} {script} \"$@\"\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


class FakeSampler:
    power_source = "fake"

    def __init__(self) -> None:
        self.started = self.stopped = 0

    def start(self) -> FakeSampler:
        self.started += 1
        return self

    def stop(self) -> None:
        self.stopped += 1

    def window(self, t0: float, t1: float, **_: object) -> tuple[float, float, int]:
        return 150.0, 1980.0, 10


FACTS = {"index": 0, "name": "Fake GPU", "uuid": "GPU-fake", "driver": "1.0", "max_sm_clock_mhz": 1980.0,
         "power_limit_w": 700.0}


@pytest.fixture
def fake_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    proc_root = tmp_path / "proc"
    proc_root.mkdir()
    monkeypatch.setenv("FAKE_PIDFILE", str(tmp_path / "pids"))
    monkeypatch.setenv("FAKE_MPS_LOG", str(tmp_path / "mps.log"))
    return {
        "mps_bin": _exe(tmp_path / "nvidia-cuda-mps-control", FAKES / "fake_mps_control.py"),
        "ncu": _exe(tmp_path / "ncu", FAKES / "fake_ncu.py"),
        "proc_root": proc_root,
        "tmp": tmp_path,
    }


def _backend(env: dict, **kw: object) -> tuple[CudaBackend, MpsDaemon, FakeSampler]:
    mps = MpsDaemon(control_binary=env["mps_bin"], proc_root=env["proc_root"], base_dir=env["tmp"],
                    stop_timeout_s=2)
    sampler = FakeSampler()
    be = CudaBackend(0, log_dir=env["tmp"] / "logs", worker_cmd=[sys.executable, str(FAKES / "fake_worker.py")],
                     mps=mps, sampler=sampler, facts=dict(FACTS), ncu=env["ncu"], setup_timeout_s=20,
                     op_timeout_s=kw.pop("op_timeout_s", 10), **kw)  # type: ignore[arg-type]
    return be, mps, sampler


def _all_dead(env: dict) -> bool:
    pids = [int(x) for x in (env["tmp"] / "pids").read_text().split()] if (env["tmp"] / "pids").exists() else []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        alive = []
        for p in pids:
            try:
                os.kill(p, 0)
                stat_ = Path(f"/proc/{p}/stat").read_text()
                if ") Z" not in stat_:
                    alive.append(p)
            except (ProcessLookupError, FileNotFoundError):
                pass
        if not alive:
            return True
        time.sleep(0.1)
    return False


def test_cuda_backend_full_plan_with_fakes(fake_env: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_MODE", "ok")
    be, mps, sampler = _backend(fake_env)
    plan = ProfilePlan(models=("alexnet",), **SMALL)
    out = fake_env["tmp"] / "prof"
    with be:
        raw = run_plan(plan, be, out, progress=False)
    assert not mps.running and sampler.stopped == 1
    assert (fake_env["tmp"] / "mps.log").read_text() == "quit\n"
    assert procs.live_count() == 0 and _all_dead(fake_env)
    hw = raw.hardware
    assert hw.share_unit_pct == pytest.approx(100 * 2 / 132, abs=1e-4)  # probes saw 2-SM steps
    assert hw.pcie_bandwidth_bytes_per_ms == 2.5e7 and hw.max_power_w == 700.0
    m = raw.models["alexnet"]
    assert m.kernels_per_inference == 20 and len(m.solo) == 9
    s = next(r for r in m.solo if r.batch == 8 and r.share_pct == 50.0)
    assert s.latency_ms == pytest.approx(85 / 51 + 0.1) and s.power_w == 150.0
    assert [r.l2_pct for r in m.l2] == [10.0, 10.0, 10.0]
    assert raw.gpu["notes"]["l2_method"] == ["ncu --mps client"]


def test_ncu_refused_inside_mps_falls_back_to_standalone(fake_env: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_MODE", "ok")
    monkeypatch.setenv("FAKE_NCU_FAIL_MPS", "1")
    be, _, _ = _backend(fake_env)
    with be:
        res = list(be.l2(50.0, [("alexnet", 8), ("vgg19", 8)]))
    l2 = [r for r in res if hasattr(r, "l2_pct")]
    assert [r.l2_pct for r in l2] == [10.0, 11.0]
    assert all("standalone" in r.method for r in l2)


@pytest.mark.parametrize(("mode", "message"), [
    ("crash", r"measurement process exited \(code 1\) before 'ready': fake worker: CUDA error: out of memory"),
    ("crash_mid", r"exited \(code 1\) before 'result': fake worker: illegal memory access"),
    ("hang", r"no 'result' within 1 s \(hung\?\); the process was killed"),
])
def test_failed_measurement_is_clear_kills_everything_and_keeps_data(
    fake_env: dict, monkeypatch: pytest.MonkeyPatch, mode: str, message: str
) -> None:
    monkeypatch.setenv("FAKE_MODE", "ok")
    be, mps, sampler = _backend(fake_env, op_timeout_s=1)
    plan = ProfilePlan(models=("alexnet",), **SMALL)
    out = fake_env["tmp"] / "prof"
    # Hardware facts first (healthy), then the grid fails.
    with be:
        be.gpu_info()
        monkeypatch.setenv("FAKE_MODE", mode)
        with pytest.raises(MeasurementError, match=message):
            run_plan(plan, be, out, progress=False)
    assert not mps.running and sampler.stopped == 1
    assert procs.live_count() == 0 and _all_dead(fake_env)
    ck = Checkpoint(out / CHECKPOINT_FILE)
    assert "hw/share_unit" in ck and "hw/pcie" in ck  # what was measured is kept
    if mode == "crash_mid":
        assert solo_key("alexnet", 1, 100.0) in ck


def test_mps_daemon_already_running_is_refused(fake_env: dict) -> None:
    entry = fake_env["proc_root"] / "4242"
    entry.mkdir()
    (entry / "comm").write_text("nvidia-cuda-mps\n")
    (entry / "cmdline").write_bytes(b"nvidia-cuda-mps-control\0-d\0")
    (entry / "environ").write_bytes(b"CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps\0")
    mps = MpsDaemon(control_binary=fake_env["mps_bin"], proc_root=fake_env["proc_root"])
    with pytest.raises(MpsError, match=r"an MPS control daemon is already running \(pid 4242\); stop it first"):
        mps.start()
    assert not mps.running


def test_mps_daemon_failing_to_start(fake_env: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_MPS_FAIL", "1")
    mps = MpsDaemon(control_binary=fake_env["mps_bin"], proc_root=fake_env["proc_root"], base_dir=fake_env["tmp"])
    with pytest.raises(MpsError, match=r"failed to start \(exit 1\): An instance of this daemon is already running"):
        mps.start()
    assert not list(fake_env["tmp"].glob("igniter-mps-*"))  # private folders removed


def test_mps_client_env(fake_env: dict) -> None:
    with MpsDaemon(control_binary=fake_env["mps_bin"], proc_root=fake_env["proc_root"], base_dir=fake_env["tmp"]) as m:
        env = m.client_env(12.5, base={"PATH": "/bin"})
        assert env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "12.5"
        assert env["CUDA_MPS_PIPE_DIRECTORY"] == str(m.pipe_dir) and Path(env["CUDA_MPS_PIPE_DIRECTORY"]).is_dir()
        with pytest.raises(MpsError, match=r"share must be in \(0, 100\]"):
            m.client_env(0)
    assert not m.running and not m.pipe_dir.exists()  # type: ignore[union-attr]
    with pytest.raises(MpsError, match="not running"):
        m.client_env(50)


def test_no_gpu_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(GpuUnavailableError, match="NVML is not available"):
        CudaBackend(0, log_dir=Path("/tmp/igniter-test-unused"))


# ---- parsing helpers ---------------------------------------------------------------------------
def test_parse_ncu_weights_by_kernel_time() -> None:
    text = "\n".join([
        "==PROF== Connected",
        '"ID","Kernel Name","Metric Name","Metric Unit","Metric Value"',
        '"0","void at::spin_kernel(long)","gpu__time_duration.sum","usecond","1"',
        '"1","conv","gpu__time_duration.sum","usecond","3"',
        '"1","conv","lts__t_sectors.avg.pct_of_peak_sustained_elapsed","%","10"',
        '"2","gemm","gpu__time_duration.sum","nsecond","1,000"',
        '"2","gemm","lts__t_sectors.avg.pct_of_peak_sustained_elapsed","%","50"',
    ])
    assert parse_ncu_l2(text, 1) == [pytest.approx(20.0)]
    with pytest.raises(MeasurementError, match="1 marked ranges, expected 2"):
        parse_ncu_l2(text, 2)
    with pytest.raises(MeasurementError, match="no CSV header"):
        parse_ncu_l2("==ERROR== nothing", 1)


def test_share_unit_from_probes() -> None:
    rows = [{"share_pct": s, "sm_count": c, "median_ms": 100 / c}
            for s, c in ((10.0, 12), (10.5, 12), (11.0, 14), (11.5, 14), (12.0, 14))]
    unit, ev = unit_from_probes(rows, total_sms=132)
    assert unit == pytest.approx(1.5152) and ev["method"] == "SM count reported to the MPS client"
    flat = [{"share_pct": s, "sm_count": 132, "median_ms": t}
            for s, t in ((10.0, 10.0), (10.5, 10.0), (11.0, 9.0), (11.5, 9.0), (12.0, 9.0), (12.5, 8.0))]
    assert unit_from_probes(flat, total_sms=132)[0] == pytest.approx(1.5)


# ---- the shared power floor ---------------------------------------------------------------------
def _floor_truth(floor: float) -> PerformanceModel:
    t = synthetic_model(["alexnet", "vgg19"])
    models = {m: dataclasses.replace(c, beta_p=floor) for m, c in t.models.items()}
    return dataclasses.replace(t, models=models, hardware=dataclasses.replace(t.hardware, power_floor_w=floor))


def test_shared_power_floor_recovered(tmp_path: Path) -> None:
    truth = _floor_truth(90.0)
    raw = run_plan(small_plan(), SimulatedBackend(truth), tmp_path, progress=False)
    shared = fit_profile(raw, "s", power_form="shared-floor")
    assert shared.hardware.power_floor_w == pytest.approx(90.0, rel=1e-9)
    for m, c in truth.models.items():
        assert shared.models[m].alpha_p == pytest.approx(c.alpha_p, rel=1e-9)
        assert shared.models[m].beta_p == pytest.approx(90.0, rel=1e-9)
    paper = fit_profile(raw, "p", power_form="igniter")
    assert paper.hardware.power_floor_w == 0.0 and paper.gpu["fit"]["power_form"] == "igniter"
    # Four co-located copies: the paper's form counts the 90 W intercept four times.
    mix = [("vgg19", 32, 25.0)] * 4
    lat_shared = [x for x, _ in shared.predict_gpu(mix)]
    lat_truth = [x for x, _ in truth.predict_gpu(mix)]
    assert lat_shared == pytest.approx(lat_truth, rel=1e-6)
    with pytest.raises(ProfileError, match="power form must be one of igniter, shared-floor"):
        fit_profile(raw, "x", power_form="cubic")


def test_profile_records_the_power_form_for_fit(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    res = CliRunner().invoke(profile, ["--models", "alexnet", "-o", str(out), "--backend", "simulated",
                                       "--batches", "1,8,32", "--shares", "10,50,100", "--max-copies", "3",
                                       "--no-progress"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    raw = load_raw(out / "raw.json")
    assert raw.gpu["fit"] == {"power_form": "shared-floor", "interference_form": "igniter"}
    assert fit_profile(raw, "again").gpu["fit"]["power_form"] == "shared-floor"  # igniter-opt fit follows it
    assert fit_profile(raw, "again").gpu["fit"]["interference_form"] == "igniter"
    coef = json.loads((out / "coefficients.json").read_text())
    assert coef["hardware"]["power_floor_w"] == PerformanceModel.from_dict(coef).hardware.power_floor_w


def test_missing_ncu_is_a_clear_error(fake_env: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import igniter_opt.profiling.cuda as cuda

    monkeypatch.setattr(cuda, "find_ncu", lambda: None)
    be, mps, _ = _backend(fake_env)
    be._ncu = None
    with be, pytest.raises(MeasurementError, match=r"ncu \(Nsight Compute\) not found"):
        list(be.l2(50.0, [("alexnet", 8)]))
    assert not mps.running


def test_co_location_runs_through_real_processes_resume_and_leave_none_behind(
    fake_env: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel-delay form's co-location runs on the real backend (fake worker executables): the
    next run's processes start while one runs, a run that fails midway keeps the finished runs
    and kills every process (the prepared ones too), and the next call measures only the rest."""
    from igniter_opt.profiling import corun

    monkeypatch.setenv("FAKE_MODE", "ok")
    design = corun.CoRunDesign(models=("alexnet", "vgg19"), batches=(1, 8), runs_per_model=2)
    path = fake_env["tmp"] / "prof" / corun.CO_RUNS_FILE
    path.parent.mkdir()
    be, mps, sampler = _backend(fake_env)
    real_co_run, calls = be.co_run, []

    def failing_co_run(*args: object, **kw: object) -> object:
        calls.append(kw.get("prepared"))
        if len(calls) == 3:
            raise MeasurementError("measurement process exited (code 1)")
        return real_co_run(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(be, "co_run", failing_co_run)
    with be, pytest.raises(MeasurementError, match="exited"):
        corun.measure_co_runs(design, be, path, FACTS)
    assert not mps.running and sampler.stopped == 1
    assert procs.live_count() == 0 and _all_dead(fake_env)
    assert all(p is not None for p in calls)  # every run's processes were started ahead of it
    assert [json.loads(line)["mix"] for line in path.read_text().splitlines()] == [0, 1]
    be2, _, _ = _backend(fake_env)
    with be2:
        records = corun.measure_co_runs(design, be2, path, FACTS)
    assert procs.live_count() == 0 and _all_dead(fake_env)
    assert [r["mix"] for r in records] == [0, 1, 2, 3] and records[0]["gpu"] == "Fake GPU"
    assert records[2]["power_w"] == 150.0 and records[2]["clock_mhz"] == 1980.0
    assert all(w["loop_rps"] == 900.0 and w["measured_ms"] > 0 for r in records for w in r["workloads"])
