"""Open-loop load generator: requests at a planned rate through tritonclient's asyncio gRPC client.

One process per stream (``multiprocessing``: fork, or spawn where the caller runs threads), so
that one Python thread is never what limits the rate: a placement whose rate exceeds
``max_rps_per_process`` is split into several streams of equal rate (a split Poisson process is
still Poisson; constant streams are phase shifted so that together they are evenly spaced).
Arrival times are drawn before sending, from a seed; every request is sent at its time whether or
not earlier ones have returned (open loop). Each request's record has its scheduled and actual
send time, its lag (how late it went out), its receive time and outcome: a run whose generator
lagged is not a measurement of the server (``report`` marks it invalid). Sends are timed by an
event-loop sleep on a loop that waits with ``select()`` (µs timeouts, see :func:`precise_loop`),
with the garbage collector frozen from before the start. Loops are bounded in count and time,
and only 127.0.0.1 is ever a target.
"""

from __future__ import annotations

import asyncio
import csv
import gc
import logging
import math
import multiprocessing as mp
import os
import queue
import random
import selectors
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from igniter_opt.apply.models import WIRE_DTYPES, Tensor
from igniter_opt.errors import ApplyError
from igniter_opt.procgroup import die_with_parent

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
# lag_ms: how late the request went out behind its scheduled time (sent_s - scheduled_s, in ms).
RECORD_FIELDS = (
    "stream",
    "workload",
    "server",
    "seq",
    "scheduled_s",
    "sent_s",
    "lag_ms",
    "received_s",
    "latency_ms",
    "status",
    "error",
)


class Arrival:
    POISSON = "poisson"
    CONSTANT = "constant"
    ALL = (POISSON, CONSTANT)


@dataclass(frozen=True)
class StreamSpec:
    """One load-generating process: a request stream to one server."""

    stream: str
    workload: str
    server: str
    url: str  # host:port of the server's gRPC endpoint, on 127.0.0.1
    model: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[str, ...]
    rate_rps: float
    duration_s: float
    arrival: str
    seed: int
    max_requests: int
    timeout_s: float
    drain_s: float
    phase_s: float = 0.0
    check_echo: bool = False
    warmup_requests: int = 3  # sent one by one before the common start, not recorded
    # A plan change (apply --diff): the rate becomes ``rate_after_rps`` at ``step_s``, and once the
    # parent signals the switch, requests go to ``switch_url`` (server ``switch_server``). A stream
    # of a placement that only the new plan has sends nothing before the switch (``start_on_switch``).
    step_s: float = math.inf
    rate_after_rps: float | None = None
    switch_url: str | None = None
    switch_server: str | None = None
    start_on_switch: bool = False


def arrival_times(rate_rps: float, duration_s: float, arrival: str, seed: int, max_requests: int,
                  phase_s: float = 0.0) -> list[float]:
    """Send times in seconds from the start, all < ``duration_s``, at most ``max_requests``."""
    if rate_rps <= 0 or duration_s <= 0 or max_requests <= 0:
        return []
    if arrival not in Arrival.ALL:
        raise ApplyError(f"arrival must be one of {', '.join(Arrival.ALL)}, got {arrival!r}")
    out: list[float] = []
    if arrival == Arrival.CONSTANT:
        gap = 1.0 / rate_rps
        first = phase_s % gap
        i = 0
        # by index, not by adding gaps: no float drift; exactly rate * duration requests
        while first + i * gap < duration_s - 1e-9 and len(out) < max_requests:
            out.append(first + i * gap)
            i += 1
        return out
    rng = random.Random(seed)
    t = rng.expovariate(rate_rps)
    while t < duration_s and len(out) < max_requests:
        out.append(t)
        t += rng.expovariate(rate_rps)
    return out


