"""What a new user hit (issue 14), one test per item, through the command line on the shipped profile.

Items covered elsewhere: 4 (file modes) in test_planio, 5 (dry run anywhere) and 11 (nothing
outlives apply) in test_apply / test_apply_triton, 10's extra CSV field in test_planio.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from igniter_opt.cli import cli
from igniter_opt.perfmodel import load_profile
from igniter_opt.perfmodel.store import SHIPPED_PROFILES_DIR, profile_search_dirs, resolve_profile

# The paper's budget: these commands default to tail since it held live (docs/live-tail.md).
IGNITER = ["--latency-budget", "igniter"]

REPO = Path(__file__).resolve().parents[1]
H100 = str(REPO / "profiles" / "h100")


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def _placements(plan_file: Path) -> list[dict]:
    return [p for g in json.loads(plan_file.read_text())["gpus"] for p in g["placements"]]


def test_a_low_utilization_cap_gives_a_sane_plan_and_says_why_it_splits(runner: CliRunner, tmp_path: Path) -> None:
    """Item 1: --max-utilization 0.05 used to write batch 1024 with negative latency, throughput and rate."""
    out = tmp_path / "mu.json"
    res = runner.invoke(cli, ["solve", *IGNITER, "--profile", H100, "--max-utilization", "0.05", "-o", str(out)])
    assert res.exit_code == 0, res.output
    largest = load_profile(H100).max_measured_batch
    for p in _placements(out):
        assert 1 <= p["batch"] <= largest
        assert p["rate_rps"] > 0 and p["predicted"]["latency_ms"] > 0
        assert p["predicted"]["throughput_rps"] >= p["rate_rps"] * (1 - 1e-6)
    assert "and utilization <= 0.05 (--max-utilization)" in res.output
    pred = runner.invoke(cli, ["predict", str(out), "--format", "json"])
    assert pred.exit_code == 0, pred.output
    assert all(p["predicted"]["throughput_rps"] > 0 for g in json.loads(pred.output)["gpus"] for p in g["placements"])


def test_a_rate_no_gpu_carries_is_split_within_the_profiled_batches_and_the_cli_says_so(
        runner: CliRunner, tmp_path: Path) -> None:
    """Item 2: 1e7 req/s used to plan batch 95 on a profile measured up to 32, without a word."""
    ws = tmp_path / "big.csv"
    ws.write_text("name,model,slo_ms,rate_rps\nbig,resnet50,20,1e7\n")
    out = tmp_path / "big.json"
    res = runner.invoke(cli, ["solve", *IGNITER, "--profile", H100, "-w", str(ws), "-o", str(out)])
    assert res.exit_code == 0, res.output
    largest = load_profile(H100).max_measured_batch
    placements = _placements(out)
    assert len(placements) > 100 and max(p["batch"] for p in placements) <= largest
    assert abs(sum(p["rate_rps"] for p in placements) - 1e7) < 1e-3
    assert (f"note: workload big is split over {len(placements)} servers: one GPU cannot carry its rate within "
            f"its SLO at batch <= {largest} (the largest the profile measured, or --max-batch)") in res.output


def test_a_plan_that_fails_verification_is_not_written_unless_asked_and_apply_refuses_it(
        runner: CliRunner, tmp_path: Path) -> None:
    """Item 3: ``solve --planner ffd -o`` used to leave the failing plan, and apply ran it."""
    out = tmp_path / "ffd.json"
    res = runner.invoke(cli, ["solve", *IGNITER, "--profile", H100, "--planner", "ffd", "-o", str(out)])
    assert res.exit_code == 1 and not out.exists()
    assert f"note: {out} not written: the ffd plan fails verification" in res.output
    # Violations are listed grouped by workload: one line per workload.
    grouped = re.findall(r"^  (W\d+): ", res.output, re.M)
    assert len(grouped) == len(set(grouped)) == 12
    res = runner.invoke(cli, ["solve", *IGNITER, "--profile", H100, "--planner", "ffd", "-o", str(out),
                              "--write-failing"])
    assert res.exit_code == 1 and json.loads(out.read_text())["verified"] is False
    dry = runner.invoke(cli, ["apply", str(out), "--dry-run"])
    assert dry.exit_code == 1 and '"verified": false' in dry.output


def _heavy_modules_after(args: list[str]) -> list[str]:
    code = (f"import sys\nfrom igniter_opt.cli import cli\ntry:\n    cli({args!r}, standalone_mode=False)\n"
            "except SystemExit:\n    pass\n"
            "heavy = {'sklearn', 'pyomo', 'pandas', 'matplotlib', 'scipy', 'highspy', 'torch', 'tritonclient'}\n"
            "print('HEAVY=' + ','.join(sorted({m.split('.')[0] for m in sys.modules} & heavy)), file=sys.stderr)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    line = [x for x in res.stderr.splitlines() if x.startswith("HEAVY=")]
    assert line, res.stderr
    return [m for m in line[-1].removeprefix("HEAVY=").split(",") if m]


@pytest.mark.parametrize("args", [["--help"], ["solve", "--help"], ["solve", *IGNITER, "--profile", H100],
                                  ["solve", "--profile", H100, "--latency-budget", "tail", "--format", "json"]])
def test_help_and_a_greedy_solve_import_no_heavy_library(args: list[str]) -> None:
    """Item 6: start-up was 1.8 s, nearly all of it scikit-learn, pyomo, pandas and matplotlib
    imported by every command (including the export command's replanner and scipy)."""
    assert _heavy_modules_after(args) == []


def test_every_profile_a_help_example_names_is_shipped(runner: CliRunner) -> None:
    """Item 8: the examples said ``--profile v100``, which is not shipped; copying them failed."""
    texts = []
    stack = [([], cli)]
    while stack:
        path, cmd = stack.pop()
        res = runner.invoke(cli, [*path, "--help"])
        assert res.exit_code == 0, path
        texts.append(res.output)
        for name, sub in getattr(cmd, "commands", {}).items():
            stack.append(([*path, name], sub))
    examples = [" ".join(par.split()) for t in texts for par in t.split("\n\n") if "igniter-opt " in par]
    named = {m for ex in examples for m in re.findall(r"--profile[ =](\S+)", ex) if not m.isupper()}
    assert named, "no help example names a profile"
    for name in named:
        assert resolve_profile(name).resolve().parent == SHIPPED_PROFILES_DIR.resolve(), name


def test_a_missing_profile_lists_each_folder_once(runner: CliRunner, monkeypatch) -> None:
    """Item 8: run from the clone, the error listed <clone>/profiles twice."""
    monkeypatch.chdir(REPO)
    assert len(profile_search_dirs()) == len({d.resolve() for d in profile_search_dirs()})
    res = runner.invoke(cli, ["solve", *IGNITER, "--profile", "v100"])
    assert res.exit_code == 1
    assert res.output.count(str(REPO / "profiles")) == 1


def test_a_gpu_over_100_percent_is_refused_with_one_message_everywhere(runner: CliRunner, tmp_path: Path) -> None:
    """Item 9: predict accepted 140.9 %, replan --current repaired it silently; verify and apply
    refused it, each in its own words."""
    plan = tmp_path / "plan.json"
    assert runner.invoke(cli, ["solve", *IGNITER, "--profile", H100, "-o", str(plan)]).exit_code == 0
    d = json.loads(plan.read_text())
    crowded = max(d["gpus"], key=lambda g: len(g["placements"]))
    assert len(crowded["placements"]) >= 2
    crowded["placements"][0]["share"] = 95.0
    over = tmp_path / "over100.json"
    over.write_text(json.dumps(d))
    evening = tmp_path / "evening.csv"
    evening.write_text((REPO / "examples" / "paper-table3-evening.csv").read_text())
    outputs = {
        "verify": runner.invoke(cli, ["verify", str(over)]),
        "predict": runner.invoke(cli, ["predict", str(over), "-o", str(tmp_path / "p.json")]),
        "apply": runner.invoke(cli, ["apply", str(over), "--dry-run"]),
        "replan": runner.invoke(cli, ["replan", "--current", str(over), "-w", str(evening),
                                      "-o", str(tmp_path / "r.json")]),
    }
    message = re.compile(re.escape(crowded["id"]) + r": shares sum to \d+\.\d\d % > 100 % \(.*\); lower a share "
                         r"or move a placement to another GPU")
    for command, res in outputs.items():
        assert res.exit_code == 1, command
        assert message.search(res.output), (command, res.output)
    assert not (tmp_path / "p.json").exists() and not (tmp_path / "r.json").exists()


def test_a_failed_profile_run_leaves_no_folder_behind(runner: CliRunner, tmp_path: Path) -> None:
    """Item 10: a failed ``profile`` (here: no such GPU) used to leave an empty logs/ folder."""
    out = tmp_path / "new_profile"
    res = runner.invoke(cli, ["profile", "--models", "resnet50", "--gpu", "99", "-o", str(out)])
    assert res.exit_code == 1
    assert not (out / "logs").exists() and (not out.exists() or not any(out.iterdir()))


def test_serving_alone_on_a_folder_that_is_not_a_profile_says_what_to_do(runner: CliRunner, tmp_path: Path) -> None:
    res = runner.invoke(cli, ["profile", "--serving", "-o", str(tmp_path / "nothing")])
    assert res.exit_code == 1
    assert "is not a profile folder" in res.output and "--models" in res.output


def test_total_share_has_one_format(runner: CliRunner, tmp_path: Path) -> None:
    """Item 10: total share printed as 3.22e+04 %, 103 % and 95.46 %."""
    ws = tmp_path / "w.csv"
    ws.write_text("name,model,slo_ms,rate_rps\nbig,resnet50,20,200000\n")
    res = runner.invoke(cli, ["solve", *IGNITER, "--profile", H100, "-w", str(ws)])
    assert res.exit_code == 0, res.output
    assert re.search(r"total share \d{4,}\.\d\d %", res.output), res.output


def test_output_folders_are_made_the_same_way_by_every_command(runner: CliRunner, tmp_path: Path) -> None:
    """Item 10: ``-o`` into a missing folder: made, by every command that writes a file."""
    plan = tmp_path / "a" / "plan.json"
    assert runner.invoke(cli, ["solve", *IGNITER, "--profile", H100, "-o", str(plan)]).exit_code == 0
    assert runner.invoke(cli, ["predict", str(plan), "-o", str(tmp_path / "b" / "p.json")]).exit_code == 0
    evening = REPO / "examples" / "paper-table3-evening.csv"
    res = runner.invoke(cli, ["replan", "--current", str(plan), "-w", str(evening),
                              "-o", str(tmp_path / "c" / "r.json")])
    assert res.exit_code == 0, res.output
    assert all((tmp_path / f).is_file() for f in ("a/plan.json", "b/p.json", "c/r.json"))


def test_replan_without_output_prints_and_verify_needs_no_workloads(runner: CliRunner, tmp_path: Path) -> None:
    """Item 10: replan required -o (solve does not); verify required --workloads though the plan has them."""
    plan = tmp_path / "plan.json"
    assert runner.invoke(cli, ["solve", *IGNITER, "--profile", H100, "-o", str(plan)]).exit_code == 0
    evening = REPO / "examples" / "paper-table3-evening.csv"
    res = runner.invoke(cli, ["replan", "--current", str(plan), "-w", str(evening)])
    assert res.exit_code == 0, res.output
    assert "GPU" in res.output
    res = runner.invoke(cli, ["verify", str(plan)])
    assert res.exit_code == 0 and "every placement meets" in res.output


def test_solve_without_workloads_says_which_mix_it_planned(runner: CliRunner) -> None:
    res = runner.invoke(cli, ["solve", *IGNITER, "--profile", H100])
    assert res.exit_code == 0
    assert "note: no --workloads given: planned the paper's 12-workload mix" in res.output
