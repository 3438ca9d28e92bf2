"""A stand-in for ``igniter_opt.profiling.worker`` that speaks its protocol without torch or a GPU.

``FAKE_MODE`` picks the behaviour: ``ok`` (answer everything with plausible numbers),
``crash`` (exit 1 before 'ready' when the job has solo ops), ``crash_mid`` (exit 1 after the first
solo result) and ``hang`` (hang forever at the first solo op). For the ``l2`` op it prints
ncu-like CSV lines on stdout, as ncu would. ``FAKE_PIDFILE`` collects the pids it ran as.
"""

from __future__ import annotations

import json
import os
import sys
import time

PREFIX = "@@IGN "


def emit(obj: dict) -> None:
    sys.stdout.write(PREFIX + json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> int:
    mode = os.environ.get("FAKE_MODE", "ok")
    if os.environ.get("FAKE_PIDFILE"):
        with open(os.environ["FAKE_PIDFILE"], "a") as fh:
            fh.write(f"{os.getpid()}\n")
    share = float(os.environ.get("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "100"))
    emit({"event": "imported", "pid": os.getpid()})
    line = sys.stdin.readline()
    if not line.strip():
        return 0
    job = json.loads(line)
    if mode == "crash" and any(op["op"] == "solo" for op in job["ops"]):
        print("fake worker: CUDA error: out of memory", file=sys.stderr)
        return 1
    emit({"event": "ready", "setup_s": 0.01, "sm_count": 132, "device_name": "Fake GPU"})
    solos = 0
    for op in job["ops"]:
        if op.get("sync"):
            emit({"event": "waiting", "id": op["id"]})
            if sys.stdin.readline().strip() != "go":
                return 2
        kind = op["op"]
        t0 = time.time()
        if op.get("sync"):
            time.sleep(min(float(op.get("duration_s", 0.0)), 0.2))  # co-located phases overlap in time
        res: dict = {}
        if kind == "info":
            res = {"device_name": "Fake GPU", "sm_count": 132, "torch": "0", "cuda": "0", "share_env": None}
        elif kind == "pcie":
            res = {"bytes": 1, "ms": 1.0, "bytes_per_ms": 2.5e7}
        elif kind == "probe":
            sms = 2 * round(share * 132 / 200)
            res = {"median_ms": 100.0 / sms, "min_ms": 100.0 / sms, "sm_count": sms}
        elif kind in ("solo", "replay"):
            if mode == "hang":
                time.sleep(3600)
            if mode == "crash_mid" and solos == 1:
                print("fake worker: illegal memory access", file=sys.stderr)
                return 1
            solos += 1
            lat = (10.0 * op["batch"] + 5.0) / (share + 1.0) + 0.1
            res = {"latency_ms": lat, "median_ms": lat, "n": 10}
        elif kind == "trace":
            res = {"kernels": 20, "idle_ms": 0.02}
        elif kind == "trace_loop":
            res = {"kernels": 20, "idle_ms": 0.02, "idle_per_kernel_ms": 0.001, "traced": 5}
        elif kind == "loop":
            res = {"latency_ms": 1.0, "gpu_fb_ms": 0.9, "load_ms": 0.1, "throughput_rps": 1000.0,
                   "loop_rps": 900.0, "n": 10}
        elif kind == "l2":
            print('"ID","Kernel Name","Metric Name","Metric Unit","Metric Value"')
            kid = 0
            for i, _ in enumerate(op["points"]):
                print(f'"{kid}","spin_kernel(long)","gpu__time_duration.sum","usecond","1"')
                kid += 1
                for metric, unit, value in (("gpu__time_duration.sum", "usecond", "2"),
                                            ("lts__t_sectors.avg.pct_of_peak_sustained_elapsed", "%", str(10 + i))):
                    print(f'"{kid}","k","{metric}","{unit}","{value}"')
                kid += 1
            res = {"points": op["points"]}
        res.setdefault("t0", t0)
        res.setdefault("t1", time.time())
        emit({"event": "result", "id": op["id"], "elapsed_s": time.time() - t0, **res})
    emit({"event": "done"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
