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


def test_measure_serving_on_the_real_tritonserver_with_the_cpu_stand_in(tmp_path: Path) -> None:
    """The whole path (plan, apply, traces, serving.json) without a GPU; the numbers are the stand-in's."""
    pytest.importorskip("tritonclient.grpc")
    from igniter_opt.apply.triton import find_tritonserver
    from igniter_opt.errors import ApplyError
    from igniter_opt.profiling.serving import measure_serving

    try:
        find_tritonserver()
    except ApplyError:
        pytest.skip("no tritonserver (pip install --no-deps nvidia-pytriton==0.7.0)")
    prof = tmp_path / "prof"
    shutil.copytree(REPO / "profiles" / "h100", prof, ignore=shutil.ignore_patterns("serving.json", "checkpoint.jsonl"))
    # this busy 2-core machine cannot send on time to 1 ms: judge the path, not the host
    params, per_server = measure_serving(prof, duration_s=3, load_generator="python", echo_ms=1.0, max_lag_ms=1e4)
    assert len(per_server) == 3 and all(s.executed_batch >= 1 for s in per_server)
    assert params.overhead_ms >= 0 and params.client_ms > 0
    assert read_serving(prof / "serving.json") == params
    record = json.loads((prof / "serving.json").read_text())
    assert record["load_generator"] == "python" and len(record["servers"]) == 3
    # the profile now plans with the tail budget
    perf = load_profile(prof)
    assert perf.serving == params
    from igniter_opt.problems import BudgetChoice, make_problem

    assert make_problem((), perf, BudgetChoice(LatencyBudget.TAIL)).perf_model.serving_overhead_ms == params.overhead_ms
