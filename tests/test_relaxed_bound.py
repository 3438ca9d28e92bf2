"""The relaxation's pricing bound (``planner.exact.relaxed``): never below a feasible configuration's
worth (brute force with the kernel's own check), never above the knapsack-on-units bound, and the
certified bound built on it never above a plan's GPUs."""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("highspy", reason="the exact planner needs highspy")

from igniter_opt.domain import LatencyBudget, PlanningProblem, Workload
from igniter_opt.perfmodel import PerformanceModel, load_profile
from igniter_opt.placement.serving import serving_model_for
from igniter_opt.planner import exact, greedy
from igniter_opt.planner.exact import classbound, colgen, pairs, relaxed, triples
from igniter_opt.planner.exact.columns import ColSlot, column_worth, evaluate
from igniter_opt.planner.exact.pricing import PricingResult
from igniter_opt.solver import SolveOptions

H200_PROFILE = Path(__file__).resolve().parents[1] / "profiles" / "h200"
# Small mixes: a few piece types each, small enough to enumerate their configurations.
SMALL_MIXES = {
    "h100": [("resnet50", 30, 300), ("alexnet", 20, 400), ("vgg19", 40, 150)],
    "h200": [("ssd", 50, 200), ("bert_base", 40, 150), ("vit_b_16", 30, 250)],  # ssd: L2-blind on the H200
    "v100": [("vgg19", 40, 300), ("ssd", 50, 60), ("resnet50", 30, 200)],
}
# A mix whose items reach the whole GPU.
HEAVY_H100 = [("vgg19", 20, 1200), ("resnet50", 15, 1500), ("alexnet", 10, 2500)]
# A V100 mix of large pieces: some triples of its piece types fit pairwise and not together.
HEAVY_V100 = [("vgg19", 40, 600), ("resnet50", 30, 900), ("ssd", 50, 100)]
# Per piece type, items enumerated: per batch its fewest units and up to this many more (by units).
ITEMS_PER_BATCH = 2
MAX_SLOTS = 3


def _problem(perf: PerformanceModel, rows, budget: LatencyBudget = LatencyBudget.IGNITER) -> PlanningProblem:
    ws = tuple(Workload(f"w{i}", m, float(slo), float(rate)) for i, (m, slo, rate) in enumerate(rows))
    return PlanningProblem(ws, perf, budget, 0.1)


def _setup(problem: PlanningProblem) -> colgen.ColgenSetup:
    start = greedy.place(problem.perf_model, greedy.initial_demands(problem))
    return colgen.prepare_colgen(problem, serving_model_for(problem), start)


@pytest.fixture(scope="module", params=["h100", "h200", "v100"])
def small(request: pytest.FixtureRequest) -> tuple[colgen.ColgenSetup, list]:
    """A small mix's setup and every feasible configuration (per the kernel) of a sample of its items."""
    name = request.param
    perf = load_profile(H200_PROFILE) if name == "h200" else request.getfixturevalue(f"{name}_model")
    setup = _setup(_problem(perf, SMALL_MIXES[name]))
    return setup, _feasible_columns(setup)


def _sample_items(setup: colgen.ColgenSetup) -> list[ColSlot]:
    tab = setup.items.table
    out = []
    for idx in setup.items.by_piece:
        for b in np.unique(tab.batch[idx]):
            mine = idx[tab.batch[idx] == b]
            ranked = mine[np.argsort(tab.units[mine], kind="stable")]
            for k in dict.fromkeys([*ranked[:ITEMS_PER_BATCH], ranked[-1]]):  # and its most units: GPUs filled
                d = None if math.isnan(tab.delay[k]) else float(tab.delay[k])
                out.append(ColSlot(int(tab.piece[k]), int(tab.batch[k]), int(tab.units[k]), d))
    return out


def _feasible_columns(setup: colgen.ColgenSetup) -> list:
    """Every multiset of up to ``MAX_SLOTS`` sampled items that fits in the units, judged by the kernel."""
    slots = _sample_items(setup)
    cap = setup.space.cap_units
    combos = [c for n in range(1, MAX_SLOTS + 1) for c in itertools.combinations_with_replacement(slots, n)
              if sum(s.units for s in c) <= cap]
    return [c for c in evaluate(setup.space, combos) if c is not None]


