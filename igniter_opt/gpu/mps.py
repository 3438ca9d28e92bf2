"""The MPS control daemon, started and stopped by igniter-opt with private pipe and log folders.

Used by the profiler and the executor::

    with MpsDaemon() as mps:
        env = mps.client_env(share_pct=30)    # for a client process
        subprocess.run([...], env=env)

``start`` refuses to run next to another MPS control daemon (a second daemon on the same GPU
would serve other users' clients with other limits) and ``stop`` sends ``quit`` and waits until
the daemon and its server are gone, killing only processes that belong to this daemon (found
by their private pipe folder). Nothing here changes clocks, power limits, compute mode or MIG.
"""

from __future__ import annotations

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
        f"{CONTROL_BINARY} not found on PATH or in {', '.join(_SEARCH_PATH)}; install the NVIDIA driver utilities"
    )


def mps_env(pipe_dir: str | os.PathLike[str], log_dir: str | os.PathLike[str]) -> dict[str, str]:
    """The variables that tie a control command or a client process to one daemon's private folders."""
    return {"CUDA_MPS_PIPE_DIRECTORY": str(pipe_dir), "CUDA_MPS_LOG_DIRECTORY": str(log_dir)}


def run_control(binary: str, args: list[str], pipe_dir: str | os.PathLike[str], log_dir: str | os.PathLike[str], *,
                timeout_s: float, command: str | None = None) -> subprocess.CompletedProcess[str]:
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
    return [pid for pid, name, pipe in mps_processes(proc) if name == CONTROL_BINARY and (own is None or pipe != own)]


def already_running_message(pids: list[int]) -> str:
    return (f"an MPS control daemon is already running (pid {', '.join(map(str, pids))}); stop it first "
            "(echo quit | CUDA_MPS_PIPE_DIRECTORY=<its pipe dir> nvidia-cuda-mps-control) and retry")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child counts as gone.
    stat = _read(Path(f"/proc/{pid}/stat")).decode(errors="replace")
    return ") Z" not in stat


class MpsDaemon:
    """An MPS control daemon with private pipe and log folders; a context manager."""

    def __init__(
        self,
        *,
        control_binary: str | None = None,
        base_dir: str | os.PathLike[str] | None = None,
        start_timeout_s: float = 15.0,
        stop_timeout_s: float = 20.0,
        proc_root: str | os.PathLike[str] = "/proc",
    ) -> None:
        self.control_binary = control_binary
        self.base_dir = base_dir
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.proc_root = Path(proc_root)
        self.pipe_dir: Path | None = None
        self.log_dir: Path | None = None
        self._tmp: Path | None = None
        self.running = False

    # ---- environment -----------------------------------------------------------------------
    def client_env(self, share_pct: float | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for a client process of this daemon, limited to ``share_pct`` % of the SMs."""
        if not self.running:
            raise MpsError("the MPS daemon is not running; start it before launching clients")
        assert self.pipe_dir is not None and self.log_dir is not None
        env = {**(os.environ if base is None else base), **mps_env(self.pipe_dir, self.log_dir)}
        if share_pct is not None:
            if not 0 < float(share_pct) <= 100:
                raise MpsError(f"share must be in (0, 100] %, got {share_pct}")
            env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = f"{float(share_pct):g}"
        else:
            env.pop("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", None)
        return env

    # ---- lifecycle -------------------------------------------------------------------------
    def _ours(self) -> list[tuple[int, str]]:
        return [(pid, name) for pid, name, pipe in mps_processes(self.proc_root) if pipe == str(self.pipe_dir)]

    def start(self) -> MpsDaemon:
        """Start the daemon; refuse if another MPS control daemon is running."""
        if self.running:
            return self
        others = other_control_daemons(None, self.proc_root)
        if others:
            raise MpsError(already_running_message(others))
        binary = self.control_binary or find_control_binary()
        self._tmp = Path(tempfile.mkdtemp(prefix="igniter-mps-", dir=self.base_dir))
        self.pipe_dir = self._tmp / "pipe"
        self.log_dir = self._tmp / "log"
        self.pipe_dir.mkdir()
        self.log_dir.mkdir()
        try:
            res = run_control(binary, ["-d"], self.pipe_dir, self.log_dir, timeout_s=self.start_timeout_s)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self._cleanup_dirs()
            raise MpsError(f"could not start the MPS control daemon ({exc})") from None
        if res.returncode != 0:
            self._cleanup_dirs()
            msg = (res.stderr or res.stdout).strip().splitlines()
            raise MpsError(f"the MPS control daemon failed to start (exit {res.returncode}): {msg[-1] if msg else ''}")
        self.running = True
        deadline = time.monotonic() + self.start_timeout_s
        while not (self.pipe_dir / "control").exists():
            if time.monotonic() > deadline:
                self.stop()
                raise MpsError(f"the MPS control daemon did not create its pipe in {self.start_timeout_s:g} s")
            time.sleep(0.05)
        log.info("MPS control daemon started (pipe %s)", self.pipe_dir)
        return self

    def control(self, command: str, timeout_s: float = 10.0) -> str:
        """Send one command to the control daemon and return its answer."""
        if not self.running:
            raise MpsError("the MPS daemon is not running")
        binary = self.control_binary or find_control_binary()
        assert self.pipe_dir is not None and self.log_dir is not None
        try:
            res = run_control(binary, [], self.pipe_dir, self.log_dir, timeout_s=timeout_s, command=command)
        except subprocess.TimeoutExpired:
            raise MpsError(f"the MPS control daemon did not answer '{command}' in {timeout_s:g} s") from None
        return res.stdout.strip()

    def stop(self) -> None:
        """Quit the daemon and wait until its processes are gone (kill them after the timeout)."""
        if not self.running:
            return
        try:
            self.control("quit", timeout_s=self.stop_timeout_s)
        except MpsError as exc:
            log.warning("MPS quit failed: %s", exc)
        deadline = time.monotonic() + self.stop_timeout_s
        while self._ours() and time.monotonic() < deadline:
            time.sleep(0.1)
        left = self._ours()
        for pid, name in left:
            log.warning("MPS process %s (%d) did not quit; killing it", name, pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.running = False
        self._cleanup_dirs(keep_logs=True)
        if left:
            time.sleep(0.5)
            still = [p for p, _ in left if _alive(p)]
            if still:
                raise MpsError(f"MPS processes {still} survived SIGKILL; check the GPU node")

    def _cleanup_dirs(self, keep_logs: bool = False) -> None:
        if self.pipe_dir is not None:
            shutil.rmtree(self.pipe_dir, ignore_errors=True)
        if not keep_logs and self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> MpsDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
