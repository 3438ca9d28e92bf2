"""Replanning: the plan diff, the greedy and exact replanners, and the replan command."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from igniter_opt.cli import cli
from igniter_opt.domain import GpuAssignment, LatencyBudget, Placement, Plan, PlanningProblem, Workload
from igniter_opt.errors import PlanError
from igniter_opt.perfmodel import PerformanceModel, load_profile
from igniter_opt.placement import verify_plan
from igniter_opt.planio import read_workloads, write_plan
from igniter_opt.planner import run_planner
from igniter_opt.replan import ReplanProblem, run_replanner
from igniter_opt.replan.diff import ChangeKind, PlanDiff, diff_plans, read_diff, relabel_gpus
from igniter_opt.solver import SolveOptions

REPO = Path(__file__).resolve().parents[1]
H100 = REPO / "profiles" / "h100"
PAPER = REPO / "examples" / "paper-table3.csv"


@pytest.fixture(scope="module")
def h100() -> PerformanceModel:
    return load_profile(H100)


def _paper(scale: float, names: tuple[str, ...] | None = None) -> tuple[Workload, ...]:
    return tuple(replace(w, rate_rps=w.rate_rps * scale) for w in read_workloads(PAPER)
                 if names is None or w.name in names)


def _plan(*gpus: tuple[str, list[tuple[str, str, float, int, float]]]) -> Plan:
    """Hand-made plan: (gpu id, [(workload, model, share %, batch, rate)])."""
    return Plan("h100", "hand", "igniter", tuple(
        GpuAssignment(gid, "NVIDIA H100 80GB HBM3", tuple(Placement(w, m, 20.0, r, b, s) for w, m, s, b, r in ps))
        for gid, ps in gpus))


def _kinds(diff: PlanDiff) -> dict[str, list[tuple[str, str | None, str | None]]]:
    out: dict[str, list[tuple[str, str | None, str | None]]] = {}
    for c in diff.changes:
        out.setdefault(str(c.kind), []).append((c.workload, c.old_gpu, c.new_gpu))
    return out


# ---- the diff ----------------------------------------------------------------------------------
OLD = _plan(
    ("gpu0", [("A", "alexnet", 20.0, 4, 100.0), ("B", "resnet50", 30.0, 2, 50.0)]),
    ("gpu1", [("C", "vgg19", 50.0, 8, 200.0), ("D", "ssd", 10.0, 1, 20.0)]),
    ("gpu2", [("E", "ssd", 100.0, 16, 500.0)]),
    ("gpu3", [("G", "alexnet", 40.0, 8, 900.0)]),
    ("gpu4", [("G", "alexnet", 40.0, 8, 900.0)]),
)
NEW = _plan(
    ("gpu0", [("A", "alexnet", 20.0, 4, 150.0), ("B", "resnet50", 40.0, 2, 50.0)]),
    ("gpu1", [("D", "ssd", 10.0, 1, 20.0)]),
    ("gpu3", [("G", "alexnet", 40.0, 8, 700.0)]),
    ("gpu5", [("C", "vgg19", 50.0, 8, 200.0), ("F", "resnet50", 10.0, 1, 30.0), ("G", "alexnet", 30.0, 4, 300.0)]),
)


def test_diff_classifies_every_placement_and_gpu() -> None:
    d = diff_plans(OLD, NEW)
    assert _kinds(d) == {
        "kept": [("A", "gpu0", "gpu0"), ("D", "gpu1", "gpu1"), ("G", "gpu3", "gpu3")],
        "resized": [("B", "gpu0", "gpu0")],
        "moved": [("C", "gpu1", "gpu5"), ("G", "gpu4", "gpu5")],
        "started": [("F", None, "gpu5")],
        "stopped": [("E", "gpu2", None)],
    }
    assert d.counts == {"kept": 3, "resized": 1, "moved": 2, "started": 1, "stopped": 1}
    assert (d.restarts, d.changed, d.old_not_kept) == (3, 5, 4)
    assert (d.gpus_opened, d.gpus_released, d.gpus_kept) == (("gpu5",), ("gpu2", "gpu4"), ("gpu0", "gpu1", "gpu3"))
    a = next(c for c in d.changes if c.workload == "A")
    assert (a.old_rate_rps, a.new_rate_rps, a.restarts) == (100.0, 150.0, False)  # a rate change keeps the server
    b = next(c for c in d.changes if c.workload == "B")
    assert (b.old_share_pct, b.new_share_pct, b.old_slot, b.new_slot) == (30.0, 40.0, 1, 1)


def test_diff_of_a_plan_with_itself_keeps_everything_and_a_model_change_restarts() -> None:
    assert diff_plans(OLD, OLD).counts == {"kept": 7, "resized": 0, "moved": 0, "started": 0, "stopped": 0}
    other_model = _plan(("gpu0", [("A", "resnet50", 20.0, 4, 100.0)]))
    d = diff_plans(_plan(("gpu0", [("A", "alexnet", 20.0, 4, 100.0)])), other_model)
    assert _kinds(d) == {"started": [("A", None, "gpu0")], "stopped": [("A", "gpu0", None)]}


def test_diff_json_round_trip_and_schema(tmp_path: Path) -> None:
    d = diff_plans(OLD, NEW)
    doc = json.loads(json.dumps(d.to_dict()))
    assert doc["schema"] == "igniter-opt/diff/v1"
    assert doc["summary"]["restarts"] == 3 and doc["gpus"]["opened"] == ["gpu5"]
    assert doc["placements"][0] == {
        "kind": "kept", "workload": "A", "model": "alexnet", "slo_ms": 20.0,
        "old_gpu": "gpu0", "old_slot": 0, "old_share_pct": 20.0, "old_batch": 4, "old_rate_rps": 100.0,
        "new_gpu": "gpu0", "new_slot": 0, "new_share_pct": 20.0, "new_batch": 4, "new_rate_rps": 150.0,
    }
    assert PlanDiff.from_dict(doc) == d
    (tmp_path / "d.json").write_text(json.dumps({**doc, "schema": "igniter-opt/plan/v1"}))
    with pytest.raises(PlanError, match="expected 'igniter-opt/diff/v1'"):
        read_diff(tmp_path / "d.json")


def test_relabel_gpus_names_a_resolved_plan_after_the_running_gpus() -> None:
    shuffled = replace(OLD, gpus=tuple(replace(g, gpu_id=f"x{i}") for i, g in enumerate(reversed(OLD.gpus))))
    assert diff_plans(OLD, shuffled).restarts == 7  # by id nothing matches: all 7 move
    named = relabel_gpus(shuffled, OLD)
    assert diff_plans(OLD, named).counts["kept"] == 7
    bigger = replace(NEW, gpus=(*NEW.gpus, GpuAssignment("gpu0", "t", (Placement("Z", "ssd", 20, 1, 1, 5.0),))))
    ids = [g.gpu_id for g in relabel_gpus(bigger, OLD).gpus]
    assert len(set(ids)) == 5 and set(ids) <= {g.gpu_id for g in OLD.gpus}  # five new GPUs, five old ids


# ---- the greedy replanner -----------------------------------------------------------------------
def test_rate_decrease_keeps_every_placement(h100: PerformanceModel) -> None:
    current = run_planner(PlanningProblem(_paper(4.0), h100), "greedy").plan
    out = run_replanner(ReplanProblem(current, PlanningProblem(_paper(0.5), h100)), "greedy")
    assert out.violations == ()
    assert out.diff.counts == {"kept": 12, "resized": 0, "moved": 0, "started": 0, "stopped": 0}
    assert [g.gpu_id for g in out.plan.gpus] == [g.gpu_id for g in current.gpus]
    assert sum(p.rate_rps for _, p in out.plan.placements()) == pytest.approx(sum(w.rate_rps for w in _paper(0.5)))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mult=st.lists(st.sampled_from([0.3, 0.7, 1.0, 1.1, 1.6, 2.5]), min_size=12, max_size=12))
def test_greedy_keeps_what_still_works_and_never_returns_a_violating_plan(h100: PerformanceModel, mult) -> None:
    current = run_planner(PlanningProblem(_paper(3.0), h100), "greedy").plan
    new = tuple(replace(w, rate_rps=w.rate_rps * m) for w, m in zip(_paper(3.0), mult, strict=True))
    problem = PlanningProblem(new, h100)
    # a migration cost above the GPU price: the replanner may not trade restarts for GPUs
    out = run_replanner(ReplanProblem(current, problem), "greedy", SolveOptions(migration_cost=10.0))
    assert verify_plan(out.plan, problem) == []
    by_name = {c.workload: c for c in out.diff.changes}
    for w, m in zip(new, mult, strict=True):
        # under the igniter budget latency does not depend on the rate and a kept neighbour never
        # changes, so a placement whose rate did not grow stays as it is
        if m <= 1.0:
            assert by_name[w.name].kind is ChangeKind.KEPT, (w.name, m)
    # and what restarts had to: its running placement cannot carry the new rate
    thr = {p.workload: p.predicted.throughput_rps for _, p in current.placements()}
    assert len(thr) == len(current.placements())  # one placement per workload at this scale
    for c in out.diff.changes:
        if c.restarts and sum(1 for x in out.diff.changes if x.workload == c.workload) == 1:
            assert c.new_rate_rps > thr[c.workload], c


def test_workloads_appear_and_disappear_by_name(h100: PerformanceModel) -> None:
    current = run_planner(PlanningProblem(_paper(2.0), h100), "greedy").plan
    ws = [w for w in _paper(2.0) if w.name != "W3"] + [Workload("W13", "resnet50", 30.0, 300.0)]
    ws = [replace(w, model="vgg19", slo_ms=40.0) if w.name == "W6" else w for w in ws]  # W6 changes model
    out = run_replanner(ReplanProblem(current, PlanningProblem(tuple(ws), h100)), "greedy")
    kinds = _kinds(out.diff)
    assert sorted(c[0] for c in kinds["stopped"]) == ["W3", "W6"]
    assert sorted(c[0] for c in kinds["started"]) == ["W13", "W6"]
    assert len(kinds["kept"]) == 10 and out.violations == ()


def test_new_gpus_get_fresh_ids_and_kept_gpus_keep_theirs(h100: PerformanceModel) -> None:
    current = run_planner(PlanningProblem(_paper(2.0), h100), "greedy").plan
    current = replace(current, gpus=tuple(replace(g, gpu_id=f"node-{i}") for i, g in enumerate(current.gpus)))
    ws = [*_paper(2.0), Workload("big", "vgg19", 40.0, 1500.0)]
    out = run_replanner(ReplanProblem(current, PlanningProblem(tuple(ws), h100)), "greedy")
    assert out.diff.counts["kept"] == 12 and out.diff.counts["started"] >= 1
    ids = [g.gpu_id for g in out.plan.gpus]
    assert ids[: len(current.gpus)] == [g.gpu_id for g in current.gpus]
    assert out.diff.gpus_opened and not set(out.diff.gpus_opened) & {g.gpu_id for g in current.gpus}


# ---- the exact replanner --------------------------------------------------------------------------
SMALL = ("W1", "W4", "W5", "W7", "W8", "W12")


@pytest.fixture(scope="module")
def small_current(h100: PerformanceModel) -> Plan:
    plan = run_planner(PlanningProblem(_paper(6.0, SMALL), h100), "greedy").plan
    assert plan.num_gpus == 3
    return plan


def test_exact_with_high_migration_cost_keeps_the_current_plan(h100, small_current) -> None:
    pytest.importorskip("highspy")
    problem = PlanningProblem(_paper(1.0, SMALL), h100)  # one GPU would do, from scratch
    out = run_replanner(ReplanProblem(small_current, problem), "exact",
                        SolveOptions(time_limit_s=20, migration_cost=10.0))
    assert out.violations == ()
    assert out.diff.counts["kept"] == 6 and out.plan.num_gpus == 3
    assert out.plan.solver.objective == pytest.approx(3.0)


def test_exact_with_zero_migration_cost_reaches_the_from_scratch_gpu_count(h100, small_current) -> None:
    pytest.importorskip("highspy")
    problem = PlanningProblem(_paper(1.0, SMALL), h100)
    options = SolveOptions(time_limit_s=20, migration_cost=0.0)
    scratch = run_planner(problem, "exact", options).plan
    out = run_replanner(ReplanProblem(small_current, problem), "exact", options)
    assert out.violations == ()
    assert out.plan.num_gpus == scratch.num_gpus == 1
    # the GPU it keeps is a running one, and at cost 0 it still keeps what it can
    assert out.plan.gpus[0].gpu_id in {g.gpu_id for g in small_current.gpus} and out.diff.counts["kept"] >= 1


def test_exact_trades_restarts_for_gpus_and_is_never_worse_than_greedy(h100, small_current) -> None:
    pytest.importorskip("highspy")
    problem = PlanningProblem(_paper(1.0, SMALL), h100)
    rp = ReplanProblem(small_current, problem)
    for cost in (0.1, 0.25):
        options = SolveOptions(time_limit_s=20, migration_cost=cost)
        ex = run_replanner(rp, "exact", options)
        gr = run_replanner(rp, "greedy", options)
        objective = ex.plan.cost_per_hour + cost * ex.diff.old_not_kept
        assert objective == pytest.approx(ex.plan.solver.objective)
        assert objective <= gr.plan.cost_per_hour + cost * gr.diff.old_not_kept + 1e-9
        assert objective < 3.0  # keeping everything costs 3 GPUs: at these costs moving pays
        assert ex.violations == ()


# ---- the replan command -------------------------------------------------------------------------
def test_replan_command_writes_plan_and_diff(tmp_path: Path, h100: PerformanceModel) -> None:
    current = run_planner(PlanningProblem(_paper(1.0), h100), "greedy").plan
    cur = tmp_path / "plan.json"
    write_plan(current, cur)
    new = tmp_path / "new.csv"
    new.write_text(PAPER.read_text().replace("W1,alexnet,10,1200", "W1,alexnet,10,600").replace("W11,ssd,40,50\n", "")
                   + "W13,resnet50,30,300\n")
    out = tmp_path / "new.json"
    res = CliRunner().invoke(cli, ["replan", "--current", str(cur), "-w", str(new), "-p", str(H100), "-o", str(out)],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "exact model: every placement meets its latency limit and rate; no GPU over 100 %" in res.output
    diff = read_diff(tmp_path / "new.diff.json")
    assert diff.counts["stopped"] == 1 and diff.counts["started"] >= 1
    assert next(c for c in diff.changes if c.workload == "W1").kind is ChangeKind.KEPT
    lines = res.output.splitlines()
    summary = next(line for line in lines if line.startswith("kept ") and ", resized " in line)
    assert summary == (f"kept {diff.counts['kept']}, resized {diff.counts['resized']}, moved {diff.counts['moved']}, "
                       f"started {diff.counts['started']}, stopped 1: {diff.restarts} running server(s) restart")
    assert json.loads(out.read_text())["schema"] == "igniter-opt/plan/v1"


@pytest.mark.parametrize("planner", ["exact", "columns"])
def test_replan_without_highspy_falls_back_to_the_greedy_replan_when_asked(tmp_path: Path, h100: PerformanceModel,
                                                                         monkeypatch, planner: str) -> None:
    import sys

    current = run_planner(PlanningProblem(_paper(1.0), h100), "greedy").plan
    cur = tmp_path / "plan.json"
    write_plan(current, cur)
    new = tmp_path / "new.csv"
    new.write_text(PAPER.read_text().replace("W1,alexnet,10,1200", "W1,alexnet,10,600"))
    args = ["replan", "--current", str(cur), "-w", str(new), "-p", str(H100), "--format", "json"]
    greedy = json.loads(CliRunner().invoke(cli, args).output)
    monkeypatch.setitem(sys.modules, "highspy", None)
    res = CliRunner().invoke(cli, [*args, "--planner", planner])
    assert res.exit_code == 1 and res.output.startswith("Error: the exact planner needs the HiGHS solver")
    res = CliRunner().invoke(cli, [*args, "--planner", planner, "--fallback-greedy"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["plan"]["planner"] == planner and doc["plan"]["solver"]["status"] == "error"
    assert "needs the HiGHS solver" in doc["plan"]["solver"]["message"]
    assert "returned the greedy plan" in doc["plan"]["solver"]["message"]
    assert doc["plan"]["gpus"] == greedy["plan"]["gpus"] and doc["diff"] == greedy["diff"]


def _bad_replan(tmp_path: Path, plan_doc: dict, csv: str, *extra: str):
    cur = tmp_path / "plan.json"
    cur.write_text(json.dumps(plan_doc))
    new = tmp_path / "new.csv"
    new.write_text(csv)
    out = tmp_path / "new.json"
    res = CliRunner().invoke(cli, ["replan", "--current", str(cur), "-w", str(new), "-o", str(out), *extra])
    assert res.exit_code == 1
    assert not out.exists() and not (tmp_path / "new.diff.json").exists()
    assert len(res.output.splitlines()) == 1
    return res.output


def test_replan_refuses_a_plan_of_another_profile(tmp_path: Path, h100: PerformanceModel) -> None:
    from igniter_opt.planio import plan_to_dict

    doc = plan_to_dict(run_planner(PlanningProblem(_paper(1.0), h100), "greedy").plan)
    csv = PAPER.read_text()
    out = _bad_replan(tmp_path, {**doc, "profile": "v100"}, csv, "-p", str(H100))
    assert out == (f"Error: {tmp_path / 'plan.json'} was made with profile 'v100', not 'h100'; replan with "
                   "--profile v100, or plan from scratch with 'igniter-opt solve --profile h100'\n")
    out = _bad_replan(tmp_path, {**doc, "profile": "no-such-gpu"}, csv)
    assert out.startswith("Error: the current plan's profile 'no-such-gpu': profile 'no-such-gpu' not found")
    assert out.rstrip().endswith("; pass --profile")


@pytest.mark.parametrize(("csv", "message"), [
    ("name,model,slo_ms,rate_rps\nW1,alexnet,10,-5\n", "row 2 ('W1'): rate_rps must be a positive number, got '-5'"),
    ("name,model,slo_ms,rate_rps\nW1,alexnet,10,\n", "row 2 ('W1'): rate_rps must be a positive number, got ''"),
])
def test_replan_bad_workloads_exit_1_and_write_nothing(tmp_path: Path, h100: PerformanceModel, csv, message) -> None:
    from igniter_opt.planio import plan_to_dict

    doc = plan_to_dict(run_planner(PlanningProblem(_paper(1.0), h100), "greedy").plan)
    out = _bad_replan(tmp_path, doc, csv, "-p", str(H100))
    assert out == f"Error: {tmp_path / 'new.csv'}: {message}\n"


def test_replan_keeps_the_current_plans_budget(tmp_path: Path, h100: PerformanceModel) -> None:
    problem = PlanningProblem(_paper(1.0), h100, LatencyBudget.FULL, 0.1)
    current = run_planner(problem, "greedy").plan
    out = run_replanner(ReplanProblem(current, problem), "greedy")
    assert out.diff.counts["kept"] == len(current.placements()) and out.violations == ()
    cur = tmp_path / "plan.json"
    write_plan(current, cur)
    res = CliRunner().invoke(cli, ["replan", "--current", str(cur), "-w", str(PAPER), "-p", str(H100),
                                   "-o", str(tmp_path / "n.json"), "--format", "json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["plan"]["latency_budget"] == "full" and doc["plan"]["margin"] == 0.1
    assert doc["diff"]["summary"]["kept"] == len(current.placements())


# ---- re-split: a grown workload keeps its running server and adds replicas ---------------------------
@pytest.mark.parametrize("planner", ["greedy", "exact"])
def test_a_grown_workload_keeps_its_running_server_and_adds_replicas(h100_model, planner: str) -> None:
    """ResNet-50 from 400 to 3000 req/s beside VGG-19: re-placing it whole resizes (restarts) its server;
    the re-split keeps it running at its rate and serves the rest on a new server, with no restart and
    no more GPUs. The plan verifies and serves every request."""
    from igniter_opt.placement import plan_problem, verify_plan
    from igniter_opt.replan import ReplanProblem, run_replanner

    before = (Workload("res", "resnet50", 30.0, 400.0), Workload("vgg", "vgg19", 30.0, 300.0))
    after = (Workload("res", "resnet50", 30.0, 3000.0), Workload("vgg", "vgg19", 30.0, 300.0))
    current = run_planner(PlanningProblem(before, h100_model), "greedy").plan
    out = run_replanner(ReplanProblem(current, plan_problem(current, h100_model, after)), planner,
                        SolveOptions(time_limit_s=20))
    assert out.violations == () and verify_plan(out.plan, plan_problem(out.plan, h100_model, after)) == []
    assert out.diff.restarts == 0 and out.diff.count("kept") == 2 and out.diff.count("started") >= 1
    assert out.plan.num_gpus == current.num_gpus
    assert sum(p.rate_rps for _, p in out.plan.placements() if p.workload == "res") == pytest.approx(3000.0)
    assert "re-split" in out.plan.solver.message


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), growth=st.floats(0.3, 6.0))
def test_the_greedy_replan_never_costs_more_than_before_resplit_existed(h100_model, seed: int, growth: float) -> None:
    """The re-split candidates only add choices: the objective is never above the best of keeping and
    re-placing (steps 1-4) and planning from scratch, and the plan verifies."""
    import random

    from igniter_opt.placement import plan_problem, verify_plan
    from igniter_opt.replan import ReplanProblem
    from igniter_opt.replan import greedy as rg
    from igniter_opt.solver import SolveOutcome, SolveStatus

    rng = random.Random(seed)
    models = ("resnet50", "vgg19", "alexnet", "bert_base")
    before = tuple(Workload(f"w{i}", rng.choice(models), rng.choice((20.0, 30.0, 50.0)), rng.choice((100.0, 300.0)))
                   for i in range(4))
    after = tuple(Workload(w.name, w.model, w.slo_ms, round(w.rate_rps * (growth if i % 2 == 0 else 1.0), 1))
                  for i, w in enumerate(before))
    current = run_planner(PlanningProblem(before, h100_model), "greedy").plan
    rp = ReplanProblem(current, plan_problem(current, h100_model, after))
    plan = rg.solve(rp, SolveOptions(migration_cost=0.25))
    assert verify_plan(plan, rp.problem) == []
    demands = tuple(rg.paper.initial_demands(rp.problem))
    kept, todo = rg._keep(rp, demands)
    placed = rg.place(rp, demands, [g for g in kept if g.slots], todo)
    assert placed is not None
    incremental = rg.GreedyReplan(rg.Packing(demands, tuple(placed)), 0)
    others = [rg._from_scratch(rp, demands), incremental]
    best = min(rg.migration_objective(rg.to_plan(rp, r, "greedy", SolveOutcome(SolveStatus.HEURISTIC)), current,
                                      0.25)[0] for r in others)
    assert rg.migration_objective(plan, current, 0.25)[0] <= best + 1e-9


@pytest.mark.parametrize(("seed", "growth"), [(1, 0.5), (0, 1.4)])
def test_reused_slot_tables_change_no_consolidation(h100_model, monkeypatch, seed: int, growth: float) -> None:
    """Consolidation places the same demands and slots again for every GPU it tries to empty and reuses
    their tables (``_SlotTables``): every consolidation (GPUs, placements moved) and the plan are what
    fresh tables at every placement give. The mixes are ones where consolidation empties GPUs."""
    import random

    from igniter_opt.placement import plan_problem
    from igniter_opt.replan import greedy as rg

    rng = random.Random(seed)
    models = ("resnet50", "vgg19", "alexnet", "bert_base", "ssd")
    before = tuple(Workload(f"w{i}", rng.choice(models), rng.choice((20.0, 30.0, 50.0)), rng.uniform(50.0, 400.0))
                   for i in range(120))
    after = tuple(replace(w, rate_rps=w.rate_rps * (growth if i % 3 else 1.0)) for i, w in enumerate(before))
    current = run_planner(PlanningProblem(before, h100_model), "greedy").plan
    rp = ReplanProblem(current, plan_problem(current, h100_model, after))
    consolidate = rg._consolidate

    def run() -> tuple[str, list]:
        seen = []

        def recorded(*args):
            seen.append(consolidate(*args))
            return seen[-1]

        monkeypatch.setattr(rg, "_consolidate", recorded)
        plan = rg.solve(rp, SolveOptions(migration_cost=0.0))
        # compared as JSON: a prediction's NaN is not equal to itself
        return json.dumps(asdict(replace(plan, solver=None)), default=str), seen

    plan, seen = run()
    assert sum(moved for _, moved in seen) > 0
    monkeypatch.setattr(rg._SlotTables, "covers", lambda self, demands, gpus: False)
    assert run() == (plan, seen)


def test_slot_tables_give_each_slot_its_own_numbers(h100_model) -> None:
    """A slot's configuration terms, units and constants from the reused tables are those of fresh tables,
    asked in another order; a kept (frozen) server's are at its exact share, not its whole units."""
    from igniter_opt.placement import plan_problem
    from igniter_opt.replan import greedy as rg

    # shares off the H100's unit grid (1.5152 %): kept servers keep them exactly
    current = _plan(("gpu0", [("A", "resnet50", 30.0, 4, 100.0), ("B", "vgg19", 40.0, 4, 80.0)]),
                    ("gpu1", [("C", "alexnet", 25.0, 4, 300.0)]))
    after = (Workload("A", "resnet50", 50.0, 110.0), Workload("B", "vgg19", 50.0, 80.0),
             Workload("C", "alexnet", 50.0, 200.0), Workload("D", "ssd", 50.0, 100.0))
    rp = ReplanProblem(current, plan_problem(current, h100_model, after))
    demands = tuple(rg.paper.initial_demands(rp.problem))
    kept, _ = rg._keep(rp, demands)
    slots = [s for g in kept for s in g.slots]
    frozen = [s for s in slots if s.frozen and abs(s.frozen_share_pct / h100_model.unit_pct - s.units) > 1e-6]
    assert frozen, "a kept server off the unit grid is needed"
    slots += [s._replace(frozen_share_pct=None) for s in frozen]
    reused, fresh = rg._SlotTables(rp, demands, kept), rg._SlotTables(rp, demands, kept)
    first = [reused.slot(s) for s in slots]
    for s, (c, u, k) in zip(reversed(slots), reversed(first), strict=True):
        c2, u2, k2 = fresh.slot(s)
        assert u == u2 and np.array_equal(k, k2)
        for name in ("k_act", "c", "p"):
            assert getattr(reused.terms, name)[c] == getattr(fresh.terms, name)[c2]
    assert [u for _, u, _ in first[-len(frozen):]] == [float(s.units) for s in frozen]
    assert [u for _, u, _ in first[: len(slots) - len(frozen)] if u != int(u)]  # a frozen share off the grid
