"""Shared fixtures. The paper's V100 profile is read in place from ../shared/data/ (never copied)."""

from __future__ import annotations

import csv
import itertools
import os
from pathlib import Path

import pytest

from igniter_opt.domain import Workload
from igniter_opt.perfmodel import HardwareCoefficients, ModelCoefficients, PerformanceModel, load_profile

REPO = Path(__file__).resolve().parents[1]
SHARED_V100 = Path(
    os.environ.get("IGNITER_OPT_V100_PROFILE", REPO.parent / "shared" / "data" / "igniter_v100_profile.jsonl")
)
PAPER_WORKLOADS = REPO / "examples" / "paper-table3.csv"
H100_PROFILE = REPO / "profiles" / "h100"
H200_PROFILE = REPO / "profiles" / "h200"

# Modules whose tests start processes (servers, load generators, fakes with time-outs) or judge wall time
# (time limits, deadlines): marked ``serial``, the test command runs them alone, after the rest has run
# on two workers (pytest-xdist), so that nothing else competes for the two cores while they run.
SERIAL_MODULES = frozenset({
    "test_accuracy_report", "test_apply", "test_apply_triton", "test_corun", "test_exact_claims", "test_export_k8s",
    "test_mps", "test_perfanalyzer", "test_point_pricing", "test_profiling", "test_serving_profile", "test_transition",
    "test_highs_guards",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem in SERIAL_MODULES:
            item.add_marker(pytest.mark.serial)


@pytest.fixture(scope="session")
def v100_path() -> Path:
    if not SHARED_V100.is_file():
        pytest.skip(
            f"the iGniter authors' V100 profile is not at {SHARED_V100} (set IGNITER_OPT_V100_PROFILE); "
            "it is not redistributed with the project"
        )
    return SHARED_V100


@pytest.fixture(scope="session")
def v100_model(v100_path: Path) -> PerformanceModel:
    return load_profile(v100_path)


@pytest.fixture(scope="session")
def h100_model() -> PerformanceModel:
    """The shipped H100 profile: always there, so correctness tests run on a fresh clone."""
    return load_profile(H100_PROFILE)


# Correctness tests run on every profile at hand: the shipped H100 always, the paper's V100 where its
# data is (without it the V100 variants are not collected: only the V100 reproductions skip).
PROFILES_AT_HAND = ["h100", *(["v100"] if SHARED_V100.is_file() else [])]


@pytest.fixture(scope="session", params=PROFILES_AT_HAND)
def any_model(request: pytest.FixtureRequest) -> PerformanceModel:
    """Each correctness test on the shipped H100 profile, and on the paper's V100 profile where present."""
    return request.getfixturevalue(f"{request.param}_model")


@pytest.fixture(scope="session", params=PROFILES_AT_HAND)
def any_profile_path(request: pytest.FixtureRequest) -> Path:
    """A profile path for CLI tests: the shipped H100 folder, and the paper's V100 file where present."""
    return H100_PROFILE if request.param == "h100" else request.getfixturevalue("v100_path")


# Eight workloads on the H100 profile that two GPUs serve, as greedy's plan does.
EIGHT_ON_H100 = [("resnet50", 30, 900), ("alexnet", 20, 1200), ("vgg19", 40, 450), ("ssd", 60, 240),
                 ("bert_base", 50, 360), ("vit_b_16", 45, 600), ("resnet50", 25, 1800), ("vgg19", 35, 750)]


@pytest.fixture
def eight_on_h100(h100_model: PerformanceModel):  # noqa: ANN201 - a ColgenSetup (needs highspy: imported here)
    """Column generation's setup for ``EIGHT_ON_H100`` (``igniter`` budget, margin 0.1), greedy's plan the start."""
    from igniter_opt.domain import LatencyBudget, PlanningProblem
    from igniter_opt.placement.serving import serving_model_for
    from igniter_opt.planner import greedy
    from igniter_opt.planner.exact import colgen

    ws = tuple(Workload(f"w{i}", m, float(slo), float(rate)) for i, (m, slo, rate) in enumerate(EIGHT_ON_H100))
    problem = PlanningProblem(ws, h100_model, LatencyBudget.IGNITER, 0.1)
    start = greedy.place(h100_model, greedy.initial_demands(problem))
    return colgen.prepare_colgen(problem, serving_model_for(problem), start)


@pytest.fixture(scope="session")
def paper_workloads() -> tuple[Workload, ...]:
    with PAPER_WORKLOADS.open() as fh:
        return tuple(
            Workload(r["name"], r["model"], float(r["slo_ms"]), float(r["rate_rps"])) for r in csv.DictReader(fh)
        )


def make_synthetic_model(*, alpha_f: float = -1.0, max_power_w: float = 300.0) -> PerformanceModel:
    """A made-up two-model GPU, independent of any published data (round numbers, easy by hand)."""
    hw = HardwareCoefficients(
        max_clock_mhz=1500.0, max_power_w=max_power_w, idle_power_w=50.0, alpha_f=alpha_f,
        alpha_sch=0.005, beta_sch=-0.01, share_unit_pct=2.5, pcie_bandwidth_bytes_per_ms=1e7,
        price_per_gpu_hour=2.0,
    )
    small = ModelCoefficients(
        k=(0.0, 10.0, 20.0, 0.0, 0.5), alpha_c=0.01, beta_c=2.0, alpha_p=0.05, beta_p=20.0,
        alpha_cache=0.002, idle_ms=0.05, kernels_per_inference=20, input_bytes=600_000.0, output_bytes=4_000.0,
    )
    big = ModelCoefficients(
        k=(0.0, 100.0, 50.0, 0.0, 1.0), alpha_c=0.04, beta_c=3.0, alpha_p=0.5, beta_p=5.0,
        alpha_cache=0.002, idle_ms=0.04, kernels_per_inference=30, input_bytes=600_000.0, output_bytes=4_000.0,
    )
    return PerformanceModel(name="synthetic", hardware=hw, models={"small": small, "big": big},
                            gpu={"name": "Synthetic GPU"})


@pytest.fixture()
def synthetic_model() -> PerformanceModel:
    return make_synthetic_model()


# Small mixes the pricing tests enumerate configurations of (a few piece types each), per profile.
PRICING_MIXES = {
    "h100": [("resnet50", 30, 300), ("alexnet", 20, 400), ("vgg19", 40, 150), ("ssd", 60, 80)],
    "h200": [("ssd", 50, 200), ("bert_base", 40, 150), ("vit_b_16", 30, 250)],  # ssd: L2-blind on the H200
    "v100": [("vgg19", 40, 300), ("ssd", 50, 60), ("resnet50", 30, 200), ("alexnet", 25, 500)],
}


@pytest.fixture(scope="session", params=sorted(PRICING_MIXES))
def pricing_mix_setup(request: pytest.FixtureRequest):
    """The column generation setup of each profile's ``PRICING_MIXES`` mix (igniter budget, margin 0.1,
    greedy's plan as the start). The V100 skips where its data is absent."""
    from igniter_opt.domain import LatencyBudget, PlanningProblem
    from igniter_opt.placement.serving import serving_model_for
    from igniter_opt.planner import greedy
    from igniter_opt.planner.exact import colgen

    name = request.param
    perf = load_profile(H200_PROFILE) if name == "h200" else request.getfixturevalue(f"{name}_model")
    rows = PRICING_MIXES[name]
    ws = tuple(Workload(f"w{i}", m, float(slo), float(rate)) for i, (m, slo, rate) in enumerate(rows))
    problem = PlanningProblem(ws, perf, LatencyBudget.IGNITER, 0.1)
    start = greedy.place(perf, greedy.initial_demands(problem))
    return colgen.prepare_colgen(problem, serving_model_for(problem), start)


# Per piece type, items enumerated by ``pricing_mix``: the fewest units at each of its smallest batches.
SAMPLED_ITEMS_PER_TYPE = 4
SAMPLED_SLOTS = 4


def _sampled_items(setup) -> list[int]:
    """Per piece type, its item of fewest units at each of its ``SAMPLED_ITEMS_PER_TYPE`` smallest batches."""
    import numpy as np

    tab = setup.items.table
    out: list[int] = []
    for idx in setup.items.by_piece:
        order = idx[np.lexsort((tab.units[idx], tab.batch[idx]))]
        _, first = np.unique(tab.batch[order], return_index=True)
        out.extend(int(k) for k in order[first][:SAMPLED_ITEMS_PER_TYPE])
    return out


@pytest.fixture(scope="session")
def pricing_mix(pricing_mix_setup) -> tuple:
    """A pricing mix's setup and every multiset of up to ``SAMPLED_SLOTS`` sampled items that the kernel
    accepts, as columns (the brute force the pricing bounds and heuristics are checked against)."""
    from igniter_opt.planner.exact.columns import evaluate

    space, tab = pricing_mix_setup.space, pricing_mix_setup.items.table
    combos = [c for n in range(1, SAMPLED_SLOTS + 1)
              for c in itertools.combinations_with_replacement(_sampled_items(pricing_mix_setup), n)
              if sum(int(tab.units[k]) for k in c) <= space.cap_units]
    cols = evaluate(space, [[tab.slot(k) for k in c] for c in combos])
    return pricing_mix_setup, [c for c in cols if c is not None]
