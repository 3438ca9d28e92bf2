"""The process that runs in each GPU pod: the GPU's MPS control daemon, then one tritonserver per placement.

This file is exported verbatim into every GPU pod's ConfigMap and run there as
``python3 launch.py servers.json``: standard library only, Python 3.8 or later (the Triton image's
interpreter), nothing from igniter_opt. It does in the pod what ``igniter-opt apply`` does on one
host, for one GPU:

1. starts ``nvidia-cuda-mps-control -d`` with the pod's private pipe and log folders (an
   emptyDir; what a previous container of the pod left there is removed first, its daemon died
   with it) and waits for the control pipe;
2. starts every server with ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` set to its placement's share,
   in its own session, its output relayed to the pod's log line by line as ``[s0] ...``;
3. answers the readiness probe on ``/ready``: 200 once every server answers
   ``/v2/health/ready`` (polled every two seconds), 503 before;
4. when a server exits, stops the others and quits MPS and exits 1 (the kubelet restarts the
   container); on SIGTERM or SIGINT, stops the servers (SIGTERM to each server's process group,
   SIGKILL after ``stop_timeout_s``), quits MPS and exits 0.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request

SCHEMA = "igniter-opt/k8s-servers/v1"
READY_POLL_S = 2.0


def log(message: str) -> None:
    print(f"[launcher] {message}", flush=True)


def load_config(path: str) -> dict:
    with open(path, encoding="utf-8") as fh:
        cfg = json.load(fh)
    if cfg.get("schema") != SCHEMA:
        raise SystemExit(f"[launcher] {path}: schema is {cfg.get('schema')!r}, expected {SCHEMA!r}")
    return cfg


class Launcher:
    """The MPS daemon and servers of one GPU, from the pod's ``servers.json``."""

    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg
        self.servers = cfg["servers"]
        self.mps_env = {"CUDA_MPS_PIPE_DIRECTORY": cfg["mps_pipe_dir"],
                        "CUDA_MPS_LOG_DIRECTORY": cfg["mps_log_dir"]}
        self.procs: list[subprocess.Popen] = []
        self.ready = False
        self.stop_signal: str | None = None
        self.done = threading.Event()

    # ---- MPS ----------------------------------------------------------------------------------
    def _control(self, args: list[str], command: str | None, timeout_s: float) -> subprocess.CompletedProcess:
        return subprocess.run(list(self.cfg["mps_control"]) + args, input=command,
                              env={**os.environ, **self.mps_env}, capture_output=True, text=True,
                              timeout=timeout_s, check=False)

    def start_mps(self) -> None:
        pipe = self.cfg["mps_pipe_dir"]
        for d in (pipe, self.cfg["mps_log_dir"]):
            os.makedirs(d, exist_ok=True)
        for entry in os.listdir(pipe):  # a daemon of an earlier container of this pod died with it
            path = os.path.join(pipe, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        res = self._control(["-d"], None, 30.0)
        if res.returncode != 0:
            raise RuntimeError(f"MPS control daemon failed to start (exit {res.returncode}): "
                               f"{(res.stderr or res.stdout).strip()[:300]}")
        deadline = time.monotonic() + 30.0
        while not os.path.exists(os.path.join(pipe, "control")):
            if time.monotonic() > deadline:
                raise RuntimeError("MPS control daemon did not create its control pipe within 30 s")
            time.sleep(0.05)
        log(f"MPS control daemon started (pipe {pipe})")

    def quit_mps(self) -> None:
        try:
            res = self._control([], "quit\n", 10.0)
            log("MPS control daemon quit" if res.returncode == 0 else f"MPS quit exited {res.returncode}")
        except (OSError, subprocess.TimeoutExpired) as exc:
            log(f"MPS quit failed: {exc}")

    # ---- servers ------------------------------------------------------------------------------
    def _relay(self, name: str, stream) -> None:
        for raw in iter(stream.readline, b""):
            sys.stdout.write(f"[{name}] {raw.decode('utf-8', 'replace').rstrip()}\n")
            sys.stdout.flush()

    def start_servers(self) -> None:
        for s in self.servers:
            share = f"{float(s['share_pct']):g}"
            env = {**os.environ, **self.mps_env, "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": share}
            proc = subprocess.Popen(s["argv"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            self.procs.append(proc)
            threading.Thread(target=self._relay, args=(s["name"], proc.stdout), daemon=True).start()
            log(f"started {s['name']} (workload {s['workload']}, {s['model']} batch {s['batch']}, "
                f"MPS share {float(s['share_pct']):g} %), pid {proc.pid}")

    def _server_ready(self, s: dict) -> bool:
        try:
            url = f"http://127.0.0.1:{s['http_port']}/v2/health/ready"
            with urllib.request.urlopen(url, timeout=1.0) as r:
                return r.status == 200
        except OSError:
            return False

    def poll_readiness(self) -> None:
        while not self.done.is_set():
            ready = all(self._server_ready(s) for s in self.servers)
            if ready and not self.ready:
                log("every server is ready")
            self.ready = ready
            self.done.wait(READY_POLL_S)

    def stop_servers(self) -> None:
        running = [p for p in self.procs if p.poll() is None]
        for p in running:
            _signal_group(p, signal.SIGTERM)
        deadline = time.monotonic() + float(self.cfg["stop_timeout_s"])
        for p in running:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"pid {p.pid} did not stop within {self.cfg['stop_timeout_s']} s; killing it")
        for p in self.procs:
            _signal_group(p, signal.SIGKILL)  # stragglers of a group (e.g. a backend stub)
            if p.poll() is None:
                p.wait()

    # ---- probe --------------------------------------------------------------------------------
    def serve_probe(self) -> http.server.HTTPServer:
        launcher = self

        class Probe(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server interface)
                ok = self.path == "/ready" and launcher.ready
                self.send_response(200 if ok else 503 if self.path == "/ready" else 404)
                self.end_headers()
                self.wfile.write(b"ready\n" if ok else b"not ready\n")

            def log_message(self, *args: object) -> None:  # probes every few seconds: keep the log clean
                pass

        server = http.server.ThreadingHTTPServer(("", int(self.cfg["ready_port"])), Probe)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    # ---- the run ------------------------------------------------------------------------------
    def on_signal(self, signum: int, _frame: object) -> None:
        self.stop_signal = signal.Signals(signum).name

    def wait(self) -> int:
        while self.stop_signal is None:
            for i, p in enumerate(self.procs):
                if p.poll() is not None:
                    s = self.servers[i]
                    log(f"{s['name']} (workload {s['workload']}) exited with code {p.returncode}; "
                        "stopping the others")
                    return 1
            time.sleep(0.2)
        log(f"{self.stop_signal}: stopping every server")
        return 0

    def run(self) -> int:
        probe = self.serve_probe()
        code = 1
        mps_started = False
        try:
            self.start_mps()
            mps_started = True
            self.start_servers()
            threading.Thread(target=self.poll_readiness, daemon=True).start()
            code = self.wait()
        except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
            log(f"error: {exc}")
        finally:
            self.done.set()
            self.ready = False
            self.stop_servers()
            if mps_started:
                self.quit_mps()
            probe.shutdown()
        return code


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: launch.py SERVERS.json", file=sys.stderr)
        return 2
    launcher = Launcher(load_config(args[0]))
    signal.signal(signal.SIGTERM, launcher.on_signal)
    signal.signal(signal.SIGINT, launcher.on_signal)
    return launcher.run()


if __name__ == "__main__":
    sys.exit(main())
