"""Helpers for tests that must prove no process was left behind."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path


def live_processes(match: Callable[[int, str], bool], wait_s: float = 3.0) -> list[str]:
    """Processes (not zombies) whose (process group, command line) match, after up to ``wait_s`` for reaping."""
    deadline = time.monotonic() + wait_s
    while True:
        found = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                st = (d / "stat").read_text()
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            fields = st[st.rindex(")") + 2:].split()
            if fields[0] != "Z" and match(int(fields[2]), cmd):
                found.append(f"{d.name} {cmd}")
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def proof_workers(wait_s: float = 5.0) -> list[str]:
    """This process's live proof workers (``planner.exact.proofworker``: the worker's program, this pid as its
    last argument); another test process's workers, running meanwhile, are not counted."""
    from igniter_opt.planner.exact.proofworker import CHILD_CODE

    me = str(os.getpid())
    return live_processes(lambda _group, cmd: CHILD_CODE in cmd and cmd.split()[-1] == me, wait_s)
