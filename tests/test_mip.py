"""The exact planner: model structure, exactness of the linear rows, brute force, fallbacks."""

from __future__ import annotations

import itertools
import math
import sys
import time

import numpy as np
import pytest
from conftest import PROFILES_AT_HAND
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from igniter_opt.domain import LatencyBudget, PlanningProblem, Workload
from igniter_opt.errors import ProblemError, SolverUnavailableError
from igniter_opt.perfmodel import PerformanceModel
from igniter_opt.placement import Demand, Packing, gpu_of, max_units, verify_plan
from igniter_opt.placement.serving import serving_model_for
from igniter_opt.planner import exact as mip
from igniter_opt.planner import greedy, run_planner
from igniter_opt.planner.exact import classbound, colgen
from igniter_opt.planner.exact import data as mip_data
from igniter_opt.planner.exact import highs as mip_solve
from igniter_opt.solver import SolveOptions, SolveStatus

pyo = pytest.importorskip("pyomo.environ", reason="the exact planner needs pyomo")
pytest.importorskip("highspy", reason="the exact planner needs highspy")

MODELS = ("alexnet", "resnet50", "vgg19", "ssd")


# ---- helpers ---------------------------------------------------------------------------------
def _problem(perf: PerformanceModel, rows: list[tuple[str, float, float]],
             budget: LatencyBudget = LatencyBudget.IGNITER, margin: float = 0.1) -> PlanningProblem:
    wl = tuple(Workload(f"w{i}", m, slo, rate) for i, (m, slo, rate) in enumerate(rows))
    return PlanningProblem(wl, perf, budget, margin)


def _rows_accept(m, assignment: dict[int, int]) -> bool:
    """Put demand d on GPU 0 with config assignment[d]; True if every row of the model holds."""
    data = m.data
    hw = data.problem.perf_model.hardware
    for idx in m.x:
        m.x[idx].set_value(0)
    for d, k in assignment.items():
        m.x[d, 0, k].set_value(1)
    for g in m.GPUS:
        mem = [(d, k) for d, k in assignment.items()] if g == 0 else []
        m.open[g].set_value(1 if mem else 0)
        m.n[g].set_value(len(mem), skip_validation=True)
        m.cache[g].set_value(sum(data.demands[d].configs[k].cache for d, k in mem))
        floor = hw.power_floor_w if mem else 0.0  # a busy GPU pays the shared floor once
        m.power[g].set_value(hw.idle_power_w + floor + sum(data.demands[d].configs[k].power_w for d, k in mem))
        if hasattr(m, "shared"):  # the binary lets a lone workload have no delay, as the model says
            m.shared[g].set_value(1 if len(mem) >= 2 else 0)
            m.sched[g].set_value(max(0.0, hw.alpha_sch * len(mem) + hw.beta_sch) if len(mem) >= 2 else 0.0,
                                 skip_validation=True)
        else:
            m.sched[g].set_value(max(0.0, hw.alpha_sch * len(mem) + hw.beta_sch), skip_validation=True)
    for v in m.component_data_objects(pyo.Var):
        if (v.lb is not None and v.value < v.lb - 1e-9) or (v.ub is not None and v.value > v.ub + 1e-9):
            return False
    for c in m.component_data_objects(pyo.Constraint, active=True):
        body = pyo.value(c.body)
        if c.has_ub() and body > pyo.value(c.upper) + 1e-9:
            return False
        if c.has_lb() and body < pyo.value(c.lower) - 1e-9:
            return False
    return True


