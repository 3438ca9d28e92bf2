"""Results of an applied plan: per-request records, per-workload statistics, table, files and plot.

Everything here works from stored records (``requests.csv``), never from a live run, so a report
can be rebuilt after the fact (:func:`summarize`). A workload's results are *valid* only when the
load generator sent its requests on time (p99 of each request's lag behind its scheduled send
time at most ``max_lag_ms``): a late send adds the generator's own delay to the latency, so an
invalid workload is marked as such everywhere, never counted as a measurement of the server.
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
from igniter_opt.apply.options import DEFAULT_MAX_LAG_MS
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
    model_ms: (
        float  # of an execution: the model's run in the served model.py (inputs in place -> outputs ready)
    )
    backend_ms: float  # of an execution: taking the inputs and building the responses in model.py
    generator_lag_p50_ms: float  # how late the load generator sent a request behind its schedule
    generator_lag_p99_ms: float
    generator_lag_max_ms: float
    valid: (
        bool  # generator_lag_p99_ms <= the run's max_lag_ms: the latencies are the server's, not the client's
    )
    # requests sent per second of their schedule: a Poisson schedule's count strays from rate_rps (over 3 s
    # at 22 req/s by 12 %), so whether a server kept up is judged against this, not against the rate
    offered_rps: float = math.nan


def percentile(sorted_vals: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of an ascending sequence; nan when empty."""
    if not sorted_vals:
        return math.nan
    pos = (len(sorted_vals) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def request_lag_ms(record: dict[str, Any]) -> float:
    """How late one request was sent behind its schedule (records without ``lag_ms``: from the times)."""
    lag = record.get("lag_ms")
    if lag not in (None, ""):
        return float(lag)
    return 1000.0 * (float(record["sent_s"]) - float(record["scheduled_s"]))


def summarize(records: Sequence[dict[str, Any]], targets: Sequence[WorkloadTarget],
              server_stats: dict[str, dict[str, float]] | None = None, *,
              max_lag_ms: float = DEFAULT_MAX_LAG_MS) -> list[WorkloadResult]:
    """Per-workload statistics from per-request records (dicts with the RECORD_FIELDS as strings or numbers).

    A workload is ``valid`` when the p99 of its requests' send lag is at most ``max_lag_ms``.
    """
    server_stats = server_stats or {}
    out = []
    for t in targets:
        rs = [r for r in records if r["workload"] == t.workload]
        ok = sorted(float(r["latency_ms"]) for r in rs if r["status"] == "ok")
        within = sum(1 for x in ok if x <= t.slo_ms)
        last = max((float(r["received_s"]) for r in rs), default=0.0)
        last_scheduled = max((float(r["scheduled_s"]) for r in rs), default=0.0)
        lags = sorted(request_lag_ms(r) for r in rs)
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
            generator_lag_p50_ms=percentile(lags, 50), generator_lag_p99_ms=percentile(lags, 99),
            generator_lag_max_ms=lags[-1] if lags else math.nan,
            valid=bool(lags) and percentile(lags, 99) <= max_lag_ms,
            offered_rps=len(rs) / last_scheduled if last_scheduled > 0 else math.nan,
        ))
    return out


def summary_table(results: Sequence[WorkloadResult]) -> str:
    """One row per workload; ``valid``: whether the generator kept its schedule (else no measurement)."""
    headers = [
        "workload",
        "model",
        "batch",
        "share %",
        "rate req/s",
        "got req/s",
        "requests",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "SLO ms",
        "within SLO",
        "predicted ms",
        "server ms",
        "model ms",
        "ran batch",
        "lag p99 ms",
        "valid",
    ]
    rows = [
        [
            r.workload,
            r.model,
            r.batch,
            r.share_pct,
            r.rate_rps,
            r.achieved_rps,
            r.requests,
            r.p50_ms,
            r.p95_ms,
            r.p99_ms,
            r.slo_ms,
            "-" if math.isnan(r.within_slo) else f"{100 * r.within_slo:.2f} %",
            r.predicted_ms,
            r.server_infer_ms,
            r.model_ms,
            r.executed_batch,
            r.generator_lag_p99_ms,
            "yes" if r.valid else "NO",
        ]
        for r in results
    ]
    return render_table(headers, rows, align="llllrrrrrrrrrrrrrl")


