"""Planning over a fleet of GPU types with prices (issue 15): --fleet parsing, the fleet greedy, its CLI."""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from igniter_opt.cli import cli
from igniter_opt.domain import LatencyBudget, Workload
from igniter_opt.errors import InputError, ProblemError
from igniter_opt.fleet import parse_fleet
from igniter_opt.placement import verify_plan
from igniter_opt.planio import read_plan, read_workloads
from igniter_opt.planner import run_planner
from igniter_opt.planner.fleet import FleetPlan, solve_fleet
from igniter_opt.problems import BudgetChoice, make_problem
from igniter_opt.solver import SolveOptions, SolveStatus

# The paper's budget: these commands default to tail since it held live (docs/live-tail.md).
IGNITER = ["--latency-budget", "igniter"]

REPO = Path(__file__).resolve().parents[1]
PAPER = read_workloads(REPO / "examples" / "paper-table3.csv")
MODELS = ("alexnet", "resnet50", "vgg19", "ssd", "vit_b_16", "bert_base")


def _mix(seed: int, n: int = 10) -> tuple[Workload, ...]:
    rng = random.Random(seed)
    return tuple(Workload(f"w{i}", rng.choice(MODELS), rng.choice((15.0, 25.0, 40.0)),
                          rng.choice((100.0, 300.0, 600.0))) for i in range(n))


def test_a_spec_string_and_a_csv_describe_the_same_fleet(tmp_path: Path) -> None:
    f = parse_fleet("h100:2.5:8, h200:3.4")
    assert [(t.name, t.price_per_gpu_hour, t.max_count) for t in f.types] == [("h100", 2.5, 8), ("h200", 3.4, None)]
    assert [m.name for m in f.models] == ["h100", "h200"]
    (tmp_path / "fleet.csv").write_text("type,price_per_hour,max_count\nh100,2.5,8\nh200,3.4,\n")
    g = parse_fleet(str(tmp_path / "fleet.csv"))
    assert g.types == f.types


@pytest.mark.parametrize("spec, msg", [
    ("h100:x", "price 'x' is not a number"),
    ("h100:0", "price must be a number > 0"),
    ("h100:-1", "price must be a number > 0"),
    ("h100:nan", "price must be a number > 0"),
    ("h100:1,h100:2", "GPU type 'h100' is listed twice"),
    ("nosuchgpu:1", "unknown GPU type: profile 'nosuchgpu' not found"),
    ("h100:1:0", "max count must be >= 1"),
    ("h100:1:two", "max count 'two' is not a whole number"),
    ("h100", "expected TYPE:PRICE[:MAX_COUNT]"),
    ("h100:1,,h200:2", "expected TYPE:PRICE[:MAX_COUNT]"),
    ("h100:1,profiles/h100:2", "GPU types 'h100' and 'profiles/h100' have the same name"),
])
def test_bad_fleets_are_named(spec: str, msg: str) -> None:
    with pytest.raises(InputError, match=msg.replace("[", r"\[").replace("]", r"\]")):
        parse_fleet(spec)


@pytest.mark.parametrize("budget", [LatencyBudget.IGNITER, LatencyBudget.TAIL])
def test_one_type_fleet_is_the_single_type_plan(budget: LatencyBudget) -> None:
    fp = solve_fleet(PAPER, parse_fleet("h100:2"), BudgetChoice(budget))
    single = run_planner(make_problem(PAPER, "h100", BudgetChoice(budget)), "greedy").plan
    (part,) = fp.parts
    assert part.plan.num_gpus == single.num_gpus and part.plan.total_share_pct == pytest.approx(single.total_share_pct)
    assert fp.cost_per_hour == pytest.approx(2 * single.num_gpus) and part.plan.price_per_gpu_hour == 2


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_mixed_fleet_never_costs_more_than_its_best_single_type(seed: int) -> None:
    """Every type alone is a candidate, so mixing can only help; every part is verified by its type."""
    ws = _mix(seed)
    choice = BudgetChoice(LatencyBudget.IGNITER)
    mixed = solve_fleet(ws, parse_fleet("h100:1.0,h200:1.25"), choice)
    alone = [solve_fleet(ws, parse_fleet(s), choice).cost_per_hour for s in ("h100:1.0", "h200:1.25")]
    assert mixed.cost_per_hour <= min(alone) + 1e-9
    served = {p.workload for part in mixed.parts for _, p in part.plan.placements()}
    assert served == {w.name for w in ws}
    for part in mixed.parts:
        m = parse_fleet(f"{part.gpu_type.name}:1").models[0]
        ws_part = tuple(w for w in ws if w.name in {p.workload for _, p in part.plan.placements()})
        assert verify_plan(part.plan, make_problem(ws_part, m, choice)) == []


