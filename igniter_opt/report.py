"""Rendering plans and predictions as text tables, CSV or JSON (no printing here)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from typing import TypedDict

from igniter_opt.domain import LatencyBudget, Plan
from igniter_opt.placement import Violation
from igniter_opt.placement.feasibility import placement_queue_delay_ms
from igniter_opt.placement.serving import plan_serving_model
from igniter_opt.planio import plan_to_dict


def render_table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    """A plain aligned text table; ``align`` is one 'l' or 'r' per column (default: numbers right)."""
    cells = [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    if align is None:
        align = "".join(
            "r" if rows and all(isinstance(r[i], (int, float)) for r in rows) else "l" for i in range(len(headers))
        )

    def line(vals: Sequence[str]) -> str:
        parts = [v.rjust(w) if a == "r" else v.ljust(w) for v, w, a in zip(vals, widths, align, strict=True)]
        return "  ".join(parts).rstrip()

    out = [line(list(headers)), line(["-" * w for w in widths])]
    out.extend(line(r) for r in cells)
    return "\n".join(out)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:.2f}"
    return str(v)


PLAN_COLUMNS = ["gpu", "workload", "model", "batch", "share_pct", "latency_ms", "limit_ms", "slo_ms",
                "throughput_rps", "rate_rps"]
REQUEST_COLUMNS = ["queue_delay_ms", "p50_ms", "p99_ms", "within_slo_pct"]


class PlanRow(TypedDict):
    """One placement of a plan as a table or CSV row (NaN where unknown)."""

    gpu: str
    workload: str
    model: str
    batch: int
    share_pct: float
    latency_ms: float
    limit_ms: float
    slo_ms: float
    throughput_rps: float
    rate_rps: float
    queue_delay_ms: float
    p50_ms: float
    p99_ms: float
    within_slo_pct: float


def share_text(pct: float) -> str:
    """A share (or a total of shares) as the tool prints it everywhere: two decimals."""
    return f"{pct:.2f} %"


def plan_rows(plan: Plan) -> list[PlanRow]:
    """One row per placement, with the latency limit under the plan's serving model and, where the
    plan has them, the per-request predictions."""
    budget = LatencyBudget(plan.latency_budget)
    margin = plan.margin or 0.0
    rule = plan_serving_model(budget, plan.margin, plan.attainment, plan.serving)
    rows: list[PlanRow] = []
    for g in plan.gpus:
        for p in g.placements:
            known = math.isfinite(p.slo_ms) and math.isfinite(p.rate_rps)
            pr = p.predicted
            rows.append({
                "gpu": g.gpu_id, "workload": p.workload, "model": p.model, "batch": p.batch, "share_pct": p.share_pct,
                "latency_ms": pr.latency_ms if pr else math.nan,
                "limit_ms": rule.limit(p.slo_ms, p.rate_rps, p.batch, placement_queue_delay_ms(p, budget, margin))
                if known else math.nan,
                "slo_ms": p.slo_ms, "throughput_rps": pr.throughput_rps if pr else math.nan, "rate_rps": p.rate_rps,
                "queue_delay_ms": _opt(p.queue_delay_ms), "p50_ms": _opt(pr.p50_ms if pr else None),
                "p99_ms": _opt(pr.p99_ms if pr else None),
                "within_slo_pct": _opt(100.0 * pr.within_slo if pr and pr.within_slo is not None else None),
            })
    return rows


def _opt(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _has_requests(rows: list[PlanRow]) -> bool:
    return any(not math.isnan(float(r["within_slo_pct"])) for r in rows)


def plan_table(plan: Plan) -> str:
    """The plan as a table; with per-request predictions, their p99 and % within SLO too."""
    rows = plan_rows(plan)
    headers = ["GPU", "workload", "model", "batch", "share %", "latency ms", "limit ms", "thr req/s", "rate req/s"]
    with_requests = _has_requests(rows)
    if with_requests:
        headers += ["delay ms", "p99 ms", "in SLO %"]
    body = []
    for r in rows:
        row: list[object] = [r["gpu"], r["workload"], r["model"], int(r["batch"]),
                             *(float(v) for v in (r["share_pct"], r["latency_ms"], r["limit_ms"],
                                                  r["throughput_rps"], r["rate_rps"]))]
        if with_requests:
            row += [float(v) for v in (r["queue_delay_ms"], r["p99_ms"], r["within_slo_pct"])]
        body.append(row)
    return render_table(headers, body, align="lllrrrrrr" + ("rrr" if with_requests else ""))


def csv_text(rows: Sequence[Mapping[str, object]], columns: Sequence[str], float_format: str = "{:.4f}") -> str:
    """Rows as CSV (no trailing newline); floats with ``float_format``, NaN and None as empty cells."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                cells.append("")
            elif isinstance(v, float):
                cells.append(float_format.format(v))
            else:
                cells.append(str(v))
        w.writerow(cells)
    return buf.getvalue().rstrip("\n")


