"""The command line, through click's CliRunner: exact output, exit codes, nothing half-written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from igniter_opt import __version__
from igniter_opt.cli import cli

# The paper's budget: these commands default to tail since it held live (docs/live-tail.md).
IGNITER = ["--latency-budget", "igniter"]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def test_version_and_help(runner: CliRunner) -> None:
    assert runner.invoke(cli, ["--version"]).output == f"igniter-opt, version {__version__}\n"
    out = runner.invoke(cli, ["-h"]).output
    for name in cli.commands:
        assert name in out


def test_every_command_has_help_with_example_and_is_in_readme(runner: CliRunner) -> None:
    readme = (REPO / "README.md").read_text()
    for name in cli.commands:
        res = runner.invoke(cli, [name, "--help"])
        assert res.exit_code == 0, name
        assert "Example:" in res.output, name
        assert f"igniter-opt {name}" in readme, f"README does not show 'igniter-opt {name}'"


def test_solve_paper_mix_table_and_json(runner: CliRunner, v100_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    res = runner.invoke(cli, ["solve", *IGNITER, "--profile", str(v100_path), "-o", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].split() == ["GPU", "workload", "model", "batch", "share", "%", "latency", "ms", "limit", "ms",
                                "thr", "req/s", "rate", "req/s"]
    assert lines[2].split() == ["gpu0", "W12", "ssd", "8", "92.50", "26.98", "27.50", "306.33", "300.00"]
    assert "6 GPU(s), cost 6.00/h, total share 472.50 %" in res.output  # one share format (issue 14.10)
    assert "exact model: every placement meets its latency limit and rate; no GPU over 100 %" in res.output
    plan = json.loads(out.read_text())
    assert plan["cost"]["gpus"] == 6 and plan["planner"] == "greedy" and plan["profile"] == "v100"

    res = runner.invoke(cli, ["solve", *IGNITER, "--profile", str(v100_path), "--format", "json"])
    assert json.loads(res.output)["cost"] == {"gpus": 6, "per_hour": 6.0}
    res = runner.invoke(cli, ["solve", *IGNITER, "--profile", str(v100_path), "--format", "csv"])
    assert res.output.splitlines()[0] == (
        "gpu,workload,model,batch,share_pct,latency_ms,limit_ms,slo_ms,throughput_rps,rate_rps"
    )


def _predict_bare(runner: CliRunner, prof: Path, plan: Path, tmp_path: Path) -> Path:
    """Strip the plan's predictions, SLOs and rates, and let ``predict`` fill the predictions back in."""
    d = json.loads(plan.read_text())
    for g in d["gpus"]:
        for p in g["placements"]:
            p.pop("predicted"), p.pop("slo_ms"), p.pop("rate_rps")
    bare, filled = tmp_path / "bare.json", tmp_path / "filled.json"
    bare.write_text(json.dumps(d))
    res = runner.invoke(cli, ["predict", "-p", str(prof), str(bare), "-o", str(filled)])
    assert res.exit_code == 0, res.output
    return filled


def test_fit_predict_verify(runner: CliRunner, v100_path: Path, tmp_path: Path) -> None:
    prof = tmp_path / "profiles" / "v100"
    res = runner.invoke(cli, ["fit", str(v100_path), "-o", str(prof)])
    assert res.exit_code == 0, res.output
    assert re.search(r"^vgg19\s+-0\.00483\d*\s+158\.193\s+44\.4521\s+0\.188407\s+0\.926192", res.output, re.MULTILINE)
    assert (prof / "raw.json").is_file() and (prof / "coefficients.json").is_file()

    plan = tmp_path / "plan.json"
    assert runner.invoke(cli, ["solve", *IGNITER, "-p", str(prof), "-o", str(plan)]).exit_code == 0
    filled = _predict_bare(runner, prof, plan, tmp_path)
    first = json.loads(filled.read_text())["gpus"][0]["placements"][0]
    assert first["predicted"]["latency_ms"] == pytest.approx(26.98, abs=0.01)

    res = runner.invoke(cli, ["verify", str(plan), "-w", str(REPO / "examples" / "paper-table3.csv"), "-p", str(prof)])
    assert res.exit_code == 0 and res.output.startswith("ok: 6 GPU(s)")
    # the same plan cannot carry twice the rates
    doubled = tmp_path / "double.csv"
    doubled.write_text((REPO / "examples" / "paper-table3.csv").read_text().replace(",1200\n", ",2400\n"))
    res = runner.invoke(cli, ["verify", str(plan), "-w", str(doubled), "-p", str(prof)])
    assert res.exit_code == 1
    assert "W1: plan serves 1200 req/s of 2400 req/s" in res.output


