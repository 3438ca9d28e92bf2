"""Stopping a child that leads a process group of its own (a Triton server and its stubs, a profiler worker).

Both the executor and the profiler start such children with ``start_new_session=True``, so that
the whole group (including grandchildren, e.g. Python-backend stubs or processes under ncu) can
be signalled at once.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess

log = logging.getLogger(__name__)


def signal_group(pid: int, sig: int) -> None:
    """Send ``sig`` to the process group led by ``pid``; a group that is already gone is fine."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_group(proc: subprocess.Popen, name: str, *, grace_s: float, reap_s: float) -> None:
    """SIGTERM the group and wait up to ``grace_s`` for its leader, then SIGKILL what is left and reap it.

    The SIGKILL goes out even when the leader exited on SIGTERM: the group may still hold
    children that the leader did not reap. Idempotent.
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
