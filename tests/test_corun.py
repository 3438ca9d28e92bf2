"""The profiler's co-location runs for the kernel-delay form (issue 16), on the simulated GPU:
the seeded design and its time budget, the resumable runs file, kappa fitted from the runs, and
the command's options and errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from igniter_opt.errors import MeasurementError, ProfileError
from igniter_opt.perfmodel import interference as itf
from igniter_opt.perfmodel.fit import fit_profile
from igniter_opt.perfmodel.raw import load_raw
from igniter_opt.perfmodel.store import load_profile
from igniter_opt.profiling import corun
from igniter_opt.profiling.cli import profile, profile_gpu
from igniter_opt.profiling.corun import CO_RUNS_FILE, CoRunDesign, Mix, MixSlot
from igniter_opt.profiling.plan import ProfilePlan
from igniter_opt.profiling.simulated import SimulatedBackend, synthetic_model

MODELS = ("alexnet", "resnet50", "vgg19")
ZOO = ("alexnet", "resnet50", "vgg19", "ssd", "vit_b_16", "bert_base")
PLAN = dict(batches=(1, 8, 32), shares_pct=(10.0, 50.0, 100.0), max_copies=3,
            share_unit_candidates=(10.0, 11.0, 12.0))
GPU = {"name": "simulated GPU", "uuid": "GPU-sim", "driver": "sim"}


def _design(**kw) -> CoRunDesign:
    return CoRunDesign(**{"models": MODELS, "batches": (1, 8, 32), **kw})


# ---- the design ------------------------------------------------------------------------------
def test_design_is_seeded_pairs_and_triples_of_different_models() -> None:
    d = _design(runs_per_model=4)
    mixes = d.mixes()
    assert mixes == _design(runs_per_model=4).mixes() and mixes != _design(runs_per_model=4, seed=17).mixes()
    assert [m.index for m in mixes] == list(range(12))
    for i, model in enumerate(MODELS):  # each model leads its runs: pair, triple, pair, triple
        led = mixes[4 * i: 4 * i + 4]
        assert [m.slots[0].model for m in led] == [model] * 4
        assert [len(m.slots) for m in led] == [2, 3, 2, 3]
    for m in mixes:
        assert len(m.models()) == len(m.slots)  # different models only
        assert sum(s.share_pct for s in m.slots) <= 100
        assert all(s.share_pct >= 10 and s.share_pct % 5 == 0 and s.batch in (1, 8, 32) for s in m.slots)
    # with two models a "triple" is a pair: co-runners are never repeated
    assert {len(m.slots) for m in CoRunDesign(models=("alexnet", "vgg19"), batches=(8,)).mixes()} == {2}


def test_default_design_stays_within_the_per_model_budget() -> None:
    d = CoRunDesign(models=ZOO, batches=(1, 2, 4, 8, 16, 32))
    cost = d.estimate_s_per_model()
    assert len(d.mixes()) == 36
    assert sum(cost.values()) == pytest.approx(36 * corun.RUN_ESTIMATE_S)
    assert max(cost.values()) <= corun.GROWTH_BUDGET_S_PER_MODEL / 2  # well within issue 16's 3 GPU-minutes
    assert min(cost.values()) >= 30.0  # every model takes part in a fair share of the runs
    d.check_budget()
    big = replace(d, runs_per_model=40)
    worst, c = max(big.estimate_s_per_model().items(), key=lambda kv: kv[1])
    with pytest.raises(ProfileError) as exc:
        big.check_budget()
    assert str(exc.value) == (f"the co-location runs would cost about {c:.0f} s of GPU time for '{worst}', over "
                              "the 180 s per model allowed; lower --co-runs-per-model")


def test_design_refuses_fewer_than_two_models() -> None:
    with pytest.raises(ProfileError) as exc:
        CoRunDesign(models=("alexnet",), batches=(8,))
    assert str(exc.value) == (
        "co-location runs need at least 2 different profiled models, got 1 (alexnet); profile more models, give "
        "--co-runs FILE, or --co-runs-per-model 0 (kappa = 1, pair runs only)")


def test_split_cost_divides_each_run_among_its_models() -> None:
    a = Mix(0, (MixSlot("alexnet", 1, 50.0), MixSlot("vgg19", 8, 30.0)))
    b = Mix(1, (MixSlot("alexnet", 1, 20.0), MixSlot("vgg19", 8, 30.0), MixSlot("ssd", 2, 20.0)))
    assert corun.split_cost_s([(a, 6.0), (b, 9.0)], ["alexnet", "vgg19", "ssd"]) == {
        "alexnet": 6.0, "vgg19": 6.0, "ssd": 3.0}


# ---- measuring: atomic, resumable ------------------------------------------------------------
def _measure(tmp_path: Path, backend: SimulatedBackend, design: CoRunDesign) -> list[dict]:
    return corun.measure_co_runs(design, backend, tmp_path / CO_RUNS_FILE, GPU)


def test_cut_off_runs_keep_every_finished_mix_and_resume(tmp_path: Path) -> None:
    truth, design = synthetic_model(list(MODELS)), _design()
    first = SimulatedBackend(truth, fail_after=7)
    with pytest.raises(MeasurementError, match="simulated failure"):
        _measure(tmp_path, first, design)
    path = tmp_path / CO_RUNS_FILE
    kept = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["mix"] for r in kept] == list(range(7))
    assert sorted(p.name for p in tmp_path.iterdir()) == [CO_RUNS_FILE]  # no temporary file left behind
    second = SimulatedBackend(truth)
    records = _measure(tmp_path, second, design)
    assert len(second.calls) == len(design.mixes()) - 7  # nothing measured twice
    (tmp_path / "whole").mkdir()
    whole = _measure(tmp_path / "whole", SimulatedBackend(truth), design)
    strip = [{k: v for k, v in r.items() if k != "wall_s"} for r in records]
    assert strip == [{k: v for k, v in r.items() if k != "wall_s"} for r in whole]
    # the file is what load_co_runs reads, one run per mix in design order, with the design's workloads
    runs = itf.load_co_runs(path, gpu=GPU["name"])
    assert [r.slots for r in runs] == [tuple((s.model, s.batch, s.share_pct) for s in m.slots)
                                       for m in design.mixes()]
    assert runs[0].latency_ms == tuple(lat for lat, _ in truth.predict_gpu(list(runs[0].slots)))


def test_runs_file_of_another_design_gpu_or_corrupt_is_refused(tmp_path: Path) -> None:
    truth, design = synthetic_model(list(MODELS)), _design(runs_per_model=2)
    _measure(tmp_path, SimulatedBackend(truth), design)
    path = tmp_path / CO_RUNS_FILE
    with pytest.raises(ProfileError) as exc:
        corun.read_co_run_records(path, replace(design, seed=3), GPU["name"])
    assert str(exc.value) == (f"{path}: line 1: mix 0 is not one of this profile's co-location design (seed 3); "
                              "delete the file or use another output folder")
    with pytest.raises(ProfileError, match=r"line 1: measured on 'simulated GPU', this GPU is 'H200'; a profile"):
        corun.read_co_run_records(path, design, "H200")
    path.write_text(path.read_text().replace('"measured_ms": ', '"measured_ms": -', 1))
    with pytest.raises(ProfileError, match=r"line 1: not a co-location record \(ValueError: measured_ms -"):
        corun.read_co_run_records(path, design, GPU["name"])


# ---- the profiler fits kappa from its own runs -----------------------------------------------
def _kernel_delay_truth(tmp_path: Path, kappa: float):
    """The kernel-delay model the simulated GPU's pair runs give, with cache scale ``kappa``."""
    truth = synthetic_model(list(MODELS))
    out, _ = profile_gpu(ProfilePlan(models=MODELS, **PLAN), SimulatedBackend(truth), tmp_path / "pairs",
                         progress=False)
    raw = load_raw(out / "raw.json")
    paper = fit_profile(raw, "paper")
    coefs = replace(itf.fit_interference(raw, paper), cache_scale=kappa)
    return truth, itf.apply_interference(paper, coefs)


