"""The measurement process: ``python -m igniter_opt.profiling.worker`` (one per MPS client).

Protocol (JSON, one object per line). The process imports torch at once and announces
``{"event": "imported"}``; it then reads one job from stdin::

    {"models": {"resnet50": [1, 8]}, "ops": [{"id": "...", "op": "solo", ...}, ...]}

builds the runners (CUDA graphs), announces ``ready`` and runs the ops in order, answering
``{"event": "result", "id": ..., ...}`` for each. An op with ``"sync": true`` first announces
``waiting`` and blocks until the parent writes a ``go`` line, so that co-located processes start
a phase together. Errors are answered ``{"event": "error", ...}`` and end the process with
exit code 3. Messages are prefixed with ``@@IGN `` on stdout; anything else printed there (by
libraries) is ignored by the parent.

The share of the GPU is set by the parent through ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback
from typing import Any

PREFIX = "@@IGN "
_OUT = sys.stdout


def emit(obj: dict[str, Any]) -> None:
    _OUT.write(PREFIX + json.dumps(obj) + "\n")
    _OUT.flush()


def _wait_go() -> None:
    line = sys.stdin.readline()
    if line.strip() != "go":
        raise RuntimeError(f"expected 'go' from the parent, got {line.strip()!r}")


def _device_info(torch: Any) -> dict[str, Any]:
    props = torch.cuda.get_device_properties(0)
    return {
        "device_name": props.name,
        "sm_count": int(props.multi_processor_count),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "share_env": os.environ.get("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"),
    }


def _op_pcie(torch: Any, op: dict[str, Any]) -> dict[str, Any]:
    n = int(op.get("bytes", 256 << 20))
    iters = int(op.get("iters", 10))
    host = torch.empty(n, dtype=torch.uint8, pin_memory=True)
    dev = torch.empty(n, dtype=torch.uint8, device="cuda")
    for _ in range(2):
        dev.copy_(host, non_blocking=True)
    torch.cuda.synchronize()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    for _ in range(iters):
        dev.copy_(host, non_blocking=True)
    e1.record()
    e1.synchronize()
    ms = e0.elapsed_time(e1) / iters
    return {"bytes": n, "ms": ms, "bytes_per_ms": n / ms}


def _op_probe(torch: Any, op: dict[str, Any]) -> dict[str, Any]:
    """A compute-bound fp16 matmul whose time falls as the SMs granted to the process grow."""
    n = int(op.get("n", 8192))
    a = torch.randn(n, n, device="cuda", dtype=torch.float16)
    b = torch.randn(n, n, device="cuda", dtype=torch.float16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    times = []
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(int(op.get("iters", 10))):
        e0.record()
        a @ b
        e1.record()
        e1.synchronize()
        times.append(e0.elapsed_time(e1))
    times.sort()
    return {"median_ms": times[len(times) // 2], "min_ms": times[0], **_device_info(torch)}


def _op_l2(torch: Any, runners: dict[str, Any], op: dict[str, Any]) -> dict[str, Any]:
    """One replay per point inside a cudaProfilerStart/Stop range, each preceded by a marker kernel.

    ``ncu --profile-from-start off`` profiles only this range; the parent splits the kernels at
    the markers (``spin_kernel`` from ``torch.cuda._sleep``).
    """
    points = [(str(m), int(b)) for m, b in op["points"]]
    for m, b in points:
        for _ in range(3):
            runners[m].replay(b)
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    for m, b in points:
        torch.cuda._sleep(1000)
        torch.cuda.synchronize()
        runners[m].replay(b)
        torch.cuda.synchronize()
    torch.cuda.profiler.stop()
    return {"points": points}


def _op_trace_loop(torch: Any, runner: Any, op: dict[str, Any]) -> dict[str, Any]:
    """Replay back to back for ``duration_s``, tracing kernels in the middle of the window."""
    from torch.profiler import ProfilerActivity, profile

    from igniter_opt.zoo.runner import kernel_intervals, split_idle

    b = int(op["batch"])
    dur = float(op["duration_s"])
    max_traced = int(op.get("max_traced", 200))
    t0 = time.time()
    while time.time() - t0 < 0.3 * dur:
        runner.replay(b)
        torch.cuda.synchronize()
    prof = profile(activities=[ProfilerActivity.CUDA])
    prof.start()
    n = 0
    while n < max_traced and (time.time() - t0 < 0.7 * dur or n < 5):
        runner.replay(b)
        torch.cuda.synchronize()
        n += 1
    prof.stop()
    while time.time() - t0 < dur:
        runner.replay(b)
        torch.cuda.synchronize()
    kernels, idle_ms = split_idle(kernel_intervals(prof), n)
    return {"kernels": kernels, "idle_ms": idle_ms, "idle_per_kernel_ms": idle_ms / kernels, "traced": n,
            "t0": t0, "t1": time.time()}


def run_op(torch: Any, runners: dict[str, Any], op: dict[str, Any]) -> dict[str, Any]:
    kind = op["op"]
    if kind == "info":
        return _device_info(torch)
    if kind == "pcie":
        return _op_pcie(torch, op)
    if kind == "probe":
        return _op_probe(torch, op)
    if kind == "l2":
        return _op_l2(torch, runners, op)
    runner = runners[op["model"]]
    b = int(op["batch"])
    if kind in ("solo", "replay"):
        times, t0, t1 = runner.time_replays(
            b, min_iters=int(op.get("min_iters", 10)), min_time_s=float(op.get("min_time_s", 0.3))
        )
        s = sorted(times)
        return {"latency_ms": sum(times) / len(times), "median_ms": s[len(s) // 2], "n": len(times), "t0": t0, "t1": t1}
    if kind == "trace":
        kernels, idle_ms = runner.kernel_trace(b, replays=int(op.get("replays", 5)))
        return {"kernels": kernels, "idle_ms": idle_ms}
    if kind == "trace_loop":
        return _op_trace_loop(torch, runner, op)
    if kind == "loop":
        st = runner.closed_loop(b, duration_s=float(op["duration_s"]))
        return {
            "latency_ms": st.latency_ms, "gpu_fb_ms": st.gpu_fb_ms, "load_ms": st.load_ms,
            "throughput_rps": st.throughput_rps, "loop_rps": st.loop_rps, "n": st.iterations,
            "t0": st.t_start, "t1": st.t_end,
        }
    raise ValueError(f"unknown op {kind!r}")


def main() -> int:
    try:
        import torch
    except ImportError as exc:
        emit({"event": "error", "message": f"torch is not installed ({exc})", "traceback": ""})
        return 3
    # Optional preloading while the process waits for its job (CPU only: no CUDA yet).
    for mod in filter(None, os.environ.get("IGNITER_PRELOAD", "").split(",")):
        with contextlib.suppress(ImportError):  # optional; the job imports what it needs itself
            __import__(mod)
    emit({"event": "imported", "pid": os.getpid()})
    line = sys.stdin.readline()
    if not line.strip():
        return 0  # the parent closed the pipe: nothing to do
    try:
        job = json.loads(line)
        from igniter_opt.zoo.runner import ModelRunner

        if not torch.cuda.is_available():
            raise RuntimeError("torch sees no CUDA GPU")
        t0 = time.time()
        runners = {m: ModelRunner(m, bs).build() for m, bs in job.get("models", {}).items()}
        emit({"event": "ready", "setup_s": time.time() - t0, **_device_info(torch)})
        for op in job.get("ops", []):
            if op.get("sync"):
                emit({"event": "waiting", "id": op["id"]})
                _wait_go()
            t_op = time.time()
            res = run_op(torch, runners, op)
            emit({"event": "result", "id": op["id"], "elapsed_s": time.time() - t_op, **res})
        emit({"event": "done"})
        return 0
    except Exception as exc:  # report, then exit non-zero
        emit({"event": "error", "message": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
        return 3


if __name__ == "__main__":
    sys.exit(main())
