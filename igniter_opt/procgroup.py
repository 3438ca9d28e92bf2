"""Children that lead a process group and session of their own (a Triton server and stubs, a profiler worker).

Both the executor and the profiler start such children with ``start_new_session=True``, so that
the whole group (including grandchildren, e.g. Python-backend stubs or processes under ncu) can
be signalled at once. Stopping is: SIGTERM to the group, wait for the leader, SIGKILL to the
group, reap the leader, then *verify* from ``/proc`` that no member of the group or session is
left (a stub of a GPU server can take seconds to tear down its CUDA context after SIGKILL; it is
waited for, so that nothing outlives the call that stopped it).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
PR_SET_PDEATHSIG = 1
_PRCTL: Any
try:  # resolved here, not in the child between fork and exec
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _PRCTL = None


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGTERM this process when its parent dies (Linux), e.g. when igniter-opt is
    killed with SIGKILL and cannot clean up. Runs in the child (``preexec_fn`` or a forked worker).

    Also unblocks SIGINT and SIGTERM, which the parent holds back while it starts the child
    (:func:`stop_signals_deferred`) and which a child would otherwise inherit blocked.
    """
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def signal_group(pid: int, sig: int) -> None:
    """Send ``sig`` to the process group led by ``pid``; a group that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _stat_fields(stat: str) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces and parentheses)."""
    return stat[stat.rindex(")") + 2:].split()


def group_members(leader: int, proc: Path = Path("/proc")) -> list[int]:
    """Live processes (zombies excluded) whose process group or session is the one ``leader`` started.

    A process that left the group but not the session (``setpgid``) is still found.
    """
    found = []
    for entry in proc.iterdir() if proc.is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat_fields((entry / "stat").read_text())
        except (OSError, ValueError):
            continue  # gone meanwhile
        state, pgid, sid = fields[0], int(fields[2]), int(fields[3])
        if state not in ("Z", "X") and leader in (pgid, sid):
            found.append(int(entry.name))
    return found


def kill_members(leader: int, timeout_s: float, proc: Path = Path("/proc")) -> list[int]:
    """SIGKILL every member of the group/session of ``leader`` until none is left or ``timeout_s`` passed.

    Returns the pids that are still there (each one logged).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        left = group_members(leader, proc)
        if not left:
            return []
        if time.monotonic() > deadline:
            log.error("processes %s of group %d survived SIGKILL for %.0f s", left, leader, timeout_s)
            return left
        signal_group(leader, signal.SIGKILL)
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def stop_group(proc: subprocess.Popen, name: str, *, grace_s: float, reap_s: float,
               settle_s: float = 30.0) -> list[int]:
    """SIGTERM the group and wait up to ``grace_s`` for its leader, then SIGKILL what is left, reap, verify.

    The SIGKILL goes out even when the leader exited on SIGTERM: the group may still hold
    children that the leader did not reap (a Python-backend stub of a server). Members are then
    killed and waited for up to ``settle_s`` (a process that holds a GPU context can take seconds
    to exit after SIGKILL). Returns the pids that survived all of it (normally none). Idempotent.
    """
    if proc.poll() is None:
        signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            log.warning("%s ignored SIGTERM for %.0f s; killing it", name, grace_s)
    signal_group(proc.pid, signal.SIGKILL)
    try:
        proc.wait(timeout=reap_s)
    except subprocess.TimeoutExpired:
        log.error("%s (pid %d) survived SIGKILL", name, proc.pid)
    return kill_members(proc.pid, settle_s)


@contextmanager
def stop_signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back (in this thread) while a child is started and recorded.

    Otherwise a Ctrl-C that lands between ``fork`` and the line that records the child's
    ``Popen`` would leave a child that no cleanup knows of. The signals are delivered on exit.
    """
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
