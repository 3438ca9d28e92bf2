"""perf_analyzer as a load driver, without a server: its export turned into our records (lag included),
finding and checking the binary, and where it cannot be used. The run against a real server is in
tests/test_apply_triton.py."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from igniter_opt.apply.loadgen import StreamSpec
from igniter_opt.apply.models import served_model
from igniter_opt.apply.options import ApplyOptions
from igniter_opt.apply.perfanalyzer import (
    check_perf_analyzer,
    command,
    find_perf_analyzer,
    perf_analyzer_env,
    records_from_export,
)
from igniter_opt.errors import ApplyError

SPEC = StreamSpec(
    "s0-gpu0-W1",
    "W1",
    "s0-gpu0-W1",
    "127.0.0.1:9001",
    "resnet50",
    served_model("resnet50", echo=True).inputs,
    ("OUTPUT",),
    100.0,
    1.0,
    "constant",
    0,
    210,
    10.0,
    5.0,
)
T0 = 1_800_000_000.0  # the window start, epoch s


def export(
    sends_ms: list[float], latency_ms: float = 2.0, window_ms: float = 0.0, answered: int | None = None
) -> dict:
    """A perf_analyzer export: requests sent at ``sends_ms`` after the window start (ns timestamps)."""
    ns = [round((T0 + ms / 1000) * 1e9) for ms in sends_ms]
    reqs = [
        {
            "timestamp": t,
            "response_timestamps": [t + round(latency_ms * 1e6)] if i < (answered or len(ns)) else [],
        }
        for i, t in enumerate(ns)
    ]
    return {"experiments": [{"experiment": {"mode": "request_rate", "value": 0.0},
                             "requests": list(reversed(reqs)),  # not in send order: sorted by the reader
                             "window_boundaries": [round((T0 + window_ms / 1000) * 1e9), ns[-1] + 10**9]}]}


def test_records_from_export_lag_against_our_schedule() -> None:
    times = [0.010, 0.020, 0.030, 0.040]
    recs = records_from_export(SPEC, export([10.05, 20.5, 33.0, 40.1]), times, run_start=T0 - 1.0)
    assert [r["seq"] for r in recs] == [0, 1, 2, 3] and {r["status"] for r in recs} == {"ok"}
    assert [r["lag_ms"] for r in recs] == pytest.approx([0.05, 0.5, 3.0, 0.1], abs=1e-3)
    assert recs[2]["scheduled_s"] == pytest.approx(1.030) and recs[2]["sent_s"] == pytest.approx(1.033)
    assert [r["latency_ms"] for r in recs] == pytest.approx([2.0] * 4, abs=1e-3)
    assert recs[0]["server"] == "s0-gpu0-W1" and recs[0]["workload"] == "W1"


def test_the_origin_never_under_reports_lag() -> None:
    """A request sent before its time (against the window start) moves the origin back: no negative lag."""
    times = [0.010, 0.020]
    recs = records_from_export(SPEC, export([9.0, 21.0], window_ms=0.0), times, run_start=T0)
    assert min(r["lag_ms"] for r in recs) == pytest.approx(0.0, abs=1e-3)
    assert [r["lag_ms"] for r in recs] == pytest.approx([0.0, 2.0], abs=1e-3)


def test_a_request_without_response_is_an_error() -> None:
    recs = records_from_export(SPEC, export([10.0, 20.0, 30.0], answered=2), [0.01, 0.02, 0.03], run_start=T0)
    assert [r["status"] for r in recs] == ["ok", "ok", "error"] and math.isnan(recs[2]["latency_ms"])
    assert (
        records_from_export(SPEC, {"experiments": [{"requests": [], "window_boundaries": [0, 1]}]}, [0.1], T0)
        == []
    )


def test_command_line() -> None:
    argv = command(Path("/pa"), SPEC, Path("/w/i"), Path("/w/e.json"), 100)
    assert argv == [
        "/pa",
        "-m",
        "resnet50",
        "-u",
        "127.0.0.1:9001",
        "-i",
        "grpc",
        "--async",
        "--request-intervals",
        "/w/i",
        "--request-count",
        "100",
        "--input-data",
        "zero",
        "--profile-export-file",
        "/w/e.json",
    ]


def test_finding_and_checking_the_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr("sys.executable", str(tmp_path / "venv" / "bin" / "python"))
    with pytest.raises(
        ApplyError, match=r"^perf_analyzer: no such executable .*tritonclient==2.51.0.*libb64-0d$"
    ):
        find_perf_analyzer()
    broken = tmp_path / "venv" / "bin" / "perf_analyzer"
    broken.parent.mkdir(parents=True)
    broken.write_text("#!/bin/sh\necho './perf_analyzer: error while loading shared libraries: libb64.so.0d: "
                      "cannot open shared object file: No such file or directory' >&2\nexit 127\n")
    broken.chmod(0o755)
    assert find_perf_analyzer() == broken  # next to the interpreter, where pip puts it
    with pytest.raises(
        ApplyError, match=r"does not start: error while loading shared libraries: libb64.so.0d: .*libb64-0d"
    ):
        check_perf_analyzer(broken, {})


def test_env_links_the_wheels_cuda_runtime(tmp_path: Path) -> None:
    libs = tmp_path / "nvidia_pytriton.libs"
    libs.mkdir()
    (libs / "libcudart-09529672.so.12.6.77").write_text("elf")
    env = perf_analyzer_env([libs], tmp_path / "links", base={"LD_LIBRARY_PATH": "/old"})
    assert env["LD_LIBRARY_PATH"].split(":") == [str(tmp_path / "links"), str(libs), "/old"]
    assert (tmp_path / "links" / "libcudart.so.12").resolve() == libs / "libcudart-09529672.so.12.6.77"
    perf_analyzer_env([libs], tmp_path / "links", base={})  # again: the link is replaced, not an error


def test_perf_analyzer_is_one_stream_per_placement_and_not_for_plan_changes(tmp_path: Path) -> None:
    from fakes import FakeMps
    from test_transition import NEW, OLD

    from igniter_opt.apply.deploy import build_deployment
    from igniter_opt.apply.gpus import GpuInfo
    from igniter_opt.apply.transition import build_transition

    fake = tmp_path / "tritonserver"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    machine = [GpuInfo(0, "GPU-0", "NVIDIA H100 80GB HBM3")]
    opts = ApplyOptions(out_dir=tmp_path / "o", tritonserver=str(fake), load_generator="perf_analyzer")
    dep = build_deployment(NEW, opts, machine_gpus=machine, mps=FakeMps())
    assert [st.stream for st in dep.streams] == [
        "s0-gpu0-KEEP",
        "s1-gpu0-GROW",
        "s2-gpu0-NEW",
    ]  # 500 req/s: not split
    with pytest.raises(
        ApplyError, match=r"^apply --diff needs --load-generator python \(perf_analyzer cannot move"
    ):
        build_transition(OLD, NEW, opts, 10.0, machine_gpus=machine, mps=FakeMps())
    with pytest.raises(
        ApplyError, match=r"^--load-generator must be one of python, perf_analyzer, got 'locust'$"
    ):
        ApplyOptions(load_generator="locust")