def _knapsack_on_units(setup: colgen.ColgenSetup, duals: np.ndarray) -> float:
    """max sum_t pi_t T_t over T_t <= count_t pieces at each type's least units, within the units."""
    cap = setup.space.cap_units
    best = np.zeros(cap + 1)
    for t, idx in enumerate(setup.items.by_piece):
        u = int(setup.items.table.units[idx].min())
        for _ in range(setup.pieces[t].count):
            best[u:] = np.maximum(best[u:], best[: cap + 1 - u] + max(0.0, float(duals[t])))
    return float(best[-1])


def test_the_relaxed_bound_is_never_below_a_feasible_configuration(small) -> None:
    setup, columns = small
    n = len(setup.pieces)
    assert len(columns) > 3 * n and max(len(c.slots) for c in columns) >= 2  # company was enumerated
    rng = np.random.default_rng(0)
    trials = [rng.random(n) for _ in range(30)] + [rng.random(n) * (rng.random(n) < 0.5) for _ in range(20)]
    for duals in trials:
        best = max(column_worth(c, duals) for c in columns)
        kappa = relaxed.relaxed_kappa(setup.relaxed, duals)
        assert math.isfinite(kappa)
        assert kappa >= best * (1 - 1e-12)
        assert kappa <= _knapsack_on_units(setup, duals) * (1 + 1e-6) + 1e-9