def stream_arrival_times(spec: StreamSpec) -> list[float]:
    """A stream's send times: its rate until ``step_s``, then ``rate_after_rps`` (if any)."""
    if spec.rate_after_rps is None or spec.step_s >= spec.duration_s:
        return arrival_times(
            spec.rate_rps, spec.duration_s, spec.arrival, spec.seed, spec.max_requests, spec.phase_s
        )
    before = arrival_times(
        spec.rate_rps, spec.step_s, spec.arrival, spec.seed, spec.max_requests, spec.phase_s
    )
    after = arrival_times(spec.rate_after_rps, spec.duration_s - spec.step_s, spec.arrival, spec.seed + 7919,
                          spec.max_requests - len(before), spec.phase_s)
    return before + [spec.step_s + t for t in after]


def split_streams(base: StreamSpec, max_rps_per_process: float) -> list[StreamSpec]:
    """Split a stream whose rate one process cannot keep into k equal streams."""
    top = max(base.rate_rps, base.rate_after_rps or 0.0)
    k = 1 if math.isinf(max_rps_per_process) else max(1, math.ceil(top / max_rps_per_process))
    if k == 1:
        return [base]
    rate = base.rate_rps / k
    after = None if base.rate_after_rps is None else base.rate_after_rps / k
    per = math.ceil(base.max_requests / k)
    return [
        StreamSpec(
            **{
                **base.__dict__,
                "stream": f"{base.stream}.{i}",
                "rate_rps": rate,
                "rate_after_rps": after,
                "seed": base.seed * 1000 + i,
                "max_requests": per,
                "phase_s": i / top,
            }
        )
        for i in range(k)
    ]


def _payload(t: Tensor, seed: int) -> Any:
    import numpy as np  # client side only: the served model's data path has no numpy

    rng = np.random.default_rng(seed)
    shape = (1, *t.shape)
    if t.dtype == "int64":
        return rng.integers(0, 30522, size=shape, dtype=np.int64)
    return rng.standard_normal(shape).astype(t.dtype)


def precise_loop() -> asyncio.AbstractEventLoop:
    """An event loop whose sleeps end on time to a few µs instead of up to a ms late.

    asyncio's default selector (epoll) takes its timeout in whole ms, rounded up, so every send
    went out ~1 ms late at the median. ``select()`` takes µs; a load process watches a handful of
    sockets, so its linear cost does not matter. Measured against the echo server (docs/executor.md):
    median lag 0.34-0.43 ms instead of 0.93-0.99 ms, at the same CPU per request, where spinning
    for the last ms got the same median at +0.4 ms of CPU and +1.4 ms of latency per request.
    """
    return asyncio.SelectorEventLoop(selectors.SelectSelector())


def _now() -> float:
    return time.perf_counter()


