"""The executor against the REAL tritonserver of the nvidia-pytriton wheel, on this machine's CPU.

A numpy-free Python-backend stand-in (``--echo-ms``: returns its input through DLPack after a
few ms per batch) is served by real servers, driven by the real load generator at a fixed rate,
and the results and the clean shutdown (no process left) are checked.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from _procs import live_processes
from click.testing import CliRunner

from igniter_opt.cli import cli
from igniter_opt.domain import GpuAssignment, Placement, Plan, Prediction
from igniter_opt.planio import write_plan


def _why_not() -> str | None:
    if importlib.util.find_spec("tritonclient") is None or importlib.util.find_spec("rapidjson") is None:
        return ("tritonclient[grpc] and python-rapidjson are not installed: pip install -e '.[serve]' && "
                "pip install --no-deps nvidia-pytriton==0.7.0")
    from igniter_opt.apply.triton import find_tritonserver, libpython_dir
    from igniter_opt.errors import ApplyError

    try:
        inst = find_tritonserver()
    except ApplyError:
        return ("no tritonserver: pip install --no-deps nvidia-pytriton==0.7.0 (the wheel holds Triton 2.51; "
                "--no-deps keeps numpy 2)")
    if inst.python_backend is None:
        return f"{inst.binary} has no python backend next to it"
    if libpython_dir() is None:
        return "this Python has no shared libpython, which the Python backend's stub needs"
    return None


WHY_NOT = None
# How much later than its read of the switch a load process may read the clock (descheduled between the
# two on a busy 2-core machine: 21 ms seen in a CI run).
SCHEDULING_JITTER_S = 0.25


def setup_module() -> None:
    global WHY_NOT
    WHY_NOT = _why_not()


@pytest.fixture(autouse=True)
def _needs_triton() -> None:
    if WHY_NOT:
        pytest.skip(WHY_NOT)


def plan_file(tmp_path: Path) -> Path:
    """Two workloads on one 'GPU' (shares are not used on CPU), one with a prediction to compare."""
    plan = Plan(
        profile="cpu",
        planner="greedy",
        latency_budget="igniter",
        gpus=(
            GpuAssignment(
                "gpu0",
                "cpu",
                (
                    Placement("W1", "resnet50", 200.0, 40.0, 4, 50.0, Prediction(3.0, 1000.0)),
                    Placement("W2", "vgg19", 200.0, 60.0, 2, 50.0),
                ),
            ),
        ),
    )
    return write_plan(plan, tmp_path / "plan.json")


def ours(out: Path, wait_s: float = 3.0) -> list[str]:
    return live_processes(lambda pgid, cmd: str(out) in cmd, wait_s)


def test_apply_echo_on_real_tritonserver(tmp_path: Path) -> None:
    out = tmp_path / "out"
    t0 = time.monotonic()
    res = CliRunner().invoke(cli, ["apply", str(plan_file(tmp_path)), "--echo-ms", "2", "--duration", "3",
                                   "--arrival", "constant", "--out", str(out)], catch_exceptions=False)
    wall = time.monotonic() - t0
    assert res.exit_code == 0, res.output
    assert ours(out) == []  # every server and stub stopped
    assert "servers ready after" in res.stderr  # progress goes to stderr, the table to stdout
    lines = res.stdout.splitlines()
    assert lines[0].split()[:6] == ["workload", "model", "batch", "share", "%", "rate"]
    assert lines[2].split()[:5] == ["W1", "resnet50", "4", "50", "40.00"]
    assert lines[3].split()[:5] == ["W2", "vgg19", "2", "50", "60.00"]
    assert lines[-1].startswith(f"wrote {out.resolve()}/requests.csv")

    with open(out / "requests.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    # constant arrivals: exactly rate * duration requests per workload, every one answered with its own input
    assert sum(r["workload"] == "W1" for r in rows) == 120
    assert sum(r["workload"] == "W2" for r in rows) == 180
    assert {r["status"] for r in rows} == {"ok"}, [r for r in rows if r["status"] != "ok"][:3]
    assert all(0 < float(r["latency_ms"]) < 1000 for r in rows)
    assert max(float(r["sent_s"]) for r in rows) < 3.0
    w2 = sorted(float(r["scheduled_s"]) for r in rows if r["workload"] == "W2")
    assert w2[1] - w2[0] == pytest.approx(1 / 60, abs=1e-6)  # two streams of 30 req/s interleaved

    summary = json.loads((out / "summary.json").read_text())
    assert summary["errors"] == [] and summary["interrupted"] is None
    w1 = summary["workloads"][0]
    assert w1["workload"] == "W1" and w1["requests"] == 120 and w1["ok"] == 120
    assert 0.0 <= w1["within_slo"] <= 1.0 and w1["p50_ms"] <= w1["p95_ms"] <= w1["p99_ms"]
    assert w1["predicted_ms"] == 3.0
    assert w1["server_infer_ms"] >= 2.0  # the stand-in sleeps 2 ms per execution
    # its own trace: every execution (120 requests + warm-up, batches of at most 4), the sleep as its run time
    assert 2.0 <= w1["model_ms"] < w1["server_infer_ms"] + 0.5 and w1["backend_ms"] < 5.0
    assert 1.0 <= w1["executed_batch"] <= 4.0
    gap = max(w["server_infer_ms"] - w["model_ms"] for w in summary["workloads"])
    assert (
        f"serving overhead per batch (Triton's time per execution - the model's): {gap:.2f} ms" in res.output
    )
    with open(out / "logs" / "s0-gpu0-W1.exec.csv", newline="") as fh:
        trace = list(csv.DictReader(fh))
    assert 120 <= sum(int(r["samples"]) for r in trace) <= 130 and max(int(r["requests"]) for r in trace) <= 4
    assert 20 < w1["achieved_rps"] < 45
    with open(out / "summary.csv", newline="") as fh:
        assert [r["workload"] for r in csv.DictReader(fh)] == ["W1", "W2"]
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "logs" / "s0-gpu0-W1.log").is_file()
    assert not (out / "parts").exists() or not any((out / "parts").iterdir())
    assert wall < 40


def _progress_lines(p: subprocess.Popen) -> tuple[list[str], threading.Thread]:
    """The lines of ``p``'s stderr as they come, and the thread that reads them (it ends with the stream)."""
    lines: list[str] = []

    def read() -> None:
        assert p.stderr is not None
        for line in p.stderr:
            lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return lines, reader