def test_profile_measures_co_runs_and_recovers_kappa(tmp_path: Path) -> None:
    truth, co_truth = _kernel_delay_truth(tmp_path, 0.6)
    design = CoRunDesign(models=MODELS, batches=PLAN["batches"])
    out = tmp_path / "kd"
    _, model = profile_gpu(ProfilePlan(models=MODELS, **PLAN), SimulatedBackend(truth, co_location_truth=co_truth),
                           out, progress=False, interference_form="kernel-delay", co_run_design=design)
    block = model.gpu["fit"]["interference"]
    assert block["cache_scale"] == pytest.approx(0.6, abs=1e-6)
    assert block["cache_scale_source"] == ("least squares over 18 co-location runs, own kappa for 1 of 3 models "
                                           "(co_runs.jsonl)")
    # the simulated pair runs leave alexnet and resnet50 no L2 sensitivity (alpha' = 0): only vgg19 has a kappa
    assert block["model_cache_scale"] == {"vgg19": pytest.approx(0.6, abs=1e-6)}
    assert len((out / CO_RUNS_FILE).read_text().splitlines()) == 18
    raw = load_raw(out / "raw.json")
    assert raw.gpu["fit"]["interference_form"] == "kernel-delay"
    assert raw.gpu["fit"]["cache_scale"] == block["cache_scale"]
    assert raw.gpu["fit"]["model_cache_scale"] == block["model_cache_scale"]
    rec = raw.gpu["co_runs"]
    assert (rec["file"], rec["seed"], rec["runs"], rec["runs_per_model"]) == (CO_RUNS_FILE, 16, 18, 6)
    assert set(rec["cost_s"]) == set(MODELS)
    # fitting the folder again gives the same model; so does fitting with the runs file as --co-runs would
    again = fit_profile(raw, "again")
    assert again.models == load_profile(out).models and again.hardware == load_profile(out).hardware
    given = fit_profile(raw, "given", co_runs=itf.load_co_runs(out / CO_RUNS_FILE))
    assert given.gpu["fit"]["interference"]["cache_scale"] == pytest.approx(block["cache_scale"], rel=1e-12)


