"""The one MPS daemon class of the profiler and the executor, against a fake nvidia-cuda-mps-control
that really daemonizes (tests/fake_gpu/fake_mps_control.py), so that "nothing is left" is checked
on real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from igniter_opt.errors import MpsError
from igniter_opt.gpu.mps import MpsDaemon, processes_with_pipe

FAKE = Path(__file__).parent / "fake_gpu" / "fake_mps_control.py"


@pytest.fixture()
def control(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An executable fake control binary; the pids of the daemons it starts go to tmp_path/pids (and
    whatever a failing test left running is killed afterwards)."""
    exe = tmp_path / "bin" / "nvidia-cuda-mps-control"
    exe.parent.mkdir()
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE} \"$@\"\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("FAKE_PIDFILE", str(tmp_path / "pids"))
    yield exe
    for pid in alive(started_pids(tmp_path), wait_s=0):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def started_pids(tmp_path: Path) -> list[int]:
    f = tmp_path / "pids"
    return [int(x) for x in f.read_text().split()] if f.exists() else []


def alive(pids: list[int], wait_s: float = 3.0) -> list[int]:
    """The pids that are still running (zombies count as gone) after up to ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        left = []
        for pid in pids:
            try:
                st = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            if st[st.rindex(")") + 2] != "Z":
                left.append(pid)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def fake_proc_daemon(proc: Path, pid: int, pipe: str) -> None:
    """A /proc entry of an nvidia-cuda-mps-control daemon with the given pipe folder."""
    entry = proc / str(pid)
    entry.mkdir(parents=True)
    (entry / "comm").write_text("nvidia-cuda-mps\n")
    (entry / "cmdline").write_bytes(b"nvidia-cuda-mps-control\0-d\0")
    (entry / "environ").write_bytes(f"CUDA_MPS_PIPE_DIRECTORY={pipe}\0".encode())
    (entry / "stat").write_text(f"{pid} (nvidia-cuda-mps) S 1 {pid} {pid}\n")


def test_temporary_folders_start_serve_and_leave_nothing(tmp_path: Path, control: Path) -> None:
    """The profiler's way: folders made at start, a client environment, and after stop no daemon or server."""
    with MpsDaemon(control_binary=str(control), base_dir=tmp_path, stop_timeout_s=3) as m:
        assert m.pipe_dir is not None and (m.pipe_dir / "control").exists()
        env = m.client_env(12.5, base={"PATH": "/bin"})
        assert env == {"PATH": "/bin", "CUDA_MPS_PIPE_DIRECTORY": str(m.pipe_dir),
                       "CUDA_MPS_LOG_DIRECTORY": str(m.log_dir), "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "12.5"}
        pids = started_pids(tmp_path)
        assert len(pids) == 2 and sorted(processes_with_pipe(m.pipe_dir)) == sorted(pids)  # daemon and server
    assert alive(pids) == [] and not m.running
    assert not m.pipe_dir.exists() and m.log_dir is not None and m.log_dir.is_dir()  # logs kept
    with pytest.raises(MpsError, match="not running"):
        m.client_env(50)


def test_fixed_folders_are_known_before_start_and_kept(tmp_path: Path, control: Path) -> None:
    """The executor's way: the dry run prints the folders and clients' variables before anything starts."""
    pipe, logs = tmp_path / "out" / "mps" / "pipe", tmp_path / "out" / "mps" / "log"
    m = MpsDaemon(pipe_dir=pipe, log_dir=logs, control_binary=str(control), stop_timeout_s=3)
    assert m.client_env(30, base={}) == {
        "CUDA_MPS_PIPE_DIRECTORY": str(pipe),
        "CUDA_MPS_LOG_DIRECTORY": str(logs),
        "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "30",
    }
    env = f"CUDA_MPS_PIPE_DIRECTORY={pipe} CUDA_MPS_LOG_DIRECTORY={logs}"
    assert m.describe() == [f"{env} {control} -d", f"echo quit | {env} {control}   (at the end)"]
    assert not pipe.exists()  # nothing made yet
    m.stop()  # never started: nothing to do
    m.start()
    m.stop()
    m.stop()  # twice is fine
    assert alive(started_pids(tmp_path)) == [] and pipe.is_dir() and not (pipe / "control").exists()
    assert (logs / "calls").read_text().splitlines() == [
        f"args=-d pipe={pipe}",
        f"args= pipe={pipe}",
        "stdin=quit",
    ]


def test_a_leftover_daemon_of_ours_is_quit_first(tmp_path: Path, control: Path) -> None:
    """A run killed with SIGKILL leaves its daemon in its fixed folders: the next run there quits it."""
    pipe, logs = tmp_path / "pipe", tmp_path / "log"
    MpsDaemon(
        pipe_dir=pipe, log_dir=logs, control_binary=str(control)
    ).start()  # then "killed": never stopped
    first = started_pids(tmp_path)
    (logs / "calls").unlink()
    m = MpsDaemon(pipe_dir=pipe, log_dir=logs, control_binary=str(control), stop_timeout_s=3)
    m.start()
    assert alive(first) == []
    assert (logs / "calls").read_text().splitlines() == [
        f"args= pipe={pipe}",
        "stdin=quit",
        f"args=-d pipe={pipe}",
    ]
    m.stop()
    assert alive(started_pids(tmp_path)) == []


def test_a_daemon_that_ignores_quit_is_killed(
    tmp_path: Path, control: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MPS_IGNORE_QUIT", "1")
    m = MpsDaemon(control_binary=str(control), base_dir=tmp_path, stop_timeout_s=1).start()
    pids = started_pids(tmp_path)
    assert len(alive(pids, wait_s=0)) == 2
    m.stop()  # quit is ignored: found by its private pipe folder and killed
    assert alive(pids) == []


def test_another_users_daemon_is_refused_in_both_modes(tmp_path: Path, control: Path) -> None:
    proc = tmp_path / "proc"
    ours = tmp_path / "out" / "mps" / "pipe"
    fixed = MpsDaemon(pipe_dir=ours, log_dir=tmp_path / "log", control_binary=str(control), proc_root=proc)
    fake_proc_daemon(proc, 4100, str(ours))
    fixed.check()  # a leftover of ours: quit at start, not refused
    fake_proc_daemon(proc, 4242, "/tmp/nvidia-mps")
    message = r"^an MPS control daemon is already running \(pid 4242\); stop it first"
    with pytest.raises(MpsError, match=message):
        fixed.check()
    temporary = MpsDaemon(control_binary=str(control), base_dir=tmp_path, proc_root=proc)
    with pytest.raises(MpsError, match=r"already running \(pid 4100, 4242\)"):
        temporary.start()
    assert not temporary.running and started_pids(tmp_path) == [] and not list(tmp_path.glob("igniter-mps-*"))


def test_failing_start_is_clear_and_cleans_up(
    tmp_path: Path, control: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MPS_FAIL", "1")
    message = (
        r"^the MPS control daemon failed to start \(exit 1\): An instance of this daemon is already running$"
    )
    with pytest.raises(MpsError, match=message):
        MpsDaemon(control_binary=str(control), base_dir=tmp_path).start()
    assert not list(tmp_path.glob("igniter-mps-*"))  # temporary folders removed
    m = MpsDaemon(pipe_dir=tmp_path / "pipe", log_dir=tmp_path / "log", control_binary=str(control))
    with pytest.raises(MpsError, match=message):
        m.start()
    assert not m.running and (tmp_path / "pipe").is_dir()  # fixed folders are the caller's


def test_missing_control_binary_and_bad_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("igniter_opt.gpu.mps._SEARCH_PATH", ())
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(
        MpsError, match=r"^nvidia-cuda-mps-control not found on PATH .*install the NVIDIA driver"
    ):
        MpsDaemon(pipe_dir=tmp_path / "p", log_dir=tmp_path / "l").check()
    with pytest.raises(MpsError, match="both a pipe and a log folder, or neither"):
        MpsDaemon(pipe_dir=tmp_path / "p")
    with pytest.raises(MpsError, match="base_dir is for temporary MPS folders"):
        MpsDaemon(pipe_dir=tmp_path / "p", log_dir=tmp_path / "l", base_dir=tmp_path)
    with pytest.raises(MpsError, match=r"share must be in \(0, 100\]"):
        MpsDaemon(pipe_dir=tmp_path / "p", log_dir=tmp_path / "l").client_env(0)


def test_processes_with_pipe_finds_only_that_folder(tmp_path: Path) -> None:
    import subprocess

    pipe = tmp_path / "pipe"
    env = {**os.environ, "CUDA_MPS_PIPE_DIRECTORY": str(pipe)}
    p = subprocess.Popen(["sleep", "30"], env=env)
    q = subprocess.Popen(["sleep", "30"], env={**env, "CUDA_MPS_PIPE_DIRECTORY": str(pipe) + "-other"})
    try:
        # a process just started may not show its new environment in /proc at once on a loaded machine
        deadline = time.monotonic() + 5.0
        while processes_with_pipe(pipe) != [p.pid] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert processes_with_pipe(pipe) == [p.pid]
    finally:
        for x in (p, q):
            x.kill()
            x.wait()
    assert processes_with_pipe(pipe) == []