def test_the_bound_is_met_by_the_worth_of_a_configuration_at_its_own_duals(small) -> None:
    """Duals that credit exactly one feasible configuration's piece types: the bound must cover its worth."""
    setup, columns = small
    for col in columns[:: max(1, len(columns) // 60)]:
        duals = np.zeros(len(setup.pieces))
        for p, _ in col.coef:
            duals[p] = 1.0
        assert relaxed.relaxed_kappa(setup.relaxed, duals) >= column_worth(col, duals) * (1 - 1e-12)


def test_no_duals_are_worth_nothing_and_one_type_is_worth_its_dual(small) -> None:
    setup, _ = small
    n = len(setup.pieces)
    assert relaxed.relaxed_kappa(setup.relaxed, np.zeros(n)) == pytest.approx(0.0, abs=1e-9)
    one = np.zeros(n)
    one[0] = 2.5
    kappa = relaxed.relaxed_kappa(setup.relaxed, one)
    assert 2.5 <= kappa <= 2.5 * setup.pieces[0].count * (1 + 1e-6)


def test_a_probe_stops_only_when_kappa_is_at_least_what_was_useful(small) -> None:
    """``relaxed_bound`` with ``useful_below``: inf only when the full kappa is at least that (its probed
    level already is), else exactly the full kappa; the level it names is the one of the largest bound."""
    setup, _ = small
    n = len(setup.pieces)
    rng = np.random.default_rng(3)
    stopped = finished = 0
    for _ in range(30):
        duals = rng.random(n) * (rng.random(n) < 0.7)
        full = relaxed.relaxed_bound(setup.relaxed, duals)
        for scale in (0.98, 1.02):
            for probe in (full.level, 0):
                got = relaxed.relaxed_bound(setup.relaxed, duals, full.kappa * scale, probe)
                if math.isinf(got.kappa):
                    stopped += 1
                    assert scale < 1  # it stopped: kappa is at least what was useful
                else:
                    finished += 1
                    assert got.kappa == full.kappa and got.level == full.level
        if full.kappa > 0:  # at the largest bound's level, just below kappa: stops there
            assert math.isinf(relaxed.relaxed_bound(setup.relaxed, duals, full.kappa * 0.98, full.level).kappa)
        # above kappa it never stops, whichever level it probes
        assert relaxed.relaxed_bound(setup.relaxed, duals, full.kappa * 1.02, 0).kappa == full.kappa
    assert stopped and finished


def test_the_relaxed_bound_stops_at_its_deadline(small) -> None:
    """Past its deadline the relaxation gives no bound (inf, every use reads "none"); before it, the full one."""
    setup, _ = small
    duals = np.random.default_rng(4).random(len(setup.pieces))
    full = relaxed.relaxed_kappa(setup.relaxed, duals)
    assert math.isfinite(full)
    assert math.isinf(relaxed.relaxed_bound(setup.relaxed, duals, deadline=time.perf_counter() - 1.0).kappa)
    assert relaxed.relaxed_bound(setup.relaxed, duals, deadline=time.perf_counter() + 60.0).kappa == full
    state = colgen.ColgenState(colgen.initial_master(setup, 1))
    assert math.isinf(colgen.relaxed_round(setup, state, duals, deadline=time.perf_counter() - 1.0))
    assert state.bound == 0.0 and not state.converged and state.relaxed_skipped == 1


def test_a_skipped_relaxed_round_could_not_have_raised_the_bound(small) -> None:
    """``colgen.relaxed_round`` at random duals and certified bounds so far: where it stops early, the full
    kappa's Farley bound, rounded up, is no more than the bound it already had (the trivial one included)
    and does not prove the LP solved; where it does not, it raises the bound exactly as the full kappa does."""
    setup, _ = small
    n = len(setup.pieces)
    rng = np.random.default_rng(5)
    skipped = 0
    for _ in range(40):
        duals = rng.random(n) * (rng.random(n) < 0.8) * rng.uniform(0.2, 6.0)
        value = colgen.dual_value(setup.pieces, duals)
        full = relaxed.relaxed_kappa(setup.relaxed, duals)
        farley = value / max(1.0, full)
        # a bound so far around Farley's, or the whole GPU just below it (which it would raise)
        had = farley * rng.uniform(0.5, 1.5) if rng.random() < 0.5 else max(0.0, math.ceil(farley) - 1.0)
        state = colgen.ColgenState(colgen.initial_master(setup, 1), bound=had)
        before = max(setup.trivial_gpus, state.bound_gpus)
        kappa = colgen.relaxed_round(setup, state, duals)
        if math.isinf(kappa):
            skipped += 1
            assert math.ceil(farley - colgen.ROUND_EPS) <= before and full > 1.0 + colgen.IMPROVE_EPS
            assert not state.converged and state.bound == had
        else:
            assert kappa == full
            assert state.bound == max(had, farley)
            assert state.converged == (full <= 1.0 + colgen.IMPROVE_EPS)
    assert 0 < skipped < 40


def test_the_relaxation_earns_something_over_the_knapsack_on_units(h100_model) -> None:
    """Every piece worth 1: units alone would let a GPU hold 36 pieces of this mix; the L2 each
    member tolerates next to company holds the relaxation's bound well below that (what makes the
    certified bound useful)."""
    rows = [("resnet50", 30, 300), ("alexnet", 20, 400), ("vgg19", 40, 150), ("ssd", 50, 60),
            ("bert_base", 40, 200), ("vit_b_16", 40, 250)] * 2
    setup = _setup(_problem(h100_model, rows))
    duals = np.ones(len(setup.pieces))
    kappa = relaxed.relaxed_kappa(setup.relaxed, duals)
    assert kappa < 0.8 * _knapsack_on_units(setup, duals)


@pytest.mark.parametrize(("rows", "optimum"), [
    ([("vgg19", 40, 1098)], 2),  # test_exact_claims: greedy takes 3 GPUs, 2 verify and are optimal
    ([("resnet50", 30, 200), ("alexnet", 20, 300)], 1),
])
def test_the_relaxed_bound_alone_never_exceeds_the_optimum(v100_model, monkeypatch, rows, optimum) -> None:
    """Column generation with a pricing MIP that proves nothing: the bound comes from the relaxation only."""

    monkeypatch.setattr(colgen, "price_mip", lambda *a, **k: PricingResult(None, 0.0, math.inf, False))
    problem = _problem(v100_model, rows)
    setup = _setup(problem)
    state = colgen.ColgenState(colgen.initial_master(setup, 1))
    for _ in range(40):
        colgen.generate(setup, state, time.perf_counter() + 5, None)
        if state.converged:
            break
    assert state.relaxed_calls > 0
    assert state.bound <= optimum + 1e-9
    assert state.bound_gpus == optimum


def test_the_certified_bound_never_exceeds_a_verified_plan(any_model) -> None:
    mix = [("vgg19", 23.5, 57.0), ("ssd", 40.3, 260.0), ("vgg19", 37.2, 400.0), ("resnet50", 10.1, 763.0),
           ("vgg19", 11.7, 325.0), ("vgg19", 53.2, 279.0), ("alexnet", 25.0, 192.0), ("resnet50", 16.2, 421.0)]
    problem = _problem(any_model, mix)
    plan = exact.solve(problem, SolveOptions(time_limit_s=20), formulation="columns")
    s = plan.solver
    assert s.bound is not None and s.trivial_bound is not None
    assert s.trivial_bound <= s.bound <= plan.cost_per_hour + 1e-9


# ---- the member-class bound (``classbound``) ---------------------------------------------------------------
def _class_lp(setup: colgen.ColgenSetup) -> classbound.ClassLp:
    perf = setup.space.problem.perf_model
    lp = classbound.class_lp(setup.items.table, perf.hardware, setup.items.bounds, setup.space.cap_units)
    assert lp is not None and lp.n_classes > 1
    return lp


def _class_of(setup: colgen.ColgenSetup, lp: classbound.ClassLp, col) -> int:
    """The class a configuration of the kernel's belongs to: its member count, and the level of the least
    Cmax_k(m) of its members."""
    tab = setup.items.table
    key = {(int(tab.piece[i]), int(tab.batch[i]), int(tab.units[i])): i for i in range(len(tab.units))}
    members = [key[(s.piece, s.batch, s.units)] for s in col.slots]
    m = len(members)
    if m == 1:
        return int(np.flatnonzero(lp.members == 1)[0])
    perf = setup.space.problem.perf_model
    gamma = relaxed.cache_limits(tab, perf.hardware, setup.items.bounds, m)[members].min()
    mine = np.flatnonzero((lp.members == m) & (lp.floor_pct <= gamma))
    return int(mine[np.argmax(lp.floor_pct[mine])])


def _check_class_duality(setup: colgen.ColgenSetup, columns: list) -> None:
    lp = _class_lp(setup)
    tab, cap, n, k = setup.items.table, setup.space.cap_units, len(setup.pieces), lp.n_classes
    of = np.array([_class_of(setup, lp, c) for c in columns])
    worth_of = np.zeros((len(columns), n))  # configuration x piece type: pieces
    for r, col in enumerate(columns):
        for p, count in col.coef:
            worth_of[r, p] += count
    assert len({lp.members[c] for c in of}) >= 2
    rng = np.random.default_rng(5)
    for trial in range(60):
        pi = rng.random(n) * (rng.random(n) < 0.7)
        scale = 0.0 if trial < 10 else 10.0 ** rng.uniform(-4, 0)
        b, d = rng.random(k) * scale, rng.random(k) * scale * lp.l2_row
        kappa = classbound.class_kappas(lp, tab, cap, pi, b, d)
        assert (kappa[of] >= worth_of @ pi - 1e-9).all()


def test_every_feasible_configuration_is_worth_no_more_than_its_class_allows(small) -> None:
    """Weak duality of each class's one-GPU LP: at any pi, b, d >= 0, the class of every configuration the
    kernel accepts allows at least its worth (the bound's validity rests on it)."""
    _check_class_duality(*small)


def test_so_do_configurations_that_fill_a_gpu(h100_model) -> None:
    """The same on a heavy mix, whose configurations reach all of the GPU's units (the units row binds)."""
    setup = _setup(_problem(h100_model, HEAVY_H100))
    columns = _feasible_columns(setup)
    assert max(c.units for c in columns) == setup.space.cap_units
    _check_class_duality(setup, columns[:: max(1, len(columns) // 4000)] + [c for c in columns if c.units >= 60])
    res = classbound.class_bound(setup.items, h100_model.hardware, setup.space.cap_units,
                                 colgen.piece_rows(setup.pieces), time.perf_counter() + 30)
    assert res is not None and res.lp_value is not None and res.value == pytest.approx(res.lp_value, rel=1e-6)
    least = sum(colgen.least_units(setup.pieces, setup.items).values()) / setup.space.cap_units
    assert res.value > least + 0.05  # company costs units here: more than the pieces' least units alone


def test_the_class_bound_is_its_lps_value_and_never_above_a_plan(small) -> None:
    setup, _ = small
    problem = setup.space.problem
    rows = colgen.piece_rows(setup.pieces)
    res = classbound.class_bound(setup.items, problem.perf_model.hardware, setup.space.cap_units, rows,
                                 time.perf_counter() + 30)
    assert res is not None and res.status == "Optimal" and res.lp_value is not None
    assert res.value == pytest.approx(res.lp_value, rel=1e-6)  # the certificate is tight at the LP's optimum
    assert res.value >= sum(colgen.least_units(setup.pieces, setup.items).values()) / setup.space.cap_units - 1e-6
    plan = exact.solve(problem, SolveOptions(time_limit_s=20), formulation="columns")
    assert math.ceil(res.value - 1e-6) <= plan.num_gpus
    assert plan.solver.bound is not None and plan.solver.bound >= math.ceil(res.value - 1e-6)
    assert "member-class bound" in (plan.solver.message or "")


def _full_class_lp_value(lp: classbound.ClassLp, setup: colgen.ColgenSetup) -> float:
    """The class LP over all its columns at once, by HiGHS's simplex: what sifting must reach."""
    import highspy

    a, lower, upper, cost = classbound._model(lp, setup.items.table, colgen.piece_rows(setup.pieces),
                                              setup.space.cap_units)
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    n = a.shape[1]
    h.passModel(n, a.shape[0], a.nnz, 1, int(highspy.ObjSense.kMinimize), 0.0, cost, np.zeros(n),
                np.full(n, np.inf), lower, upper, a.indptr[:-1].astype(np.int32), a.indices.astype(np.int32),
                a.data, np.zeros(n, np.int32))
    h.run()
    assert h.modelStatusToString(h.getModelStatus()) == "Optimal"
    return float(h.getInfo().objective_function_value)


def _sift(setup: colgen.ColgenSetup, lp: classbound.ClassLp, seed=None):
    return classbound._sift(lp, setup.items.table, colgen.piece_rows(setup.pieces), setup.space.cap_units,
                            time.perf_counter() + 60, seed, 1)


def _few_columns_a_round(monkeypatch) -> list[int]:
    """Three columns enter per sifting round and only two out of the basis stay, so that even the small mixes take
    many rounds and columns leave HiGHS's LP (and may come back); the columns that left, per round, are returned."""
    monkeypatch.setattr(classbound, "SIFT_ROUND_COLUMNS", 3)
    monkeypatch.setattr(classbound, "SIFT_KEPT_COLUMNS", 2)
    dropped: list[int] = []
    real_drop = classbound._drop_columns

    def counted(h, n_fixed, reduced):
        out = real_drop(h, n_fixed, reduced)
        dropped.append(out.size)
        return out

    monkeypatch.setattr(classbound, "_drop_columns", counted)
    return dropped


def test_sifting_solves_the_class_lp_over_all_its_columns(small, monkeypatch) -> None:
    """Sifting (a few columns a round, so that it takes many, and columns leaving its LP) ends at the optimum of the
    LP over all columns, its certified bound equal to it; seeded with that solution's support (as the next pass is)
    it ends there too."""
    setup, _ = small
    lp = _class_lp(setup)
    dropped = _few_columns_a_round(monkeypatch)
    rounds: list[str] = []
    real_run = classbound.run

    def counted(*args, **kwargs):
        res = real_run(*args, **kwargs)
        rounds.append(res.status)
        return res

    monkeypatch.setattr(classbound, "run", counted)
    res = _sift(setup, lp)
    full = _full_class_lp_value(lp, setup)
    assert res.status == "Optimal" and res.objective == pytest.approx(full, rel=1e-7)
    assert res.value == pytest.approx(full, rel=1e-6) and res.value <= full * (1 + 1e-6)
    assert len(rounds) >= 3 and res.support.size > 0 and sum(dropped) > 0
    again = _sift(setup, lp, res.support)
    assert again.status == "Optimal" and again.objective == pytest.approx(full, rel=1e-7)


def test_sifting_cut_short_keeps_a_certified_bound_below_the_lp(small, monkeypatch) -> None:
    """A sift whose HiGHS run stops at its limit in the third round returns the best bound certified in the
    rounds before: positive, at most the LP's optimum, the LP itself not claimed."""
    setup, _ = small
    lp = _class_lp(setup)
    _few_columns_a_round(monkeypatch)
    calls = [0]
    real_run = classbound.run

    def stops(*args, **kwargs):
        calls[0] += 1
        res = real_run(*args, **kwargs)
        return res if calls[0] < 3 else replace(res, status="Time limit reached")

    monkeypatch.setattr(classbound, "run", stops)
    res = _sift(setup, lp)
    assert res.status == "Time limit reached" and res.objective is None
    assert 0.0 < res.value <= _full_class_lp_value(lp, setup) + 1e-9


def test_a_class_bound_out_of_time_says_nothing(small) -> None:
    setup, _ = small
    perf = setup.space.problem.perf_model
    assert classbound.class_bound(setup.items, perf.hardware, setup.space.cap_units,
                                  colgen.piece_rows(setup.pieces), time.perf_counter() - 1.0) is None


def _pairs_of(setup: colgen.ColgenSetup) -> np.ndarray:
    rows = colgen.piece_rows(setup.pieces)
    found = pairs.fitting_type_pairs(setup.items, setup.space.problem.perf_model.hardware, setup.space.cap_units,
                                     rows.count >= 2, time.perf_counter() + 60)
    assert found is not None and len(found) > 0
    return found


def _check_pairs_cover_two_member_configurations(setup: colgen.ColgenSetup, columns: list) -> None:
    found = {(int(s), int(t)) for s, t in _pairs_of(setup)}
    two = colgen.piece_rows(setup.pieces).count >= 2
    # those a plan can have: two pieces of one type only where its option has two
    twos = [c for c in columns if len(c.slots) == 2 and (c.slots[0].piece != c.slots[1].piece
                                                          or two[c.slots[0].piece])]
    assert twos
    for col in twos:
        s, t = sorted(slot.piece for slot in col.slots)
        assert (s, t) in found
    live = [t for t, idx in enumerate(setup.items.by_piece) if idx.size]
    for s in live[:12]:
        for t in [u for u in live if u >= s][:12]:
            if s != t or two[t]:
                assert ((s, t) in found) == (setup.pairs.fit(s, t) is not None)


def test_every_two_member_configuration_is_one_of_the_fitting_pairs(small) -> None:
    """The pair columns replace the classes of 2 members, so every 2-member configuration the kernel accepts
    must be among the screened pairs of piece types (else the LP would not be a relaxation); the screen agrees
    with the pair table's on each pair of types."""
    _check_pairs_cover_two_member_configurations(*small)


def test_so_do_the_pairs_of_a_gpu_filling_mix(h100_model) -> None:
    setup = _setup(_problem(h100_model, HEAVY_H100))
    _check_pairs_cover_two_member_configurations(setup, _feasible_columns(setup))


def test_pair_columns_tighten_the_class_lp_and_stay_certified(small) -> None:
    """With the pair columns in place of the 2-member classes the LP is tighter (a pair of the screen is in some
    2-member class), its certificate is still its value, and it has no class of 2 members left."""
    setup, _ = small
    hw, cap, items = setup.space.problem.perf_model.hardware, setup.space.cap_units, setup.items
    rows = colgen.piece_rows(setup.pieces)
    found = _pairs_of(setup)
    plain = classbound.class_bound_at(items.table, hw, items.bounds, cap, rows, time.perf_counter() + 30, 8)
    paired = classbound.class_bound_at(items.table, hw, items.bounds, cap, rows, time.perf_counter() + 30, 8,
                                       pairs=found)
    assert plain is not None and paired is not None and paired.pairs == len(found)
    assert paired.lp_value is not None and paired.value == pytest.approx(paired.lp_value, rel=1e-6)
    assert paired.value >= plain.value - 1e-6
    lp = classbound.class_lp(items.table, hw, items.bounds, cap, 8, pairs=found)
    assert lp is not None and 2 not in set(lp.members.tolist())


def _with_groups(args) -> tuple[bool, bool]:
    """Whether a ``class_bound_at`` call (its positional ``args``) had the pair columns, and the triple columns."""
    return len(args) > 8 and args[8] is not None, len(args) > 10 and args[10] is not None


def test_pairs_are_screened_where_gpus_hold_few_members(small, monkeypatch) -> None:
    """Pair and triple columns are tried after the first pass where a GPU holds few members (the V100's big pieces),
    not where it holds many (the H100's); a pass with them that does not end in its time is run again without the
    triples, then without the pairs."""
    setup, _ = small
    name = setup.space.problem.perf_model.name
    hw, cap, items = setup.space.problem.perf_model.hardware, setup.space.cap_units, setup.items
    rows = colgen.piece_rows(setup.pieces)
    few = classbound._pairs_worth_screening(items, rows, cap)
    assert few == (name == "v100")
    passes: list[tuple[bool, bool]] = []
    real = classbound.class_bound_at

    def no_time_for_pairs(*args, **kwargs):
        passes.append(_with_groups(args))
        return None if passes[-1][0] else real(*args, **kwargs)

    monkeypatch.setattr(classbound, "class_bound_at", no_time_for_pairs)
    res = classbound.class_bound(items, hw, cap, rows, time.perf_counter() + 30)
    assert res is not None and res.pairs is None and res.triples is None
    assert passes[0] == (False, False) and ((True, True) in passes) == few
    if few:  # the pass with both came back empty, then the one with pairs only, then one ran without them
        at = passes.index((True, True))
        assert passes[at + 1:at + 3] == [(True, False), (False, False)]


def test_a_pass_with_pairs_cut_short_is_run_again_without_them(v100_model, monkeypatch) -> None:
    """A pass with the pair and triple columns that did not solve its LP in its time (sifting returns what it
    certified on the way) is run again without the triples, then without the pairs, and the bound returned is at
    least what those cut-short passes certified."""
    setup = _setup(_problem(v100_model, SMALL_MIXES["v100"]))
    hw, cap, items = v100_model.hardware, setup.space.cap_units, setup.items
    rows = colgen.piece_rows(setup.pieces)
    passes: list[tuple[tuple[bool, bool], float]] = []
    real = classbound.class_bound_at

    def pairs_cut_short(*args, **kwargs):
        res = real(*args, **kwargs)
        flags = _with_groups(args)
        if flags[0] and res is not None:
            res = replace(res, status="Time limit reached", lp_value=None)
        passes.append((flags, 0.0 if res is None else res.value))
        return res

    monkeypatch.setattr(classbound, "class_bound_at", pairs_cut_short)
    res = classbound.class_bound(items, hw, cap, rows, time.perf_counter() + 30)
    assert res is not None
    flags = [f for f, _ in passes]
    at = flags.index((True, True))
    assert flags[at + 1:at + 3] == [(True, False), (False, False)]
    assert res.value >= max(v for (p, _), v in passes if p) - 1e-12


def test_no_pair_columns_beyond_their_cap(v100_model, monkeypatch) -> None:
    """More fitting pairs than ``PAIR_COLUMNS_MAX`` (memory) and the passes go on without them."""
    setup = _setup(_problem(v100_model, SMALL_MIXES["v100"]))
    hw, cap, items = v100_model.hardware, setup.space.cap_units, setup.items
    rows = colgen.piece_rows(setup.pieces)
    found = classbound._screen_pairs(items, hw, cap, rows, time.perf_counter() + 30)
    assert found is not None and len(found) > 0
    monkeypatch.setattr(classbound, "PAIR_COLUMNS_MAX", len(found) - 1)
    assert classbound._screen_pairs(items, hw, cap, rows, time.perf_counter() + 30) is None


def _triples_of(setup: colgen.ColgenSetup) -> np.ndarray:
    rows = colgen.piece_rows(setup.pieces)
    found = triples.fitting_type_triples(setup.items, setup.space.problem.perf_model.hardware, setup.space.cap_units,
                                         _pairs_of(setup), rows.count, time.perf_counter() + 60, 10**7)
    assert found is not None
    return found


def _check_triples_cover_three_member_configurations(setup: colgen.ColgenSetup, columns: list) -> None:
    found = {tuple(int(t) for t in row) for row in _triples_of(setup)}
    count = colgen.piece_rows(setup.pieces).count
    # those a plan can have: a type repeated only as often as its option has pieces
    threes = [c for c in columns if len(c.slots) == 3
              and all(sum(s.piece == t for s in c.slots) <= count[t] for t in {s.piece for s in c.slots})]
    assert threes
    for col in threes:
        assert tuple(sorted(slot.piece for slot in col.slots)) in found


def test_every_three_member_configuration_is_one_of_the_fitting_triples(small) -> None:
    """The triple columns replace the classes of 3 members, so every 3-member configuration the kernel accepts must
    be among the screened triples of piece types (else the LP would not be a relaxation)."""
    _check_triples_cover_three_member_configurations(*small)


def test_so_do_the_triples_of_a_heavy_mix(v100_model) -> None:
    """The same on a mix of large pieces, where the screen turns away some triples whose three pairs fit."""
    setup = _setup(_problem(v100_model, HEAVY_V100))
    _check_triples_cover_three_member_configurations(setup, _feasible_columns(setup))
    rows = colgen.piece_rows(setup.pieces)
    candidates = triples._candidates(_pairs_of(setup), rows.count, 10**7, time.perf_counter() + 60)
    assert candidates is not None and len(_triples_of(setup)) < len(candidates)


def test_triple_columns_tighten_the_class_lp_and_stay_certified(small) -> None:
    """With the triple columns in place of the 3-member classes (and the pairs in place of the 2-member ones) the
    LP is no looser, its certificate is still its value, it has no class of 3 members left, and its bound is never
    above the exact planner's plan."""
    setup, _ = small
    hw, cap, items = setup.space.problem.perf_model.hardware, setup.space.cap_units, setup.items
    rows = colgen.piece_rows(setup.pieces)
    found_pairs, found = _pairs_of(setup), _triples_of(setup)
    paired = classbound.class_bound_at(items.table, hw, items.bounds, cap, rows, time.perf_counter() + 30, 8,
                                       pairs=found_pairs)
    both = classbound.class_bound_at(items.table, hw, items.bounds, cap, rows, time.perf_counter() + 30, 8,
                                     pairs=found_pairs, triples=found)
    assert paired is not None and both is not None and both.triples == len(found)
    assert both.lp_value is not None and both.value == pytest.approx(both.lp_value, rel=1e-6)
    assert both.value >= paired.value - 1e-6
    lp = classbound.class_lp(items.table, hw, items.bounds, cap, 8, pairs=found_pairs, triples=found)
    assert lp is not None and not {2, 3} & set(lp.members.tolist())
    plan = exact.solve(setup.space.problem, SolveOptions(time_limit_s=20), formulation="columns")
    assert math.ceil(both.value - 1e-6) <= plan.num_gpus


def test_every_two_or_three_member_configuration_is_worth_no_more_than_its_pair_or_triple(small) -> None:
    """The certificate's most worth of a GPU (``certify``) takes that of the pair and triple columns for GPUs of two
    and three members (their classes are gone): at any duals it is at least the worth of every such configuration
    the kernel accepts."""
    setup, columns = small
    hw, cap, items = setup.space.problem.perf_model.hardware, setup.space.cap_units, setup.items
    lp = classbound.class_lp(items.table, hw, items.bounds, cap, 8, pairs=_pairs_of(setup), triples=_triples_of(setup))
    assert lp is not None
    count = colgen.piece_rows(setup.pieces).count
    few = [c for c in columns if len(c.slots) in (2, 3)
           and all(sum(s.piece == t for s in c.slots) <= count[t] for t in {s.piece for s in c.slots})]
    assert any(len(c.slots) == 3 for c in few)
    pieces = np.array([[s.piece for s in c.slots] + [-1] * (3 - len(c.slots)) for c in few])
    rng = np.random.default_rng(7)
    for _ in range(200):
        pi = rng.random(count.size) * (rng.random(count.size) < 0.6)
        worth = np.r_[pi, 0.0][pieces].sum(axis=1)
        assert classbound.group_kappa(lp, pi) >= worth.max() - 1e-12


def test_a_type_repeated_in_a_group_is_one_entry_of_its_multiplicity() -> None:
    """The pair and triple columns' matrix: a type twice or thrice in a group is one entry of 2 or 3 in its row."""
    groups = np.array([[0, 1, -1], [2, 2, -1], [0, 0, 3], [1, 2, 2], [3, 3, 3], [0, 1, 2]])
    block = classbound._group_block(groups, 5, 10).toarray()
    want = np.zeros((10, len(groups)))
    for col, row in enumerate(groups):
        for t in row[row >= 0]:
            want[5 + t, col] += 1
    assert (block == want).all()


def test_no_triple_columns_beyond_their_cap(v100_model, monkeypatch) -> None:
    """More candidate triples than ``TRIPLE_CANDIDATES_MAX`` (memory) and the passes go on without them."""
    setup = _setup(_problem(v100_model, SMALL_MIXES["v100"]))
    hw, cap, items = v100_model.hardware, setup.space.cap_units, setup.items
    rows = colgen.piece_rows(setup.pieces)
    found_pairs = _pairs_of(setup)
    candidates = triples._candidates(found_pairs, rows.count, 10**7, time.perf_counter() + 60)
    assert candidates is not None and len(candidates) > 0
    assert classbound._screen_triples(items, hw, cap, rows, found_pairs, time.perf_counter() + 30) is not None
    monkeypatch.setattr(classbound, "TRIPLE_CANDIDATES_MAX", len(candidates) - 1)
    assert classbound._screen_triples(items, hw, cap, rows, found_pairs, time.perf_counter() + 30) is None