def invalid_notes(results: Sequence[WorkloadResult], max_lag_ms: float) -> list[str]:
    """One line per workload whose generator lagged: its numbers measure the client, not the plan."""
    return [
        f"INVALID: {r.workload}: the load generator sent its requests late (lag p99 "
        f"{r.generator_lag_p99_ms:.2f} ms, max {r.generator_lag_max_ms:.2f} ms > {max_lag_ms:g} ms), so its "
        "latencies include the generator's own delay; rerun with fewer load processes per core (a higher "
        "--max-rps-per-process, fewer workloads per "
        "host) or on a machine with more free cores"
        for r in results
        if not r.valid
    ]


def serving_overhead_ms(results: Sequence[WorkloadResult]) -> float | None:
    """The largest measured per-execution overhead of the servers (Triton's time - the model's), if any."""
    gaps = [r.server_infer_ms - r.model_ms for r in results
            if math.isfinite(r.server_infer_ms) and math.isfinite(r.model_ms)]
    return max(gaps) if gaps else None


def render_results(results: Sequence[WorkloadResult], files: Sequence[Path], max_lag_ms: float) -> str:
    """The table, a line per invalid workload, the serving overhead to plan with, and the files written."""
    lines = [summary_table(results)] if results else []
    notes = invalid_notes(results, max_lag_ms)
    if notes:
        lines += ["", *notes]
    overhead = serving_overhead_ms(results)
    if overhead is not None:
        lines.append("")
        lines.append(
            f"serving overhead per batch (Triton's time per execution - the model's): {overhead:.2f} ms "
            "(largest over workloads); plan with --serving-overhead-ms to include it"
        )
    if files:
        lines.append("")
        lines.append("wrote " + ", ".join(str(f) for f in files))
    return "\n".join(lines)


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
    """``summary.csv`` (a row per workload) and ``summary.json`` (the rows, validity, the run's facts)."""
    buf = io.StringIO()
    fields = list(WorkloadResult.__dataclass_fields__)
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in results:
        w.writerow({k: ("" if _clean(v) is None else (round(v, 4) if isinstance(v, float) else v))
                    for k, v in asdict(r).items()})
    atomic_write_text(out_dir / "summary.csv", buf.getvalue())
    atomic_write_json(out_dir / "summary.json",
                      {**meta, "valid": all(r.valid for r in results),
                       "workloads": [{k: _clean(v) for k, v in asdict(r).items()} for r in results]})


def write_results(out_dir: Path, records: Sequence[dict[str, Any]], results: Sequence[WorkloadResult],
                  meta: dict[str, Any]) -> list[Path]:
    """``requests.csv``, ``summary.csv``, ``summary.json`` and ``latency.png`` of a run; returns the files."""
    files = [write_requests_csv(out_dir / "requests.csv", records)]
    write_summary(out_dir, results, meta)
    files += [out_dir / "summary.csv", out_dir / "summary.json"]
    png = plot_latency(out_dir / "latency.png", records, results)
    if png is not None:
        files.append(png)
    return files


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
        for (label, t), color in zip(
            (marks or {}).items(), ("tab:orange", "tab:green", "tab:purple"), strict=False
        ):
            ax.axvline(t, color=color, linewidth=1, label=label)
        within = "-" if math.isnan(r.within_slo) else f"{100 * r.within_slo:.2f} %"
        ax.set_title(
            f"{r.workload} ({r.model}, batch {r.batch}, share {r.share_pct} %, {r.rate_rps:g} req/s): "
            f"{within} within SLO",
            fontsize=9,
        )
        ax.set_ylabel("latency ms")
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel("time since start (s)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
