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