def _exact_slack(problem: PlanningProblem, m, assignment: dict[int, int]) -> float:
    """min over members of (limit - latency) / limit and (thr - rate) / rate under the exact model."""
    perf = problem.perf_model
    data = m.data
    slots, meta = [], []
    for d, k in assignment.items():
        md = data.demands[d]
        cfg = md.configs[k]
        slots.append((md.demand.workload.model, cfg.batch, cfg.units * perf.unit_pct))
        meta.append((md.demand, cfg))
    worst = math.inf
    rule = serving_model_for(problem)
    for (lat, thr), (dem, cfg) in zip(perf.predict_gpu(slots), meta, strict=True):
        limit = rule.limit(dem.workload.slo_ms, dem.rate_rps, cfg.batch, cfg.queue_delay_ms)
        worst = min(worst, (limit - lat) / limit, (thr - dem.rate_rps) / dem.rate_rps)
    return worst


def _brute_force(problem: PlanningProblem) -> tuple[int, float]:
    """(GPUs, total share %) of the best plan by enumeration over the full (batch, units) grid."""
    perf = problem.perf_model
    cap = max_units(perf)
    demands = greedy.initial_demands(problem)
    rule = serving_model_for(problem)
    grids = []
    for d in demands:
        bmax = mip.batch_range(perf, problem, d)
        t = mip.config_table(perf, rule, d, bmax, cap)
        ok = np.flatnonzero(t.solo_ok)
        grids.append([(int(t.batch[j]), int(t.units[j]), float(t.limit[j])) for j in ok])
    n = len(demands)
    midx = [perf.model_index(d.workload.model) for d in demands]

    def best_group(group: tuple[int, ...]) -> float:
        combos = np.array(list(itertools.product(*[range(len(grids[i])) for i in group])))
        units = np.array([[grids[i][c][1] for i, c in zip(group, row, strict=True)] for row in combos])
        keep = units.sum(axis=1) <= cap
        combos, units = combos[keep], units[keep]
        if combos.size == 0:
            return math.inf
        b = np.array([[grids[i][c][0] for i, c in zip(group, row, strict=True)] for row in combos], float)
        lim = np.array([[grids[i][c][2] for i, c in zip(group, row, strict=True)] for row in combos])
        rate = np.array([[demands[i].rate_rps for i in group]] * len(combos))
        mi = np.array([[midx[i] for i in group]] * len(combos))
        lat, thr = perf.predict_padded(mi, b, units * perf.unit_pct)
        feas = np.all((lat <= lim) & (thr >= rate), axis=1)
        return float(units[feas].sum(axis=1).min()) if feas.any() else math.inf

    def partitions(items: list[int]):
        if not items:
            yield []
            return
        first, rest = items[0], items[1:]
        for p in partitions(rest):
            for i in range(len(p)):
                yield p[:i] + [[first, *p[i]]] + p[i + 1:]
            yield [[first], *p]

    best = (math.inf, math.inf)
    cache: dict[tuple[int, ...], float] = {}
    for part in partitions(list(range(n))):
        total = 0.0
        for grp in part:
            key = tuple(sorted(grp))
            if key not in cache:
                cache[key] = best_group(key)
            total += cache[key]
        if math.isfinite(total):
            best = min(best, (len(part), total))
    return best[0], best[1] * perf.unit_pct


# ---- structure -------------------------------------------------------------------------------
def test_build_model_is_inspectable_without_solving(v100_model: PerformanceModel, paper_workloads) -> None:
    problem = PlanningProblem(paper_workloads, v100_model)
    m = mip.build_model(mip.prepare(problem))
    data = m.data
    greedy_gpus = run_planner(problem, "greedy").plan.num_gpus
    assert data.num_gpus == greedy_gpus == len(m.GPUS)  # the greedy plan's GPU count bounds the slots
    for name in ("one_gpu_per_demand", "gpu_share_capacity", "demand_needs_open_gpu", "gpu_members", "gpu_cache",
                 "gpu_power", "sched_delay", "gpu_time_budget", "gpu_time_budget_throttled",
                 "interference_tolerance", "gpu_open_order", "gpu_cost", "total_share"):
        assert hasattr(m, name), name
    assert len(m.one_gpu_per_demand) == len(data.demands) == 12
    assert m.gpu_cost.active and not m.total_share.active
    # symmetry breaking: demand at position d may only use GPUs 0..d
    assert all(g <= d for d, g, _ in m.x)
    # every demand keeps the greedy configuration, so the MIP start is in the model
    for d, (g, k) in data.warm.items():
        assert (d, g, k) in m.x
    # candidate configurations are pruned: none is dominated by another of the same demand
    assert all(len(md.configs) < 40 * 16 for md in data.demands)
    assert m.build_s > 0


