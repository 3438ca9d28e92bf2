"""Results of an applied plan: per-request records, per-workload statistics, table and plot.

Everything here works from stored records (``requests.csv``), never from a live run, so a report
can be rebuilt after the fact (:func:`summarize`).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from igniter_opt.apply.loadgen import RECORD_FIELDS
from igniter_opt.ioutil import atomic_write_bytes, atomic_write_json, atomic_write_text
from igniter_opt.report import render_table


@dataclass(frozen=True)
class WorkloadTarget:
    """What the plan promised for one workload (summed or averaged over its placements)."""

    workload: str
    model: str
    batch: str  # '8', or '8+4' for a split workload
    share_pct: str
    rate_rps: float
    slo_ms: float
    predicted_ms: float  # rate-weighted mean predicted inference latency; nan where the plan has none


@dataclass(frozen=True)
class WorkloadResult:
    """Measured end-to-end (client send -> receive) latency against the plan, in ms and req/s."""

    workload: str
    model: str
    batch: str
    share_pct: str
    rate_rps: float
    slo_ms: float
    requests: int  # sent
    ok: int
    failed: int  # error, timeout, cancelled or wrong output
    achieved_rps: float  # successful responses per second of the run
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    within_slo: float  # fraction of sent requests answered successfully within the SLO
    predicted_ms: float  # predicted mean inference latency (plan)
    server_infer_ms: float  # measured mean time per model execution in the server (Triton's batch statistics)
    server_queue_ms: float  # measured mean queueing (incl. batch formation) per request in the server
    executed_batch: float  # measured mean samples per execution
    model_ms: float  # of an execution: the model's run in the served model.py (inputs in place -> outputs ready)
    backend_ms: float  # of an execution: taking the inputs and building the responses in model.py
    send_lag_p99_ms: float  # how late the generator sent (p99): > 1 ms means it could not keep the rate


def percentile(sorted_vals: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of an ascending sequence; nan when empty."""
    if not sorted_vals:
        return math.nan
    pos = (len(sorted_vals) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def summarize(records: Sequence[dict[str, Any]], targets: Sequence[WorkloadTarget],
              server_stats: dict[str, dict[str, float]] | None = None) -> list[WorkloadResult]:
    """Per-workload statistics from per-request records (dicts with the RECORD_FIELDS as strings or numbers)."""
    server_stats = server_stats or {}
    out = []
    for t in targets:
        rs = [r for r in records if r["workload"] == t.workload]
        ok = sorted(float(r["latency_ms"]) for r in rs if r["status"] == "ok")
        within = sum(1 for x in ok if x <= t.slo_ms)
        last = max((float(r["received_s"]) for r in rs), default=0.0)
        lags = sorted(1000.0 * (float(r["sent_s"]) - float(r["scheduled_s"])) for r in rs)
        st = server_stats.get(t.workload, {})
        out.append(WorkloadResult(
            workload=t.workload, model=t.model, batch=t.batch, share_pct=t.share_pct, rate_rps=t.rate_rps,
            slo_ms=t.slo_ms, requests=len(rs), ok=len(ok), failed=len(rs) - len(ok),
            achieved_rps=len(ok) / last if last > 0 else 0.0,
            p50_ms=percentile(ok, 50), p95_ms=percentile(ok, 95), p99_ms=percentile(ok, 99),
            mean_ms=sum(ok) / len(ok) if ok else math.nan,
            within_slo=within / len(rs) if rs else math.nan,
            predicted_ms=t.predicted_ms,
            server_infer_ms=st.get("infer_ms", math.nan), server_queue_ms=st.get("queue_ms", math.nan),
            executed_batch=st.get("executed_batch", math.nan), model_ms=st.get("model_ms", math.nan),
            backend_ms=st.get("backend_ms", math.nan),
            send_lag_p99_ms=percentile(lags, 99),
        ))
    return out


def summary_table(results: Sequence[WorkloadResult]) -> str:
    headers = ["workload", "model", "batch", "share %", "rate req/s", "got req/s", "requests", "p50 ms", "p95 ms",
               "p99 ms", "SLO ms", "within SLO", "predicted ms", "server ms", "model ms", "ran batch"]
    rows = [
        [r.workload, r.model, r.batch, r.share_pct, r.rate_rps, r.achieved_rps, r.requests, r.p50_ms, r.p95_ms,
         r.p99_ms, r.slo_ms, "-" if math.isnan(r.within_slo) else f"{100 * r.within_slo:.2f} %", r.predicted_ms,
         r.server_infer_ms, r.model_ms, r.executed_batch]
        for r in results
    ]
    return render_table(headers, rows, align="llllrrrrrrrrrrrr")


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def write_requests_csv(path: Path, records: Sequence[dict[str, Any]]) -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(RECORD_FIELDS), lineterminator="\n")
    w.writeheader()
    for r in sorted(records, key=lambda r: (float(r["sent_s"]), r["stream"], int(r["seq"]))):
        w.writerow({k: r[k] for k in RECORD_FIELDS})
    return atomic_write_text(path, buf.getvalue())


def write_summary(out_dir: Path, results: Sequence[WorkloadResult], meta: dict[str, Any]) -> None:
    """``summary.csv`` (one row per workload) and ``summary.json`` (the rows and the run's facts)."""
    buf = io.StringIO()
    fields = list(WorkloadResult.__dataclass_fields__)
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in results:
        w.writerow({k: ("" if _clean(v) is None else (round(v, 4) if isinstance(v, float) else v))
                    for k, v in asdict(r).items()})
    atomic_write_text(out_dir / "summary.csv", buf.getvalue())
    atomic_write_json(out_dir / "summary.json",
                      {**meta, "workloads": [{k: _clean(v) for k, v in asdict(r).items()} for r in results]})


def plot_latency(path: Path, records: Sequence[dict[str, Any]], results: Sequence[WorkloadResult],
                 marks: dict[str, float] | None = None) -> Path | None:
    """Latency of every successful request over time, one panel per workload, with its SLO.

    ``marks``: labelled moments (seconds since the start) drawn as vertical lines, e.g. a plan change.
    """
    if not results:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(results)
    fig, axes = plt.subplots(n, 1, figsize=(8, 2.2 * n + 0.6), sharex=True, squeeze=False)
    for ax, r in zip(axes[:, 0], results, strict=True):
        pts = [(float(x["sent_s"]), float(x["latency_ms"])) for x in records
               if x["workload"] == r.workload and x["status"] == "ok"]
        bad = [float(x["sent_s"]) for x in records if x["workload"] == r.workload and x["status"] != "ok"]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=2, alpha=0.5, label="latency")
        if bad:
            ax.scatter(bad, [r.slo_ms] * len(bad), s=8, marker="x", color="red", label="failed")
        if math.isfinite(r.slo_ms):
            ax.axhline(r.slo_ms, color="black", linestyle="--", linewidth=1, label=f"SLO {r.slo_ms:g} ms")
        for (label, t), color in zip((marks or {}).items(), ("tab:orange", "tab:green", "tab:purple"), strict=False):
            ax.axvline(t, color=color, linewidth=1, label=label)
        within = "-" if math.isnan(r.within_slo) else f"{100 * r.within_slo:.2f} %"
        ax.set_title(f"{r.workload} ({r.model}, batch {r.batch}, share {r.share_pct} %, {r.rate_rps:g} req/s): "
                     f"{within} within SLO", fontsize=9)
        ax.set_ylabel("latency ms")
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel("time since start (s)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