def _wait_for(lines: list[str], text: str, p: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(text in ln for ln in lines):
        assert p.poll() is None and time.monotonic() < deadline, lines
        time.sleep(0.05)


def _apply_for_a_minute(tmp_path: Path, out: Path) -> list[str]:
    """``igniter-opt apply`` of the CPU stand-in plan for 60 s, as a process of its own."""
    return [sys.executable, "-m", "igniter_opt", "apply", str(plan_file(tmp_path)), "--echo-ms", "1",
            "--duration", "60", "--out", str(out)]


def test_interrupt_stops_everything_and_keeps_results(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = _apply_for_a_minute(tmp_path, out)
    p = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        progress, reader = _progress_lines(p)
        _wait_for(progress, "load started", p, timeout_s=90)
        time.sleep(1.5)  # some load
        os.killpg(p.pid, signal.SIGINT)  # as Ctrl-C does: the whole foreground group
        time.sleep(0.3)
        os.killpg(p.pid, signal.SIGINT)  # impatient: a second Ctrl-C must not cut the cleanup short
        stdout = p.stdout.read() if p.stdout else ""
        p.wait(timeout=60)
        reader.join(timeout=10)
        stderr = "\n".join(progress)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 1, stderr
    assert stderr.splitlines()[-1] == (
        f"Error: interrupted by SIGINT; every server and MPS stopped; results so far in {out.resolve()}")
    assert ours(out) == []
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] == "SIGINT"
    assert sum(w["requests"] for w in summary["workloads"]) > 50
    assert "W1" in stdout


def test_server_that_fails_at_start(tmp_path: Path) -> None:
    """A real server whose model cannot load exits at start: one-line error, nothing left running."""
    import dataclasses

    from igniter_opt.apply import ApplyOptions, apply_plan, build_deployment
    from igniter_opt.planio import read_plan

    out = tmp_path / "out"
    dep = build_deployment(
        read_plan(plan_file(tmp_path)), ApplyOptions(out_dir=out, echo_ms=1, ready_timeout_s=60)
    )
    broken = dataclasses.replace(dep.servers[1], model_py="raise RuntimeError('broken model')\n")
    dep = dataclasses.replace(dep, servers=(dep.servers[0], broken))
    result = apply_plan(dep)
    assert len(result.errors) == 1, result.errors
    assert result.errors[0].startswith("server s1-gpu0-W2 exited with code 1 before it was ready; log ")
    assert result.results == [] and ours(out) == []


def test_killed_executor_leaves_no_server(tmp_path: Path) -> None:
    """SIGKILL gives the executor no chance to clean up: the servers and load processes die with it."""
    out = tmp_path / "out"
    cmd = _apply_for_a_minute(tmp_path, out)
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / "parts").exists() and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.1)
        time.sleep(0.5)
        assert len(ours(out, wait_s=0)) >= 4  # the executor, 2 servers, their stubs, the load processes
    finally:
        p.kill()
        p.wait()
    assert ours(out, wait_s=15) == []


