"""Measuring the serving stack (`igniter-opt profile --serving`): the run's plan, its reading, and
the whole path on the real tritonserver with apply's CPU stand-in."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from igniter_opt.domain import LatencyBudget
from igniter_opt.errors import MeasurementError
from igniter_opt.perfmodel import load_profile
from igniter_opt.perfmodel.store import read_serving
from igniter_opt.placement import plan_problem, verify_plan
from igniter_opt.profiling.serving import ServerServing, serving_params, serving_plan, summarize_run

REPO = Path(__file__).resolve().parents[1]


def test_the_run_serves_three_models_at_half_their_capacity(h100_model) -> None:
    plan = serving_plan(h100_model, "NVIDIA H100 80GB HBM3")
    (gpu,) = plan.gpus
    assert [p.model for p in gpu.placements] == ["resnet50", "bert_base", "vgg19"]
    assert gpu.total_share_pct <= 100.0 and len({p.share_pct for p in gpu.placements}) == 1
    assert [p.batch for p in gpu.placements] == [2, 4, 8]
    perf = h100_model.with_serving_overhead(2.0)
    preds = perf.predict_gpu([(p.model, p.batch, p.share_pct) for p in gpu.placements])
    for p, (lat, _) in zip(gpu.placements, preds, strict=True):
        assert p.rate_rps * lat / (1000.0 * p.batch) == pytest.approx(0.5, rel=0.01)  # half the capacity
        assert p.queue_delay_ms == pytest.approx(1000.0 * (p.batch - 1) / p.rate_rps)
    # the plan itself holds under the paper's model (the SLOs are loose on purpose)
    assert verify_plan(plan, plan_problem(plan, h100_model)) == []


def _result(workload: str, infer: float, model: float, mean: float, queue: float,
            valid: bool = True) -> SimpleNamespace:
    return SimpleNamespace(workload=workload, model="m", batch="4", executed_batch=3.5, server_infer_ms=infer,
                           model_ms=model, mean_ms=mean, server_queue_ms=queue, valid=valid)


def test_reading_a_run_medians_over_valid_servers(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    rows = ["wall_s,requests,samples,input_ms,run_ms,respond_ms"] + [
        f"{i},1,4,0.1,{2.0 if i % 2 else 2.2},0.1" for i in range(200)]
    (logs / "s0.exec.csv").write_text("\n".join(rows) + "\n")
    results = [_result("a", 3.0, 2.0, 6.0, 1.5), _result("b", 4.0, 2.5, 7.5, 2.0), _result("c", 9.0, 1.0, 20.0, 5.0,
                                                                                              valid=False)]
    per = summarize_run(results, tmp_path, {"a": "s0", "b": "s1", "c": "s2"})
    assert [round(s.overhead_ms, 6) for s in per] == [1.0, 1.5, 8.0]
    assert [round(s.client_ms, 6) for s in per] == [1.5, 1.5, 6.0]
    assert per[0].service_cv == pytest.approx(0.1 / 3.0)  # std 0.1 ms over 3 ms per execution
    assert math.isnan(per[1].service_cv)  # no trace for that server
    params = serving_params(per, "test")  # the valid servers ran the same batch: the median overhead
    assert (params.overhead_ms, params.client_ms, params.service_cv) == (1.25, 1.5, round(0.1 / 3.0, 4))
    assert params.overhead_per_request_ms == 0.0


def test_the_overhead_grows_with_the_requests_of_a_batch() -> None:
    per = [ServerServing(f"w{k}", "m", 8, k, 0.35 + 0.25 * k, 0.8, 0.05, valid=True) for k in (1.5, 3.5, 7.0)]
    params = serving_params(per, "test")
    assert (params.overhead_ms, params.overhead_per_request_ms) == (0.35, 0.25)
    assert params.batch_overhead_ms(8) == pytest.approx(2.35)


def test_a_run_with_no_valid_server_is_an_error() -> None:
    bad = [ServerServing("a", "m", 4, 4.0, 1.0, 1.0, 0.1, valid=False)]
    with pytest.raises(MeasurementError, match="no server's run was valid"):
        serving_params(bad, "test")


def _need_tritonserver() -> None:
    """Skip unless the real tritonserver and its client are installed (the CPU stand-in runs on them)."""
    pytest.importorskip("tritonclient.grpc")
    from igniter_opt.apply.triton import find_tritonserver
    from igniter_opt.errors import ApplyError

    try:
        find_tritonserver()
    except ApplyError:
        pytest.skip("no tritonserver (pip install --no-deps nvidia-pytriton==0.7.0)")


def test_measure_serving_on_the_real_tritonserver_with_the_cpu_stand_in(tmp_path: Path) -> None:
    """The whole path (plan, apply, traces, serving.json) without a GPU; the numbers are the stand-in's."""
    _need_tritonserver()
    from igniter_opt.profiling.serving import measure_serving

    prof = tmp_path / "prof"
    shutil.copytree(REPO / "profiles" / "h100", prof, ignore=shutil.ignore_patterns("serving.json", "checkpoint.jsonl"))
    # a busy 2-core machine can neither send on time to 1 ms nor serve the H100's rates through the Python
    # stand-in: judge the path, not the host (at half the capacity a CI run had every server overloaded; the
    # client cost of a few hundred requests is within noise of 0 ms at these rates, so it is not judged)
    params, per_server = measure_serving(prof, duration_s=3, load_generator="python", echo_ms=1.0, max_lag_ms=1e4,
                                         utilization=0.1)
    assert len(per_server) == 3 and all(s.executed_batch >= 1 for s in per_server)
    assert params.overhead_ms >= 0 and all(math.isfinite(s.client_ms) for s in per_server)
    assert read_serving(prof / "serving.json") == params
    record = json.loads((prof / "serving.json").read_text())
    assert record["load_generator"] == "python" and len(record["servers"]) == 3
    # the profile now plans with the tail budget
    perf = load_profile(prof)
    assert perf.serving == params
    from igniter_opt.problems import BudgetChoice, make_problem

    assert make_problem((), perf, BudgetChoice(LatencyBudget.TAIL)).perf_model.serving_overhead_ms == params.overhead_ms


