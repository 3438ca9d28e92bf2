"""Workloads CSV and plan JSON: contracts and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from igniter_opt.domain import PlanningProblem
from igniter_opt.errors import InputError, PlanError, ProblemError
from igniter_opt.planio import (
    PLAN_SCHEMA,
    plan_from_dict,
    plan_to_dict,
    read_plan,
    read_workloads,
    write_plan,
)
from igniter_opt.planner import greedy, run_planner


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "w.csv"
    p.write_text(text)
    return p


def test_reads_paper_mix(paper_workloads) -> None:
    assert len(paper_workloads) == 12
    assert paper_workloads[0].name == "W1" and paper_workloads[0].rate_rps == 1200.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name,model,slo_ms\nA,vgg19,20\n", "missing column(s) rate_rps"),
        ("name,model,slo_ms,rate_rps\nA,vgg19,20,-5\n", "row 2 ('A'): rate_rps must be a positive number, got '-5'"),
        ("name,model,slo_ms,rate_rps\nA,vgg19,fast,5\n", "row 2 ('A'): slo_ms must be a positive number, got 'fast'"),
        ("name,model,slo_ms,rate_rps\nA,vgg19,0,5\n", "slo_ms must be a positive number, got '0'"),
        ("name,model,slo_ms,rate_rps\nA,vgg19,20,\n", "rate_rps must be a positive number, got ''"),
        ("name,model,slo_ms,rate_rps\nA,vgg19,20,5\nA,ssd,30,5\n",
         "row 3: duplicate workload name 'A' (first at row 2)"),
        ("name,model,slo_ms,rate_rps\n", "no workloads"),
        ("name,model,slo_ms,rate_rps\nA,,20,5\n", "row 2 ('A'): empty model"),
    ],
)
def test_bad_workloads(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InputError) as exc:
        read_workloads(write(tmp_path, text))
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_unknown_model_names_row_and_profile(tmp_path: Path, any_model) -> None:
    ws = read_workloads(write(tmp_path, "name,model,slo_ms,rate_rps\nA,gpt5,20,5\n"))
    with pytest.raises(ProblemError, match=f"workload 'A': model 'gpt5' is not in profile '{any_model.name}'"):
        run_planner(PlanningProblem(ws, any_model), "greedy")


def test_plan_json_round_trip(tmp_path: Path, v100_model, paper_workloads) -> None:
    plan = greedy.solve(PlanningProblem(paper_workloads, v100_model))
    d = plan_to_dict(plan)
    assert d["schema"] == PLAN_SCHEMA
    assert list(d) == ["schema", "profile", "planner", "latency_budget", "gpus", "cost", "solver"]
    assert d["cost"] == {"gpus": 6, "per_hour": 6.0}
    assert d["solver"]["status"] == "heuristic" and d["solver"]["bound"] is None
    first = d["gpus"][0]["placements"][0]
    # issue 12.4: every placement records the queue delay its server runs with
    assert set(first) == {"workload", "model", "slo_ms", "rate_rps", "batch", "share", "queue_delay_ms", "predicted"}
    assert set(first["predicted"]) == {"latency_ms", "throughput_rps"}
    path = write_plan(plan, tmp_path / "plan.json")
    back = read_plan(path)
    assert plan_to_dict(back) == d


def test_plan_of_another_schema_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "plan.json"
    p.write_text(json.dumps({"schema": "someone-else/v3", "gpus": []}))
    with pytest.raises(PlanError, match="schema is 'someone-else/v3', expected 'igniter-opt/plan/v1'"):
        read_plan(p)
    p.write_text("[1, 2")
    with pytest.raises(PlanError, match="not valid JSON"):
        read_plan(p)
    with pytest.raises(PlanError, match=r"gpus\[0\]\.placements\[0\]: batch must be >= 1"):
        plan_from_dict({"schema": PLAN_SCHEMA, "gpus": [{"id": "g", "placements": [
            {"workload": "a", "model": "m", "batch": 0, "share": 10}]}]})


def test_written_files_get_the_ordinary_mode_not_0600(tmp_path) -> None:
    """Issue 14.4: atomic writes used mkstemp's private 0600 mode whatever the umask."""
    import os
    import stat

    from igniter_opt.ioutil import atomic_write_json, atomic_write_text

    old = os.umask(0o022)
    try:
        a = atomic_write_text(tmp_path / "a.txt", "x")
        b = atomic_write_json(tmp_path / "sub" / "b.json", {"k": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(a.stat().st_mode) == 0o644
    assert stat.S_IMODE(b.stat().st_mode) == 0o644
    assert list(tmp_path.glob(".*.tmp")) == [] and list((tmp_path / "sub").glob(".*.tmp")) == []


def test_a_row_with_an_extra_field_says_so(tmp_path: Path) -> None:
    """Issue 14.10: an extra field used to be read as the rate ('got 'extra'')."""
    with pytest.raises(InputError) as exc:
        read_workloads(write(tmp_path, "name,model,slo_ms,rate_rps\nA,vgg19,20,5,extra\n"))
    assert str(exc.value).endswith("row 2 has 5 fields but the header has 4; remove the extra field(s) or quote "
                                   "a value that contains a comma")


def test_a_csv_that_cannot_be_written_whole_leaves_the_old_file(tmp_path: Path) -> None:
    """atomic_write_csv: the header and every row, or (a row with a field outside the header) nothing new."""
    import csv

    from igniter_opt.ioutil import atomic_write_csv

    out = tmp_path / "r.csv"
    atomic_write_csv(out, ["a", "b"], [{"a": 1, "b": 2.5}, {"a": "x", "b": ""}])
    assert list(csv.DictReader(out.open(newline=""))) == [{"a": "1", "b": "2.5"}, {"a": "x", "b": ""}]
    with pytest.raises(ValueError):
        atomic_write_csv(out, ["a", "b"], [{"a": 3, "b": 4}, {"a": 5, "c": 6}])
    assert out.read_text().splitlines() == ["a,b", "1,2.5", "x,"]
    assert list(tmp_path.glob(".*.tmp")) == []