def test_plan_change_under_load_on_real_tritonserver(tmp_path: Path) -> None:
    """apply --diff: a kept, a resized, a started and a stopped placement, switched under load."""
    old = Plan(profile="cpu", planner="greedy", latency_budget="igniter", gpus=(GpuAssignment("gpu0", "cpu", (
        Placement("KEEP", "resnet50", 500.0, 30.0, 2, 40.0),
        Placement("GROW", "vgg19", 500.0, 20.0, 2, 30.0),
        Placement("GONE", "alexnet", 500.0, 20.0, 2, 10.0),
    )),))
    new = Plan(profile="cpu", planner="greedy", latency_budget="igniter", gpus=(GpuAssignment("gpu0", "cpu", (
        Placement("KEEP", "resnet50", 500.0, 50.0, 2, 40.0),  # same server, higher rate
        Placement("GROW", "vgg19", 500.0, 40.0, 4, 45.0),  # resized: a new server
        Placement("NEW", "alexnet", 500.0, 20.0, 2, 10.0),  # started
    )),))
    o, n = write_plan(old, tmp_path / "old.json"), write_plan(new, tmp_path / "new.json")
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["apply", "--diff", str(o), str(n), "--echo-ms", "1", "--duration", "12",
                                   "--step-at", "2", "--arrival", "constant", "--out", str(out)],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert ours(out) == []  # every server (old and new) stopped
    tj = json.loads((out / "transition.json").read_text())
    ev = tj["events_s"]
    assert (
        tj["errors"] == []
        and 1.9 < ev["step_s"] < ev["ready_s"] <= ev["switched_s"] <= ev["old_stopped_s"] < 12
    )
    assert tj["diff"]["summary"]["kept"] == 1 and tj["diff"]["summary"]["resized"] == 1
    assert tj["diff"]["summary"]["started"] == 1 and tj["diff"]["summary"]["stopped"] == 1
    with open(out / "requests.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["status"] for r in rows} == {"ok"}, [r for r in rows if r["status"] != "ok"][
        :3
    ]  # nothing dropped

    def servers(w: str, after: bool) -> set[str]:
        """Where w's requests went before the switch began, or after it was done; a request that read the
        switch unset may have read the clock up to SCHEDULING_JITTER_S later (one that read it set cannot
        have been sent before it)."""

        def side(t: float) -> bool:
            return t >= ev["switched_s"] + SCHEDULING_JITTER_S if after else t < ev["ready_s"]

        return {r["server"] for r in rows if r["workload"] == w and side(float(r["sent_s"]))}

    assert servers("KEEP", False) == servers("KEEP", True) == {"s0-gpu0-KEEP"}
    assert servers("GROW", False) == {"s1-gpu0-GROW"} and servers("GROW", True) == {"new-s1-gpu0-GROW"}
    assert servers("NEW", False) == set() and servers("NEW", True) == {"new-s2-gpu0-NEW"}
    assert not [r for r in rows if r["workload"] == "GONE" and float(r["sent_s"]) >= 2.0]
    keep = sorted(float(r["sent_s"]) for r in rows if r["workload"] == "KEEP")
    assert sum(t < 2.0 for t in keep) == 60 and sum(t >= 2.0 for t in keep) == 500  # 30 then 50 req/s
    phases = {(p, w["workload"]) for p, ws in tj["phases"].items() for w in ws}
    assert ("before", "GONE") in phases and ("after", "NEW") in phases and ("after", "GONE") not in phases
    keep_after = next(w for w in tj["phases"]["after"] if w["workload"] == "KEEP")
    assert 45 < keep_after["achieved_rps"] < 52  # per second of the phase itself, at the new 50 req/s
    assert (out / "latency.png").is_file() and (out / "summary.csv").read_text().startswith("phase,workload,")


