"""Stand-ins for the executor's servers, load generator and MPS daemon, for tests that start nothing real.

``FakeLauncher`` goes where a launcher factory is injected (``apply_plan(dep, launcher_factory=...)``),
``FakeLoad`` where a load factory is (``load_factory=FakeLoad.factory(...)``), ``FakeMps`` where a
deployment's MPS daemon is (``build_deployment(..., mps=FakeMps())``). Real executables that stand
in for the GPU tools live in ``tests/fake_gpu/``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

from igniter_opt.apply.launcher import Launcher, ServerSpec
from igniter_opt.apply.loadgen import RECORD_FIELDS, LoadOutcome, StreamSpec, stream_arrival_times
from igniter_opt.errors import MpsError
from igniter_opt.gpu.mps import MpsDaemon


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
        from igniter_opt.errors import ApplyError

        self.calls.append(("wait_ready", self.spec.name))
        if self.behaviour is FakeBehaviour.EXIT_AT_START:
            raise ApplyError(f"server {self.spec.name} exited with code 1 before it was ready; log: (fake)")
        if self.behaviour is FakeBehaviour.NEVER_READY:
            raise ApplyError(
                f"server {self.spec.name} was not ready after {timeout_s:g} s (raise --ready-timeout?)"
            )
        return 0.0

    def stop(self) -> None:
        self.calls.append(("stop", self.spec.name))
        self.running = False

    def logs(self) -> str:
        return ""


class FakeMps(MpsDaemon):
    """The real class's folders and client environment; start and stop only record that they were called."""

    def __init__(self, fail_start: bool = False, pipe_dir: Path = Path("/fake/mps/pipe"),
                 log_dir: Path = Path("/fake/mps/log")) -> None:
        super().__init__(pipe_dir=pipe_dir, log_dir=log_dir, control_binary="/fake/nvidia-cuda-mps-control")
        self.calls: list[str] = []
        self.fail_start = fail_start

    def check(self) -> None:
        pass

    def start(self) -> FakeMps:
        self.calls.append("start")
        if self.fail_start:
            raise MpsError("MPS control daemon failed to start (fake)")
        self.running = True
        return self

    def stop(self) -> None:
        self.calls.append("stop")
        self.running = False


class FakeLoad:
    """A load driver that sends nothing: it lets real time pass for the run's duration (so that a plan
    change happens on its clock) and then writes the records a perfect server would have caused,
    each ``lag_ms`` behind its schedule and ``latency_ms`` long. A stream that switches sends to its
    new server from the moment ``switch`` was called."""

    def __init__(self, streams: list[StreamSpec], work_dir: Path, *, lag_ms: float = 0.0,
                 latency_ms: float = 5.0) -> None:
        self.streams, self.work_dir = streams, work_dir
        self.lag_ms, self.latency_ms = lag_ms, latency_ms
        self.outcome: LoadOutcome | None = None
        self._start: float | None = None
        self._stopped = False
        self.switched_at: dict[str, float] = {}  # server -> seconds since the start

    @classmethod
    def factory(
        cls, made: list[FakeLoad] | None = None, **kw: Any
    ) -> Callable[[list[StreamSpec], Path], FakeLoad]:
        def make(streams: list[StreamSpec], work_dir: Path) -> FakeLoad:
            gen = cls(streams, work_dir, **kw)
            if made is not None:
                made.append(gen)
            return gen
        return make

    def run(self, on_started: Callable[[], None] | None = None,
            on_go: Callable[[float], None] | None = None) -> LoadOutcome:
        if on_started is not None:
            on_started()
        self._start = time.time()
        if on_go is not None:
            on_go(self._start)
        duration = max(s.duration_s for s in self.streams)
        while not self._stopped and time.time() - self._start < duration:
            time.sleep(0.01)
        end = time.time() - self._start
        self.outcome = LoadOutcome([r for s in self.streams for r in self._records(s, end)], [], self._start)
        return self.outcome

    def _records(self, s: StreamSpec, end: float) -> list[dict[str, Any]]:
        out = []
        switched = self.switched_at.get(s.switch_server or "")
        for seq, t in enumerate(stream_arrival_times(s)):
            if t > end or (s.start_on_switch and (switched is None or t < switched)):
                continue
            server = (
                s.switch_server if switched is not None and t >= switched and s.switch_server else s.server
            )
            sent = t + self.lag_ms / 1000
            values = (s.stream, s.workload, server, seq, t, sent, self.lag_ms, sent + self.latency_ms / 1000,
                      self.latency_ms, "ok", "")
            out.append(dict(zip(RECORD_FIELDS, values, strict=True)))
        return out

    def stop(self) -> None:
        self._stopped = True

    def switch(self, servers: set[str]) -> None:
        for name in servers:
            self.switched_at[name] = time.time() - (self._start or time.time())

    @property
    def started(self) -> bool:
        return self._start is not None

    @property
    def stopped(self) -> bool:
        return self._stopped

    @property
    def start_epoch(self) -> float:
        return self._start or 0.0