def test_greedy_start_satisfies_every_row(any_model: PerformanceModel, paper_workloads) -> None:
    v100_model = any_model
    problem = PlanningProblem(paper_workloads, v100_model)
    m = mip.build_model(mip.prepare(problem))
    mip.set_warm_start(m, m.data)
    bad = []
    for c in m.component_data_objects(pyo.Constraint, active=True):
        body = pyo.value(c.body)
        if (c.has_ub() and body > pyo.value(c.upper) + 1e-9) or (c.has_lb() and body < pyo.value(c.lower) - 1e-9):
            bad.append(c.name)
    assert bad == []


def test_greedy_start_satisfies_every_row_with_a_shared_power_floor(paper_workloads) -> None:
    """The shipped H100 profile pays its power floor once per busy GPU; so must the MIP's power rows."""
    from pathlib import Path

    from igniter_opt.perfmodel import load_profile

    h100 = load_profile(Path(__file__).resolve().parents[1] / "profiles" / "h100")
    assert h100.hardware.power_floor_w > 0
    for scale in (1.0, 6.0):
        wl = tuple(Workload(w.name, w.model, w.slo_ms, w.rate_rps * scale) for w in paper_workloads)
        m = mip.build_model(mip.prepare(PlanningProblem(wl, h100)))
        mip.set_warm_start(m, m.data)
        bad = [c.name for c in m.component_data_objects(pyo.Constraint, active=True)
               if (c.has_ub() and pyo.value(c.body) > pyo.value(c.upper) + 1e-9)
               or (c.has_lb() and pyo.value(c.body) < pyo.value(c.lower) - 1e-9)]
        assert bad == [], (scale, bad[:3])


# ---- the linear rows are never optimistic (and, on the V100, not pessimistic either) ----------
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(st.tuples(st.sampled_from(MODELS), st.integers(15, 60), st.integers(50, 500)),
                  min_size=1, max_size=4),
    seed=st.integers(0, 2**31 - 1),
)
# found by this test (V100): ssd at batch 4 on the whole GPU; the rows of its other configurations, off,
# were violated by the safety margin at the cache that configuration brings (their big-M lacked the margin)
@example(rows=[("ssd", 29, 255)], seed=0)
def test_linear_rows_accept_only_what_the_exact_model_accepts(any_model: PerformanceModel, rows, seed) -> None:
    v100_model = any_model
    problem = _problem(v100_model, [(m, float(s), float(r)) for m, s, r in rows])
    data = mip.prepare(problem)
    m = mip.build_model(data)
    rng = np.random.default_rng(seed)
    for _ in range(8):  # several random co-locations of every demand on one GPU
        assignment = {d: int(rng.integers(len(md.configs))) for d, md in enumerate(data.demands)}
        total = sum(data.demands[d].configs[k].units for d, k in assignment.items())
        accepted = _rows_accept(m, assignment)
        slack = _exact_slack(problem, m, assignment)
        if accepted:
            assert slack >= -1e-9, f"the MIP accepts a co-location the exact model rejects (slack {slack})"
        elif total <= data.cap_units and slack > 1e-3:
            # alpha_sch + beta_sch < 0 on the V100, so the rows are exact up to the safety margin
            pytest.fail(f"the MIP rejects a co-location the exact model accepts with slack {slack:.4f}")


# ---- optimality --------------------------------------------------------------------------------
TINY = [
    [("resnet50", 20.0, 150.0), ("vgg19", 30.0, 120.0), ("alexnet", 12.0, 300.0)],
    [("ssd", 30.0, 60.0), ("vgg19", 24.0, 150.0), ("resnet50", 24.0, 200.0)],
    [("vgg19", 20.0, 200.0), ("vgg19", 22.0, 180.0), ("ssd", 40.0, 50.0)],
]