def group_violations(violations: Sequence[Violation]) -> list[str]:
    """Violations grouped by workload (worst workload first), then the GPU-wide ones."""
    by_workload: dict[str, list[Violation]] = {}
    others: list[Violation] = []
    for v in violations:
        (by_workload.setdefault(v.workload, []) if v.workload else others).append(v)
    lines = []
    for w, vs in sorted(by_workload.items(), key=lambda kv: -max(v.excess for v in kv[1])):
        lines.append(f"  {w}: " + "; ".join(v.message.removeprefix(f"{w}: ").removeprefix(f"{w} ") for v in vs))
    lines.extend(f"  {v.message}" for v in others)
    return lines


def plan_summary(plan: Plan, violations: Sequence[Violation]) -> str:
    s = plan.solver
    parts = [
        f"{plan.num_gpus} GPU(s), cost {plan.cost_per_hour:.2f}/h, total share {share_text(plan.total_share_pct)}",
        f"planner {plan.planner} ({s.status}"
        + (f", bound {s.bound:g}, gap {100 * s.gap:.2f} %" if s.bound is not None and s.gap is not None else "")
        + (f", {s.wall_s:.3f} s" if s.wall_s is not None else "")
        + f"), budget {plan.latency_budget}"
        + (f" (margin {plan.margin:g})" if plan.margin is not None else "")
        + (f" (attainment {plan.attainment:g})" if plan.attainment is not None else ""),
    ]
    if s.message:
        parts.append(f"note: {s.message}")
    if violations:
        n_w = len({v.workload for v in violations if v.workload})
        parts.append(f"exact model: {len(violations)} violation(s) in {n_w} workload(s):")
        parts.extend(group_violations(violations))
    else:
        parts.append("exact model: every placement meets its latency limit and rate; no GPU over 100 %")
    return "\n".join(parts)


