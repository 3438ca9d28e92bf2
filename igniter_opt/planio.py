"""Reading and writing workloads (CSV) and plans (JSON, schema ``igniter-opt/plan/v1``)."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

from igniter_opt.domain import (
    GpuAssignment,
    ModelOverheads,
    Placement,
    Plan,
    Prediction,
    ServingParams,
    Workload,
    model_overheads_from_dict,
    model_overheads_to_dict,
)
from igniter_opt.errors import InputError, PlanError
from igniter_opt.ioutil import atomic_write_json
from igniter_opt.solver import SolveOutcome, status_from_text

PLAN_SCHEMA = "igniter-opt/plan/v1"
WORKLOAD_COLUMNS = ("name", "model", "slo_ms", "rate_rps")
EXAMPLE_WORKLOADS = Path(__file__).resolve().parents[1] / "examples" / "paper-table3.csv"


# ---- workloads ---------------------------------------------------------------------------------
def _positive_cell(value: Any, column: str, row: int, name: str, path: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if not math.isfinite(x) or x <= 0:
        raise InputError(f"{path}: row {row} ('{name}'): {column} must be a positive number, got {value!r}")
    return x


def read_csv_rows(path: str | os.PathLike[str], required: tuple[str, ...],
                  what: str) -> list[tuple[int, dict[str, str]]]:
    """(row number, cells stripped) of a CSV whose header has ``required``; a row with more
    fields than the header is an error that says so. Row 1 is the header."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such {what} file; pass a CSV with header {','.join(required)}")
    try:
        with p.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh, skipinitialspace=True)
            header = [c.strip() for c in next(reader, [])]
            rows = [(i, r) for i, r in enumerate(reader, start=2) if any(c.strip() for c in r)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{p}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(f"{p}: missing column(s) {', '.join(missing)}; the header must be {','.join(required)}")
    out = []
    for i, r in rows:
        if len(r) > len(header):
            raise InputError(f"{p}: row {i} has {len(r)} fields but the header has {len(header)}; remove the extra "
                             "field(s) or quote a value that contains a comma")
        out.append((i, {h: (r[k].strip() if k < len(r) else "") for k, h in enumerate(header)}))
    return out


def _workload_rows(path: str | os.PathLike[str],
                   columns: tuple[str, ...]) -> list[tuple[int, str, str, float, dict[str, str]]]:
    """(row, name, model, slo_ms, cells) of every workload row, names unique, SLOs positive."""
    rows = read_csv_rows(path, columns, "workloads")
    if not rows:
        raise InputError(f"{path}: no workloads; add at least one row")
    seen: dict[str, int] = {}
    out = []
    for i, rec in rows:
        name, model = rec["name"], rec["model"]
        if not name:
            raise InputError(f"{path}: row {i}: empty workload name")
        if not model:
            raise InputError(f"{path}: row {i} ('{name}'): empty model")
        if name in seen:
            raise InputError(f"{path}: row {i}: duplicate workload name '{name}' (first at row {seen[name]})")
        seen[name] = i
        out.append((i, name, model, _positive_cell(rec["slo_ms"], "slo_ms", i, name, str(path)), rec))
    return out


def read_workloads(path: str | os.PathLike[str]) -> tuple[Workload, ...]:
    """Read a workloads CSV with header ``name,model,slo_ms,rate_rps``; every row is validated."""
    return tuple(Workload(name=name, model=model, slo_ms=slo,
                          rate_rps=_positive_cell(rec["rate_rps"], "rate_rps", i, name, str(path)))
                 for i, name, model, slo, rec in _workload_rows(path, WORKLOAD_COLUMNS))


def read_workload_specs(path: str | os.PathLike[str]) -> dict[str, tuple[str, float]]:
    """name -> (model, slo_ms) from a CSV with ``name,model,slo_ms`` (a rate_rps column is ignored)."""
    return {name: (model, slo) for _, name, model, slo, _ in _workload_rows(path, WORKLOAD_COLUMNS[:3])}


# ---- plans -------------------------------------------------------------------------------------
def _clean(x: float | None, digits: int = 6) -> float | None:
    if x is None:
        return None
    return None if not math.isfinite(x) else round(float(x), digits)


def serving_from_dict(d: Any, source: str) -> ServingParams:
    """A plan's ``serving`` block; a one-line PlanError otherwise."""
    try:
        return ServingParams.from_dict(d)
    except ValueError as exc:
        raise PlanError(f"{source}: serving block: {exc}") from None


def _model_overheads(d: Any, source: str) -> ModelOverheads:
    """A plan's ``serving_model_overheads``; a one-line PlanError otherwise."""
    try:
        return model_overheads_from_dict(d)
    except ValueError as exc:
        raise PlanError(f"{source}: serving_model_overheads: {exc}") from None


def _prediction_to_dict(pr: Prediction | None) -> dict[str, Any] | None:
    if pr is None:
        return None
    out: dict[str, Any] = {"latency_ms": _clean(pr.latency_ms, 4), "throughput_rps": _clean(pr.throughput_rps, 3)}
    if pr.within_slo is not None:
        out.update(p50_ms=_clean(pr.p50_ms, 4), p99_ms=_clean(pr.p99_ms, 4), within_slo=_clean(pr.within_slo, 6))
    return out


def placement_to_dict(p: Placement) -> dict[str, Any]:
    out: dict[str, Any] = {
        "workload": p.workload,
        "model": p.model,
        "slo_ms": p.slo_ms,
        "rate_rps": _clean(p.rate_rps),
        "batch": p.batch,
        "share": p.share_pct,
    }
    if p.queue_delay_ms is not None:
        out["queue_delay_ms"] = _clean(p.queue_delay_ms, 6)
    out["predicted"] = _prediction_to_dict(p.predicted)
    return out


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    s = plan.solver
    d: dict[str, Any] = {
        "schema": PLAN_SCHEMA,
        "profile": plan.profile,
        "planner": plan.planner,
        "latency_budget": plan.latency_budget,
    }
    if plan.margin is not None:
        d["margin"] = plan.margin
    if plan.serving_overhead_ms is not None:
        d["serving_overhead_ms"] = plan.serving_overhead_ms
        d["serving_max_utilization"] = plan.serving_max_utilization
        if plan.serving_overhead_per_request_ms:
            d["serving_overhead_per_request_ms"] = plan.serving_overhead_per_request_ms
        if plan.serving_model_overheads:
            d["serving_model_overheads"] = model_overheads_to_dict(plan.serving_model_overheads)
    if plan.attainment is not None:
        d["attainment"] = plan.attainment
    if plan.serving is not None:
        d["serving"] = plan.serving.to_dict()
    if plan.verified is not None:
        d["verified"] = plan.verified
    d["gpus"] = [
        {"id": g.gpu_id, "type": g.gpu_type, "placements": [placement_to_dict(p) for p in g.placements]}
        for g in plan.gpus
    ]
    d["cost"] = {"gpus": plan.num_gpus, "per_hour": _clean(plan.cost_per_hour)}
    solver: dict[str, Any] = {
        "status": str(s.status),
        "objective": _clean(s.objective),
        "bound": _clean(s.bound),
        "gap": _clean(s.gap),
        "wall_s": _clean(s.wall_s, 4),
    }
    for extra in ("build_s", "solve_s", "trivial_bound"):
        if getattr(s, extra) is not None:
            solver[extra] = _clean(getattr(s, extra), 4)
    if s.columns is not None:
        solver["columns"] = s.columns
    if s.message:
        solver["message"] = s.message
    d["solver"] = solver
    return d


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def plan_kind(path: str | os.PathLike[str]) -> str:
    """``fleet`` for a fleet plan's summary, else ``plan`` (reading it as a plan then says what is wrong)."""
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return "plan"
    from igniter_opt.fleet import FLEET_PLAN_SCHEMA

    return "fleet" if isinstance(d, dict) and d.get("schema") == FLEET_PLAN_SCHEMA else "plan"


def plan_from_dict(d: Any, source: str = "<plan>") -> Plan:
    """Parse a plan; slo_ms, rate_rps and predicted may be absent (e.g. a hand-written plan)."""
    if isinstance(d, dict) and d.get("schema") == "igniter-opt/fleet-plan/v1":
        parts = ", ".join(str(t.get("plan")) for t in d.get("types", []) if isinstance(t, dict))
        raise PlanError(f"{source}: a fleet plan (several GPU types); give one of its parts, each a plan for one "
                        f"type: {parts}")
    if not isinstance(d, dict) or d.get("schema") != PLAN_SCHEMA:
        got = d.get("schema") if isinstance(d, dict) else type(d).__name__
        raise PlanError(f"{source}: schema is {got!r}, expected '{PLAN_SCHEMA}'; is this an igniter-opt plan?")
    try:
        gpus = []
        for gi, g in enumerate(d["gpus"]):
            placements = []
            for pi, p in enumerate(g["placements"]):
                where = f"{source}: gpus[{gi}].placements[{pi}]"
                batch = int(p["batch"])
                share = float(p["share"])
                if batch < 1 or not 0 < share <= 100:
                    raise PlanError(f"{where}: batch must be >= 1 and share in (0, 100], got {batch}, {share}")
                pred = p.get("predicted")
                delay = _opt_float(p.get("queue_delay_ms"))
                if delay is not None and not (math.isfinite(delay) and delay >= 0):
                    raise PlanError(f"{where}: queue_delay_ms must be a number of ms >= 0, got {delay}")
                placements.append(
                    Placement(
                        workload=str(p["workload"]),
                        model=str(p["model"]),
                        slo_ms=float(p["slo_ms"]) if p.get("slo_ms") is not None else math.nan,
                        rate_rps=float(p["rate_rps"]) if p.get("rate_rps") is not None else math.nan,
                        batch=batch,
                        share_pct=share,
                        predicted=None
                        if not pred
                        else Prediction(float(pred["latency_ms"]), float(pred["throughput_rps"]),
                                        _opt_float(pred.get("p50_ms")), _opt_float(pred.get("p99_ms")),
                                        _opt_float(pred.get("within_slo"))),
                        queue_delay_ms=delay,
                    )
                )
            gpus.append(GpuAssignment(str(g["id"]), str(g.get("type", "")), tuple(placements)))
        cost = d.get("cost", {}) or {}
        n = len(gpus)
        price = float(cost["per_hour"]) / n if n and cost.get("per_hour") is not None else 1.0
        s = d.get("solver", {}) or {}
        solver = SolveOutcome(
            status=status_from_text(str(s.get("status", "unknown"))),
            objective=_opt_float(s.get("objective")),
            bound=_opt_float(s.get("bound")),
            gap=_opt_float(s.get("gap")),
            wall_s=_opt_float(s.get("wall_s")),
            build_s=_opt_float(s.get("build_s")),
            solve_s=_opt_float(s.get("solve_s")),
            message=s.get("message"),
            columns=int(s["columns"]) if s.get("columns") is not None else None,
            trivial_bound=_opt_float(s.get("trivial_bound")),
        )
        return Plan(
            profile=str(d.get("profile", "")),
            planner=str(d.get("planner", "")),
            latency_budget=str(d.get("latency_budget", "igniter")),
            gpus=tuple(gpus),
            price_per_gpu_hour=price,
            solver=solver,
            margin=_opt_float(d.get("margin")),
            serving_overhead_ms=_opt_float(d.get("serving_overhead_ms")),
            serving_max_utilization=_opt_float(d.get("serving_max_utilization")),
            serving_overhead_per_request_ms=float(d.get("serving_overhead_per_request_ms", 0.0)),
            serving_model_overheads=_model_overheads(d.get("serving_model_overheads", {}), source),
            attainment=_opt_float(d.get("attainment")),
            serving=serving_from_dict(d["serving"], source) if d.get("serving") is not None else None,
            verified=None if d.get("verified") is None else bool(d["verified"]),
        )
    except PlanError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise PlanError(f"{source}: malformed plan ({type(exc).__name__}: {exc})") from None


def read_json_file(path: str | os.PathLike[str], what: str) -> Any:
    """A JSON document (``what`` names it in errors: 'plan', 'diff'), or a one-line PlanError."""
    p = Path(path)
    if not p.is_file():
        raise PlanError(f"{p}: no such {what} file")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PlanError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def read_plan(path: str | os.PathLike[str]) -> Plan:
    return plan_from_dict(read_json_file(path, "plan"), str(path))


def write_plan(plan: Plan, path: str | os.PathLike[str]) -> Path:
    return atomic_write_json(path, plan_to_dict(plan))
