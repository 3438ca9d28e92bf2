"""HiGHS through ``highspy`` directly, for the models column generation re-solves many times.

Pyomo's overhead (3-6 microseconds per nonzero to build, plus the translation to HiGHS on every
solve) dominates a master LP re-solved after every pricing round and a pricing MIP built anew for
every dual vector; these are built from numpy arrays in one call each (``passModel``) or extended
in place (``addCols``), and HiGHS keeps the master's basis between re-solves.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from igniter_opt.planner.exact.model import solver_module

# Seconds past its own time limit after which a HiGHS run is cancelled (see ``run``).
WATCHDOG_GRACE_S = 1.0
# No integer master with a limit shorter than this (it could not even read its columns).
MIN_MASTER_S = 0.1
COLWISE = 1
ROWWISE = 2


def master_limit_s(deadline: float) -> float | None:
    """The limit of an integer master that must end by ``deadline`` (``time.perf_counter()``): the time
    left less ``WATCHDOG_GRACE_S`` (the watchdog may cancel it that much late), or None when under
    ``MIN_MASTER_S`` (a floor on a shorter limit would end past the deadline: run none)."""
    limit = deadline - time.perf_counter() - WATCHDOG_GRACE_S
    return limit if limit >= MIN_MASTER_S else None


def highspy_module() -> Any:
    return solver_module("highspy")


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """HiGHS prints its banner on stdout (the C library's, not Python's) the first time an instance
    is made in a process; keep it out of the command's output (JSON or CSV may be on stdout)."""
    try:
        fd = os.dup(1)
    except OSError:  # no stdout to protect
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        os.dup2(fd, 1)
        os.close(fd)


def new_highs(threads: int = 1, log: bool = False) -> Any:
    """A silent HiGHS instance."""
    highspy = highspy_module()
    with _quiet_stdout():
        h = highspy.Highs()
    h.setOptionValue("output_flag", bool(log))
    h.setOptionValue("log_to_console", bool(log))
    h.setOptionValue("threads", int(threads))
    return h


@dataclass(frozen=True)
class RunResult:
    """What one HiGHS run gave: its status word, the objective of its incumbent (None: none), its
    dual bound (MIP) and whether the watchdog had to stop it."""

    status: str
    objective: float | None
    bound: float | None
    cancelled: bool


def run(h: Any, time_limit_s: float, *, mip: bool) -> RunResult:
    """Run ``h`` for at most ``time_limit_s`` (HiGHS's own limit, and a watchdog that cancels the
    run ``WATCHDOG_GRACE_S`` later: HiGHS checks its limit only between phases)."""
    h.setOptionValue("time_limit", max(0.01, float(time_limit_s)))
    fired = threading.Event()

    def cancel() -> None:
        fired.set()
        h.cancelSolve()

    timer = threading.Timer(max(0.01, time_limit_s) + WATCHDOG_GRACE_S, cancel)
    timer.daemon = True
    timer.start()
    try:
        h.run()
    finally:
        timer.cancel()
    status = h.modelStatusToString(h.getModelStatus())
    info = h.getInfo()
    sol = h.getSolution()
    has = bool(sol.value_valid) and (not mip or info.primal_solution_status == 2)
    obj = float(info.objective_function_value) if has else None
    bound = float(info.mip_dual_bound) if mip and math.isfinite(info.mip_dual_bound) else None
    return RunResult(status, obj if obj is None or math.isfinite(obj) else None, bound, fired.is_set())


def int32(a: np.ndarray | list[int]) -> np.ndarray:
    return np.asarray(a, dtype=np.int32)


def f64(a: np.ndarray | list[float] | float) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)