# On the H100 the V100's instances fit one GPU with so many candidates that enumeration takes
# minutes: these are tight enough to need 2-3 GPUs and few configurations each.
TINY_H100 = [
    [("resnet50", 5.0, 2274.0), ("ssd", 13.0, 1258.0), ("ssd", 11.0, 2056.0)],
    [("vgg19", 6.0, 1189.0), ("resnet50", 9.0, 878.0), ("ssd", 6.0, 1583.0)],
    [("vgg19", 7.0, 840.0), ("ssd", 11.0, 1601.0), ("ssd", 6.0, 1599.0)],
]


@pytest.mark.parametrize(("profile", "rows"), [*(("v100", r) for r in TINY if "v100" in PROFILES_AT_HAND),
                                              *(("h100", r) for r in TINY_H100)])
def test_mip_equals_brute_force_on_tiny_instances(request: pytest.FixtureRequest, profile: str, rows) -> None:
    problem = _problem(request.getfixturevalue(f"{profile}_model"), rows)
    plan = mip.solve(problem, SolveOptions(time_limit_s=30, mip_rel_gap=0.0))
    assert plan.solver.status == "optimal"
    assert verify_plan(plan, problem) == []
    gpus, share = _brute_force(problem)
    assert (plan.num_gpus, plan.total_share_pct) == (gpus, pytest.approx(share))


@pytest.mark.parametrize(("profile", "rows"), [*(("v100", r) for r in TINY if "v100" in PROFILES_AT_HAND),
                                              *(("h100", r) for r in TINY_H100)])
def test_column_generation_agrees_with_brute_force_on_tiny_instances(request: pytest.FixtureRequest, profile: str,
                                                                     rows) -> None:
    """Set partitioning's scope holds every one-server plan (and replica splits too): its plan is
    verified and never has more GPUs than brute force's optimum, and its bound never exceeds it."""
    problem = _problem(request.getfixturevalue(f"{profile}_model"), rows)
    plan = mip.solve(problem, SolveOptions(time_limit_s=30, mip_rel_gap=0.0), formulation="columns")
    assert verify_plan(plan, problem) == []
    gpus, _ = _brute_force(problem)
    assert plan.num_gpus <= gpus
    assert plan.solver.bound is not None and plan.solver.bound <= gpus + 1e-9
    assert plan.solver.status == "optimal"  # tiny instances: the LP bound closes the gap
    setup = colgen.prepare_colgen(problem, serving_model_for(problem), greedy.place(
        problem.perf_model, greedy.initial_demands(problem)))
    res = classbound.class_bound(setup.items, problem.perf_model.hardware, setup.space.cap_units,
                                 colgen.piece_rows(setup.pieces), time.perf_counter() + 30)
    assert res is not None and res.value <= gpus + 1e-9  # the member-class bound too (with its pair columns)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.sampled_from(MODELS), st.integers(20, 60), st.integers(50, 400)),
                     min_size=3, max_size=7))
def test_exact_never_worse_than_greedy(any_model: PerformanceModel, rows) -> None:
    v100_model = any_model
    problem = _problem(v100_model, [(m, float(s), float(r)) for m, s, r in rows])
    g = run_planner(problem, "greedy").plan
    out = run_planner(problem, "exact", SolveOptions(time_limit_s=3))
    assert out.violations == ()
    assert out.plan.num_gpus <= g.num_gpus
    assert out.plan.solver.bound is not None and out.plan.solver.bound <= out.plan.cost_per_hour + 1e-9


