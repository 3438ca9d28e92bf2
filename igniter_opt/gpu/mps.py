"""The MPS control daemon, started and stopped by igniter-opt with private pipe and log folders.

One class for the profiler and the executor::

    with MpsDaemon() as mps:                          # temporary folders (the profiler)
        env = mps.client_env(share_pct=30)            # for a client process
        subprocess.run([...], env=env)

    mps = MpsDaemon(pipe_dir=out / "mps/pipe", log_dir=out / "mps/log")   # fixed folders (the executor)
    mps.describe(); mps.client_env(30, base={})       # known before start: the dry run prints them

``start`` refuses to run next to another MPS control daemon (a second daemon on the same GPU
would serve other users' clients with other limits). With fixed folders, a daemon that already
runs in *those* folders is a leftover of an earlier run of ours that was killed (SIGKILL allows no
cleanup) and is quit first. ``stop`` sends ``quit`` and waits until every process that belongs to
this daemon is gone (found by its private pipe folder in the process environment: the daemon, its
server, and any client left over), killing what does not exit. Nothing here changes clocks,
power limits, compute mode or MIG.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from igniter_opt.errors import MpsError

log = logging.getLogger(__name__)

CONTROL_BINARY = "nvidia-cuda-mps-control"
_SEARCH_PATH = ("/usr/local/nvidia/bin", "/usr/bin", "/usr/local/cuda/bin")
MPS_PROCESS_NAMES = ("nvidia-cuda-mps-control", "nvidia-cuda-mps-server", "nvidia-cuda-mps")


def find_control_binary() -> str:
    """Path of ``nvidia-cuda-mps-control``, or a clear error."""
    found = shutil.which(CONTROL_BINARY)
    if found:
        return found
    for d in _SEARCH_PATH:
        p = Path(d) / CONTROL_BINARY
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    raise MpsError(
        f"{CONTROL_BINARY} not found on PATH or in {', '.join(_SEARCH_PATH)}; "
        "install the NVIDIA driver utilities"
    )


def mps_env(pipe_dir: str | os.PathLike[str], log_dir: str | os.PathLike[str]) -> dict[str, str]:
    """The variables that tie a control command or a client process to one daemon's private folders."""
    return {"CUDA_MPS_PIPE_DIRECTORY": str(pipe_dir), "CUDA_MPS_LOG_DIRECTORY": str(log_dir)}


