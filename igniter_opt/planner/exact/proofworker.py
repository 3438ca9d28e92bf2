"""Proof rounds on a second core (``ProofWorker``), while column generation goes on in this process.

A proof round (``colgen._proof_round``) is box pricing at the mean of the recent LPs' duals, aimed at the
kappa that lifts the certified bound by a whole GPU. It needs nothing from the master but those duals, and
its result is valid whenever it comes: Farley's bound D(pi) / kappa holds at any pi >= 0, and the
configurations it finds are columns whatever the duals are by then. So where the machine has a core that
column generation does not use (HiGHS runs with one thread by default, and the heuristics are numpy on one
core), the rounds run in a child process: generation, the integer master and the proof overlap instead of
taking turns. Where no proof round could raise the bound, the child runs box pricing at the LP's duals
instead (``colgen._submit_proof``). docs/exact.md, "Proof rounds on a second core". Its first task may be
the member-class bound (``ClassTask``, ``classbound``): one LP, valid whenever it ends, like a proof round. A copy
of the integer master (``MasterTask``) preempts whatever the child runs: the child watches its pipe while a task
runs (``_Preempt``), and the task ends at its next check with what it has, as at its deadline.

The child is a fresh interpreter (``CHILD_CODE``), started with ``subprocess``: not ``multiprocessing``'s
``fork`` (the caller may run threads, HiGHS's among them, whose state a forked child would inherit) nor its
``spawn`` (which imports the caller's main script again in the child). It gets the duals-independent box
data once (``BoxPricing``), sent from a thread so that the caller does not wait while the child imports.
It ignores SIGINT (the parent decides), dies with its parent (``procgroup.die_with_parent``), and
``close`` ends it (``procgroup.stop_group``, as the executor stops its servers): no process outlives the solve.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from igniter_opt.planner.exact.boxes import BoxPricing, BoxResult, box_kappa
from igniter_opt.planner.exact.classbound import ClassBound, PieceRows, class_bound
from igniter_opt.planner.exact.lp import RunResult
from igniter_opt.planner.exact.master import MasterMip
from igniter_opt.procgroup import die_with_parent, stop_group, stop_signals_deferred

# The worker runs only where at least this many cores are usable (the second is the worker's), and for runs
# of at least this time limit (starting the child costs about a second of the other core).
MIN_CORES = 2
MIN_TIME_LIMIT_S = 10.0
# ``IGNITER_OPT_PROOF_WORKER=0`` keeps proof rounds in the solving process (e.g. where other work holds the
# other core, or to compare).
ENV_SWITCH = "IGNITER_OPT_PROOF_WORKER"
# The child's program: this module imported by its name (run as __main__, what it pickles would name __main__).
CHILD_CODE = "import sys; from igniter_opt.planner.exact.proofworker import _main; _main(sys.argv[1:])"
# Seconds ``close`` waits for the child after SIGTERM, and after SIGKILL.
STOP_WAIT_S = 2.0
# How often (seconds) the child looks for a message that preempts the task it runs.
PREEMPT_POLL_S = 0.05


@dataclass(frozen=True)
class ProofTask:
    """One proof round: box pricing at ``duals`` until every box is bounded by ``target`` or ``deadline``
    (``time.perf_counter()``, the same clock in both processes: CLOCK_MONOTONIC); ``value`` is D(duals)."""

    kind: str  # "proof" (at the mean duals, aimed at the next GPU) or "pricing" (at an LP's duals, aimed at 1)
    duals: np.ndarray
    value: float
    target: float
    deadline: float
    enough: int | None  # stop after this many configurations worth more than the target (None: never)


@dataclass(frozen=True)
class ClassTask:
    """The member-class bound (``classbound``) of the piece types ``rows``, by ``deadline``."""

    rows: PieceRows
    deadline: float
    target_gpus: int  # a plan's GPUs: no pass is begun once the bound reaches it


@dataclass(frozen=True)
class ClassDone:
    """The member-class bound's result (None: none by its deadline), and the seconds the child spent on it;
    not ``final``: the best bound of the passes so far, sent while the next pass runs (the task goes on)."""

    task: ClassTask
    result: ClassBound | None
    took_s: float
    final: bool = True


@dataclass(frozen=True)
class ProofDone:
    """A proof round's result, with the task it answers and the seconds the child spent on it."""

    task: ProofTask
    result: BoxResult
    took_s: float
    preempted: bool = False  # ended early by a task sent meanwhile (a ``MasterTask``), not by its deadline


@dataclass(frozen=True)
class MasterTask:
    """A copy of the integer master (``master.MasterMip``) with HiGHS's random seed ``seed``, until ``deadline``:
    HiGHS's search over a fixed set of columns is heavy-tailed, and a second seed on the other core is a second
    draw (docs/exact.md, "A second integer master on the worker's core"). It preempts the task the worker runs."""

    mip: MasterMip
    seed: int
    deadline: float  # ``time.perf_counter()``, as ``ProofTask``'s; its HiGHS run may overrun it by WATCHDOG_GRACE_S
    mip_rel_gap: float