# ---- nothing outlives apply (issue 14.11) -----------------------------------------------------------
FAKE_MPS = Path(__file__).parent / "fake_gpu" / "fake_mps_control.py"


def _not_gone(pids: set[int]) -> list[str]:
    """Pids still running, or zombies that this process (their parent) has not reaped; checked at once."""
    left = []
    for pid in sorted(pids):
        try:
            st = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = st[st.rindex(")") + 2:].split()
        if fields[0] != "Z" or int(fields[1]) == os.getpid():
            left.append(f"{pid} {fields[0]} {Path(f'/proc/{pid}/comm').read_text().strip()}")
    return left


def _kill(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _with_stubborn_children(dep, pids: Path):  # noqa: ANN001, ANN202 - a Deployment in, a Deployment out
    """The served models start children like a stub stuck tearing down its GPU context: one ignores
    SIGTERM; the other also left the server's process group (not its session). Their pids go to ``pids``."""
    import dataclasses

    codes = [f"import os, signal, time; {leave}signal.signal(signal.SIGTERM, signal.SIG_IGN); "
             f"open({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n'); time.sleep(600)"
             for leave in ("", "os.setpgid(0, 0); ")]
    spawn = "        import subprocess\n" + "".join(
        f"        subprocess.Popen([{sys.executable!r}, '-c', {c!r}])\n" for c in codes)
    servers = tuple(
        dataclasses.replace(
            s,
            model_py=s.model_py.replace(
                "    def initialize(self, args):\n", "    def initialize(self, args):\n" + spawn, 1
            ),
        )
        for s in dep.servers
    )
    assert all(spawn in s.model_py for s in servers)
    return dataclasses.replace(dep, servers=servers)


@pytest.mark.parametrize("ending", ["success", "sigterm", "server_crash"])
def test_no_process_of_the_run_outlives_apply(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              request: pytest.FixtureRequest, ending: str) -> None:
    """Servers, their Python-backend stubs (and what they started), load processes and the MPS daemon and
    server: all gone when apply_plan returns, whether the run ends normally, by SIGTERM, or because a
    server crashed."""
    from igniter_opt.apply import ApplyOptions, apply_plan, build_deployment
    from igniter_opt.apply.launcher import LocalTritonLauncher
    from igniter_opt.apply.loadgen import LoadGenerator
    from igniter_opt.gpu.mps import MpsDaemon
    from igniter_opt.planio import read_plan
    from igniter_opt.procgroup import group_members

    control = tmp_path / "nvidia-cuda-mps-control"
    control.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE_MPS} \"$@\"\n")
    control.chmod(0o755)
    monkeypatch.setenv("FAKE_PIDFILE", str(tmp_path / "mps-pids"))
    out = tmp_path / "out"
    mps = MpsDaemon(
        pipe_dir=tmp_path / "mps" / "pipe", log_dir=out / "mps" / "log", control_binary=str(control)
    )
    dep = build_deployment(read_plan(plan_file(tmp_path)), ApplyOptions(out_dir=out, echo_ms=1, duration_s=4,
                                                                        ready_timeout_s=60), mps=mps)
    dep = _with_stubborn_children(dep, tmp_path / "stubborn-pids")
    servers: list[LocalTritonLauncher] = []
    loads: list[LoadGenerator] = []
    seen: set[int] = set()

    def at_go(_: float) -> None:
        for lc in servers:  # the servers and their stubs, which are up by now
            seen.update(group_members(lc.pid or 0))
        seen.update(p.pid for p in loads[0].procs)
        if ending == "sigterm":
            threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
        elif ending == "server_crash":
            threading.Timer(1.0, os.kill, (servers[0].pid, signal.SIGKILL)).start()

    class Load(LoadGenerator):
        def run(self, on_started=None, on_go=None):  # noqa: ANN001, ANN202 - the LoadDriver signature
            loads.append(self)
            return super().run(on_started, lambda t: (at_go(t), on_go and on_go(t)))

    result = apply_plan(
        dep,
        launcher_factory=lambda spec: servers.append(LocalTritonLauncher(spec)) or servers[-1],
        load_factory=Load,
    )
    mps_pids = {int(x) for x in (tmp_path / "mps-pids").read_text().split()}
    stubborn = {int(x) for x in (tmp_path / "stubborn-pids").read_text().split()}
    request.addfinalizer(lambda: _kill(seen | mps_pids | stubborn))  # only if an assertion below fails
    assert len(mps_pids) == 2 and len(servers) == 2 and len(stubborn) == 4
    assert len(seen) >= 2 + 2 + 2 + 2  # servers, stubs, the stubborn children in the groups, load processes
    assert _not_gone(seen | mps_pids | stubborn) == []  # at once: nothing was left to exit later
    assert [group_members(lc.pid or 0) for lc in servers] == [[], []]
    assert ours(out, wait_s=0) == []
    assert sum(r.requests for r in result.results) > 20, result.errors  # the load ran before the ending
    if ending == "success":
        assert result.ok, result.errors
    elif ending == "sigterm":
        assert result.interrupted == "SIGTERM" and result.errors == []
    else:
        assert (
            result.errors[0]
            == f"server s0-gpu0-W1 exited during the run; log {out.resolve()}/logs/s0-gpu0-W1.log"
        )