def test_resumed_profile_measures_only_the_missing_runs(tmp_path: Path) -> None:
    truth = synthetic_model(list(MODELS))
    design = CoRunDesign(models=MODELS, batches=PLAN["batches"], runs_per_model=2)
    plan = ProfilePlan(models=MODELS, **PLAN)
    out = tmp_path / "kd"
    whole = SimulatedBackend(truth)
    profile_gpu(plan, whole, tmp_path / "whole", progress=False, interference_form="kernel-delay",
                co_run_design=design)
    n_plan = len(whole.calls) - 6
    with pytest.raises(MeasurementError):
        profile_gpu(plan, SimulatedBackend(truth, fail_after=n_plan + 4), out, progress=False,
                    interference_form="kernel-delay", co_run_design=design)
    assert len((out / CO_RUNS_FILE).read_text().splitlines()) == 4 and not (out / "raw.json").exists()
    rest = SimulatedBackend(truth)
    _, model = profile_gpu(plan, rest, out, progress=False, interference_form="kernel-delay", co_run_design=design)
    assert rest.calls == ["co_run 2", "co_run 3"]
    assert (out / CO_RUNS_FILE).read_text().count("\n") == 6
    kappa = model.gpu["fit"]["interference"]["cache_scale"]
    assert kappa == pytest.approx(load_profile(tmp_path / "whole").gpu["fit"]["interference"]["cache_scale"])


