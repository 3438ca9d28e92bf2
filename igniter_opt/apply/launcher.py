"""Server launchers behind one interface: a local process, or a server someone else runs.

``make_launcher(mode)`` gives the factory that the run uses (``spec -> Launcher``); tests pass
a factory of their own (``tests/fakes``) instead.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from igniter_opt.apply.ports import HOST, ServerPorts
from igniter_opt.errors import ApplyError
from igniter_opt.procgroup import die_with_parent, stop_group, stop_signals_deferred

log = logging.getLogger(__name__)

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
    """A ``tritonserver`` in a session of its own; stop: SIGTERM, wait, SIGKILL, verify (the whole group)."""

    def __init__(self, spec: ServerSpec, *, stop_grace_s: float = 10.0, poll_s: float = 0.1) -> None:
        super().__init__(spec)
        self.stop_grace_s = stop_grace_s
        self.poll_s = poll_s
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.spec.log_path, "wb") as fh, stop_signals_deferred():
            parent = os.getpid()
            try:
                # preexec_fn calls only sigmask, prctl, getppid and kill. Ctrl-C is held back until
                # self.proc is set, so that stop() always knows the process.
                self.proc = subprocess.Popen(
                    list(self.spec.argv), env=self.spec.env, stdout=fh, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True,
                    preexec_fn=lambda: die_with_parent(parent),  # noqa: PLW1509
                )
            except OSError as exc:
                raise ApplyError(
                    f"server {self.spec.name}: cannot run {self.spec.argv[0]} ({exc.strerror})"
                ) from None
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
        """Stop the server's whole session (server and stubs) and verify that none of it is left."""
        if self.proc is None:
            return
        left = stop_group(self.proc, f"server {self.spec.name}", grace_s=self.stop_grace_s, reap_s=5.0)
        if left:
            raise ApplyError(
                f"server {self.spec.name}: processes {', '.join(map(str, left))} survived SIGKILL; "
                "kill them by hand and check the GPU node"
            )

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
                raise ApplyError(
                    f"server {self.spec.name} at {self.spec.ready_url} was not ready after {timeout_s:g} s"
                )
            time.sleep(0.2)
        return time.monotonic() - t0

    def stop(self) -> None:
        pass

    def is_running(self) -> bool:
        return True  # not ours to watch; a dead server shows as failed requests

    def logs(self) -> str:
        return ""


class LaunchMode(StrEnum):
    LOCAL = "local"  # start tritonserver here
    REMOTE = "remote"  # someone else runs the servers on 127.0.0.1; only wait for them


LauncherFactory = Callable[[ServerSpec], Launcher]


def make_launcher(mode: LaunchMode) -> LauncherFactory:
    """The launcher factory of a launch mode."""
    return {LaunchMode.LOCAL: LocalTritonLauncher, LaunchMode.REMOTE: RemoteTritonLauncher}[mode]
