"""Measurement subprocesses: spawn, talk JSON lines, time out, and always kill the whole group."""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from typing import Any

from igniter_opt.errors import MeasurementError
from igniter_opt.procgroup import signal_group, stop_group

log = logging.getLogger(__name__)

PREFIX = "@@IGN "
WORKER_MODULE = "igniter_opt.profiling.worker"
_LIVE: set[WorkerProcess] = set()
_LIVE_LOCK = threading.Lock()


def default_worker_cmd() -> list[str]:
    return [sys.executable, "-u", "-m", WORKER_MODULE]


class WorkerProcess:
    """One measurement process in its own session (so that it and its children die together)."""

    def __init__(
        self,
        name: str,
        env: dict[str, str],
        *,
        cmd: list[str] | None = None,
        prefix: list[str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        keep_stdout: bool = False,
    ) -> None:
        self.name = name
        self.keep_stdout = keep_stdout
        self.stdout_lines: list[str] = []
        argv = [*(prefix or []), *(cmd or default_worker_cmd())]
        self._stderr_tail: deque[str] = deque(maxlen=40)
        self._stdout_tail: deque[str] = deque(maxlen=20)
        self._log = open(log_path, "a", encoding="utf-8") if log_path else None  # noqa: SIM115
        self._q: queue.Queue[dict[str, Any] | None] = queue.Queue()
        try:
            self.proc = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                bufsize=1,
                start_new_session=True,
            )
        except OSError as exc:
            raise MeasurementError(f"{name}: could not start the measurement process ({exc})") from None
        with _LIVE_LOCK:
            _LIVE.add(self)
        self._t_out = threading.Thread(target=self._read_stdout, daemon=True)
        self._t_err = threading.Thread(target=self._read_stderr, daemon=True)
        self._t_out.start()
        self._t_err.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(PREFIX):
                try:
                    self._q.put(json.loads(line[len(PREFIX):]))
                except json.JSONDecodeError:
                    self._stdout_tail.append(line.rstrip())
            else:
                self._stdout_tail.append(line.rstrip())
                if self.keep_stdout:
                    self.stdout_lines.append(line.rstrip("\n"))
                if self._log:
                    self._log.write(f"[{self.name} stdout] {line}")
        self._q.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr_tail.append(line.rstrip())
            if self._log:
                self._log.write(f"[{self.name}] {line}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self) -> str:
        lines = [ln for ln in self._stderr_tail if ln.strip()]
        return lines[-1][:300] if lines else "(no output)"

    def send(self, obj: dict[str, Any] | str) -> None:
        text = obj if isinstance(obj, str) else json.dumps(obj)
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(text + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self._raise_exited("while sending it work")

    def _raise_exited(self, when: str) -> None:
        try:
            rc = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            rc = None
        self.kill()
        raise MeasurementError(f"{self.name}: measurement process exited (code {rc}) {when}: {self.tail()}")

    def expect(self, event: str, timeout_s: float) -> dict[str, Any]:
        """Wait for the next message, which must be ``event``; kill the process on anything else."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise MeasurementError(
                    f"{self.name}: no '{event}' within {timeout_s:g} s (hung?); the process was killed"
                )
            try:
                msg = self._q.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if msg is None:
                self._t_err.join(timeout=2)
                self._raise_exited(f"before '{event}'")
            assert msg is not None
            if msg.get("event") == "error":
                tb = msg.get("traceback", "")
                if self._log and tb:
                    self._log.write(f"[{self.name} traceback]\n{tb}\n")
                self.kill()
                raise MeasurementError(f"{self.name}: {msg.get('message', 'unknown error')}")
            if msg.get("event") != event:
                self.kill()
                raise MeasurementError(f"{self.name}: expected '{event}', got {msg.get('event')!r}")
            return msg

    def wait(self, timeout_s: float = 30.0) -> int:
        try:
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise MeasurementError(f"{self.name}: did not exit within {timeout_s:g} s; killed") from None
        self._cleanup()
        return rc

    def terminate(self) -> None:
        """Send SIGTERM to the process group without waiting."""
        if self.proc.poll() is None:
            signal_group(self.proc.pid, signal.SIGTERM)

    def kill(self, grace_s: float = 3.0) -> None:
        """Terminate the process group, then kill it; idempotent."""
        stop_group(self.proc, self.name, grace_s=grace_s, reap_s=grace_s)
        self._cleanup()

    def _cleanup(self) -> None:
        for f in (self.proc.stdin,):
            try:
                if f:
                    f.close()
            except OSError:
                pass
        with _LIVE_LOCK:
            _LIVE.discard(self)
        # The pipes close when the process is gone: let the readers finish, then close the log.
        self._t_out.join(timeout=2)
        self._t_err.join(timeout=2)
        if self._log and not self._t_out.is_alive() and not self._t_err.is_alive():
            self._log.close()
            self._log = None

    def alive(self) -> bool:
        return self.proc.poll() is None


def kill_all() -> None:
    """Kill every measurement process this interpreter started and that is still running."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for w in live:
        w.kill(grace_s=1.0)


def live_count() -> int:
    with _LIVE_LOCK:
        return sum(1 for w in _LIVE if w.alive())

