"""replan-trace: reading traces, the per-step job, resuming it, and every bad input it refuses."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from igniter_opt.cli import cli
from igniter_opt.errors import InputError
from igniter_opt.perfmodel import PerformanceModel, load_profile
from igniter_opt.replan.trace import (
    STEP_COLUMNS,
    TraceJob,
    file_sha256,
    read_trace,
    run_trace_job,
    step_rates,
    step_times,
)
from igniter_opt.replan.trace import job as trace_mod

REPO = Path(__file__).resolve().parents[1]
H100 = REPO / "profiles" / "h100"

TRACE = """time_s,workload,rate_rps,model,slo_ms
0,A,200,resnet50,30
0,B,300,alexnet,15
1800,A,400,,
1800,B,300,alexnet,15
3600,A,150,,
3600,C,50,ssd,40
5400,A,150,,
5400,B,0,,
"""


@pytest.fixture(scope="module")
def h100() -> PerformanceModel:
    return load_profile(H100)


@pytest.fixture()
def trace_file(tmp_path: Path) -> Path:
    p = tmp_path / "trace.csv"
    p.write_text(TRACE)
    return p


def test_trace_is_a_step_function_per_workload(trace_file: Path) -> None:
    tr = read_trace(trace_file)
    assert [(w.name, w.model, w.slo_ms, w.rate_rps) for w in tr.workloads] == [
        ("A", "resnet50", 30.0, 400.0), ("B", "alexnet", 15.0, 300.0), ("C", "ssd", 40.0, 50.0)]
    assert tr.times_s == (0.0, 1800.0, 3600.0, 5400.0) and tr.end_s == 7200.0
    assert tr.rates_at(2000.0).tolist() == [400.0, 300.0, 0.0]  # C not there yet
    assert tr.rates_at(6000.0).tolist() == [150.0, 0.0, 50.0]  # C carried forward, B stopped
    assert step_times(tr, None) == [0.0, 1800.0, 3600.0, 5400.0]
    assert step_times(tr, 3600.0) == [0.0, 3600.0]
    assert step_rates(tr, 0.0, 3600.0, "peak").tolist() == [400.0, 300.0, 0.0]
    assert step_rates(tr, 0.0, 3600.0, "start").tolist() == [200.0, 300.0, 0.0]


def _job(tr_path: Path, perf: PerformanceModel, **kw) -> TraceJob:
    return TraceJob(read_trace(tr_path), perf, trace_sha256=file_sha256(tr_path), **kw)


def test_provisioning_for_the_start_of_a_long_step_predicts_misses(trace_file: Path, h100, tmp_path: Path) -> None:
    start = run_trace_job(_job(trace_file, h100, every_s=3600.0, plan_for="start"), tmp_path / "start",
                          progress=False)
    peak = run_trace_job(_job(trace_file, h100, every_s=3600.0), tmp_path / "peak", progress=False)
    # step 0 planned A for 200 req/s; from 1800 s it gets 400
    assert start.steps["replan"][0].predicted_misses >= 1
    assert sum(r.predicted_misses for s in peak.steps.values() for r in s) == 0
    assert peak.summaries["peak"].gpu_hours >= peak.summaries["replan"].gpu_hours


def test_job_outputs_and_strategy_totals(trace_file: Path, h100, tmp_path: Path) -> None:
    res = run_trace_job(_job(trace_file, h100), tmp_path / "out", progress=False)
    out = tmp_path / "out"
    assert res.complete
    rows = list(csv.DictReader((out / "steps.csv").open()))
    assert (out / "steps.csv").read_text().splitlines()[0] == ",".join(STEP_COLUMNS)
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3]
    assert rows[0]["started"] == "2" and rows[2]["started"] == "1"  # C appears at 3600 s
    assert int(rows[3]["stopped"]) >= 1  # B stops at 5400 s
    cmp = json.loads((out / "comparison.json").read_text())
    assert set(cmp["strategies"]) == {"replan", "resolve", "peak"}
    rep = cmp["strategies"]["replan"]
    assert rep["gpu_hours"] == pytest.approx(sum(int(r["gpus"]) * 0.5 for r in rows))
    assert cmp["replan_saving_vs_peak_pct"] == pytest.approx(
        100 * (1 - rep["cost"] / cmp["strategies"]["peak"]["cost"]), abs=0.01)
    assert (out / "cost_gpus.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| replan |" in (out / "comparison.md").read_text()
    for k in range(4):
        plan = json.loads((out / "replan" / f"step_{k:04d}.plan.json").read_text())
        rec = json.loads((out / "replan" / f"step_{k:04d}.json").read_text())
        assert plan["schema"] == "igniter-opt/plan/v1" and rec["diff"]["schema"] == "igniter-opt/diff/v1"
        assert rec["gpus"] == plan["cost"]["gpus"]


def test_interrupted_job_resumes_after_its_last_step(trace_file: Path, h100, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    part = run_trace_job(_job(trace_file, h100, every_s=1800.0), out, progress=False, stop_after=2)
    assert not part.complete and not (out / "steps.csv").exists()
    assert sorted(p.name for p in (out / "replan").glob("step_*[0-9].json")) == ["step_0000.json", "step_0001.json"]
    done = {p: p.stat().st_mtime_ns for p in out.rglob("step_*.json")}
    calls = []
    real = trace_mod.run_replanner
    monkeypatch.setattr(trace_mod, "run_replanner", lambda *a, **k: calls.append(1) or real(*a, **k))
    res = CliRunner().invoke(cli, ["replan-trace", "--trace", str(trace_file), "-p", str(H100), "--every", "1800",
                                   "-o", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert len(calls) == 2  # steps 2 and 3 only
    assert "(resumed: 2 step(s) read back)" in res.output
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())  # completed steps untouched
    assert len(list(csv.DictReader((out / "steps.csv").open()))) == 4

    # the same folder with other arguments is refused, and nothing changes
    res = CliRunner().invoke(cli, ["replan-trace", "--trace", str(trace_file), "-p", str(H100), "--every", "1800",
                                   "--migration-cost", "0.5", "-o", str(out)])
    assert res.exit_code == 1
    assert res.output == (f"Error: {out} holds a job run with other arguments: migration_cost was 0.25, now 0.5; "
                          "pass another -o to start afresh, or the same arguments to resume\n")


BAD_TRACES = [
    ("time_s,workload,rate_rps,model,slo_ms\n0,A,100,resnet50,30\n0,B,-3,alexnet,15\n",
     "row 3 ('B'): rate_rps must be a number >= 0, got '-3'"),
    ("time_s,workload,rate_rps,model,slo_ms\n0,A,100,resnet50,30\n60,A,,,\n",
     "row 3 ('A'): rate_rps is missing; give a rate >= 0 (0 stops it)"),
    ("time_s,workload,rate_rps,model,slo_ms\n60,A,100,resnet50,30\n0,A,120,,\n",
     "row 3 ('A'): time_s 0 comes after time_s 60 (row 2); rows must be in time order"),
    ("time_s,workload,rate_rps\n0,A,100\n",
     ("row 2: unknown workload 'A': no model and slo_ms; give them on its first row (columns model,slo_ms) "
      "or pass --workloads")),
    ("time_s,workload,rate_rps,model,slo_ms\n0,A,100,resnet50,30\n0,A,120,,\n",
     "row 3: second rate for 'A' at time_s 0 (first at row 2)"),
]


@pytest.mark.parametrize(("text", "message"), BAD_TRACES)
def test_bad_trace_exits_1_with_one_line_and_writes_nothing(tmp_path: Path, text: str, message: str) -> None:
    t = tmp_path / "t.csv"
    t.write_text(text)
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["replan-trace", "--trace", str(t), "-p", str(H100), "-o", str(out)])
    assert res.exit_code == 1
    assert res.output == f"Error: {t}: {message}\n"
    assert not out.exists()


def test_trace_with_workloads_file_refuses_unknown_names_and_unprofiled_models(tmp_path: Path) -> None:
    t = tmp_path / "t.csv"
    t.write_text("time_s,workload,rate_rps\n0,A,100\n0,Z,50\n60,A,120\n")
    w = tmp_path / "w.csv"
    w.write_text("name,model,slo_ms\nA,resnet50,30\n")
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["replan-trace", "--trace", str(t), "-w", str(w), "-p", str(H100), "-o", str(out)])
    assert res.exit_code == 1
    assert res.output == f"Error: {t}: row 3: unknown workload 'Z'; it is not in {w} (which has: A)\n"
    w.write_text("name,model,slo_ms\nA,resnet50,30\nZ,yolo,30\n")
    res = CliRunner().invoke(cli, ["replan-trace", "--trace", str(t), "-w", str(w), "-p", str(H100), "-o", str(out)])
    assert res.exit_code == 1 and res.output.startswith("Error: workload 'Z': model 'yolo' is not in profile 'h100'")
    assert not out.exists()


def test_a_folder_that_is_not_a_job_is_refused(trace_file: Path, h100, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="is not empty and holds no replan-trace job"):
        run_trace_job(_job(trace_file, h100), out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_shipped_trace_is_the_seeded_generators_output() -> None:
    spec = importlib.util.spec_from_file_location("make_trace", REPO / "benchmarks" / "make_trace.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    gen, seed = mod.TRACES["paper_mix_diurnal"]
    shipped = REPO / "examples" / "trace_paper_mix.csv"
    assert mod.to_csv(gen(seed)) == shipped.read_text()
    tr = read_trace(shipped)
    assert len(tr.workloads) == 12 and tr.end_s - tr.times_s[0] == 86400.0
    w11 = [w.name for w in tr.workloads].index("W11")
    on = np.asarray(tr.times_s)[tr.rates[:, w11] > 0] / 3600.0
    assert on.min() == 8.0 and on.max() == 19.75  # a business-hours workload: starts and stops
