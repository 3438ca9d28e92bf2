"""Triton's own load generator, ``perf_analyzer``, as a load driver (``--load-generator perf_analyzer``).

One ``perf_analyzer`` process per stream (C++, its own sender threads: one process keeps
1500 req/s), open loop (``--async``), sending at *our* seeded arrival times
(``--request-intervals``, the gaps in µs) exactly ``--request-count`` requests, all-zero inputs
(valid for every zoo model, token ids included), and each request's send and response time
exported (``--profile-export-file``). perf_analyzer exports no scheduled times; its schedule
starts at the start of its measurement window (``window_boundaries[0]``, seen to agree to
0.1 ms with the earliest send minus its scheduled offset). A request's lag is its send time
minus (origin + its scheduled offset), with the origin taken as the earlier of the two, so a lag
is never under-reported. Requests are matched to the schedule in send order (perf_analyzer's
threads take the schedule's slots in turn; sends that overtake one another within one gap can
swap). It cannot switch a stream to another server during a run, so ``apply --diff`` needs the
Python generator. Stopped early (Ctrl-C, a server that died), perf_analyzer 2.51 writes no export:
such a run has no records, where the Python generator keeps what it measured.

The wheel ``tritonclient==2.51.0`` (manylinux) installs ``perf_analyzer`` next to the
interpreter; it needs ``libb64.so.0d`` (Debian/Ubuntu package ``libb64-0d``) and a
``libcudart.so.12``, which the nvidia-pytriton wheel bundles under another name: a link named
``libcudart.so.12`` in a private folder on ``LD_LIBRARY_PATH`` serves it (:func:`perf_analyzer_env`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from igniter_opt.apply.loadgen import RECORD_FIELDS, LoadOutcome, StreamSpec, stream_arrival_times
from igniter_opt.errors import ApplyError
from igniter_opt.procgroup import die_with_parent, signal_group, stop_group, stop_signals_deferred

log = logging.getLogger(__name__)

BINARY = "perf_analyzer"
INSTALL_HINT = ("pip install --no-deps tritonclient==2.51.0 (its manylinux wheel installs perf_analyzer), "
                "and apt-get install libb64-0d")


def find_perf_analyzer(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``explicit``, else ``perf_analyzer`` on PATH, else next to this interpreter (where pip puts it)."""
    if explicit is not None:
        candidates = [Path(explicit)]
    else:
        on_path = shutil.which(BINARY)
        candidates = [Path(on_path)] if on_path else []
        candidates.append(Path(sys.executable).parent / BINARY)
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise ApplyError(
        f"{explicit or BINARY}: no such executable (load generator perf_analyzer); {INSTALL_HINT}"
    )