@pytest.fixture(scope="module")
def paper_exact(v100_model: PerformanceModel, paper_workloads):
    out = {}
    # full budget: the count is proven in about 2 s; the time left goes to the share, which is not asserted
    for key, budget, margin, limit_s in (("igniter", LatencyBudget.IGNITER, 0.1, 60), ("full0", LatencyBudget.FULL,
                                                                                       0.0, 8)):
        problem = PlanningProblem(paper_workloads, v100_model, budget, margin)
        out[key] = (problem, run_planner(problem, "exact", SolveOptions(time_limit_s=limit_s)))
    return out


def test_paper_mix_igniter_budget_six_gpus_proven_optimal(paper_exact) -> None:
    _, outcome = paper_exact["igniter"]
    plan = outcome.plan
    assert outcome.violations == ()
    assert plan.num_gpus == 6 and plan.solver.status == "optimal"
    assert plan.solver.bound == pytest.approx(6.0) and plan.solver.gap == pytest.approx(0.0)
    assert plan.total_share_pct <= 472.5  # never more share than the greedy plan's
    assert plan.solver.build_s is not None and plan.solver.solve_s is not None


def test_paper_mix_full_budget_margin_zero_fits_five_gpus(paper_exact) -> None:
    _, outcome = paper_exact["full0"]
    plan = outcome.plan
    assert outcome.violations == ()
    assert plan.num_gpus == 5 and plan.solver.status == "optimal"
    assert plan.solver.bound == pytest.approx(5.0)
    assert "fewer than greedy" in plan.solver.message


# ---- fallbacks and errors -----------------------------------------------------------------------
class _TC:
    def __init__(self, name: str) -> None:
        self.name = name


def test_time_limit_without_incumbent_returns_greedy_plan(any_model, paper_workloads, monkeypatch) -> None:
    v100_model = any_model
    monkeypatch.setattr(mip_solve, "_run", lambda *a, **k: (_TC("maxTimeLimit"), None, 5.0))
    problem = PlanningProblem(paper_workloads, v100_model)
    out = run_planner(problem, "exact", SolveOptions(time_limit_s=1))
    assert out.violations == ()
    assert out.plan.planner == "exact" and out.plan.num_gpus == run_planner(problem, "greedy").plan.num_gpus
    assert out.plan.solver.status == str(SolveStatus.NO_SOLUTION)
    assert "greedy plan" in out.plan.solver.message and "no incumbent" in out.plan.solver.message
    if v100_model.name == "v100":
        assert out.plan.solver.bound == pytest.approx(5.0)  # the solver's bound is still reported


def test_solver_error_returns_greedy_plan_with_reason(any_model, paper_workloads, monkeypatch) -> None:
    v100_model = any_model
    def boom(*a, **k):
        raise RuntimeError("HiGHS exploded")

    monkeypatch.setattr(mip_solve, "_run", boom)
    problem = PlanningProblem(paper_workloads, v100_model)
    plan = mip.solve(problem, SolveOptions(time_limit_s=1))
    assert plan.solver.status == "error" and plan.num_gpus == run_planner(problem, "greedy").plan.num_gpus
    assert "HiGHS exploded" in plan.solver.message and "greedy plan" in plan.solver.message
    assert verify_plan(plan, problem) == []


def test_infeasible_status_is_flagged_as_a_defect(any_model, paper_workloads, monkeypatch) -> None:
    v100_model = any_model
    monkeypatch.setattr(mip_solve, "_run", lambda *a, **k: (_TC("infeasible"), None, None))
    plan = mip.solve(PlanningProblem(paper_workloads, v100_model), SolveOptions(time_limit_s=1))
    assert plan.solver.status == "infeasible" and "defect" in plan.solver.message


def test_missing_highspy_raises_with_install_hint(any_model, paper_workloads, monkeypatch) -> None:
    v100_model = any_model
    monkeypatch.setitem(sys.modules, "highspy", None)
    with pytest.raises(SolverUnavailableError, match="pip install"):
        mip.solve(PlanningProblem(paper_workloads, v100_model), SolveOptions(time_limit_s=1))


