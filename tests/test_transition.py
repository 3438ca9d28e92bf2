"""The plan change (``apply --diff``) without a server: fake launchers, a fake load driver, a fake MPS.

What is checked is the orchestration: which servers start and stop, and when; where each request
goes; the phases; the files; and that everything is stopped whatever happens.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import FakeBehaviour, FakeLauncher, FakeLoad, FakeMps

from igniter_opt.apply import run
from igniter_opt.apply.gpus import GpuInfo
from igniter_opt.apply.launcher import ServerSpec
from igniter_opt.apply.options import ApplyOptions
from igniter_opt.apply.transition import (
    apply_transition,
    build_transition,
    render_transition,
    render_transition_dry_run,
)
from igniter_opt.domain import GpuAssignment, Placement, Plan
from igniter_opt.errors import ApplyError

UUID0 = "GPU-00000000-0000-0000-0000-000000000000"
MACHINE = [GpuInfo(0, UUID0, "NVIDIA H100 80GB HBM3")]

OLD = Plan(profile="h100", planner="greedy", latency_budget="igniter", gpus=(GpuAssignment("gpu0", "H100", (
    Placement("KEEP", "resnet50", 500.0, 30.0, 2, 40.0),
    Placement("GROW", "vgg19", 500.0, 20.0, 2, 30.0),
    Placement("GONE", "alexnet", 500.0, 20.0, 2, 10.0),
)),))
NEW = Plan(profile="h100", planner="greedy", latency_budget="igniter", gpus=(GpuAssignment("gpu0", "H100", (
    Placement("KEEP", "resnet50", 500.0, 50.0, 2, 40.0),  # same server, higher rate
    Placement("GROW", "vgg19", 500.0, 40.0, 4, 45.0, queue_delay_ms=3.0),  # resized: a new server
    Placement("NEW", "alexnet", 500.0, 20.0, 2, 10.0),  # started
)),))


@pytest.fixture()
def fake_server(tmp_path: Path) -> Path:
    p = tmp_path / "bin" / "tritonserver"
    p.parent.mkdir()
    p.write_text("#!/bin/sh\nexit 3\n")
    p.chmod(0o755)
    return p


def transition(tmp_path: Path, fake_server: Path, mps: FakeMps, duration_s: float = 1.5, step_s: float = 0.5):
    options = ApplyOptions(out_dir=tmp_path / "out", tritonserver=str(fake_server), duration_s=duration_s,
                           arrival="constant")
    return build_transition(OLD, NEW, options, step_s, machine_gpus=MACHINE, mps=mps)


def test_build_transition_works_out_the_change(tmp_path: Path, fake_server: Path) -> None:
    mps = FakeMps()
    tr = transition(tmp_path, fake_server, mps)
    assert [s.spec.name for s in tr.start_new] == ["s1-gpu0-GROW", "s2-gpu0-NEW"]
    assert [s.spec.name for s in tr.stop_old] == ["s1-gpu0-GROW", "s2-gpu0-GONE"]
    assert tr.new.mps is mps and tr.new.servers[1].spec.env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "45"
    assert (
        tr.new.servers[1].config.max_queue_delay_us == 3000
        and tr.new.servers[1].config.queue_delay_source == "plan"
    )
    old_ports = {p for s in tr.old.servers for p in s.spec.ports.as_tuple()}
    assert not old_ports & {p for s in tr.new.servers for p in s.spec.ports.as_tuple()}
    by = {st.workload: st for st in tr.streams}
    assert (by["KEEP"].rate_rps, by["KEEP"].rate_after_rps, by["KEEP"].switch_url) == (30.0, 50.0, None)
    assert (
        by["GROW"].switch_server == "new-s1-gpu0-GROW"
        and by["GROW"].switch_url == tr.new.servers[1].spec.grpc_url
    )
    assert by["GONE"].rate_after_rps == 0.0
    assert by["NEW"].start_on_switch and by["NEW"].rate_rps == 0.0 and by["NEW"].rate_after_rps == 20.0
    text = render_transition_dry_run(tr)
    assert (
        text.splitlines()[1]
        == "change: kept 1, resized 1, moved 0, started 1, stopped 1; 1 restart(s); GPUs 1 -> 1"
    )
    assert mps.calls == [] and not (tmp_path / "out").exists()
    with pytest.raises(ApplyError, match=r"--step-at must be within the run \(0 < step < 1.5 s\), got 2"):
        transition(tmp_path, fake_server, mps, step_s=2.0)


def test_plan_change_under_load_with_fakes(
    tmp_path: Path, fake_server: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run, "prepare_backend_dir", lambda install, dest: dest)
    mps = FakeMps()
    tr = transition(tmp_path, fake_server, mps)
    calls: list[tuple[str, str]] = []
    launchers: list[FakeLauncher] = []

    def factory(spec: ServerSpec) -> FakeLauncher:
        launchers.append(FakeLauncher(spec, calls=calls))
        return launchers[-1]

    said: list[str] = []
    result = apply_transition(
        tr, launcher_factory=factory, load_factory=FakeLoad.factory(), progress=said.append
    )
    assert result.errors == [] and result.interrupted is None
    ev = result.events
    assert 0.45 < ev["step_s"] <= ev["ready_s"] <= ev["switched_s"] <= ev["old_stopped_s"] < 1.5
    starts = [name for what, name in calls if what == "start"]
    assert starts == ["s0-gpu0-KEEP", "s1-gpu0-GROW", "s2-gpu0-GONE", "s1-gpu0-GROW", "s2-gpu0-NEW"]
    # the old GROW and GONE servers stop once the clients have switched; every server is stopped at the end
    first_stops = [
        name for what, name in calls[calls.index(("wait_ready", "s2-gpu0-NEW")) :] if what == "stop"
    ]
    assert first_stops[:2] == ["s1-gpu0-GROW", "s2-gpu0-GONE"]
    assert not any(lc.running for lc in launchers) and mps.calls == ["start", "stop"]
    assert any(m.startswith("load started") for m in said)

    recs = json.loads((tmp_path / "out" / "transition.json").read_text())
    assert recs["valid"] is True and recs["diff"]["summary"]["resized"] == 1
    phases = {(p, w["workload"]) for p, ws in recs["phases"].items() for w in ws}
    assert ("before", "GONE") in phases and ("after", "NEW") in phases and ("after", "GONE") not in phases
    rows = (tmp_path / "out" / "requests.csv").read_text().splitlines()
    begun, done = ev["ready_s"], ev["switched_s"]  # between the two a request may go either way
    grow = [r.split(",") for r in rows[1:] if ",GROW," in r]
    assert {r[2] for r in grow if float(r[5]) < begun} == {"s1-gpu0-GROW"}
    assert {r[2] for r in grow if float(r[5]) >= done} == {"new-s1-gpu0-GROW"}
    assert all(float(r[5]) >= begun for r in (x.split(",") for x in rows[1:]) if r[1] == "NEW")
    text = render_transition(result)
    assert text.startswith("events (s since start): step ") and "\nafter:\n" in text and "INVALID" not in text


def test_a_new_server_that_never_gets_ready_stops_everything(tmp_path: Path, fake_server: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run, "prepare_backend_dir", lambda install, dest: dest)
    mps = FakeMps()
    tr = transition(tmp_path, fake_server, mps, duration_s=5.0, step_s=0.3)
    launchers: list[FakeLauncher] = []
    seen: set[str] = set()

    def factory(spec: ServerSpec) -> FakeLauncher:
        bad = spec.name in seen  # the second server of a name is the new plan's
        seen.add(spec.name)
        launchers.append(FakeLauncher(spec, FakeBehaviour.NEVER_READY if bad else FakeBehaviour.OK))
        return launchers[-1]

    loads: list[FakeLoad] = []
    result = apply_transition(tr, launcher_factory=factory, load_factory=FakeLoad.factory(loads))
    assert result.errors == ["server s1-gpu0-GROW was not ready after 180 s (raise --ready-timeout?)"]
    assert loads[0].stopped and "switched_s" not in result.events  # the load stopped, no client switched
    assert len(launchers) == 5 and not any(lc.running for lc in launchers)
    assert mps.calls == ["start", "stop"]
    assert json.loads((tmp_path / "out" / "transition.json").read_text())["errors"] == result.errors