# ---- the command ------------------------------------------------------------------------------
def _cli(out: Path, *extra: str, models: str = ",".join(MODELS)):
    return CliRunner().invoke(profile, ["--models", models, "-o", str(out), "--backend", "simulated",
                                        "--batches", "1,8,32", "--shares", "10,50,100", "--max-copies", "3",
                                        "--no-progress", *extra])


def test_profile_command_measures_co_runs_and_co_runs_file_overrides(tmp_path: Path) -> None:
    res = _cli(tmp_path / "kd", "--interference-form", "kernel-delay", "--co-runs-per-model", "2")
    assert res.exit_code == 0, res.output
    measured = load_profile(tmp_path / "kd").gpu["fit"]["interference"]
    assert measured["cache_scale_source"] == ("least squares over 6 co-location runs, own kappa for 1 of 3 "
                                              "models (co_runs.jsonl)")
    # --co-runs: the file's runs (three of them, 20 % slower), none measured
    recs = [json.loads(line) for line in (tmp_path / "kd" / CO_RUNS_FILE).read_text().splitlines()[:3]]
    for r in recs:
        r["workloads"] = [{**w, "measured_ms": 1.2 * w["measured_ms"]} for w in r["workloads"]]
    runs = tmp_path / "given.jsonl"
    runs.write_text("".join(json.dumps(r) + "\n" for r in recs))
    res = _cli(tmp_path / "given", "--interference-form", "kernel-delay", "--co-runs", str(runs))
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "given" / CO_RUNS_FILE).exists()
    block = load_profile(tmp_path / "given").gpu["fit"]["interference"]
    assert block["cache_scale_source"] == "least squares over 3 co-location runs (given.jsonl)"
    assert block["cache_scale"] > measured["cache_scale"] + 0.1
    assert "co_runs" not in load_raw(tmp_path / "given" / "raw.json").gpu
    # --co-runs-per-model 0: pair runs only
    res = _cli(tmp_path / "none", "--interference-form", "kernel-delay", "--co-runs-per-model", "0")
    assert res.exit_code == 0, res.output
    assert load_profile(tmp_path / "none").gpu["fit"]["interference"]["cache_scale"] == 1.0
    assert not (tmp_path / "none" / CO_RUNS_FILE).exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--co-runs-per-model", "3"],
         "Error: --co-runs-per-model measures runs for the kernel-delay form: give --interference-form "
         "kernel-delay, or leave --co-runs-per-model out"),
        (["--interference-form", "kernel-delay", "--co-runs-per-model", "3", "--co-runs", "RUNS"],
         "Error: give either --co-runs FILE (runs measured before) or --co-runs-per-model N (runs to measure "
         "now), not both"),
        (["--interference-form", "kernel-delay", "--co-runs-per-model", "-1"],
         "Error: --co-runs-per-model must be >= 0, got -1"),
        (["--interference-form", "kernel-delay", "--co-runs-per-model", "99"],
         "Error: the co-location runs would cost about "),
        (["--interference-form", "kernel-delay", "--models", "alexnet"],
         "Error: co-location runs need at least 2 different profiled models, got 1 (alexnet); profile more "
         "models, give --co-runs FILE, or --co-runs-per-model 0 (kappa = 1, pair runs only)"),
    ],
)
def test_profile_command_refuses_bad_co_run_options_before_measuring(tmp_path: Path, args: list[str],
                                                                     message: str) -> None:
    runs = tmp_path / "runs.jsonl"
    runs.write_text(json.dumps({"mix": 0, "workloads": [
        {"model": "alexnet", "batch": 1, "share_pct": 50.0, "measured_ms": 1.0},
        {"model": "vgg19", "batch": 1, "share_pct": 50.0, "measured_ms": 2.0}]}) + "\n")
    args = [str(runs) if a == "RUNS" else a for a in args]
    extra = [a for a in args if a != "--models" and a != "alexnet"]
    res = _cli(tmp_path / "x", *extra, models="alexnet" if "--models" in args else ",".join(MODELS))
    assert res.exit_code == 1
    assert res.output.startswith(message), res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "x" / "checkpoint.jsonl").exists()