def test_unplaceable_demand_says_which_and_why(any_model) -> None:
    v100_model = any_model
    # a demand no configuration can serve even alone (the greedy split would avoid it; inject it)
    rate = 5000.0 if v100_model.name == "v100" else 20000.0
    problem = _problem(v100_model, [("vgg19", 40.0, rate)])
    demand = Demand(problem.workloads[0], rate, 4, 40, 20.0)
    expected = rf"'w0' \(vgg19.*cannot be placed even alone.*throughput .* < rate {rate:g}"
    with pytest.raises(ProblemError, match=expected):
        mip.prepare(problem, start=Packing((demand,), (gpu_of([demand], [0], [40]),)))


def test_exact_planner_names_the_workload_whose_slo_is_too_tight(any_model) -> None:
    v100_model = any_model
    problem = _problem(v100_model, [("alexnet", 20.0, 100.0), ("ssd", 2.0 if v100_model.name == "v100" else 1.0, 50.0)])
    with pytest.raises(ProblemError, match=r"'w1' \(ssd\): SLO [12] ms cannot be met even alone.*smallest SLO"):
        mip.solve(problem, SolveOptions(time_limit_s=5))


def test_slo_no_share_can_meet_is_reported_before_solving(any_model) -> None:
    v100_model = any_model
    problem = _problem(v100_model, [("ssd", 1.0, 50.0)])
    with pytest.raises(ProblemError, match="'w0'.*cannot be met even alone"):
        run_planner(problem, "exact", SolveOptions(time_limit_s=5))


def test_termination_mapping() -> None:
    assert mip_solve._map_termination(_TC("optimal"), True) is SolveStatus.OPTIMAL
    assert mip_solve._map_termination(_TC("maxTimeLimit"), True) is SolveStatus.FEASIBLE
    assert mip_solve._map_termination(_TC("maxTimeLimit"), False) is SolveStatus.NO_SOLUTION
    assert mip_solve._map_termination(_TC("infeasibleOrUnbounded"), False) is SolveStatus.INFEASIBLE
    assert mip_solve._map_termination(_TC("error"), False) is SolveStatus.ERROR
    assert mip_solve._map_termination(_TC("somethingNew"), False) is SolveStatus.UNKNOWN


def test_never_costlier_than_greedy_even_when_the_start_is_split(any_model, paper_workloads, monkeypatch) -> None:
    v100_model = any_model
    # an absurd repair margin makes every greedy GPU unrepairable, so the MIP start has one GPU per
    # demand; the planner must still return nothing costlier than greedy's own 6-GPU plan
    monkeypatch.setattr(mip_data, "REPAIR_MARGIN_MS", 50.0)
    problem = PlanningProblem(paper_workloads, v100_model)
    data = mip.prepare(problem)
    greedy_gpus = run_planner(problem, "greedy").plan.num_gpus
    assert data.num_gpus == 12 and data.start_plan.num_gpus == greedy_gpus
    out = run_planner(problem, "exact", SolveOptions(time_limit_s=5))
    assert out.violations == ()
    assert out.plan.num_gpus <= greedy_gpus


@pytest.mark.parametrize("budget", [LatencyBudget.IGNITER, LatencyBudget.FULL])
def test_pruning_first_pass_removes_only_what_dominance_removes(any_model: PerformanceModel, budget) -> None:
    """The quick first pass of ``configs.prune`` changes nothing but its time: pruned with it or by the
    dominance test alone, the same configurations remain. Under the paper's budget every delay is NaN
    (apply's rule), which as a dict key never matched itself, so the pass once did nothing there."""
    from igniter_opt.planner.exact import configs, items, pieces

    sys.path.insert(0, "benchmarks")
    from instances import random_mix

    problem = PlanningProblem(random_mix(any_model, 30, 2), any_model, budget, 0.1)
    rule = serving_model_for(problem)
    start = greedy.place(any_model, greedy.initial_demands(problem))
    kinds = pieces.piece_types(problem, start.demands, items.fewest_replicas(problem, rule))
    bounds = items.build_items(problem, rule, kinds).bounds
    removed = 0
    for p in kinds:
        w = problem.workloads[p.workload]
        t = items.piece_table(problem, rule, w, p.rate_rps)
        c = any_model.models[w.model]
        idx, cr = np.flatnonzero(t.solo_ok), np.zeros(t.batch.size)
        args = (float(c.kernels_per_inference), c.idle_ms, c.alpha_cache, bounds)
        quick = configs.first_pass(t, idx, *args, cr)
        removed += idx.size - quick.size
        np.testing.assert_array_equal(configs.prune(t, *args), configs.undominated(t, idx, *args, cr))
    assert removed > 0