def test_count_limits_hold_or_say_what_is_needed() -> None:
    choice = BudgetChoice(LatencyBudget.TAIL)
    capped = solve_fleet(PAPER, parse_fleet("h100:1.0:1,h200:1.6"), choice)
    assert capped.gpus_by_type().get("h100", 0) <= 1
    free = solve_fleet(PAPER, parse_fleet("h100:1.0,h200:1.6"), choice)
    assert capped.cost_per_hour >= free.cost_per_hour - 1e-9
    with pytest.raises(ProblemError, match=r"its best needs 2 GPUs of h100 \(limit 1\)"):
        solve_fleet(PAPER, parse_fleet("h100:1.0:1"), choice)


def test_a_workload_no_type_can_serve_is_named() -> None:
    ws = (Workload("fine", "resnet50", 30.0, 200.0), Workload("impossible", "vgg19", 0.5, 200.0))
    with pytest.raises(ProblemError, match=r"workload\(s\) impossible can go nowhere"):
        solve_fleet(ws, parse_fleet("h100:1,h200:2"), BudgetChoice())


def test_cli_writes_one_plan_per_type_and_a_summary(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    res = CliRunner().invoke(cli, ["solve", "--fleet", "h100:1.0:1,h200:1.6", "--latency-budget", "tail",
                                   "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "fleet: 3 GPU(s) (1 x h100, 2 x h200), cost 4.20/h" in res.output
    summary = json.loads(out.read_text())
    assert summary["schema"] == "igniter-opt/fleet-plan/v1" and summary["cost"]["per_hour"] == pytest.approx(4.2)
    for t in summary["types"]:
        part = read_plan(tmp_path / t["plan"])
        assert part.num_gpus == t["gpus"] and part.price_per_gpu_hour == t["price_per_hour"]
        res = CliRunner().invoke(cli, ["verify", str(tmp_path / t["plan"])])
        assert res.exit_code == 0, res.output
        assert (tmp_path / t["plan"]).stat().st_mode & 0o777 == out.stat().st_mode & 0o777
    res = CliRunner().invoke(cli, ["verify", str(out)])
    assert res.exit_code == 1 and "a fleet plan (several GPU types); give one of its parts" in res.output
    assert "plan.h100.json" in res.output


def test_cli_fleet_and_profile_exclude_each_other() -> None:
    res = CliRunner().invoke(cli, ["solve", *IGNITER, "--fleet", "h100:1", "--profile", "h200"])
    assert res.exit_code == 1 and "--fleet and --profile exclude each other" in res.output


def test_another_planner_plans_the_chosen_parts_again_never_worse() -> None:
    """The search runs on greedy; --planner ffd re-plans each chosen part and keeps it where it is no worse."""
    choice = BudgetChoice(LatencyBudget.IGNITER)
    greedy = solve_fleet(PAPER, parse_fleet("h100:1.0,h200:1.25"), choice)
    ffd = solve_fleet(PAPER, parse_fleet("h100:1.0,h200:1.25"), choice, "ffd")
    assert ffd.gpus_by_type() == greedy.gpus_by_type() and ffd.cost_per_hour <= greedy.cost_per_hour
    for g, e in zip(greedy.parts, ffd.parts, strict=True):
        assert e.plan.total_share_pct <= g.plan.total_share_pct + 1e-9
        assert e.plan.planner in ("ffd", "greedy")


def test_compare_over_a_fleet_lists_each_planner_and_every_type_alone() -> None:
    res = CliRunner().invoke(cli, ["compare", *IGNITER, "--fleet", "h100:1.0,h200:1.6", "--planners", "greedy",
                                   "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = {r["plan"]: r for r in json.loads(res.stdout)}
    assert list(rows) == ["fleet greedy", "h100 alone", "h200 alone"]
    assert rows["fleet greedy"]["cost_per_hour"] <= min(rows["h100 alone"]["cost_per_hour"],
                                                        rows["h200 alone"]["cost_per_hour"]) + 1e-9
    res = CliRunner().invoke(cli, ["compare", "--fleet", "h100:1.0:1", "--planners", "greedy",
                                   "--latency-budget", "tail"])
    assert res.exit_code == 0 and "fleet greedy: the fleet's count limits leave no plan" in res.output
    res = CliRunner().invoke(cli, ["compare", *IGNITER, "--fleet", "h100:1", "-p", "h200"])
    assert res.exit_code == 1 and "--fleet and --profile exclude each other" in res.output


# ---- the exact planner's certified bound over a fleet --------------------------------------------
def _assignment_costs(ws: tuple[Workload, ...], fleet_spec: str, choice: BudgetChoice) -> list[float]:
    """The cost of greedy's verified plan for every assignment of the workloads to the fleet's types."""
    import itertools

    fleet = parse_fleet(fleet_spec)
    out = []
    for types in itertools.product(range(len(fleet.types)), repeat=len(ws)):
        cost = 0.0
        for t, (ft, perf) in enumerate(zip(fleet.types, fleet.models, strict=True)):
            mine = tuple(w for w, u in zip(ws, types, strict=True) if u == t)
            if mine:
                outcome = run_planner(make_problem(mine, perf, choice), "greedy")
                assert not outcome.violations
                if ft.max_count is not None and outcome.plan.num_gpus > ft.max_count:
                    cost = float("inf")
                    break
                cost += outcome.plan.num_gpus * ft.price_per_gpu_hour
        out.append(cost)
    return out


@pytest.mark.parametrize(("seed", "spec"), [(1, "h100:1.0,h200:1.25"), (2, "h100:1.0,h200:1.6"),
                                            (3, "h100:1.0:1,h200:1.25"), (4, "h100:2.0,h200:1.0")])
def test_the_fleet_bound_is_below_every_assignments_plan(seed: int, spec: str) -> None:
    """The bound is a lower bound of the cost of every plan in its scope: below the verified plan of every
    one of the 2^n assignments of workloads to types; the exact fleet plan is at least the bound, and
    optimal exactly when it meets it."""
    ws = _mix(seed, 5)
    choice = BudgetChoice(LatencyBudget.IGNITER)
    fp = solve_fleet(ws, parse_fleet(spec), choice, "exact", SolveOptions(time_limit_s=10))
    assert fp.bound is not None
    costs = _assignment_costs(ws, spec, choice)
    assert fp.bound.cost_per_hour <= min(costs) + 1e-9
    assert fp.cost_per_hour >= fp.bound.cost_per_hour - 1e-9
    assert fp.cost_per_hour <= solve_fleet(ws, parse_fleet(spec), choice).cost_per_hour + 1e-9
    assert (fp.status == SolveStatus.OPTIMAL) == (fp.gap == pytest.approx(0.0))
    if fp.status == SolveStatus.OPTIMAL:  # the optimum of the scope, which holds every assignment's greedy plan
        assert fp.cost_per_hour <= min(costs) + 1e-9


def test_the_fleet_bound_by_box_pricing_is_below_every_assignments_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above ``MIP_MAX_ITEMS`` items a type is priced by box pricing (its bound holds wherever it stops): forced
    here on a small fleet, exact rounds run without the pricing MIP, and the bound stays below the verified
    plan of every assignment of workloads to types and the plan returned (here one GPU, below greedy's two)."""
    from igniter_opt.planner.exact import fleetcolgen

    monkeypatch.setattr(fleetcolgen, "MIP_MAX_ITEMS", 0)
    calls: list[str] = []
    monkeypatch.setattr(fleetcolgen, "price_mip", lambda *a, **k: calls.append("mip"))
    box = fleetcolgen.box_kappa
    monkeypatch.setattr(fleetcolgen, "box_kappa", lambda *a, **k: calls.append("box") or box(*a, **k))
    ws, spec, choice = _mix(2, 6), "h100:1.0,h200:1.25", BudgetChoice(LatencyBudget.TAIL)
    fp = solve_fleet(ws, parse_fleet(spec), choice, "exact", SolveOptions(time_limit_s=15))
    assert fp.bound is not None and "box" in calls and "mip" not in calls
    assert fp.bound.cost_per_hour <= min(_assignment_costs(ws, spec, choice)) + 1e-9
    assert fp.bound.cost_per_hour <= fp.cost_per_hour + 1e-9


def _parts_verified(fp: FleetPlan, ws: tuple[Workload, ...], choice: BudgetChoice) -> None:
    """Every workload on exactly one part, every part verified under its own type's profile."""
    served = [p.workload for part in fp.parts for p in {pl.workload: pl for _, pl in part.plan.placements()}.values()]
    assert sorted(served) == sorted(w.name for w in ws)
    for part in fp.parts:
        names = {p.workload for _, p in part.plan.placements()}
        model = parse_fleet(f"{part.gpu_type.name}:1").models[0]
        assert verify_plan(part.plan, make_problem(tuple(w for w in ws if w.name in names), model, choice)) == []
        assert part.gpu_type.max_count is None or part.plan.num_gpus <= part.gpu_type.max_count


def test_the_fleet_greedy_checks_each_workload_once_per_type_and_still_names_what_cannot_go(monkeypatch) -> None:
    """The problem checks are per workload: a part whose members were planned alone on its type skips them
    (they were half of the fleet greedy's time); a workload no type can serve is still named."""
    from igniter_opt import checks

    calls: list[int] = []
    real = checks.check_problem

    def counted(problem, **kwargs):
        calls.append(len(problem.workloads))
        return real(problem, **kwargs)

    monkeypatch.setattr(checks, "check_problem", counted)
    choice, fleet = BudgetChoice(LatencyBudget.TAIL), parse_fleet("h100:2.5,h200:3.4")
    fp = solve_fleet(PAPER, fleet, choice)
    _parts_verified(fp, PAPER, choice)
    assert calls and set(calls) == {1} and len(calls) <= len(PAPER) * len(fleet.types)
    with pytest.raises(ProblemError, match=r"workload\(s\) impossible can go nowhere"):
        solve_fleet((*PAPER[:3], Workload("impossible", "vgg19", 0.5, 200.0)), fleet, choice)


@pytest.mark.parametrize(("seed", "spec"), [(1, "h100:1.0,h200:1.25"), (5, "h100:2.0,h200:1.0"),
                                            (7, "h100:1.0:1,h200:1.6")])
def test_the_exact_fleet_plan_is_never_worse_than_the_fleet_greedys(seed: int, spec: str) -> None:
    """The fleet master starts from the fleet greedy's plan and keeps only a cheaper verified one."""
    ws, choice = _mix(seed, 10), BudgetChoice(LatencyBudget.IGNITER)
    greedy = solve_fleet(ws, parse_fleet(spec), choice)
    exact = solve_fleet(ws, parse_fleet(spec), choice, "exact", SolveOptions(time_limit_s=8))
    assert exact.cost_per_hour <= greedy.cost_per_hour + 1e-9
    assert exact.bound is not None and exact.bound.cost_per_hour <= exact.cost_per_hour + 1e-9
    _parts_verified(exact, ws, choice)


def test_the_count_bound_proves_one_h200_cheaper_than_every_h100_plan() -> None:
    """Ten workloads that one H200 serves: the Lagrangian bound over both types stays at 1.0 per hour (a
    fractional H100 plan costs less; it ended there, feasible, before the count bound), but bounded set of
    types by set of types, the H100 alone needs two GPUs (2.0) and one of each costs 2.25, so the H200 at 1.25
    is proven optimal."""
    ws, choice = _mix(5, 10), BudgetChoice(LatencyBudget.IGNITER)
    fp = solve_fleet(ws, parse_fleet("h100:1.0,h200:1.25"), choice, "exact", SolveOptions(time_limit_s=20))
    assert fp.gpus_by_type() == {"h200": 1} and fp.bound is not None
    assert fp.status == SolveStatus.OPTIMAL and fp.bound.cost_per_hour == pytest.approx(1.25)
    assert any(n.startswith("bound per set of types in use") for n in fp.notes), fp.notes


def test_a_cheaper_mixed_count_vector_is_ruled_out_by_its_own_lp(monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight workloads under ``tail``: below greedy's three H100s (3.0 per hour) the cuts leave one H100 and one
    H200 (2.25); that vector's own LP (its counts as limits, a slack at cost 1) rules it out, and the three
    H100s are proven optimal. The bound stays below the verified plan of every assignment of workloads to types."""
    from igniter_opt.planner.exact import fleetcolgen

    tried: list[tuple[dict[int, int], bool]] = []
    exclude = fleetcolgen.exclude_counts

    def spy(fc: fleetcolgen.FleetColgen, counts: dict[int, int], deadline: float) -> bool:
        tried.append((dict(counts), exclude(fc, counts, deadline)))
        return tried[-1][1]

    monkeypatch.setattr(fleetcolgen, "exclude_counts", spy)
    ws, spec, choice = _mix(3, 8), "h100:1.0,h200:1.25", BudgetChoice(LatencyBudget.TAIL)
    fp = solve_fleet(ws, parse_fleet(spec), choice, "exact", SolveOptions(time_limit_s=20))
    assert ({0: 1, 1: 1}, True) in tried
    assert fp.gpus_by_type() == {"h100": 3} and fp.bound is not None and fp.status == SolveStatus.OPTIMAL
    assert any("count vector(s) of several types ruled out by their own LP" in n for n in fp.notes), fp.notes
    assert fp.bound.cost_per_hour <= min(_assignment_costs(ws, spec, choice)) + 1e-9


def test_the_fleet_master_keeps_the_count_limits() -> None:
    """With one H100 allowed, the rest goes to the H200: the plan, the bound's relaxation and the parts
    all keep the limit, and the bound never passes the unlimited fleet's cost from below."""
    ws, choice = _mix(2, 10), BudgetChoice(LatencyBudget.TAIL)
    capped = solve_fleet(ws, parse_fleet("h100:1.0:1,h200:1.25"), choice, "exact", SolveOptions(time_limit_s=8))
    assert capped.gpus_by_type().get("h100", 0) <= 1 and capped.bound is not None
    assert capped.bound.gpus_by_type["h100"] <= 1
    _parts_verified(capped, ws, choice)
    free = solve_fleet(ws, parse_fleet("h100:1.0,h200:1.25"), choice, "exact", SolveOptions(time_limit_s=8))
    assert free.bound is not None and free.bound.cost_per_hour <= capped.cost_per_hour + 1e-9


def test_one_small_workload_is_proven_optimal_on_the_cheaper_type_that_serves_it() -> None:
    ws = (Workload("r", "resnet50", 30.0, 100.0),)
    fp = solve_fleet(ws, parse_fleet("h100:2.0,h200:1.5"), BudgetChoice(LatencyBudget.IGNITER), "exact",
                     SolveOptions(time_limit_s=10))
    assert fp.gpus_by_type() == {"h200": 1}
    assert fp.status == SolveStatus.OPTIMAL and fp.bound.cost_per_hour == pytest.approx(1.5) and fp.gap == 0.0


def test_count_limits_no_relaxation_can_meet_are_named() -> None:
    from igniter_opt.planner.fleet import fleet_bound

    ws = tuple(Workload(f"v{i}", "vgg19", 20.0, 1000.0) for i in range(40))
    fleet, choice = parse_fleet("h100:1.0:1,h200:1.5:1"), BudgetChoice(LatencyBudget.IGNITER)
    with pytest.raises(ProblemError, match="count limits leave no plan"):  # the fleet greedy says it first
        solve_fleet(ws, fleet, choice, "exact", SolveOptions(time_limit_s=10))
    with pytest.raises(ProblemError, match="count limits cannot carry the workloads even with each workload's least "
                                           "share alone"):
        fleet_bound(ws, fleet, choice, [[True, True]] * len(ws))


def test_cli_exact_fleet_reports_its_bound_in_the_table_and_the_summary(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    res = CliRunner().invoke(cli, ["solve", *IGNITER, "--fleet", "h100:2.5,h200:3.4", "--planner", "exact",
                                   "--time-limit", "6", "--quiet", "-o", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads(out.read_text())
    solver = summary["solver"]
    assert solver["status"] in ("optimal", "feasible") and solver["bound_per_hour"] <= summary["cost"]["per_hour"]
    assert f"bound {solver['bound_per_hour']:.2f}/h, gap {100 * solver['gap']:.2f} %" in res.output
    assert "no --workloads given: planned the paper's 12-workload mix" in res.output  # as the single-type solve
    res = CliRunner().invoke(cli, ["compare", *IGNITER, "--fleet", "h100:2.5,h200:3.4", "--planners", "greedy,exact",
                                   "--time-limit", "6", "--quiet", "--format", "json"])
    rows = {r["plan"]: r for r in json.loads(res.stdout)}
    assert rows["fleet greedy"]["bound_per_hour"] is None and rows["fleet greedy"]["status"] == "heuristic"
    assert rows["fleet exact"]["bound_per_hour"] == pytest.approx(solver["bound_per_hour"])


# ---- replan over a fleet -----------------------------------------------------------------------
def _fleet_plan(tmp_path: Path, spec: str, workloads: Path, name: str = "plan.json") -> Path:
    out = tmp_path / name
    res = CliRunner().invoke(cli, ["solve", *IGNITER, "--fleet", spec, "-w", str(workloads), "-o", str(out)])
    assert res.exit_code == 0, res.output
    return out


def test_replanning_a_fleet_plan_for_the_same_rates_keeps_every_server(tmp_path: Path) -> None:
    current = _fleet_plan(tmp_path, "h100:2.5,h200:3.4", REPO / "examples" / "paper-table3.csv")
    res = CliRunner().invoke(cli, ["replan", "--current", str(current), "-w",
                                   str(REPO / "examples" / "paper-table3.csv"), "--format", "json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    before = json.loads(current.read_text())
    assert out["fleet"]["cost"] == before["cost"]
    for diff in out["diffs"].values():
        assert diff["summary"]["kept"] == len(diff["placements"]) == 12 and diff["summary"]["restarts"] == 0


def test_replan_keeps_running_workloads_on_their_type_and_sends_new_ones_where_they_cost_least(tmp_path: Path) -> None:
    """A single-type H100 plan replanned over a fleet where the H200 is cheaper: what runs stays on the H100,
    the new workload goes to the H200; every part written verifies under its type's model, with its diff."""
    (tmp_path / "w.csv").write_text("name,model,slo_ms,rate_rps\nres,resnet50,30,300\nbert,bert_base,30,300\n")
    (tmp_path / "w2.csv").write_text("name,model,slo_ms,rate_rps\nres,resnet50,30,400\nbert,bert_base,30,300\n"
                                     "vit,vit_b_16,40,200\n")
    res = CliRunner().invoke(cli, ["solve", *IGNITER, "-w", str(tmp_path / "w.csv"), "-p", "h100", "-o",
                                   str(tmp_path / "a.json")])
    assert res.exit_code == 0, res.output
    out = tmp_path / "new.json"
    res = CliRunner().invoke(cli, ["replan", "--current", str(tmp_path / "a.json"), "-w", str(tmp_path / "w2.csv"),
                                   "--fleet", "h100:1.0,h200:0.9", "-o", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads(out.read_text())
    parts = {t["type"]: read_plan(tmp_path / t["plan"]) for t in summary["types"]}
    assert {p.workload for _, p in parts["h100"].placements()} == {"res", "bert"}
    assert {p.workload for _, p in parts["h200"].placements()} == {"vit"}
    for t in summary["types"]:
        assert CliRunner().invoke(cli, ["verify", str(tmp_path / t["plan"])]).exit_code == 0
        assert (tmp_path / t["plan"]).with_suffix(".diff.json").is_file()
    assert summary["cost"]["per_hour"] == pytest.approx(parts["h100"].num_gpus * 1.0 + parts["h200"].num_gpus * 0.9)


@pytest.mark.parametrize(("extra", "msg"), [
    (["--fleet", "h200:1"], "runs on GPU type 'h100', which the fleet (h200) lacks; add it to --fleet"),
    (["--fleet", "h100:1:1"], "need 2 GPUs of it after the replan (limit 1)"),
    (["--fleet", "h100:1", "-p", "h100"], "--profile goes with a single-type plan"),
])
def test_replan_over_a_fleet_bad_input(tmp_path: Path, extra: list[str], msg: str) -> None:
    res = CliRunner().invoke(cli, ["solve", *IGNITER, "-p", "h100", "-o", str(tmp_path / "a.json")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(cli, ["replan", "--current", str(tmp_path / "a.json"), "-w",
                                   str(REPO / "examples" / "paper-table3.csv"), *extra, "-o", str(tmp_path / "n.json")])
    assert res.exit_code == 1 and msg in res.output, res.output
    assert not (tmp_path / "n.json").exists()


def test_a_fleet_summary_without_its_parts_is_refused(tmp_path: Path) -> None:
    current = _fleet_plan(tmp_path, "h100:2.5,h200:3.4", REPO / "examples" / "paper-table3.csv")
    for t in json.loads(current.read_text())["types"]:
        (tmp_path / t["plan"]).unlink()
    res = CliRunner().invoke(cli, ["replan", "--current", str(current), "-w",
                                   str(REPO / "examples" / "paper-table3.csv")])
    assert res.exit_code == 1 and "is not beside it" in res.output


# ---- replan-trace over a fleet -----------------------------------------------------------------
def test_replan_trace_over_a_fleet_writes_every_strategy_and_step(tmp_path: Path) -> None:
    out = tmp_path / "job"
    res = CliRunner().invoke(cli, ["replan-trace", "--trace", str(REPO / "examples" / "trace_paper_mix.csv"),
                                   "--fleet", "h100:1.0,h200:1.25", "--every", "43200", "-o", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    import csv

    rows = list(csv.DictReader((out / "steps.csv").open()))
    assert [(r["strategy"], r["step"]) for r in rows] == [(s, str(k)) for s in ("replan", "resolve", "peak")
                                                          for k in (0, 1)]
    assert all(r["predicted_misses"] == "0" for r in rows)  # every step planned for its interval's peaks
    totals = json.loads((out / "comparison.json").read_text())["strategies"]
    for s in ("replan", "resolve", "peak"):
        mine = [r for r in rows if r["strategy"] == s]
        assert totals[s]["cost"] == pytest.approx(sum(float(r["cost_per_hour"]) * float(r["duration_s"]) / 3600
                                                      for r in mine))
        assert totals[s]["restarts"] == sum(int(r["restarts"]) for r in mine[1:])
    peak = [r for r in rows if r["strategy"] == "peak"]
    assert peak[0]["cost_per_hour"] == peak[1]["cost_per_hour"] and peak[1]["kept"] != "0"
    summary = json.loads((out / "replan" / "step_0001.json").read_text())
    for t in summary["types"]:
        assert CliRunner().invoke(cli, ["verify", str(out / "replan" / t["plan"])]).exit_code == 0
    res = CliRunner().invoke(cli, ["replan-trace", "--trace", str(REPO / "examples" / "trace_paper_mix.csv"),
                                   "--fleet", "h100:1.0", "-o", str(out)])
    assert res.exit_code == 1 and "is not empty: a fleet trace job does not resume" in res.output
    res = CliRunner().invoke(cli, ["replan-trace", "--trace", str(REPO / "examples" / "trace_paper_mix.csv"),
                                   "--fleet", "h100:1.0", "-p", "h200", "-o", str(tmp_path / "x")])
    assert res.exit_code == 1 and "--fleet and --profile exclude each other" in res.output


def test_skip_unservable_plans_the_rest_and_names_what_was_left_out(tmp_path: Path) -> None:
    (tmp_path / "w.csv").write_text("name,model,slo_ms,rate_rps\nfine,resnet50,30,200\nimpossible,vgg19,0.5,200\n")
    args = ["solve", *IGNITER, "-w", str(tmp_path / "w.csv"), "--fleet", "h100:1,h200:2"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1 and "or plan the rest with --skip-unservable" in res.output
    res = CliRunner().invoke(cli, [*args, "--skip-unservable", "-o", str(tmp_path / "p.json")])
    assert res.exit_code == 0, res.output
    assert "left out, no type of the fleet can serve them: impossible" in res.output
    summary = json.loads((tmp_path / "p.json").read_text())
    assert summary["unserved"] == ["impossible"]
    placed = {p.workload for t in summary["types"] for _, p in read_plan(tmp_path / t["plan"]).placements()}
    assert placed == {"fine"}
    res = CliRunner().invoke(cli, ["solve", *IGNITER, "-w", str(tmp_path / "w.csv"), "--skip-unservable"])
    assert res.exit_code == 1 and "--skip-unservable goes with --fleet" in res.output


def test_the_fleet_master_replaces_a_costly_start_with_a_cheaper_verified_plan() -> None:
    """Started from every workload on the dear type, the integer master finds the cheaper plan (each
    type's own greedy packing is among its first columns); the plan comes back verified per type."""
    from igniter_opt.planner.exact.fleetplan import FleetTypeSpec, solve_exact_fleet

    ws, choice = _mix(3, 8), BudgetChoice(LatencyBudget.IGNITER)
    fleet = parse_fleet("h100:1.0,h200:3.0")
    dear = solve_fleet(ws, parse_fleet("h200:3.0"), choice).cost_per_hour
    types = [FleetTypeSpec(t.price_per_gpu_hour, t.max_count) for t in fleet.types]
    res = solve_exact_fleet(ws, types, lambda t, mine: make_problem(mine, fleet.models[t], choice),
                            [[True, True]] * len(ws), [[], list(range(len(ws)))], dear, SolveOptions(time_limit_s=16),
                            time.perf_counter())
    assert res.plans is not None and res.message.startswith("fleet master: ")
    cost = sum(p.num_gpus * t.price_per_gpu_hour for p, t in zip(res.plans, fleet.types, strict=True) if p)
    assert cost < dear and res.bound_per_hour <= cost + 1e-9
    names = [pl.workload for p in res.plans if p for pl in {q.workload: q for _, q in p.placements()}.values()]
    assert sorted(names) == sorted(w.name for w in ws)
    for plan, model in zip(res.plans, fleet.models, strict=True):
        if plan is not None:
            mine = {q.workload for _, q in plan.placements()}
            assert verify_plan(plan, make_problem(tuple(w for w in ws if w.name in mine), model, choice)) == []


def test_a_workloads_solo_share_is_its_solo_plans_share() -> None:
    """The fleet greedy's solo costs come from ``PartPlans.solo_share`` without assembling the plans: the
    same share as the plan of the workload alone, and None where the type cannot serve it."""
    from igniter_opt.planner.fleet import PartPlans

    ws = (*_mix(3, 8), Workload("tight", "vgg19", 1.0, 100.0))
    fleet = parse_fleet("h100:2.5,h200:3.4")
    choice = BudgetChoice(LatencyBudget.IGNITER)
    fast, full = PartPlans(fleet, choice, "greedy", SolveOptions()), PartPlans(fleet, choice, "greedy", SolveOptions())
    served = 0
    for w in ws:
        for t in range(2):
            share, plan = fast.solo_share(t, w), full(t, (w,))
            assert share == (None if plan is None else plan.total_share_pct)
            served += plan is not None
    assert 0 < served < 2 * len(ws)  # both answers are exercised
    # members checked alone need no second check: the same part (its wall time aside)
    assert fast(0, ws[:3]).gpus == full(0, ws[:3]).gpus


def test_least_shares_stop_at_their_deadline_and_the_bound_still_holds() -> None:
    """Past its deadline ``least_gpus`` leaves the cells it did not reach at 0, says how many, and the share
    relaxation over them bounds no higher than over the full table (a note says it was cut)."""
    from igniter_opt.planner.fleet import LEAST_CHUNK, fleet_bound, least_gpus

    ws = _mix(5, LEAST_CHUNK + 10)
    fleet, choice = parse_fleet("h100:2.5,h200:3.4"), BudgetChoice(LatencyBudget.IGNITER)
    servable = [[True, j % 7 != 0] for j in range(len(ws))]
    full, none_left = least_gpus(ws, fleet, choice, servable)
    assert none_left == 0 and all(v > 0 for row in full for v in row if math.isfinite(v))
    cut, left = least_gpus(ws, fleet, choice, servable, deadline=0.0)
    assert left == sum(map(sum, servable))
    assert all((v == 0.0) if ok else math.isinf(v) for row, oks in zip(cut, servable, strict=True)
               for v, ok in zip(row, oks, strict=True))
    notes: list[str] = []
    weak = fleet_bound(ws, fleet, choice, servable, deadline=0.0, notes=notes)
    strong = fleet_bound(ws, fleet, choice, servable, need=full)
    assert weak.cost_per_hour <= strong.cost_per_hour and strong.cost_per_hour > 0
    assert "pairs counted at 0" in notes[0]


def test_the_fleet_greedys_search_stops_at_the_time_limit() -> None:
    """``--time-limit`` bounds the fleet greedy's local search too (at 1000 workloads it ran for more than
    14 minutes): cut short, it returns the best verified assignment met, and a note says so."""
    ws, choice, fleet = _mix(2, 40), BudgetChoice(LatencyBudget.IGNITER), parse_fleet("h100:2.5,h200:3.4")
    whole = solve_fleet(ws, fleet, choice, "greedy", SolveOptions(time_limit_s=60))
    cut = solve_fleet(ws, fleet, choice, "greedy", SolveOptions(time_limit_s=0.3))
    assert not whole.notes and whole.wall_s > 0.3  # the search needs longer than the short limit
    assert len(cut.notes) == 1 and "local search stopped at the time limit (0.3 s)" in cut.notes[0]
    _parts_verified(cut, ws, choice)
