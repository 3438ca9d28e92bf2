"""The MPS control daemon as the executor needs it: start, stop, and the environment of a client.

A deliberately small interface (``start(pipe_dir, log_dir)``, ``stop()``,
``env_for_client(share_pct)``) so that it can be unified with the profiler's controller later.
``MpsDaemon`` runs ``nvidia-cuda-mps-control -d`` with private pipe and log folders and stops it
with ``quit``, and refuses to start next to another user's daemon (``gpu.mps`` finds them); ``NoMps`` is used where no GPU is involved (the ``--echo-ms`` stand-in on CPU);
``FakeMps`` records its calls for tests. Nothing here changes clocks, compute mode or MIG.
"""

from __future__ import annotations

import logging
import subprocess
import time
from abc import ABC, abstractmethod
from pathlib import Path

from igniter_opt.errors import ApplyError, MpsError
from igniter_opt.gpu.mps import CONTROL_BINARY as CONTROL
from igniter_opt.gpu.mps import (
    already_running_message,
    find_control_binary,
    mps_env,
    other_control_daemons,
    run_control,
)

log = logging.getLogger(__name__)



class MpsControl(ABC):
    """The MPS control daemon of one run."""

    @abstractmethod
    def start(self, pipe_dir: Path, log_dir: Path) -> None: ...

    @abstractmethod
    def stop(self) -> None:
        """Quit the daemon; safe to call twice or when it never started."""

    @abstractmethod
    def env_for_client(self, share_pct: float) -> dict[str, str]:
        """Variables a client process needs to run under this daemon with ``share_pct`` of the SMs."""

    def describe(self) -> list[str]:
        """The commands it runs (for the dry run)."""
        return []

    def check(self) -> None:
        """Raise ApplyError when it could not start (called before anything starts)."""


def share_value(share_pct: float) -> str:
    return f"{share_pct:g}"


class MpsDaemon(MpsControl):
    """``nvidia-cuda-mps-control -d`` with private folders (known before start, for the clients' environment)."""

    def __init__(self, pipe_dir: Path, log_dir: Path, *, control: str | None = None, stop_timeout_s: float = 10.0,
                 proc_root: Path = Path("/proc")):
        self.control = control
        self.proc_root = proc_root
        self.stop_timeout_s = stop_timeout_s
        self.pipe_dir = pipe_dir
        self.log_dir = log_dir
        self._started = False

    def _binary(self) -> str:
        if not self.control:
            try:
                self.control = find_control_binary()
            except MpsError as exc:
                raise ApplyError(str(exc)) from None
        return self.control

    def check(self) -> None:
        """The control binary exists and no other MPS daemon runs (a leftover of ours, same pipe folder, is quit at start)."""
        self._binary()
        others = other_control_daemons(self.pipe_dir, self.proc_root)
        if others:
            raise ApplyError(already_running_message(others))

    def start(self, pipe_dir: Path, log_dir: Path) -> None:
        binary = self._binary()
        pipe_dir.mkdir(parents=True, exist_ok=True)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.pipe_dir, self.log_dir = pipe_dir, log_dir
        if (pipe_dir / "control").exists():
            # A daemon of an earlier run with the same private folder (one killed with SIGKILL, which
            # no cleanup survives): it is ours, so quit it rather than fail or share it.
            log.warning("quitting a leftover MPS control daemon in %s", pipe_dir)
            self._started = True
            self.stop()
        res = run_control(binary, ["-d"], pipe_dir, log_dir, timeout_s=30)
        if res.returncode != 0:
            raise ApplyError(f"{binary} -d failed (exit {res.returncode}): {(res.stderr or res.stdout).strip()[:200]}")
        self._started = True
        log.info("MPS control daemon started (pipe %s)", pipe_dir)

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        log.info("stopping the MPS control daemon")
        try:
            run_control(self._binary(), [], self.pipe_dir, self.log_dir, timeout_s=self.stop_timeout_s, command="quit")
        except subprocess.TimeoutExpired:
            log.warning("MPS control daemon did not answer 'quit' within %.0f s", self.stop_timeout_s)
        # The daemon removes its control pipe when it is gone.
        deadline = time.monotonic() + self.stop_timeout_s
        while (self.pipe_dir / "control").exists() and time.monotonic() < deadline:
            time.sleep(0.1)

    def env_for_client(self, share_pct: float) -> dict[str, str]:
        return {**mps_env(self.pipe_dir, self.log_dir), "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": share_value(share_pct)}

    def describe(self) -> list[str]:
        c = self.control or CONTROL
        env = f"CUDA_MPS_PIPE_DIRECTORY={self.pipe_dir} CUDA_MPS_LOG_DIRECTORY={self.log_dir}"
        return [f"{env} {c} -d", f"echo quit | {env} {c}   (at the end)"]


class NoMps(MpsControl):
    """No MPS (servers on CPU)."""

    def start(self, pipe_dir: Path, log_dir: Path) -> None:
        pass

    def stop(self) -> None:
        pass

    def env_for_client(self, share_pct: float) -> dict[str, str]:
        return {}


class FakeMps(MpsControl):
    """Records calls; the client environment looks like the real one's."""

    def __init__(self, fail_start: bool = False) -> None:
        self.calls: list[str] = []
        self.running = False
        self.fail_start = fail_start
        self.pipe_dir: Path | None = None

    def start(self, pipe_dir: Path, log_dir: Path) -> None:
        self.calls.append("start")
        if self.fail_start:
            raise ApplyError("MPS control daemon failed to start (fake)")
        self.pipe_dir = pipe_dir
        self.running = True

    def stop(self) -> None:
        self.calls.append("stop")
        self.running = False

    def env_for_client(self, share_pct: float) -> dict[str, str]:
        return {"CUDA_MPS_PIPE_DIRECTORY": str(self.pipe_dir), "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": share_value(share_pct)}