def test_least_units_from_the_tables_are_the_items_least(any_model: PerformanceModel) -> None:
    """The trivial bound and the fleet bound take each piece type's least units from the configuration
    tables, unpruned (``items.least_units_alone``); pruning keeps every piece type's fewest units, so they
    are the least over its items."""
    from igniter_opt.planner.exact import colgen, items, pieces

    sys.path.insert(0, "benchmarks")
    from instances import random_mix

    problem = PlanningProblem(random_mix(any_model, 30, 4), any_model, LatencyBudget.IGNITER, 0.1)
    rule = serving_model_for(problem)
    kinds = pieces.piece_types(problem, greedy.initial_demands(problem), items.fewest_replicas(problem, rule))
    built = items.build_items(problem, rule, kinds)
    over_items = np.array([built.table.units[idx].min() for idx in built.by_piece], float)
    np.testing.assert_array_equal(built.least_units, over_items)
    from_items = items.least_units(kinds, over_items)
    assert colgen.workload_least_units(problem, rule) == [from_items[i] for i in range(len(problem.workloads))]


def test_a_fleet_preparation_past_its_deadline_gives_up(any_model: PerformanceModel, monkeypatch) -> None:
    """Preparing the fleet master stops at its deadline inside a type's preparation (it checked only
    between types, and a 5 s limit at 1000 workloads over two types ended at 14 s)."""
    from igniter_opt.planner.exact import fleetcolgen, items

    sys.path.insert(0, "benchmarks")
    from instances import random_mix

    problem = PlanningProblem(random_mix(any_model, 30, 4), any_model, LatencyBudget.IGNITER, 0.1)
    real = items.piece_table
    calls: list[int] = []

    def slow(*args, **kwargs):
        calls.append(1)
        time.sleep(0.05)
        return real(*args, **kwargs)

    monkeypatch.setattr(items, "piece_table", slow)
    start = greedy.place(any_model, greedy.initial_demands(problem))
    x = fleetcolgen.FleetTypeInput(problem, tuple(range(len(problem.workloads))), 1.0, None, start)
    t0 = time.perf_counter()
    assert fleetcolgen.prepare_fleet((x,), len(problem.workloads), 1.0, deadline=t0 + 0.5) is None
    assert time.perf_counter() - t0 < 0.5 + 0.2 and len(calls) < len(problem.workloads)


def test_resource_bound_equals_the_plain_lagrangian_evaluation() -> None:
    """The hull shortcut evaluates the same dual bound as trying every configuration for every lambda."""
    rng = np.random.default_rng(3)

    def plain(per_demand, cap):
        ratios = np.concatenate([v / u for u, v in per_demand] + [np.zeros(1)])
        return min(lam * cap + sum(max(0.0, float(np.max(v - lam * u))) for u, v in per_demand)
                   for lam in np.unique(np.clip(ratios, 0.0, None)))

    for _ in range(30):
        per_demand = []
        for _ in range(int(rng.integers(1, 8))):
            n = int(rng.integers(1, 300))
            per_demand.append((rng.integers(1, 66, size=n).astype(float), rng.normal(20.0, 30.0, size=n)))
        assert mip_data.resource_bound(per_demand, 65) == pytest.approx(plain(per_demand, 65), rel=1e-12, abs=1e-12)