@dataclass(frozen=True)
class MasterDone:
    """The copy's result: HiGHS's run, its solution rounded (None without one), whether HiGHS contradicted itself."""

    task: MasterTask
    result: RunResult
    x: np.ndarray | None
    contradicted: bool
    took_s: float


@dataclass(frozen=True)
class Cancel:
    """Ends the running ``MasterTask`` at once (its best solution so far comes back); ignored where none runs."""


def worker_wanted(time_limit_s: float, threads: int = 1) -> bool:
    """Whether a solve of this time limit, whose HiGHS runs may use ``threads`` threads, should run its proof
    rounds on a core of their own (one more than HiGHS's)."""
    if os.environ.get(ENV_SWITCH, "1").strip() in ("0", "false", "no", "off"):
        return False
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return cores >= max(MIN_CORES, threads + 1) and time_limit_s >= MIN_TIME_LIMIT_S


class _Preempt:
    """While a task runs in the child, a thread that watches the pipe from the parent: a message there (a task
    that preempts this one, or ``Cancel``) sets ``is_set``, which the task asks at its checks."""

    def __init__(self, conn_in: Connection) -> None:
        self._conn = conn_in
        self._seen = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        try:
            while not self._done.is_set():
                if self._conn.poll(PREEMPT_POLL_S):
                    self._seen.set()
                    return
        except (EOFError, OSError):
            self._seen.set()

    def is_set(self) -> bool:
        return self._seen.is_set()

    def __enter__(self) -> _Preempt:
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


def _serve(conn_in: Connection, conn_out: Connection) -> None:
    """The child's body: receive the box data, then answer tasks until None (or the pipe closes); a message that
    comes while a task runs preempts it (``_Preempt``): the task ends with what it has, valid as always."""
    try:
        boxes: BoxPricing = conn_in.recv()
        while True:
            task: ProofTask | ClassTask | MasterTask | Cancel | None = conn_in.recv()
            if task is None:
                return
            if isinstance(task, Cancel):  # its master had ended already
                continue
            t0 = time.perf_counter()
            with _Preempt(conn_in) as preempt:
                done = _answer(boxes, task, preempt, conn_out, t0)
            conn_out.send(done)
    except (EOFError, OSError):  # the parent went away or closed the pipe
        return


def _answer(boxes: BoxPricing, task: ProofTask | ClassTask | MasterTask, preempt: _Preempt, conn_out: Connection,
            t0: float) -> ProofDone | ClassDone | MasterDone:
    """One task's result, ended early where ``preempt`` is set."""
    if isinstance(task, MasterTask):
        run, x, contradicted = task.mip.solve(1, max(0.01, task.deadline - time.perf_counter()), task.mip_rel_gap,
                                              task.seed, stop=preempt.is_set)
        return MasterDone(task, run, x, contradicted, time.perf_counter() - t0)
    if isinstance(task, ClassTask):
        def interim(best: ClassBound, task: ClassTask = task, t0: float = t0) -> None:
            conn_out.send(ClassDone(task, best, time.perf_counter() - t0, final=False))

        cb = class_bound(boxes.items, boxes.hw, boxes.cap, task.rows, task.deadline, task.target_gpus,
                         on_pass=interim, stop=preempt.is_set)
        return ClassDone(task, cb, time.perf_counter() - t0)
    res = box_kappa(boxes, task.duals, task.target, task.deadline, enough=task.enough, stop=preempt.is_set)
    return ProofDone(task, res, time.perf_counter() - t0, preempted=preempt.is_set())