def perf_analyzer_env(
    lib_dirs: Sequence[Path], link_dir: Path, base: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment perf_analyzer starts in: ``lib_dirs`` on LD_LIBRARY_PATH, and where one of them
    holds the nvidia-pytriton wheel's renamed CUDA runtime, a link ``libcudart.so.12`` to it in
    ``link_dir``."""
    env = dict(os.environ if base is None else base)
    extra = [str(d) for d in lib_dirs]
    cudart = next((f for d in lib_dirs if d.is_dir() for f in sorted(d.glob("libcudart*.so.12*"))), None)
    if cudart is not None:
        link_dir.mkdir(parents=True, exist_ok=True)
        link = link_dir / "libcudart.so.12"
        link.unlink(missing_ok=True)
        link.symlink_to(cudart)
        extra.insert(0, str(link_dir))
    old = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(dict.fromkeys(extra + old))
    return env


def check_perf_analyzer(binary: Path, env: dict[str, str]) -> None:
    """perf_analyzer starts here (its shared libraries are found), else a one-line error with the fix."""
    try:
        res = subprocess.run([str(binary), "--version"], env=env, capture_output=True, text=True, timeout=30,
                             check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ApplyError(f"{binary} does not start ({exc}); {INSTALL_HINT}") from None
    missing = [ln for ln in res.stderr.splitlines() if "error while loading shared libraries" in ln]
    if missing:
        raise ApplyError(f"{binary} does not start: {missing[0].split(': ', 1)[-1]}; {INSTALL_HINT}")


def command(binary: Path, spec: StreamSpec, intervals: Path, export: Path, count: int) -> list[str]:
    """The perf_analyzer command line of one stream."""
    return [str(binary), "-m", spec.model, "-u", spec.url, "-i", "grpc", "--async",
            "--request-intervals", str(intervals), "--request-count", str(count), "--input-data", "zero",
            "--profile-export-file", str(export)]


def records_from_export(spec: StreamSpec, export: dict[str, Any], times: Sequence[float],
                        run_start: float) -> list[dict[str, Any]]:
    """Our per-request records from one perf_analyzer export (times in s since ``run_start``, epoch s).

    The i-th request sent is the i-th of the schedule ``times`` (s from the stream's origin).
    """
    exp = export["experiments"][0]
    reqs = sorted(exp["requests"], key=lambda r: r["timestamp"])[: len(times)]
    sent = [r["timestamp"] / 1e9 for r in reqs]
    if not sent:
        return []
    origin = min(exp["window_boundaries"][0] / 1e9, *(s - t for s, t in zip(sent, times, strict=False)))
    out = []
    for seq, (r, s, t) in enumerate(zip(reqs, sent, times, strict=False)):
        got = r.get("response_timestamps") or []
        received = got[-1] / 1e9 if got else math.nan
        values = (
            spec.stream,
            spec.workload,
            spec.server,
            seq,
            round(origin + t - run_start, 6),
            round(s - run_start, 6),
            round(1000.0 * (s - origin - t), 4),
            round(received - run_start, 6),
            round(1000.0 * (received - s), 4),
            "ok" if got else "error",
            "" if got else "no response",
        )
        out.append(dict(zip(RECORD_FIELDS, values, strict=True)))
    return out


class PerfAnalyzerLoad:
    """A load driver: one perf_analyzer per stream, all started at once; records from their exports."""

    def __init__(self, streams: list[StreamSpec], work_dir: Path, *, binary: Path, env: dict[str, str],
                 grace_s: float = 3.0) -> None:
        self.streams, self.work_dir = streams, work_dir
        self.binary, self.env, self.grace_s = binary, env, grace_s
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.outcome: LoadOutcome | None = None
        self._stop = threading.Event()
        self._start: float | None = None

    @classmethod
    def factory(
        cls, binary: Path, env: dict[str, str]
    ) -> Callable[[list[StreamSpec], Path], PerfAnalyzerLoad]:
        return lambda streams, work_dir: cls(streams, work_dir, binary=binary, env=env)

    def run(self, on_started: Callable[[], None] | None = None,
            on_go: Callable[[float], None] | None = None) -> LoadOutcome:
        """Start every stream's perf_analyzer, wait until all are done (or stopped), collect the records."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        schedules = {s.stream: stream_arrival_times(s) for s in self.streams}
        errors: list[str] = []
        try:
            self._spawn(schedules)
            if on_started is not None:
                on_started()
            self._start = time.time()
            if on_go is not None:
                on_go(self._start)
            self._wait(max(s.duration_s + s.drain_s for s in self.streams) + 60.0)
        finally:
            errors += self._stop_all()
            self.outcome = self._collect(schedules, errors)
        return self.outcome

    def _files(self, s: StreamSpec) -> tuple[Path, Path, Path]:
        """The stream's schedule (gaps in µs), export and log."""
        return (self.work_dir / f"{s.stream}.intervals", self.work_dir / f"{s.stream}.export.json",
                self.work_dir / f"{s.stream}.perf_analyzer.log")

    def _spawn(self, schedules: dict[str, list[float]]) -> None:
        parent = os.getpid()
        for s in self.streams:
            times = schedules[s.stream]
            if not times:
                continue
            intervals, export, log_path = self._files(s)
            gaps = [round(1e6 * (b - a)) for a, b in zip([0.0, *times[:-1]], times, strict=True)]
            intervals.write_text("".join(f"{g}\n" for g in gaps))
            export.unlink(missing_ok=True)  # perf_analyzer refuses to overwrite one
            with open(log_path, "wb") as fh, stop_signals_deferred():
                self.procs[s.stream] = subprocess.Popen(
                    command(self.binary, s, intervals, export, len(times)), env=self.env, stdout=fh,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                    preexec_fn=lambda: die_with_parent(parent))  # noqa: PLW1509 - sigmask, prctl, getppid, kill

    def _wait(self, limit_s: float) -> None:
        deadline = time.monotonic() + limit_s
        while any(p.poll() is None for p in self.procs.values()) and time.monotonic() < deadline:
            if self._stop.wait(0.1):
                return

    def _stop_all(self) -> list[str]:
        """Every perf_analyzer gone (SIGINT first, as a person would; 2.51 then waits for requests in flight
        and writes nothing, so it is killed after ``grace_s``); the errors of those that failed."""
        for p in self.procs.values():
            if p.poll() is None:
                signal_group(p.pid, signal.SIGINT)
        errors = []
        for name, p in self.procs.items():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=self.grace_s)
            stop_group(p, f"perf_analyzer {name}", grace_s=1.0, reap_s=5.0)
            if p.returncode not in (0, None) and not self._stop.is_set():
                tail = _last_line(self._files(next(s for s in self.streams if s.stream == name))[2])
                errors.append(
                    f"load generator perf_analyzer for stream {name} exited with code {p.returncode}: {tail}"
                )
        return errors

    def _collect(self, schedules: dict[str, list[float]], errors: list[str]) -> LoadOutcome:
        exports = {}
        for s in self.streams:
            export = self._files(s)[1]
            if export.is_file():
                try:
                    exports[s.stream] = json.loads(export.read_text())
                except ValueError as exc:
                    errors.append(
                        f"load generator perf_analyzer for stream {s.stream}: unreadable export ({exc})"
                    )
        starts = [e["experiments"][0]["window_boundaries"][0] / 1e9 for e in exports.values()]
        run_start = min(starts, default=self._start or time.time())
        records = [r for s in self.streams if s.stream in exports
                   for r in records_from_export(s, exports[s.stream], schedules[s.stream], run_start)]
        return LoadOutcome(records, errors, run_start if starts else None)

    def stop(self) -> None:
        self._stop.set()

    def switch(self, servers: set[str]) -> None:
        raise ApplyError("perf_analyzer cannot move a stream to another server during a run; "
                         "use --load-generator python for apply --diff")

    @property
    def started(self) -> bool:
        return self._start is not None

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    @property
    def start_epoch(self) -> float:
        return self._start or 0.0


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""