def test_fit_predict_verify_on_the_shipped_h100_raw_profile(runner: CliRunner, tmp_path: Path) -> None:
    """fit -> solve -> predict -> verify on the shipped H100 measurements (runs on every clone)."""
    prof = tmp_path / "profiles" / "h100-refit"
    res = runner.invoke(cli, ["fit", str(REPO / "profiles" / "h100" / "raw.json"), "-o", str(prof)])
    assert res.exit_code == 0, res.output
    shipped = json.loads((REPO / "profiles" / "h100" / "coefficients.json").read_text())
    refit = json.loads((prof / "coefficients.json").read_text())
    for m, c in shipped["models"].items():
        assert refit["models"][m]["k"] == pytest.approx(c["k"], rel=1e-6), m
    plan = tmp_path / "plan.json"
    assert runner.invoke(cli, ["solve", *IGNITER, "-p", str(prof), "-o", str(plan)]).exit_code == 0
    d = json.loads(plan.read_text())
    want = d["gpus"][0]["placements"][0]["predicted"]["latency_ms"]
    filled = _predict_bare(runner, prof, plan, tmp_path)
    assert json.loads(filled.read_text())["gpus"][0]["placements"][0]["predicted"]["latency_ms"] == pytest.approx(want)
    paper = REPO / "examples" / "paper-table3.csv"
    res = runner.invoke(cli, ["verify", str(plan), "-w", str(paper), "-p", str(prof)])
    assert res.exit_code == 0 and res.output.startswith(f"ok: {len(d['gpus'])} GPU(s)")
    heavy = tmp_path / "heavy.csv"
    heavy.write_text(paper.read_text().replace(",1200\n", ",24000\n"))
    res = runner.invoke(cli, ["verify", str(plan), "-w", str(heavy), "-p", str(prof)])
    assert res.exit_code == 1
    assert "W1: plan serves 1200 req/s of 24000 req/s" in res.output


@pytest.mark.parametrize(
    ("csv", "message"),
    [
        ("name,model,slo_ms,rate_rps\nA,vgg19,20,-1\n",
         "Error: {p}: row 2 ('A'): rate_rps must be a positive number, got '-1'\n"),
        ("name,model,slo\nA,vgg19,20\n",
         "Error: {p}: missing column(s) slo_ms, rate_rps; the header must be name,model,slo_ms,rate_rps\n"),
        ("name,model,slo_ms,rate_rps\nA,bert,20,5\n",
         "Error: workload 'A': model 'bert' is not in profile '{name}' (it has: {models}); "
         "profile it or fix the workloads file\n"),
    ],
)
def test_bad_input_exits_1_with_one_line_and_writes_nothing(
    runner: CliRunner, any_profile_path: Path, tmp_path: Path, csv: str, message: str
) -> None:
    from igniter_opt.perfmodel import load_profile

    perf = load_profile(any_profile_path)
    w = tmp_path / "w.csv"
    w.write_text(csv)
    out = tmp_path / "plan.json"
    res = runner.invoke(cli, ["solve", *IGNITER, "-w", str(w), "-p", str(any_profile_path), "-o", str(out)])
    assert res.exit_code == 1
    assert res.output == message.format(p=w, name=perf.name, models=", ".join(perf.model_names))
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [w]  # no temp file left behind


def test_unreachable_slo_says_smallest_slo(runner: CliRunner, any_profile_path: Path, tmp_path: Path) -> None:
    w = tmp_path / "w.csv"
    w.write_text("name,model,slo_ms,rate_rps\nfast,vgg19,1,10\n")
    res = runner.invoke(cli, ["solve", *IGNITER, "-w", str(w), "-p", str(any_profile_path)])
    assert res.exit_code == 1
    assert re.fullmatch(
        r"Error: workload 'fast' \(vgg19\): SLO 1 ms cannot be met even alone at 100 % under the 'igniter' "
        r"budget; the smallest SLO that works is \d+\.\d\d ms\n",
        res.output,
    )


def test_unknown_profile_and_wrong_plan_schema(runner: CliRunner, tmp_path: Path) -> None:
    res = runner.invoke(cli, ["solve", *IGNITER, "-p", "nonexistent-gpu"])
    assert res.exit_code == 1 and res.output.startswith("Error: profile 'nonexistent-gpu' not found")
    bad = tmp_path / "p.json"
    bad.write_text('{"schema": "x/v1"}')
    res = runner.invoke(cli, ["predict", str(bad), "-p", "nonexistent-gpu"])
    assert res.exit_code == 1


def test_python_m_entry_point() -> None:
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "igniter_opt", "--version"], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == f"igniter-opt, version {__version__}"