def _child_env() -> dict[str, str]:
    """The environment for the child: this one, with the directory this package was imported from first on
    its path (the parent may have found it through ``sys.path`` alone)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    return env


class ProofWorker:
    """A child process that runs proof rounds (``box_kappa``) one at a time; ``submit`` hands it a task
    when it is idle, ``poll`` returns a finished one without waiting (the module docstring says why the
    child is a fresh interpreter)."""

    def __init__(self, boxes: BoxPricing, first: ClassTask | None = None) -> None:
        from_parent, to_child = os.pipe()  # (read end, write end)
        from_child, to_parent = os.pipe()
        try:
            with stop_signals_deferred():  # a Ctrl-C between fork and this record would leave a child no one stops
                self._proc = subprocess.Popen(
                    [sys.executable, "-c", CHILD_CODE, str(from_parent), str(to_parent), str(os.getpid())],
                    pass_fds=(from_parent, to_parent), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    env=_child_env(),
                    start_new_session=True)  # a group of its own, for ``stop_group``
        except BaseException:
            for fd in (to_child, from_parent, from_child, to_parent):
                os.close(fd)
            raise
        os.close(from_parent)
        os.close(to_parent)
        self._send = Connection(to_child, readable=False)
        self._recv = Connection(from_child, writable=False)
        # the tasks sent and not yet answered, oldest first (more than one only where a master preempts one)
        self._busy: deque[ProofTask | ClassTask | MasterTask] = deque([] if first is None else [first])
        # ``first`` follows the box data, from the same thread
        self.failed: str | None = None  # why the worker stopped answering, if it did
        self._sender = threading.Thread(target=self._send_all, args=(boxes, *([] if first is None else [first])),
                                        daemon=True)
        self._sender.start()

    def _send_all(self, *messages: object) -> None:
        """``messages`` down the pipe in order (from ``_sender``: a large one waits until the child reads it)."""
        try:
            for m in messages:
                self._send.send(m)
        except (OSError, ValueError) as exc:  # the child died, or the worker was closed meanwhile
            self.failed = f"{type(exc).__name__}: {exc}"

    def ready(self, wait_s: float = 0.0) -> bool:
        """Whether the box data has reached the child's pipe (waiting at most ``wait_s``): tasks are taken
        only then."""
        self._sender.join(wait_s)
        return not self._sender.is_alive() and self.alive

    @property
    def busy(self) -> bool:
        return bool(self._busy)

    @property
    def running_master(self) -> bool:
        """Whether a ``MasterTask`` sent is not answered yet."""
        return any(isinstance(t, MasterTask) for t in self._busy)

    @property
    def alive(self) -> bool:
        return self.failed is None and self._proc.poll() is None

    def submit(self, duals: np.ndarray, value: float, target: float, deadline: float, enough: int | None,
               kind: str = "proof") -> bool:
        """Hand the idle worker a round of box pricing; False (nothing sent) if it is busy or gone."""
        if self._busy or not self.alive or self._sender.is_alive():  # one writer on the pipe at a time
            return False
        task = ProofTask(kind, np.asarray(duals, float), value, target, deadline, enough)
        try:
            self._send.send(task)
        except (OSError, ValueError) as exc:
            self.failed = f"{type(exc).__name__}: {exc}"
            return False
        self._busy.append(task)
        return True

    def submit_master(self, mip: MasterMip, seed: int, deadline: float, mip_rel_gap: float) -> bool:
        """Hand the worker a copy of the integer master (``MasterTask``), preempting the task it runs (which ends
        with what it has; its result comes first); False (nothing sent) if the worker is gone or runs one already.
        It is sent from a thread (``_sender``): the pipe takes it only as the child ends the task it preempts (about
        a second), and the caller's own master need not wait for that."""
        if self.running_master or not self.alive or self._sender.is_alive():
            return False
        task = MasterTask(mip, seed, deadline, mip_rel_gap)
        self._busy.append(task)
        self._sender = threading.Thread(target=self._send_all, args=(task,), daemon=True)
        self._sender.start()
        return True

    def cancel_master(self) -> None:
        """End the running ``MasterTask`` now: its best solution so far is its answer (once it has been sent: a copy
        still being sent after ``STOP_WAIT_S`` is left to its deadline)."""
        self._sender.join(STOP_WAIT_S)  # one writer on the pipe at a time
        if self.running_master and self.alive and not self._sender.is_alive():
            try:
                self._send.send(Cancel())
            except (OSError, ValueError) as exc:
                self.failed = f"{type(exc).__name__}: {exc}"

    def poll(self, wait_s: float = 0.0) -> ProofDone | ClassDone | MasterDone | None:
        """The oldest task's result, if it finished (waiting at most ``wait_s``), or the member-class bound's interim
        result (the worker stays busy with it); None otherwise."""
        if not self._busy or self.failed is not None:
            return None
        try:
            if not self._recv.poll(wait_s):
                if self._proc.poll() is not None:
                    self.failed = f"the proof worker exited (code {self._proc.returncode})"
                return None
            done: ProofDone | ClassDone | MasterDone = self._recv.recv()
        except (EOFError, OSError) as exc:
            self.failed = f"the proof worker stopped answering ({type(exc).__name__})"
            return None
        if not isinstance(done, ClassDone) or done.final:
            self._busy.popleft()
        return done

    def close(self) -> None:
        """End the child (``procgroup.stop_group``: SIGTERM, SIGKILL, reaped, verified gone; the child holds
        nothing that needs a gentler stop, idle or mid-round), then the pipes. Returns once it is gone."""
        stop_group(self._proc, "the proof worker", grace_s=STOP_WAIT_S, reap_s=STOP_WAIT_S, settle_s=STOP_WAIT_S)
        self._send.close()
        self._recv.close()
        self._sender.join(STOP_WAIT_S)
        self._busy.clear()
        self.failed = self.failed or "closed"

    def __enter__(self) -> ProofWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _main(argv: list[str]) -> None:
    """The child (``CHILD_CODE``): ``FD_IN FD_OUT PARENT_PID``."""
    fd_in, fd_out, parent = (int(a) for a in argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the child (``ProofWorker.close``)
    die_with_parent(parent)
    _serve(Connection(fd_in, writable=False), Connection(fd_out, readable=False))