def _perf_analyzer_missing() -> str | None:
    from igniter_opt.apply.perfanalyzer import (
        INSTALL_HINT,
        check_perf_analyzer,
        find_perf_analyzer,
        perf_analyzer_env,
    )
    from igniter_opt.apply.triton import find_tritonserver
    from igniter_opt.errors import ApplyError

    try:
        binary = find_perf_analyzer()
        check_perf_analyzer(
            binary, perf_analyzer_env(find_tritonserver().lib_dirs, Path("/tmp/igniter-opt-pa-libs"))
        )
    except ApplyError as exc:
        return f"perf_analyzer is not usable here ({exc}); {INSTALL_HINT}"
    return None


def test_apply_with_perf_analyzer_as_load_generator(tmp_path: Path) -> None:
    """Triton's perf_analyzer drives the same plan: exact request counts at a constant rate, each request's
    lag recovered against our schedule, the run judged valid or not like the Python generator's, nothing
    left running."""
    missing = _perf_analyzer_missing()
    if missing:
        pytest.skip(missing)
    out = tmp_path / "out"
    res = CliRunner().invoke(
        cli,
        [
            "apply",
            str(plan_file(tmp_path)),
            "--echo-ms",
            "1",
            "--duration",
            "3",
            "--arrival",
            "constant",
            "--load-generator",
            "perf_analyzer",
            "--max-lag-ms",
            "50",
            "--out",
            str(out),
        ],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    assert (
        ours(out) == [] and live_processes(lambda pgid, cmd: "perf_analyzer" in cmd and str(out) in cmd) == []
    )
    with open(out / "requests.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sum(r["workload"] == "W1" for r in rows) == 120 and sum(r["workload"] == "W2" for r in rows) == 180
    assert {r["status"] for r in rows} == {"ok"}
    assert min(float(r["lag_ms"]) for r in rows) >= 0.0
    w2 = sorted(float(r["scheduled_s"]) for r in rows if r["workload"] == "W2")
    assert w2[1] - w2[0] == pytest.approx(1 / 60, abs=1e-5)  # one stream of 60 req/s: our schedule
    summary = json.loads((out / "summary.json").read_text())
    w1 = summary["workloads"][0]
    assert w1["requests"] == 120 and w1["generator_lag_p99_ms"] is not None and w1["server_infer_ms"] >= 1.0
    assert summary["valid"] == all(w["generator_lag_p99_ms"] <= 50 for w in summary["workloads"])