class _Stream:
    """One stream's client side: connection, warm-up, requests at their times, records."""

    def __init__(self, spec: StreamSpec, stop: Any, switch: Any, records: list[tuple[Any, ...]]) -> None:
        import tritonclient.grpc.aio as grpcclient

        self.spec, self.stop, self.switch, self.records = spec, stop, switch, records
        self.inputs, raw = [], []
        for i, tensor in enumerate(spec.inputs):
            data = _payload(tensor, spec.seed + i)
            inp = grpcclient.InferInput(tensor.name, list(data.shape), WIRE_DTYPES[tensor.dtype])
            inp.set_data_from_numpy(data)
            self.inputs.append(inp)
            raw.append(data.tobytes())
        self.first_input = raw[0] if raw else b""
        self.outputs = [grpcclient.InferRequestedOutput(n) for n in spec.outputs]
        self.client = grpcclient.InferenceServerClient(url=spec.url)
        # the new server does not exist yet: its channel connects on first use, after the switch
        self.client2 = grpcclient.InferenceServerClient(url=spec.switch_url) if spec.switch_url else None
        self.base_pc = 0.0

    async def warm_up(self) -> None:
        from tritonclient.utils import InferenceServerException

        try:
            for _ in range(self.spec.warmup_requests):
                await self.client.infer(self.spec.model, self.inputs, outputs=self.outputs,
                                        client_timeout=max(self.spec.timeout_s, 30.0))
        except InferenceServerException as exc:
            raise ApplyError(f"warm-up request to {self.spec.model} at {self.spec.url} failed: "
                             f"{str(exc).splitlines()[0][:200]}") from None

    async def wait_until(self, t: float) -> bool:
        """Return at ``base_pc + t``; False when stopped meanwhile."""
        due = self.base_pc + t
        while (delay := due - _now()) > 0:
            if self.stop.is_set():
                return False
            await asyncio.sleep(min(delay, 0.1))
        return not self.stop.is_set()

    async def request(self, seq: int, sched: float) -> None:
        """One request; its record: scheduled, send and receive times (s from the start), lag, outcome."""
        # The switch is read before the clock: a request that went to the new server was sent after the
        # switch (this process may be descheduled between the two; a fresh-clone CI run saw 21 ms).
        switched = self.client2 is not None and self.switch is not None and self.switch.is_set()
        sent = _now() - self.base_pc
        server = self.spec.switch_server if switched else self.spec.server
        status, error = await self._infer(self.client2 if switched else self.client)
        received = _now() - self.base_pc
        # a tuple of atomic values: the collector stops tracking it
        self.records.append(
            (
                self.spec.stream,
                self.spec.workload,
                server,
                seq,
                round(sched, 6),
                round(sent, 6),
                round(1000.0 * (sent - sched), 4),
                round(received, 6),
                round(1000.0 * (received - sent), 4),
                status,
                error,
            )
        )

    async def _infer(self, client: Any) -> tuple[str, str]:
        from tritonclient.utils import InferenceServerException

        try:
            res = await client.infer(self.spec.model, self.inputs, outputs=self.outputs,
                                     client_timeout=self.spec.timeout_s)
            if self.spec.check_echo and res.get_response().raw_output_contents[0] != self.first_input:
                return "mismatch", "echo output differs from the input"
        except asyncio.CancelledError:
            return "cancelled", "still in flight when the run stopped"
        except InferenceServerException as exc:
            msg = str(exc)
            status = "timeout" if "Deadline" in msg or "DEADLINE" in msg else "error"
            return status, msg.splitlines()[0][:200] if msg else type(exc).__name__
        except Exception as exc:  # noqa: BLE001 - any client failure is a failed request, recorded
            return "error", f"{type(exc).__name__}: {exc}"[:200]
        return "ok", ""

    async def send_all(self, times: list[float]) -> set[asyncio.Task[None]]:
        """Send every request at its time (open loop); returns the requests still in flight."""
        tasks: set[asyncio.Task[None]] = set()
        for seq, t in enumerate(times):
            if not await self.wait_until(t):
                break
            if self.spec.start_on_switch and not self.switch.is_set():
                continue  # its server is not up yet: this placement has no clients before then
            task = asyncio.create_task(self.request(seq, t))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        return tasks

    async def close(self, tasks: set[asyncio.Task[None]]) -> None:
        """Give requests in flight ``drain_s``, cancel the rest (recorded as cancelled), close channels."""
        deadline = _now() + self.spec.drain_s
        while tasks and _now() < deadline and not self.stop.is_set():
            await asyncio.wait(set(tasks), timeout=0.1)
        for task in list(tasks):
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self.client.close()
        if self.client2 is not None:
            await self.client2.close()


async def _drive(spec: StreamSpec, times: list[float], stop: Any, records: list[tuple[Any, ...]],
                 ready: Any, go: Any, start_at: Any, switch: Any = None) -> None:
    """Connect, warm up, report ready, wait for the common start, then send at the arrival times."""
    stream = _Stream(spec, stop, switch, records)
    tasks: set[asyncio.Task[None]] = set()
    try:
        await stream.warm_up()
        # No garbage collection from here on: a full collection pauses this process for tens of ms,
        # and streams of equal rates allocate alike, so they would pause together and every response
        # in flight would look late (seen on the H100 host: 40-50 ms stalls every 1.5 s). Frozen, not
        # collected, and before the start: a collection walks the whole heap inherited from the
        # parent, which took up to a second in a forked process (its sends went out that late). A
        # run's records are a few MB at most; collection resumes when the run ends.
        gc.freeze()
        gc.disable()
        ready()
        while not go.is_set():
            if stop.is_set():
                return
            await asyncio.sleep(0.005)
        stream.base_pc = _now() + (start_at.value - time.time())
        tasks = await stream.send_all(times)
    finally:
        gc.enable()
        await stream.close(tasks)