# ---- every model at two batches: the models' own overheads ---------------------------------------
def test_every_model_runs_at_two_batches_three_servers_a_run_far_from_overload(h100_model) -> None:
    from igniter_opt.profiling.serving import MODEL_BATCHES, MODEL_UTILIZATION, model_runs

    runs = model_runs(h100_model, "NVIDIA H100 80GB HBM3", tuple(h100_model.model_names))
    served = [(p.model, p.batch) for plan in runs for _, p in plan.placements()]
    assert sorted(served) == sorted((m, b) for m in h100_model.model_names for b in MODEL_BATCHES)
    assert len(runs) == math.ceil(len(served) / 3) and all(len(plan.gpus[0].placements) <= 3 for plan in runs)
    perf = h100_model.with_serving_overhead(2.0)
    for plan in runs:
        (gpu,) = plan.gpus
        assert gpu.total_share_pct <= 100.0 and len({p.workload for p in gpu.placements}) == len(gpu.placements)
        for p, (lat, _) in zip(gpu.placements, perf.predict_gpu([(p.model, p.batch, p.share_pct)
                                                                 for p in gpu.placements]), strict=True):
            assert p.rate_rps * lat / (1000.0 * p.batch) <= MODEL_UTILIZATION * 1.01
    with pytest.raises(MeasurementError, match="lacks nope"):
        model_runs(h100_model, "x", ("resnet50", "nope"))


def _server(model: str, k: float, overhead: float, overloaded: bool = False) -> ServerServing:
    return ServerServing(f"S-{model}-b{k:g}", model, int(k), k, overhead, 0.8, 0.05, valid=True, overloaded=overloaded)


def test_a_model_whose_serving_costs_more_gets_its_own_overhead_and_the_gpus_line_stays() -> None:
    """Five models on the line 0.35 + 0.25 k, SSD on 3.0 + 2.7 k: the GPU's line is the models' median, SSD
    alone keeps the difference; an overloaded server (inflated times) is left out of every fit."""
    per = [_server(m, k, 0.35 + 0.25 * k) for m in ("alexnet", "resnet50", "vgg19", "vit_b_16", "bert_base")
           for k in (1.0, 4.0)]
    per += [_server("ssd", 1.0, 3.0 + 2.7), _server("ssd", 4.0, 3.0 + 2.7 * 4), _server("vgg19", 4.0, 40.0, True)]
    params = serving_params(per, "test")
    assert (params.overhead_ms, params.overhead_per_request_ms) == (0.35, 0.25)
    assert params.model_overheads == (("ssd", 2.65, 2.45),)
    assert params.batch_overhead_ms(4, "ssd") == pytest.approx(3.0 + 2.7 * 4)
    assert params.batch_overhead_ms(4, "vgg19") == pytest.approx(1.35)
    # a model a little above the line (noise) gets nothing of its own
    per[0:2] = [_server("alexnet", 1.0, 0.5), _server("alexnet", 4.0, 1.5)]
    assert [m for m, _, _ in serving_params(per, "test").model_overheads] == ["ssd"]


