"""What the servers measured themselves: Triton's per-model statistics and the served model's execution trace.

``server_statistics`` asks a running server (before it is stopped); ``read_exec_trace`` reads
the file the served ``model.py`` wrote (complete once the server has stopped); ``workload_stats``
combines both per workload.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from igniter_opt.apply.launcher import ServerSpec
from igniter_opt.apply.ports import HOST

log = logging.getLogger(__name__)

_SUMMED = ("executions", "samples", "exec_ns", "queue_count", "queue_ns", "traced", "model_ms", "backend_ms")


def server_statistics(spec: ServerSpec, timeout_s: float = 5.0) -> dict[str, float]:
    """Triton's own statistics of one server: executions, samples, their compute time, queueing.

    Triton adds a batch's compute time once per request to ``inference_stats``; ``batch_stats``
    counts each execution once, so the time per execution comes from there.
    """
    url = f"http://{HOST}:{spec.ports.http}/v2/models/{spec.model}/stats"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            data = json.loads(r.read())
        ms = data["model_stats"][0]
        executions = samples = exec_ns = 0
        for b in ms.get("batch_stats", []):
            n = int(b["compute_infer"]["count"])
            executions += n
            samples += n * int(b["batch_size"])
            exec_ns += sum(int(b[k]["ns"]) for k in ("compute_input", "compute_infer", "compute_output"))
        q = ms["inference_stats"]["queue"]
        return {"executions": executions, "samples": samples, "exec_ns": exec_ns,
                "queue_count": int(q["count"]), "queue_ns": int(q["ns"])}
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        log.warning("could not read statistics of server %s: %s", spec.name, exc)
        return {}


def read_exec_trace(path: Path) -> dict[str, float]:
    """Sums over the served model's execution trace (empty where there is none)."""
    acc = {"traced": 0, "model_ms": 0.0, "backend_ms": 0.0}
    try:
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                acc["traced"] += 1
                acc["model_ms"] += float(row["run_ms"])
                acc["backend_ms"] += float(row["input_ms"]) + float(row["respond_ms"])
    except (OSError, ValueError, KeyError) as exc:
        log.debug("no execution trace at %s: %s", path, exc)
        return {}
    return acc


def _ratio(x: float, n: float) -> float:
    return x / n if n else math.nan


def workload_stats(per_server: dict[str, dict[str, float]],
                   server_workloads: Iterable[tuple[str, str]]) -> dict[str, dict[str, float]]:
    """Per workload: ms per execution in the server and in the model, executed batch, ms queued per request.

    ``server_workloads``: (server name, workload) pairs; a split workload's servers are summed.
    """
    acc: dict[str, dict[str, float]] = {}
    for server, workload in server_workloads:
        st = per_server.get(server)
        if not st:
            continue
        a = acc.setdefault(workload, dict.fromkeys(_SUMMED, 0))
        for k in _SUMMED:
            a[k] += st.get(k, 0)
    return {
        w: {"infer_ms": _ratio(a["exec_ns"] / 1e6, a["executions"]),
            "executed_batch": _ratio(a["samples"], a["executions"]),
            "queue_ms": _ratio(a["queue_ns"] / 1e6, a["queue_count"]),
            "model_ms": _ratio(a["model_ms"], a["traced"]),
            "backend_ms": _ratio(a["backend_ms"], a["traced"])}
        for w, a in acc.items()
    }
