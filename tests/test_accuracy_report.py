"""benchmarks/accuracy.py: seeded mixes and the report built from stored records."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from igniter_opt.perfmodel.store import write_profile
from igniter_opt.profiling.plan import ProfilePlan
from igniter_opt.profiling.profiler import run_plan
from igniter_opt.profiling.simulated import SimulatedBackend, synthetic_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def accuracy():
    spec = importlib.util.spec_from_file_location("accuracy", REPO / "benchmarks" / "accuracy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_mixes_are_seeded_and_valid(accuracy) -> None:
    a, b = accuracy.draw_mixes(48, 7), accuracy.draw_mixes(48, 7)
    assert a == b and a != accuracy.draw_mixes(48, 8)
    for m in a:
        assert 2 <= len(m["workloads"]) <= 4
        assert sum(w["share_pct"] for w in m["workloads"]) <= 100
        assert all(w["share_pct"] >= 10 and w["batch"] in accuracy.BATCHES for w in m["workloads"])


def test_report_from_stored_records(accuracy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    truth = synthetic_model()
    raw = run_plan(ProfilePlan(models=tuple(truth.models)), SimulatedBackend(truth), tmp_path / "p", progress=False)
    from igniter_opt.perfmodel.fit import fit_profile

    write_profile(raw, fit_profile(raw, "p"), tmp_path / "p")
    results = tmp_path / "runs.jsonl"
    with results.open("w") as fh:
        for m in accuracy.draw_mixes(5, 1):
            slots = [(w["model"], w["batch"], w["share_pct"]) for w in m["workloads"]]
            pred = truth.predict_gpu(slots)
            wl = [{**w, "measured_ms": lat * 1.1, "measured_rps": thr}
                  for w, (lat, thr) in zip(m["workloads"], pred, strict=True)]
            fh.write(json.dumps({"mix": m["mix"], "gpu": raw.gpu["name"], "workloads": wl}) + "\n")
    monkeypatch.setattr(sys, "argv", ["accuracy", "report", str(results), "--profile", str(tmp_path / "p"),
                                      "-o", str(tmp_path / "out"), "--tag", "sim"])
    assert accuracy.main() == 0
    with (tmp_path / "out" / "accuracy_sim.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["mix", "model", "batch", "share", "predicted_ms", "measured_ms", "predicted_rps",
                             "measured_rps"]
    summary = json.loads((tmp_path / "out" / "accuracy_sim.json").read_text())
    # predictions are 1/1.1 of the "measured" latency: |1/1.1 - 1| = 9.09 % everywhere
    assert summary["latency_rel_error"]["median"] == pytest.approx(1 - 1 / 1.1, abs=1e-3)
    assert summary["throughput_rel_error"]["max"] < 1e-3
    assert (tmp_path / "out" / "accuracy_sim.png").stat().st_size > 0


def test_run_measures_the_seeded_mixes_through_the_profilers_mix_runner(
    accuracy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run`` (the GPU half) drives ``igniter_opt.profiling.corun.run_mixes``: here on the simulated
    GPU, cut off after 3 mixes and resumed, in the record format the report and ``--co-runs`` read."""
    from igniter_opt.perfmodel.interference import load_co_runs
    from igniter_opt.profiling import cuda

    truth = synthetic_model()
    backends: list[SimulatedBackend] = []

    def fake_cuda(gpu: int, *, log_dir: Path) -> SimulatedBackend:
        be = SimulatedBackend(truth, fail_after=3 if not backends else None)
        be._facts = {"name": "simulated GPU", "uuid": "GPU-sim", "driver": "sim"}  # type: ignore[attr-defined]
        backends.append(be)
        return be

    monkeypatch.setattr(cuda, "CudaBackend", fake_cuda)
    out = tmp_path / "runs.jsonl"
    argv = ["accuracy", "run", "-o", str(out), "--mixes", "6", "--seed", "7", "--log-dir", str(tmp_path / "logs")]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(Exception, match="simulated failure"):
        accuracy.main()
    assert [json.loads(line)["mix"] for line in out.read_text().splitlines()] == [0, 1, 2]
    assert accuracy.main() == 0
    assert len(backends[1].calls) == 3  # only the missing mixes
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    mixes = accuracy.draw_mixes(6, 7)
    assert [r["mix"] for r in recs] == list(range(6))
    for rec, mix in zip(recs, mixes, strict=True):
        assert [{k: w[k] for k in ("model", "batch", "share_pct")} for w in rec["workloads"]] == mix["workloads"]
        assert rec["gpu"] == "simulated GPU" and rec["wall_s"] >= 0
        slots = [(w["model"], w["batch"], w["share_pct"]) for w in mix["workloads"]]
        assert [w["measured_ms"] for w in rec["workloads"]] == [lat for lat, _ in truth.predict_gpu(slots)]
    assert len(load_co_runs(out, gpu="simulated GPU")) == 6