def test_a_server_that_could_not_keep_up_is_marked_overloaded(tmp_path: Path) -> None:
    results = [SimpleNamespace(**vars(_result("a", 3.0, 2.0, 6.0, 1.5)), rate_rps=100.0, achieved_rps=99.0),
               SimpleNamespace(**vars(_result("b", 9.0, 2.0, 60.0, 40.0)), rate_rps=100.0, achieved_rps=80.0)]
    per = summarize_run(results, tmp_path, {"a": "s0", "b": "s1"})
    assert [s.overloaded for s in per] == [False, True]
    assert serving_params(per, "test").overhead_ms == 1.0  # b's inflated 7 ms is not in it
    # a short Poisson run sent fewer requests than its rate: judged against what was sent, not the rate
    short = [SimpleNamespace(**vars(_result("c", 3.0, 2.0, 6.0, 1.5)), rate_rps=22.0, offered_rps=19.0,
                             achieved_rps=18.8),
             SimpleNamespace(**vars(_result("d", 3.0, 2.0, 6.0, 1.5)), rate_rps=22.0, offered_rps=23.5,
                             achieved_rps=21.0)]
    assert [s.overloaded for s in summarize_run(short, tmp_path, {"c": "s2", "d": "s3"})] == [False, True]


def test_the_offered_rate_is_what_the_schedule_sent(tmp_path: Path) -> None:
    from igniter_opt.apply.report import WorkloadTarget, summarize

    # four requests over 0.5 s of schedule, the last answered 2 s later (a server that fell behind)
    records = [{"workload": "w", "scheduled_s": t, "sent_s": t, "received_s": t + 2.0 * (t == 0.5), "status": "ok",
                "latency_ms": 5.0} for t in (0.0, 0.1, 0.3, 0.5)]
    (r,) = summarize(records, [WorkloadTarget("w", "m", "1", "50", 10.0, 100.0, 5.0)])
    assert r.offered_rps == pytest.approx(8.0) and r.achieved_rps == pytest.approx(1.6)
    assert math.isnan(summarize([], [WorkloadTarget("w", "m", "1", "50", 10.0, 100.0, 5.0)])[0].offered_rps)


def test_a_new_measurement_keeps_what_was_calibrated_on_live_runs() -> None:
    from igniter_opt.domain import ServingParams
    from igniter_opt.profiling.serving import _keep_calibration

    new = ServingParams(0.4, 0.9, 0.06, "new")
    old = {"service_cv": 0.5, "service_cv_source": "live", "service_headroom": 0.2, "max_server_rate_rps": 550.0,
           "max_server_rate_source": "live runs"}
    kept, extra = _keep_calibration(new, old)
    assert (kept.service_cv, kept.service_headroom, kept.max_server_rate_rps) == (0.5, 0.2, 550.0)
    assert extra["service_cv_solo"] == 0.06 and extra["max_server_rate_source"] == "live runs"
    assert _keep_calibration(new, {})[0] == new  # nothing calibrated: the measurement as it is


def test_measure_serving_per_model_runs_every_server_and_keeps_the_calibration(tmp_path: Path) -> None:
    """Two models at two batches: two runs (three servers, then one) on the real tritonserver with the CPU
    stand-in; serving.json holds all four servers and keeps the live calibration of the one before."""
    _need_tritonserver()
    from igniter_opt.profiling.serving import measure_serving

    prof = tmp_path / "prof"
    shutil.copytree(REPO / "profiles" / "h200", prof, ignore=shutil.ignore_patterns("checkpoint.jsonl"))
    params, per_server = measure_serving(prof, duration_s=2, load_generator="python", echo_ms=1.0, max_lag_ms=1e4,
                                         models=("resnet50", "bert_base"), utilization=0.1)
    assert sorted((s.model, s.batch) for s in per_server) == [("bert_base", 1), ("bert_base", 4), ("resnet50", 1),
                                                               ("resnet50", 4)]
    assert (prof / "serving-run" / "run1").is_dir() and (prof / "serving-run" / "run2").is_dir()
    record = json.loads((prof / "serving.json").read_text())
    assert len(record["servers"]) == 4 and record["service_cv"] == 0.5 and record["max_server_rate_rps"] == 550.0
    assert read_serving(prof / "serving.json") == params