# ---- exact planner and compare -------------------------------------------------------------------
def test_compare_heuristics_table_lists_each_planner(runner: CliRunner, v100_path: Path) -> None:
    res = runner.invoke(cli, ["compare", *IGNITER, "--profile", str(v100_path), "--planners", "greedy,ffd,gpulet"],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].split() == ["planner", "status", "GPUs", "cost/h", "share", "%", "SLO", "misses", "bound",
                                "gap", "%", "time", "s"]
    rows = {ln.split()[0]: ln.split() for ln in lines[2:5]}
    assert rows["greedy"][1:6] == ["heuristic", "6", "6.00", "472.50", "0"]
    assert rows["ffd"][1:4] == ["heuristic", "5", "5.00"] and int(rows["ffd"][5]) > 0
    assert rows["gpulet"][1:4] == ["heuristic", "7", "7.00"]


def test_compare_with_exact_as_json_and_csv(runner: CliRunner, v100_path: Path) -> None:
    res = runner.invoke(cli, ["compare", "--profile", str(v100_path), "--planners", "greedy,exact",
                              "--latency-budget", "full", "--margin", "0", "--time-limit", "8", "--format", "json"],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rows = {r["planner"]: r for r in json.loads(res.stdout)}  # progress lines go to stderr
    assert rows["exact"]["gpus"] == 5 and rows["exact"]["status"] == "optimal"
    assert rows["exact"]["bound"] == 5.0 and rows["exact"]["gap"] == 0.0 and rows["exact"]["slo_misses"] == 0
    assert rows["greedy"]["gpus"] == 6 and rows["greedy"]["bound"] is None
    res = runner.invoke(cli, ["compare", *IGNITER, "--profile", str(v100_path), "--planners", "greedy",
                              "--format", "csv"])
    assert res.exit_code == 0
    assert res.output.splitlines()[0] == ("planner,status,gpus,cost_per_hour,total_share_pct,slo_misses,violations,"
                                          "bound,gap,wall_s,message")


def test_compare_unknown_planner_exits_1(runner: CliRunner, any_profile_path: Path) -> None:
    res = runner.invoke(cli, ["compare", *IGNITER, "--profile", str(any_profile_path), "--planners", "greedy,magic"])
    assert res.exit_code == 1
    assert res.output == "Error: unknown planner(s) magic; choose from: greedy, exact, ffd, gpulet\n"


@pytest.mark.parametrize("name", ["IGNITER_OPT_TIME_LIMIT_S", "IGNITER_OPT_THREADS", "IGNITER_OPT_MIGRATION_COST"])
def test_a_solver_setting_in_the_environment_that_is_no_number_is_a_one_line_error(runner: CliRunner, name: str,
                                                                                   monkeypatch) -> None:
    monkeypatch.setenv(name, "abc")
    res = runner.invoke(cli, ["solve", *IGNITER])
    assert res.exit_code == 1
    assert res.output == f"Error: environment variable {name}='abc' is not a number; set a number or unset it\n"


def test_solve_exact_without_highspy_gives_install_hint(runner: CliRunner, any_profile_path: Path, monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "highspy", None)
    res = runner.invoke(cli, ["solve", *IGNITER, "--profile", str(any_profile_path), "--planner", "exact"])
    assert res.exit_code == 1
    assert res.output.startswith("Error: the exact planner needs the HiGHS solver: pip install")
    assert len(res.output.strip().splitlines()) == 1


def test_solve_exact_without_highspy_falls_back_to_greedy_when_asked(runner: CliRunner, tmp_path: Path,
                                                                    monkeypatch) -> None:
    import sys

    greedy = json.loads(runner.invoke(cli, ["solve", *IGNITER, "--format", "json"]).output)
    monkeypatch.setitem(sys.modules, "highspy", None)
    out = tmp_path / "plan.json"
    res = runner.invoke(cli, ["solve", *IGNITER, "--planner", "exact", "--fallback-greedy", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "planner exact (error" in res.output
    assert "note: the exact planner needs the HiGHS solver: pip install" in res.output
    assert "returned the greedy plan (a fallback was asked for: --fallback-greedy)" in res.output
    doc = json.loads(out.read_text())
    assert doc["solver"]["status"] == "error" and doc["solver"]["bound"] is None  # nothing solved: no bound
    assert doc["gpus"] == greedy["gpus"]  # greedy's plan, placement for placement
    assert doc["solver"]["objective"] == greedy["cost"]["per_hour"]


def test_solve_ffd_exits_1_and_names_the_violation(runner: CliRunner, any_profile_path: Path) -> None:
    res = runner.invoke(cli, ["solve", *IGNITER, "--profile", str(any_profile_path), "--planner", "ffd"])
    assert res.exit_code == 1
    assert "exact model:" in res.output and "violation(s)" in res.output
    assert res.output.splitlines()[-1].startswith("Error: the ffd plan violates the exact model in ")


@pytest.mark.parametrize("module", ["igniter_opt.checks", "igniter_opt.placement", "igniter_opt.report",
                                    "igniter_opt.replan", "igniter_opt.apply.transition", "igniter_opt.planner.exact"])
def test_every_module_imports_first(module: str) -> None:
    """No circular import, whichever module a user imports first."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr.strip().splitlines()[-1:]