def write_records(path: Path, records: list[tuple[Any, ...]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(RECORD_FIELDS)
        w.writerows(records)
    os.replace(tmp, path)


def _worker(spec: StreamSpec, part: str, ready_q: Any, go: Any, start_at: Any, stop: Any, parent_pid: int,
            switch: Any = None) -> None:
    """Process body: wait for the common start, drive the stream, write its records (also when stopped)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop (through ``stop``)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's handler (inherited through fork)
    die_with_parent(parent_pid)
    records: list[tuple[Any, ...]] = []
    try:
        host = spec.url.rsplit(":", 1)[0].strip("[]")
        if host not in LOOPBACK:
            raise ApplyError(f"load generator targets only 127.0.0.1, not {spec.url}")
        times = stream_arrival_times(spec)
        with asyncio.Runner(loop_factory=precise_loop) as runner:
            runner.run(_drive(spec, times, stop, records, lambda: ready_q.put((spec.stream, "ready", "")), go,
                              start_at, switch))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, then the process exits 1
        ready_q.put((spec.stream, "error", f"{type(exc).__name__}: {exc}".splitlines()[0][:300]))
        log.debug("%s", traceback.format_exc())
        write_records(Path(part), records)
        raise SystemExit(1) from None  # a normal exit, so the queue is flushed
    write_records(Path(part), records)


@dataclass
class LoadOutcome:
    records: list[dict[str, Any]]  # one dict per request, keys RECORD_FIELDS
    errors: list[str]
    start_epoch: float | None  # the common start (epoch s); None when the load never started


class LoadDriver(Protocol):
    """What a run needs from a load generator (``LoadGenerator`` here; tests inject their own)."""

    streams: list[StreamSpec]
    outcome: LoadOutcome | None  # set when run() returns, also when it was interrupted

    def run(self, on_started: Callable[[], None] | None = None,
            on_go: Callable[[float], None] | None = None) -> LoadOutcome: ...

    def stop(self) -> None: ...

    def switch(self, servers: set[str]) -> None: ...

    @property
    def started(self) -> bool: ...

    @property
    def stopped(self) -> bool: ...

    @property
    def start_epoch(self) -> float: ...


LoadFactory = Callable[[list[StreamSpec], Path], LoadDriver]


class LoadGenerator:
    """Runs the streams in processes; ``stop()`` (from any thread or a signal handler) ends them early."""

    def __init__(self, streams: list[StreamSpec], work_dir: Path, *, ready_timeout_s: float = 60.0,
                 start_method: str | None = None) -> None:
        self.streams = streams
        self.work_dir = work_dir
        self.ready_timeout_s = ready_timeout_s
        # fork: a worker starts in milliseconds (spawn re-imports the caller's __main__: seconds per
        # process). The parent holds no gRPC channel; forking is unsafe only where another thread
        # may hold a lock, so a parent that runs other threads gets spawn.
        if start_method is None:
            start_method = (
                "fork" if threading.active_count() == 1 and "fork" in mp.get_all_start_methods() else "spawn"
            )
        self.start_method = start_method
        self._ctx: Any = mp.get_context(start_method)
        self._stop = self._ctx.Event()
        self._go = self._ctx.Event()
        self._start_at = self._ctx.Value("d", 0.0)
        self._ready_q = self._ctx.Queue()
        self._switch = {s.stream: self._ctx.Event() for s in streams if s.switch_url or s.start_on_switch}
        self.procs: list[Any] = []
        self.outcome: LoadOutcome | None = None

    def stop(self) -> None:
        self._stop.set()

    def switch(self, servers: set[str]) -> None:
        """From now on, streams whose new server is in ``servers`` send there (or start sending)."""
        for s in self.streams:
            if s.switch_server in servers and s.stream in self._switch:
                self._switch[s.stream].set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    @property
    def started(self) -> bool:
        """True once every stream has been told to start (the common start time is set)."""
        return self._go.is_set() and self._start_at.value > 0

    @property
    def start_epoch(self) -> float:
        return float(self._start_at.value)

    def _part(self, s: StreamSpec) -> Path:
        return self.work_dir / f"requests-{s.stream}.csv"

    def run(self, on_started: Callable[[], None] | None = None,
            on_go: Callable[[float], None] | None = None) -> LoadOutcome:
        """Start every stream together, wait until all are done (or stopped), collect the records.

        ``on_started`` is called once every process exists (start watcher threads there, not before
        the fork); ``on_go`` once every stream is ready, with the common start time (epoch s).
        """
        self.work_dir.mkdir(parents=True, exist_ok=True)
        errors: list[str] = []
        start_epoch = None
        try:
            self._spawn()
            if on_started is not None:
                on_started()
            self._wait_ready(errors)
            if not errors and not self._stop.is_set():
                start_epoch = time.time() + 0.2
                self._start_at.value = start_epoch
                self._go.set()
                if on_go is not None:
                    on_go(start_epoch)
                self._wait_done()
        finally:
            self._stop.set()
            self._go.set()
            self._reap()
            errors.extend(self._late_errors(errors))
            # Kept on the object too, so that a caller interrupted inside run() still gets the records.
            self.outcome = LoadOutcome(self._collect(), errors, start_epoch)
        return self.outcome

    def _spawn(self) -> None:
        for s in self.streams:
            p = self._ctx.Process(
                target=_worker,
                name=f"loadgen-{s.stream}",
                args=(
                    s,
                    str(self._part(s)),
                    self._ready_q,
                    self._go,
                    self._start_at,
                    self._stop,
                    os.getpid(),
                    self._switch.get(s.stream),
                ),
            )
            p.start()
            self.procs.append(p)

    def _wait_ready(self, errors: list[str]) -> None:
        """Until every stream reports ready (connected and warmed up), or one fails, dies or times out."""
        ready = 0
        deadline = time.monotonic() + self.ready_timeout_s
        while ready < len(self.streams) and not self._stop.is_set():
            dead = [(st.stream, p.exitcode) for st, p in zip(self.streams, self.procs, strict=True)
                    if not p.is_alive() and p.exitcode not in (0, None)]
            if dead and self._ready_q.empty():  # died without a word (e.g. could not even import)
                errors.append(
                    f"load generator for stream {dead[0][0]} exited at start with code {dead[0][1]}"
                )
                return
            if time.monotonic() > deadline:
                errors.append(f"load generator: {len(self.streams) - ready} stream(s) not ready after "
                              f"{self.ready_timeout_s:g} s")
                return
            try:
                name, what, msg = self._ready_q.get(timeout=0.2)
            except queue.Empty:
                continue
            if what != "ready":
                errors.append(f"load generator for stream {name} failed: {msg}")
                return
            ready += 1

    def _wait_done(self) -> None:
        limit = max(s.duration_s + s.drain_s for s in self.streams) + 30.0
        t_end = time.monotonic() + limit
        while any(p.is_alive() for p in self.procs) and time.monotonic() < t_end:
            for p in self.procs:
                p.join(timeout=0.1)

    def _reap(self) -> None:
        """Every stream process is gone when this returns (joined, else terminated, else killed)."""
        for p in self.procs:
            p.join(timeout=10)
        for p in self.procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()

    def _late_errors(self, known: list[str]) -> list[str]:
        """Errors reported after the start, and streams that exited badly without a word."""
        out = []
        while True:
            try:
                name, what, msg = self._ready_q.get_nowait()
            except (queue.Empty, OSError, ValueError):
                break
            if what == "error":
                out.append(f"load generator for stream {name} failed: {msg}")
        self._ready_q.close()
        for s, p in zip(self.streams, self.procs, strict=False):
            if p.exitcode not in (0, None) and not any(s.stream in e for e in known + out):
                out.append(f"load generator for stream {s.stream} exited with code {p.exitcode}")
        return out

    def _collect(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for s in self.streams:
            part = self._part(s)
            if not part.is_file():
                continue
            with open(part, newline="") as fh:
                out.extend(csv.DictReader(fh))
            part.unlink()
        return out
