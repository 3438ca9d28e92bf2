"""A stand-in for nvidia-cuda-mps-control that behaves like the real one where igniter-opt can tell.

``-d`` starts a detached daemon (double fork, a session of its own, stdio closed) that creates
``$CUDA_MPS_PIPE_DIRECTORY/control``, starts a "server" child, and runs until told to quit. Without
``-d``, the command on stdin goes to the daemon of that pipe folder; ``quit`` makes it remove its
control pipe, stop its server and exit, and the client returns once the pipe is gone (as the real
one does). Both processes keep ``CUDA_MPS_PIPE_DIRECTORY`` in their environment, as the real ones.

Environment: ``FAKE_MPS_FAIL`` (``-d`` fails as when another daemon runs), ``FAKE_MPS_IGNORE_QUIT``
(the daemon ignores ``quit`` and SIGTERM: only SIGKILL stops it), ``FAKE_MPS_LOG`` (``quit`` is
appended there), ``FAKE_PIDFILE`` (the daemon's and server's pids are appended there). Every call
is appended to ``$CUDA_MPS_LOG_DIRECTORY/calls`` (``args=... pipe=...``, then ``stdin=...``).
"""

import os
import signal
import sys
import time
from pathlib import Path

pipe = Path(os.environ["CUDA_MPS_PIPE_DIRECTORY"])
log_dir = Path(os.environ.get("CUDA_MPS_LOG_DIRECTORY", pipe))


def note(line: str) -> None:
    with open(log_dir / "calls", "a") as fh:
        fh.write(line + "\n")


def record_pids(*pids: int) -> None:
    if os.environ.get("FAKE_PIDFILE"):
        with open(os.environ["FAKE_PIDFILE"], "a") as fh:
            fh.write("".join(f"{pid}\n" for pid in pids))


def detach() -> None:
    """Become a daemon: a grandchild in a session of its own, with stdio on /dev/null."""
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)


def server() -> None:
    """The daemon's server: lives while its daemon does."""
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(0.05)
    os._exit(0)


def daemon() -> None:
    stubborn = bool(os.environ.get("FAKE_MPS_IGNORE_QUIT"))
    if stubborn:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = os.fork()
    if child == 0:
        server()
    record_pids(os.getpid(), child)  # before the control pipe: whoever sees the pipe finds both pids
    (pipe / "control").write_text("")
    while True:
        time.sleep(0.02)
        if (pipe / "quit").exists() and not stubborn:
            (pipe / "quit").unlink()
            os.kill(child, signal.SIGTERM)
            os.waitpid(child, 0)
            (pipe / "control").unlink(missing_ok=True)
            os._exit(0)


def client() -> int:
    for line in sys.stdin:
        cmd = line.strip()
        note(f"stdin={cmd}")
        if cmd != "quit":
            continue
        if os.environ.get("FAKE_MPS_LOG"):
            with open(os.environ["FAKE_MPS_LOG"], "a") as fh:
                fh.write("quit\n")
        if not (pipe / "control").exists():
            print("Cannot find MPS control daemon process", file=sys.stderr)
            return 1
        (pipe / "quit").write_text("")
        deadline = time.monotonic() + 3
        while (pipe / "control").exists():
            if time.monotonic() > deadline:
                return 1  # the real client waits too, and is killed by its caller's timeout
            time.sleep(0.02)
    return 0


def main() -> int:
    note(f"args={' '.join(sys.argv[1:])} pipe={pipe}")
    if sys.argv[1:] != ["-d"]:
        return client()
    if os.environ.get("FAKE_MPS_FAIL"):
        print("An instance of this daemon is already running", file=sys.stderr)
        return 1
    detach()
    daemon()
    return 0


if __name__ == "__main__":
    sys.exit(main())
