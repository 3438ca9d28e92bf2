"""Server launchers behind one interface (local process, remote/already running, fake for tests)."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from igniter_opt.apply.ports import HOST, ServerPorts
from igniter_opt.errors import ApplyError
from igniter_opt.procgroup import stop_group

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
_PRCTL: Any
try:  # resolved here, not in the child between fork and exec
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _PRCTL = None


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGTERM this process when its parent dies (Linux), e.g. when igniter-opt is
    killed with SIGKILL and cannot clean up. Runs in the child (``preexec_fn`` or a forked worker)."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


@dataclass(frozen=True)
class ServerSpec:
    """One ``tritonserver`` process: what it runs, with which environment, on which ports."""

    name: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(hash=False, compare=False)
    env_overrides: dict[str, str] = field(hash=False, compare=False)  # what differs from the caller's env
    ports: ServerPorts
    log_path: Path
    model: str

    @property
    def grpc_url(self) -> str:
        return f"{HOST}:{self.ports.grpc}"

    @property
    def ready_url(self) -> str:
        return f"http://{HOST}:{self.ports.http}/v2/health/ready"


def http_ready(url: str, timeout_s: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _tail(path: Path, n: int = 3) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])[-400:]


class Launcher(ABC):
    """Starts, waits for, stops and reads the logs of one server."""

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def wait_ready(self, timeout_s: float) -> float:
        """Block until the server answers ready; returns the seconds waited. ApplyError on exit or timeout."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the server; safe to call twice or when it never started."""

    @abstractmethod
    def logs(self) -> str: ...

    def is_running(self) -> bool:
        return False

    @property
    def pid(self) -> int | None:
        return None


class LocalTritonLauncher(Launcher):
    """A ``tritonserver`` subprocess in a session of its own; stop = SIGTERM -> wait -> SIGKILL (whole group)."""

    def __init__(self, spec: ServerSpec, *, stop_grace_s: float = 10.0, poll_s: float = 0.1) -> None:
        super().__init__(spec)
        self.stop_grace_s = stop_grace_s
        self.poll_s = poll_s
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.spec.log_path, "wb") as fh:
            parent = os.getpid()
            try:
                # preexec_fn calls only prctl, getppid and kill; and the executor starts its servers
                # before it starts any thread of its own.
                self.proc = subprocess.Popen(
                    list(self.spec.argv), env=self.spec.env, stdout=fh, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True,
                    preexec_fn=lambda: die_with_parent(parent),  # noqa: PLW1509
                )
            except OSError as exc:
                raise ApplyError(f"server {self.spec.name}: cannot run {self.spec.argv[0]} ({exc.strerror})") from None
        log.info("server %s started (pid %d)", self.spec.name, self.proc.pid)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout_s: float) -> float:
        t0 = time.monotonic()
        while True:
            if self.proc is None:
                raise ApplyError(f"server {self.spec.name} was never started")
            rc = self.proc.poll()
            if rc is not None:
                raise ApplyError(
                    f"server {self.spec.name} exited with code {rc} before it was ready; "
                    f"log {self.spec.log_path}: {_tail(self.spec.log_path)}"
                )
            if http_ready(self.spec.ready_url, timeout_s=min(1.0, timeout_s)):
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout_s:
                raise ApplyError(
                    f"server {self.spec.name} was not ready after {timeout_s:g} s (raise --ready-timeout?); "
                    f"log {self.spec.log_path}: {_tail(self.spec.log_path)}"
                )
            time.sleep(self.poll_s)

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc, f"server {self.spec.name}", grace_s=self.stop_grace_s, reap_s=5.0)

    def logs(self) -> str:
        try:
            return self.spec.log_path.read_text(errors="replace")
        except OSError:
            return ""


class RemoteTritonLauncher(Launcher):
    """A server started by someone else (on 127.0.0.1): start and stop do nothing; readiness is polled."""

    def start(self) -> None:
        pass

    def wait_ready(self, timeout_s: float) -> float:
        t0 = time.monotonic()
        while not http_ready(self.spec.ready_url):
            if time.monotonic() - t0 > timeout_s:
                raise ApplyError(f"server {self.spec.name} at {self.spec.ready_url} was not ready after {timeout_s:g} s")
            time.sleep(0.2)
        return time.monotonic() - t0

    def stop(self) -> None:
        pass

    def is_running(self) -> bool:
        return True  # not ours to watch; a dead server shows as failed requests

    def logs(self) -> str:
        return ""


class FakeBehaviour(StrEnum):
    OK = "ok"
    EXIT_AT_START = "exit_at_start"
    NEVER_READY = "never_ready"


class FakeLauncher(Launcher):
    """Records its calls; ``behaviour`` makes it fail the way a real server can."""

    def __init__(self, spec: ServerSpec, behaviour: FakeBehaviour = FakeBehaviour.OK,
                 calls: list[tuple[str, str]] | None = None) -> None:
        super().__init__(spec)
        self.behaviour = behaviour
        self.calls = calls if calls is not None else []
        self.running = False

    def start(self) -> None:
        self.calls.append(("start", self.spec.name))
        self.running = self.behaviour is not FakeBehaviour.EXIT_AT_START

    def is_running(self) -> bool:
        return self.running

    def wait_ready(self, timeout_s: float) -> float:
        self.calls.append(("wait_ready", self.spec.name))
        if self.behaviour is FakeBehaviour.EXIT_AT_START:
            raise ApplyError(f"server {self.spec.name} exited with code 1 before it was ready; log: (fake)")
        if self.behaviour is FakeBehaviour.NEVER_READY:
            raise ApplyError(f"server {self.spec.name} was not ready after {timeout_s:g} s (raise --ready-timeout?)")
        return 0.0

    def stop(self) -> None:
        self.calls.append(("stop", self.spec.name))
        self.running = False

    def logs(self) -> str:
        return ""


class LaunchMode(StrEnum):
    LOCAL = "local"
    REMOTE = "remote"
    FAKE = "fake"


def make_launcher(mode: LaunchMode, spec: ServerSpec) -> Launcher:
    if mode is LaunchMode.LOCAL:
        return LocalTritonLauncher(spec)
    if mode is LaunchMode.REMOTE:
        return RemoteTritonLauncher(spec)
    return FakeLauncher(spec)