def render_plan(plan: Plan, violations: Sequence[Violation], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(plan_to_dict(plan), indent=2)
    if fmt == "csv":
        rows = plan_rows(plan)
        return csv_text(rows, PLAN_COLUMNS + (REQUEST_COLUMNS if _has_requests(rows) else []))
    return plan_table(plan) + "\n\n" + plan_summary(plan, violations)


COMPARISON_HEADERS = ["planner", "status", "GPUs", "cost/h", "share %", "SLO misses", "bound", "gap %", "time s"]


def render_comparison(rows: Sequence[object], fmt: str) -> str:
    """The ``compare`` table: one row per planner (``rows`` are ``ComparisonRow``)."""
    dicts = [r.to_dict() for r in rows]  # type: ignore[attr-defined]
    if fmt == "json":
        return json.dumps(dicts, indent=2)
    if fmt == "csv":
        return csv_text(dicts, list(dicts[0]) if dicts else [], "{:.6g}")
    body = [
        [d["planner"], d["status"], d["gpus"], float(d["cost_per_hour"]), float(d["total_share_pct"]),
         d["slo_misses"], math.nan if d["bound"] is None else float(d["bound"]),
         math.nan if d["gap"] is None else 100.0 * float(d["gap"]), float(d["wall_s"])]
        for d in dicts
    ]
    out = render_table(COMPARISON_HEADERS, body, align="llrrrrrrr")
    notes = [f"{d['planner']}: {d['message']}" for d in dicts if d.get("message")]
    return out + ("\n\n" + "\n".join(notes) if notes else "")


FLEET_COMPARISON_HEADERS = ["plan", "GPUs by type", "GPUs", "cost/h", "bound/h", "gap %", "share %", "wall s"]
_FLEET_NUMBERS = ("gpus", "cost_per_hour", "bound_per_hour", "gap_pct", "total_share_pct", "wall_s")


def render_fleet_comparison(rows: Sequence[Mapping[str, object]], fmt: str) -> str:
    """The ``compare --fleet`` table (``planner.fleet.compare_fleet`` rows), with each failed row's reason below."""
    if fmt == "json":
        return json.dumps(list(rows), indent=2)
    if fmt == "csv":
        return csv_text(rows, list(rows[0]), "{:.6g}")
    body = [[r["plan"], r["gpus_by_type"] or "-", *(math.nan if r[k] is None else r[k] for k in _FLEET_NUMBERS)]
            for r in rows]
    notes = [f"{r['plan']}: {r['message']}" for r in rows if r["message"]]
    return render_table(FLEET_COMPARISON_HEADERS, body, align="llrrrrrr") + ("\n\n" + "\n".join(notes) if notes else "")


DIFF_HEADERS = ["change", "workload", "model", "old GPU", "new GPU", "old share %", "new share %", "old batch",
                "new batch", "old req/s", "new req/s"]


def render_diff(diff: object, fmt: str = "table") -> str:
    """A plan diff (``replan.diff.PlanDiff``): one row per placement, then the counts and GPUs."""
    d = diff.to_dict()  # type: ignore[attr-defined]
    if fmt == "json":
        return json.dumps(d, indent=2)
    rows = d["placements"]
    if fmt == "csv":
        return csv_text(rows, list(rows[0]) if rows else [], "{:.6g}")

    def num(x: object) -> object:
        return math.nan if x is None else float(x)  # type: ignore[arg-type]

    body = [
        [r["kind"], r["workload"], r["model"], r["old_gpu"] or "-", r["new_gpu"] or "-", num(r["old_share_pct"]),
         num(r["new_share_pct"]), "-" if r["old_batch"] is None else str(r["old_batch"]),
         "-" if r["new_batch"] is None else str(r["new_batch"]), num(r["old_rate_rps"]), num(r["new_rate_rps"])]
        for r in rows
    ]
    s, g = d["summary"], d["gpus"]
    counts = ", ".join(f"{k} {s[k]}" for k in ("kept", "resized", "moved", "started", "stopped"))
    gpus = (f"GPUs {s['old_gpus']} -> {s['new_gpus']} (cost {s['old_cost_per_hour']:.2f}/h -> "
            f"{s['new_cost_per_hour']:.2f}/h); opened: {', '.join(g['opened']) or '-'}; "
            f"released: {', '.join(g['released']) or '-'}")
    tail = [f"{counts}: {s['restarts']} running server(s) restart", gpus]
    return render_table(DIFF_HEADERS, body, align="lllllrrrrrr") + "\n\n" + "\n".join(tail)


TRACE_HEADERS = ["strategy", "GPU-hours", "cost", "mean GPUs", "max GPUs", "restarts", "changed", "SLO misses",
                 "solve s"]


def render_trace_comparison(cmp: dict[str, object]) -> str:
    """The ``replan-trace`` summary (``replan.trace.comparison``): one row per strategy, then the savings."""
    strategies = cmp["strategies"]
    body = [
        [s, float(v["gpu_hours"]), float(v["cost"]), float(v["mean_gpus"]), int(v["max_gpus"]), int(v["restarts"]),
         int(v["changed"]), int(v["predicted_misses"]), float(v["solve_s"])]
        for s, v in strategies.items()  # type: ignore[attr-defined]
    ]
    out = [render_table(TRACE_HEADERS, body, align="lrrrrrrrr"), ""]
    if "replan_saving_vs_peak_pct" in cmp:
        out.append(f"replan vs peak provisioning: {cmp['replan_saving_vs_peak_pct']:.1f} % cheaper")
    if "restarts_avoided_vs_resolve" in cmp:
        extra = cmp.get("replan_extra_cost_vs_resolve_pct")
        out.append(f"replan vs re-solving every step: {cmp['restarts_avoided_vs_resolve']} restart(s) avoided"
                   + (f", {extra:+.1f} % cost" if extra is not None else ""))
    return "\n".join(out)