def run_control(
    binary: str,
    args: list[str],
    pipe_dir: str | os.PathLike[str],
    log_dir: str | os.PathLike[str],
    *,
    timeout_s: float,
    command: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``nvidia-cuda-mps-control ARGS`` for the daemon of these folders (``command`` on its stdin)."""
    return subprocess.run([binary, *args], input=None if command is None else command + "\n",
                          env={**os.environ, **mps_env(pipe_dir, log_dir)}, capture_output=True, text=True,
                          timeout=timeout_s, check=False)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def mps_processes(proc: Path = Path("/proc")) -> list[tuple[int, str, str | None]]:
    """Running MPS daemon/server processes as (pid, name, CUDA_MPS_PIPE_DIRECTORY or None)."""
    out = []
    for entry in proc.iterdir() if proc.is_dir() else []:
        if not entry.name.isdigit():
            continue
        comm = _read(entry / "comm").decode(errors="replace").strip()
        if not comm.startswith("nvidia-cuda-mps"):  # comm is cut at 15 characters
            continue
        argv0 = _read(entry / "cmdline").split(b"\0")[0].decode(errors="replace")
        name = os.path.basename(argv0) or comm
        pipe = None
        for item in _read(entry / "environ").split(b"\0"):
            if item.startswith(b"CUDA_MPS_PIPE_DIRECTORY="):
                pipe = item.split(b"=", 1)[1].decode(errors="replace")
        out.append((int(entry.name), name, pipe))
    return out


def other_control_daemons(own_pipe_dir: str | os.PathLike[str] | None = None,
                          proc: Path = Path("/proc")) -> list[int]:
    """Pids of running MPS control daemons whose pipe folder is not ``own_pipe_dir``."""
    own = None if own_pipe_dir is None else str(own_pipe_dir)
    return [
        pid
        for pid, name, pipe in mps_processes(proc)
        if name == CONTROL_BINARY and (own is None or pipe != own)
    ]


def already_running_message(pids: list[int]) -> str:
    return (f"an MPS control daemon is already running (pid {', '.join(map(str, pids))}); stop it first "
            "(echo quit | CUDA_MPS_PIPE_DIRECTORY=<its pipe dir> nvidia-cuda-mps-control) and retry")




def processes_with_pipe(pipe_dir: str | os.PathLike[str], proc: Path = Path("/proc")) -> list[int]:
    """Pids of live processes (not this one) whose environment names ``pipe_dir`` as their MPS pipe folder.

    That is the daemon, its server and its clients: a private folder belongs to one daemon only.
    """
    want = b"CUDA_MPS_PIPE_DIRECTORY=" + os.fsencode(str(pipe_dir))
    out = []
    for entry in proc.iterdir() if proc.is_dir() else []:
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        if want in _read(entry / "environ").split(b"\0") and ") Z" not in _read(entry / "stat").decode(
            errors="replace"
        ):
            out.append(int(entry.name))
    return out


class MpsDaemon:
    """An MPS control daemon with private pipe and log folders; a context manager.

    ``pipe_dir`` and ``log_dir`` fixed (both or neither): known before start, kept after stop, a
    leftover daemon in them is quit at start. Neither: temporary folders under ``base_dir`` (default
    the system's temp folder), made at start and removed at stop (the logs are kept).
    """

    def __init__(
        self,
        *,
        pipe_dir: str | os.PathLike[str] | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        base_dir: str | os.PathLike[str] | None = None,
        control_binary: str | None = None,
        start_timeout_s: float = 15.0,
        stop_timeout_s: float = 20.0,
        proc_root: str | os.PathLike[str] = "/proc",
    ) -> None:
        if (pipe_dir is None) != (log_dir is None):
            raise MpsError("give the MPS daemon both a pipe and a log folder, or neither (temporary folders)")
        if pipe_dir is not None and base_dir is not None:
            raise MpsError(
                "base_dir is for temporary MPS folders; it cannot go with fixed pipe and log folders"
            )
        self.fixed_folders = pipe_dir is not None
        self.pipe_dir: Path | None = None if pipe_dir is None else Path(pipe_dir)
        self.log_dir: Path | None = None if log_dir is None else Path(log_dir)
        self.base_dir = base_dir
        self.control_binary = control_binary
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.proc_root = Path(proc_root)
        self._tmp: Path | None = None
        self.running = False

    # ---- what clients and the dry run need ------------------------------------------------------
    def client_env(
        self, share_pct: float | None = None, base: dict[str, str] | None = None
    ) -> dict[str, str]:
        """Environment for a client process of this daemon, limited to ``share_pct`` % of the SMs.

        ``base``: the environment to extend (default: this process's); ``{}`` gives only the variables
        that tie a client to this daemon. With temporary folders only while the daemon runs.
        """
        if self.pipe_dir is None or self.log_dir is None or not (self.running or self.fixed_folders):
            raise MpsError("the MPS daemon is not running; start it before launching clients")
        env = {**(os.environ if base is None else base), **mps_env(self.pipe_dir, self.log_dir)}
        if share_pct is not None:
            if not 0 < float(share_pct) <= 100:
                raise MpsError(f"share must be in (0, 100] %, got {share_pct}")
            env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = f"{float(share_pct):g}"
        else:
            env.pop("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", None)
        return env

    def describe(self) -> list[str]:
        """The commands that start and stop it, as a person would type them (for the dry run)."""
        c = self.control_binary or CONTROL_BINARY
        pipe = self.pipe_dir or "<temporary folder>/pipe"
        logs = self.log_dir or "<temporary folder>/log"
        env = f"CUDA_MPS_PIPE_DIRECTORY={pipe} CUDA_MPS_LOG_DIRECTORY={logs}"
        return [f"{env} {c} -d", f"echo quit | {env} {c}   (at the end)"]

    # ---- lifecycle -------------------------------------------------------------------------------
    def _binary(self) -> str:
        if not self.control_binary:
            self.control_binary = find_control_binary()
        return self.control_binary

    def check(self) -> None:
        """Raise MpsError where ``start`` would fail for a reason known in advance: no control binary,
        or another user's daemon (one in our own fixed folders is a leftover, quit at start)."""
        self._binary()
        others = other_control_daemons(self.pipe_dir if self.fixed_folders else None, self.proc_root)
        if others:
            raise MpsError(already_running_message(others))

    def start(self) -> MpsDaemon:
        """Start the daemon and wait for its control pipe; refuse if another MPS control daemon is running."""
        if self.running:
            return self
        self.check()
        if self.fixed_folders:
            assert self.pipe_dir is not None and self.log_dir is not None
            self.pipe_dir.mkdir(parents=True, exist_ok=True)
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._quit_leftover()
        else:
            self._tmp = Path(tempfile.mkdtemp(prefix="igniter-mps-", dir=self.base_dir))
            self.pipe_dir, self.log_dir = self._tmp / "pipe", self._tmp / "log"
            self.pipe_dir.mkdir()
            self.log_dir.mkdir()
        self._launch()
        log.info("MPS control daemon started (pipe %s)", self.pipe_dir)
        return self

    def _launch(self) -> None:
        """``nvidia-cuda-mps-control -d``, then wait for its control pipe (cleaning up on failure)."""
        assert self.pipe_dir is not None and self.log_dir is not None
        binary = self._binary()
        try:
            res = run_control(binary, ["-d"], self.pipe_dir, self.log_dir, timeout_s=self.start_timeout_s)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self._remove_folders(keep_logs=False)
            raise MpsError(f"could not start the MPS control daemon ({exc})") from None
        if res.returncode != 0:
            self._remove_folders(keep_logs=False)
            msg = (res.stderr or res.stdout).strip().splitlines()
            raise MpsError(
                f"the MPS control daemon failed to start (exit {res.returncode}): {msg[-1] if msg else ''}"
            )
        self.running = True
        deadline = time.monotonic() + self.start_timeout_s
        while not (self.pipe_dir / "control").exists():
            if time.monotonic() > deadline:
                self.stop()
                raise MpsError(
                    f"the MPS control daemon did not create its pipe in {self.start_timeout_s:g} s"
                )
            time.sleep(0.05)

    def _quit_leftover(self) -> None:
        """A daemon of an earlier, killed run in our fixed folders is ours: quit it (not fail or share it)."""
        assert self.pipe_dir is not None
        if (self.pipe_dir / "control").exists() or processes_with_pipe(self.pipe_dir, self.proc_root):
            log.warning("quitting a leftover MPS control daemon in %s", self.pipe_dir)
            self.running = True
            self.stop()

    def control(self, command: str, timeout_s: float = 10.0) -> str:
        """Send one command to the control daemon and return its answer."""
        if not self.running:
            raise MpsError("the MPS daemon is not running")
        assert self.pipe_dir is not None and self.log_dir is not None
        try:
            res = run_control(
                self._binary(), [], self.pipe_dir, self.log_dir, timeout_s=timeout_s, command=command
            )
        except subprocess.TimeoutExpired:
            raise MpsError(f"the MPS control daemon did not answer '{command}' in {timeout_s:g} s") from None
        return res.stdout.strip()

    def stop(self) -> None:
        """Quit the daemon and wait until its processes are gone (killed after the timeout); idempotent.

        Raises MpsError only when a process of this daemon survives SIGKILL.
        """
        if not self.running:
            return
        assert self.pipe_dir is not None
        try:
            self.control("quit", timeout_s=self.stop_timeout_s)
        except MpsError as exc:
            log.warning("MPS quit failed: %s", exc)
        deadline = time.monotonic() + self.stop_timeout_s
        while self._ours() and time.monotonic() < deadline:
            time.sleep(0.1)
        left = self._kill_ours()
        self.running = False
        self._remove_folders(keep_logs=True)
        if left:
            raise MpsError(f"MPS processes {left} survived SIGKILL; check the GPU node")

    def _ours(self) -> list[int]:
        return processes_with_pipe(self.pipe_dir, self.proc_root) if self.pipe_dir is not None else []

    def _kill_ours(self, settle_s: float = 5.0) -> list[int]:
        """SIGKILL what is left of this daemon and wait for it; returns what survived."""
        deadline = time.monotonic() + settle_s
        while (left := self._ours()) and time.monotonic() < deadline:
            for pid in left:
                log.warning("MPS process %d did not quit; killing it", pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        return left

    def _remove_folders(self, keep_logs: bool) -> None:
        """Temporary folders only: fixed ones belong to the caller (the executor's --out)."""
        if self._tmp is None:
            return
        shutil.rmtree(self._tmp / "pipe", ignore_errors=True)
        if not keep_logs:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> MpsDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
