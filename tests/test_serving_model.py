"""The serial-server planning model (--serving-overhead-ms, --max-utilization) across model, planners, files and CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from igniter_opt.cli import cli
from igniter_opt.domain import LatencyBudget, PlanningProblem, Workload
from igniter_opt.errors import ProfileError
from igniter_opt.perfmodel import load_profile
from igniter_opt.planio import read_plan, write_plan
from igniter_opt.planner import run_planner
from igniter_opt.solver import SolveOptions

# The paper's budget: these commands default to tail since it held live (docs/live-tail.md).
IGNITER = ["--latency-budget", "igniter"]

REPO = Path(__file__).resolve().parent.parent
H100 = REPO / "profiles" / "h100"
MIX = (Workload("res", "resnet50", 12.0, 500.0), Workload("vgg", "vgg19", 15.0, 500.0),
       Workload("bert", "bert_base", 15.0, 500.0))


@pytest.fixture(scope="module")
def h100():
    return load_profile(H100)


def test_overhead_adds_to_latency_and_serialises_throughput(h100) -> None:
    slots = [("resnet50", 4, 30.0), ("vgg19", 4, 40.0)]
    base = h100.predict_gpu(slots)
    served = h100.with_serving_overhead(3.0).predict_gpu(slots)
    capped = h100.with_serving_overhead(3.0, 0.8).predict_gpu(slots)
    for (lat0, thr0), (lat, thr), (lat_u, thr_u), (_, b, _) in zip(base, served, capped, slots, strict=True):
        assert lat == pytest.approx(lat0 + 3.0)
        assert thr == pytest.approx(1000.0 * b / lat)  # one batch at a time: no overlap with loading
        assert thr < thr0
        assert lat_u == pytest.approx(lat) and thr_u == pytest.approx(0.8 * thr)
    # None, None: the paper's model again
    assert h100.with_serving_overhead(3.0).with_serving_overhead(None).predict_gpu(slots) == base
    # utilization alone: a serial server without overhead (loading no longer overlaps)
    (lat_s, thr_s), _ = h100.with_serving_overhead(None, 1.0).predict_gpu(slots)
    assert lat_s == pytest.approx(base[0][0]) and thr_s == pytest.approx(4000.0 / lat_s) and thr_s < base[0][1]


@pytest.mark.parametrize(("o", "u", "msg"), [(-1.0, None, "serving overhead must be"), (float("nan"), None, "serving"),
                                             (1.0, 0.0, "max utilization must be in"), (1.0, 1.5, "max utilization")])
def test_bad_serving_parameters(h100, o: float, u: float | None, msg: str) -> None:
    with pytest.raises(ProfileError, match=msg):
        h100.with_serving_overhead(o, u)


@pytest.mark.parametrize("planner", ["greedy", "exact"])
@pytest.mark.parametrize("budget", [LatencyBudget.IGNITER, LatencyBudget.FULL])
def test_planners_meet_the_serial_model_and_record_it(h100, planner: str, budget: LatencyBudget) -> None:
    perf = h100.with_serving_overhead(3.5)
    out = run_planner(PlanningProblem(MIX, perf, budget), planner, SolveOptions(time_limit_s=20, threads=1))
    assert out.violations == ()
    plan = out.plan
    assert plan.serving_overhead_ms == 3.5 and plan.serving_max_utilization == 1.0
    for _, p in plan.placements():
        assert p.predicted.throughput_rps >= p.rate_rps * (1 - 1e-9)
        assert p.predicted.throughput_rps == pytest.approx(1000.0 * p.batch / p.predicted.latency_ms)
    # the paper's model needs far less share for the same mix: the overhead is what it misses
    paper = run_planner(PlanningProblem(MIX, h100, budget), planner, SolveOptions(time_limit_s=20, threads=1)).plan
    assert paper.serving_overhead_ms is None
    assert plan.total_share_pct > 1.5 * paper.total_share_pct


def test_plan_file_round_trip_and_verify_defaults_to_the_plans_serving_model(tmp_path: Path, h100) -> None:
    wl = tmp_path / "w.csv"
    wl.write_text("name,model,slo_ms,rate_rps\n"
                  + "".join(f"{w.name},{w.model},{w.slo_ms:g},{w.rate_rps:g}\n" for w in MIX))
    out = tmp_path / "plan.json"
    r = CliRunner().invoke(cli, ["solve", *IGNITER, "-w", str(wl), "-p", str(H100), "--serving-overhead-ms", "3.5",
                                 "--max-utilization", "0.9", "-o", str(out)])
    assert r.exit_code == 0, r.output
    d = json.loads(out.read_text())
    assert d["serving_overhead_ms"] == 3.5 and d["serving_max_utilization"] == 0.9
    plan = read_plan(out)
    assert (plan.serving_overhead_ms, plan.serving_max_utilization) == (3.5, 0.9)
    assert write_plan(plan, tmp_path / "again.json").read_text() == out.read_text()
    ok = CliRunner().invoke(cli, ["verify", str(out), "-w", str(wl), "-p", str(H100)])
    assert ok.exit_code == 0 and ok.output.startswith(f"ok: {plan.num_gpus} GPU(s)"), ok.output
    # the same plan under a larger overhead than it was made for: latency and rate violations, exit 1
    bad = CliRunner().invoke(cli, ["verify", str(out), "-w", str(wl), "-p", str(H100), "--serving-overhead-ms", "6"])
    assert bad.exit_code == 1 and "predicted" in bad.output and "violation(s) under the exact model" in bad.output


def test_replan_keeps_the_running_plans_serving_model(tmp_path: Path, h100) -> None:
    perf = h100.with_serving_overhead(3.5)
    current = write_plan(run_planner(PlanningProblem(MIX, perf), "greedy").plan, tmp_path / "current.json")
    new = tmp_path / "new.csv"
    new.write_text("name,model,slo_ms,rate_rps\nres,resnet50,12,650\nvgg,vgg19,15,400\nbert,bert_base,15,500\n")
    out = tmp_path / "replanned.json"
    r = CliRunner().invoke(cli, ["replan", "--current", str(current), "--workloads", str(new), "-p", str(H100),
                                 "-o", str(out)])
    assert r.exit_code == 0, r.output
    plan = read_plan(out)
    assert plan.serving_overhead_ms == 3.5
    # every placement meets the serial model at the new rates
    for g in plan.gpus:
        preds = perf.predict_gpu([(p.model, p.batch, p.share_pct) for p in g.placements])
        for p, (lat, thr) in zip(g.placements, preds, strict=True):
            assert lat <= p.slo_ms / 2 + 1e-6 and thr >= p.rate_rps * (1 - 1e-9)
