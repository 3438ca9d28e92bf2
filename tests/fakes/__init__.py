"""Stand-ins for the executor's servers and MPS daemon, for tests that start nothing real.

``FakeLauncher`` goes where a launcher factory is injected (``apply_plan(dep, launcher_factory=...)``);
``FakeMps`` where a deployment's MPS daemon is (``build_deployment(..., mps=FakeMps())``). Real
executables that stand in for the GPU tools live in ``tests/fake_gpu/``.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from igniter_opt.apply.launcher import Launcher, ServerSpec
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
            raise ApplyError(f"server {self.spec.name} was not ready after {timeout_s:g} s (raise --ready-timeout?)")
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
