"""Applying a plan change live: ``igniter-opt apply --diff OLD.json NEW.json``.

The old plan is deployed and driven at its rates. At ``step_s`` the rates become the new plan's
and the change begins: servers of resized, moved and started placements are started next to the
old ones (an MPS share is fixed for a running process, so a changed placement is a new server);
once all of them are ready, their clients switch to them, and only then are the old servers of
resized, moved and stopped placements stopped (Triton finishes what they have in flight). Kept
placements keep their server throughout; only their rate changes. No request is sent to a server
that is not ready or already stopping.

Requests are classified by send time: ``before`` the step, ``transition`` (step to switch: the
old servers carry the new rates while the new ones start) and ``after``. Results per workload and
phase go to ``summary.csv`` and ``transition.json``; ``latency.png`` marks the step and the switch.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from igniter_opt.apply.deploy import (
    Deployment,
    ServerPlan,
    base_stream,
    build_deployment,
    max_rps_per_stream,
    workload_targets,
)
from igniter_opt.apply.launcher import Launcher, LauncherFactory
from igniter_opt.apply.loadgen import LoadDriver, LoadFactory, StreamSpec, split_streams
from igniter_opt.apply.options import DEFAULT_MAX_LAG_MS, ApplyOptions
from igniter_opt.apply.report import (
    WorkloadResult,
    invalid_notes,
    plot_latency,
    summarize,
    summary_table,
    write_requests_csv,
)
from igniter_opt.apply.run import (
    Progress,
    drive_load,
    failures_recorded,
    interrupt_once,
    prepare_run,
    start_mps,
    start_servers,
    stop_all,
    stop_mps,
)
from igniter_opt.domain import Plan
from igniter_opt.errors import ApplyError, IgniterOptError
from igniter_opt.ioutil import atomic_write_json, atomic_write_text
from igniter_opt.replan.diff import ChangeKind, PlanDiff, diff_plans

NEW_PREFIX = "new-"  # names of the new plan's servers and streams, as records show them
PHASES = ("before", "transition", "after")


@dataclass(frozen=True)
class Transition:
    """Two deployments (old and new plan) and what happens to each server at the change."""

    old: Deployment
    new: Deployment
    diff: PlanDiff
    step_s: float
    streams: tuple[StreamSpec, ...]
    start_new: tuple[ServerPlan, ...]  # new servers started at the step
    stop_old: tuple[ServerPlan, ...]  # old servers stopped once clients have switched
    options: ApplyOptions


@dataclass
class TransitionResult:
    out_dir: Path
    results: dict[str, list[WorkloadResult]] = field(default_factory=dict)  # phase -> per workload
    events: dict[str, float] = field(default_factory=dict)  # seconds since the load started
    errors: list[str] = field(default_factory=list)
    interrupted: str | None = None
    files: list[Path] = field(default_factory=list)
    max_lag_ms: float = DEFAULT_MAX_LAG_MS


def _by_slot(dep: Deployment) -> dict[tuple[str, int], ServerPlan]:
    """(GPU id, index on that GPU) -> server, in plan order (how ``build_deployment`` lists servers)."""
    keys = [(g.gpu_id, slot) for g in dep.plan.gpus for slot in range(len(g.placements))]
    return dict(zip(keys, dep.servers, strict=True))


def check_change(old_plan: Plan, new_plan: Plan, options: ApplyOptions, step_s: float) -> None:
    """A change this executor can apply: plans of one profile, a step within the run, the Python generator."""
    if old_plan.profile != new_plan.profile:
        raise ApplyError(f"the plans were made with different profiles ('{old_plan.profile}' and "
                         f"'{new_plan.profile}'); replan from the running plan with its profile")
    if options.load_generator != "python":
        raise ApplyError(f"apply --diff needs --load-generator python ({options.load_generator} cannot move "
                         "a stream to another server during a run)")
    if not 0 < step_s < options.duration_s:
        raise ApplyError(f"--step-at must be within the run (0 < step < {options.duration_s:g} s), "
                         f"got {step_s:g}")


def build_transition(
    old_plan: Plan,
    new_plan: Plan,
    options: ApplyOptions,
    step_s: float,
    **machine: Any,
) -> Transition:
    """Work out both deployments and the change; starts and writes nothing.

    ``machine``: ``machine_gpus``, ``mps``, ``base_env``, ``dry_run`` as for ``build_deployment``.
    """
    check_change(old_plan, new_plan, options, step_s)
    diff = diff_plans(old_plan, new_plan)
    old = build_deployment(old_plan, options, **machine)
    taken = frozenset(p for s in old.servers for p in s.spec.ports.as_tuple())
    new_options = replace(options, out_dir=options.out_dir / "new",
                          base_port=None if options.base_port is None else options.base_port + len(taken))
    new = build_deployment(new_plan, new_options, **{**machine, "mps": old.mps}, exclude_ports=taken)
    old_at, new_at = _by_slot(old), _by_slot(new)

    streams: list[StreamSpec] = []
    start_new: list[ServerPlan] = []
    stop_old: list[ServerPlan] = []
    for i, c in enumerate(diff.changes):
        o = old_at.get((c.old_gpu, c.old_slot)) if c.old_gpu is not None and c.old_slot is not None else None
        n = new_at.get((c.new_gpu, c.new_slot)) if c.new_gpu is not None and c.new_slot is not None else None
        new_rate = c.new_rate_rps or 0.0
        if c.kind is ChangeKind.STARTED:
            assert n is not None
            name = NEW_PREFIX + n.spec.name
            base = replace(base_stream(n, options, i, new_rate), stream=name, server=name, rate_rps=0.0,
                           rate_after_rps=new_rate, step_s=step_s, switch_server=name, start_on_switch=True,
                           warmup_requests=0)
            start_new.append(n)
        else:
            assert o is not None
            base = replace(base_stream(o, options, i, new_rate), step_s=step_s, rate_after_rps=new_rate)
            if c.kind in (ChangeKind.RESIZED, ChangeKind.MOVED):
                assert n is not None
                base = replace(base, switch_url=n.spec.grpc_url, switch_server=NEW_PREFIX + n.spec.name)
                start_new.append(n)
            if c.kind is not ChangeKind.KEPT:
                stop_old.append(o)
        streams.extend(split_streams(base, max_rps_per_stream(options)))
    return Transition(old, new, diff, step_s, tuple(streams), tuple(start_new), tuple(stop_old), options)


def render_transition_dry_run(tr: Transition) -> str:
    d = tr.diff
    lines = [
        "dry run: nothing is started or written",
        (
            f"change: {', '.join(f'{k} {v}' for k, v in d.counts.items())}; {d.restarts} restart(s); "
            f"GPUs {d.old_gpus} -> {d.new_gpus}"
        ),
        f"at 0 s: the old plan's {len(tr.old.servers)} server(s) under load at the old rates",
        f"at {tr.step_s:g} s: new rates; start {len(tr.start_new)} server(s): "
        + (
            ", ".join(
                f"{s.spec.name} ({s.placement.workload} on {s.gpu_id}, share {s.placement.share_pct:g} %, "
                f"batch {s.placement.batch})"
                for s in tr.start_new
            )
            or "none"
        ),
        "once they are ready: their clients switch to them, then stop "
        + (", ".join(f"{s.spec.name} ({s.placement.workload})" for s in tr.stop_old) or "nothing"),
    ]
    for s in tr.start_new:
        lines.append(f"  new server {s.spec.name}: command {' '.join(s.spec.argv)}")
        lines.append(f"    env: {' '.join(f'{k}={v}' for k, v in s.spec.env_overrides.items())}")
    return "\n".join(lines)


def _phase(sent_s: float, step_s: float, switched_s: float) -> str:
    if sent_s < step_s:
        return "before"
    return "transition" if sent_s < switched_s else "after"


def _step_due(gen: LoadDriver, step_s: float) -> float | None:
    """Wait until ``step_s`` after the load's start; returns the start (epoch s), None if the load stopped."""
    while not gen.started:
        if gen.stopped:
            return None
        time.sleep(0.01)
    t0 = gen.start_epoch
    while (left := t0 + step_s - time.time()) > 0:
        if gen.stopped:
            return None
        time.sleep(min(left, 0.01))
    return t0


def _run_change(tr: Transition, gen: LoadDriver, started: dict[str, Launcher], watched: list[Launcher],
                old_launchers: dict[str, Launcher], factory: LauncherFactory,
                events: dict[str, float], errors: list[str], say: Progress,
                release: threading.Event) -> None:
    """At the step: start the new servers, switch their clients once all are ready, stop the old ones.

    The servers started here die with this thread (they are started with PR_SET_PDEATHSIG, which
    follows the thread that forked them), so it returns only once ``release`` is set, after the
    run has stopped every server.
    """
    try:
        t0 = _step_due(gen, tr.step_s)
        if t0 is None:
            return  # the run stopped before the step: start nothing
        events["step_s"] = time.time() - t0
        say(f"step at {events['step_s']:.1f} s: starting {len(tr.start_new)} new server(s)")
        start_servers([s.spec for s in tr.start_new], factory, tr.options.ready_timeout_s, started)
        watched.extend(started.values())
        events["ready_s"] = time.time() - t0  # also just before the switch: no request on a new server before it
        gen.switch({NEW_PREFIX + s.spec.name for s in tr.start_new})
        events["switched_s"] = time.time() - t0
        say(f"new servers ready and clients switched at {events['switched_s']:.1f} s; stopping "
            f"{len(tr.stop_old)} old server(s)")
        to_stop = [old_launchers[s.spec.name] for s in tr.stop_old]
        for lc in to_stop:
            watched.remove(lc)
        errors.extend(stop_all(to_stop))
        events["old_stopped_s"] = time.time() - t0
    except IgniterOptError as exc:
        errors.append(str(exc))
        gen.stop()
    except Exception as exc:  # noqa: BLE001 - reported, and the run stops
        errors.append(f"plan change failed: {type(exc).__name__}: {exc}")
        gen.stop()
    finally:
        release.wait()


def apply_transition(
    tr: Transition,
    *,
    launcher_factory: LauncherFactory | None = None,
    progress: Progress | None = None,
    load_factory: LoadFactory | None = None,
) -> TransitionResult:
    """Run the old plan, change to the new one under load, measure every phase; cleans up whatever happens.

    ``launcher_factory``, ``load_factory``: as for ``apply_plan``.
    """
    # the old plan's MPS daemon serves the new servers too (build_transition gives them its folders)
    tools = prepare_run([tr.old, tr.new], [s.spec for s in (*tr.old.servers, *tr.start_new)],
                        launcher_factory, progress, load_factory)
    say, factory = tools.say, tools.launcher
    out = tr.options.out_dir.resolve()
    result = TransitionResult(out_dir=out, max_lag_ms=tr.options.max_lag_ms)
    old_launchers: dict[str, Launcher] = {}
    started: dict[str, Launcher] = {}
    watched: list[Launcher] = []
    gen: LoadDriver | None = None
    ctl: threading.Thread | None = None
    release = threading.Event()
    mps_started = False
    with interrupt_once() as sig:
        try:
            with failures_recorded(result, sig, say):
                mps_started = start_mps(tr.old.mps, say)
                ready = start_servers(
                    [s.spec for s in tr.old.servers], factory, tr.options.ready_timeout_s, old_launchers
                )
                watched.extend(old_launchers.values())
                say(
                    f"old plan ready after {max(ready.values(), default=0.0):.1f} s; load for "
                    f"{tr.options.duration_s:g} s, "
                    f"change at {tr.step_s:g} s"
                )
                gen = tools.load(list(tr.streams), out / "parts")
                ctl = threading.Thread(target=_run_change, daemon=True,
                                       args=(tr, gen, started, watched, old_launchers, factory, result.events,
                                             result.errors, say, release))
                outcome = drive_load(gen, watched, result.errors, also=ctl.start, say=say)
                result.errors.extend(outcome.errors)
        finally:
            _finish(tr, result, gen, old_launchers, started, ctl, release, mps_started)
    return result


def _finish(
    tr: Transition,
    result: TransitionResult,
    gen: LoadDriver | None,
    old_launchers: dict[str, Launcher],
    started: dict[str, Launcher],
    ctl: threading.Thread | None,
    release: threading.Event,
    mps_started: bool,
) -> None:
    """Stop the load and every server (also one the change thread started meanwhile), quit MPS, write."""
    if gen is not None:
        gen.stop()
    stopped = [*old_launchers.values(), *started.values()]
    result.errors.extend(stop_all(stopped))
    release.set()
    if ctl is not None and ctl.is_alive():
        ctl.join(timeout=tr.options.ready_timeout_s + 30)
    # a new server whose start was under way when the run stopped: the change thread has returned now
    result.errors.extend(stop_all([lc for lc in list(started.values()) if lc not in stopped]))
    if mps_started:
        stop_mps(tr.old.mps, result.errors)
    if gen is not None and gen.outcome is not None:
        result.files = _write(tr.options.out_dir.resolve(), gen.outcome.records, result, tr)


def phase_results(
    records: list[dict[str, Any]],
    old_plan: Plan,
    new_plan: Plan,
    step_s: float,
    switched_s: float,
    end_s: float,
    max_lag_ms: float = DEFAULT_MAX_LAG_MS,
) -> dict[str, list[WorkloadResult]]:
    """Per phase, per workload: the results of the requests sent in that phase (from stored records).

    ``achieved_rps`` is the successful responses per second of the phase's own length.
    """
    bounds = {
        "before": (0.0, step_s),
        "transition": (step_s, min(switched_s, end_s)),
        "after": (switched_s, end_s),
    }
    by_phase: dict[str, list[dict[str, Any]]] = {p: [] for p in PHASES}
    for r in records:
        by_phase[_phase(float(r["sent_s"]), step_s, switched_s)].append(r)
    out = {}
    for phase, recs in by_phase.items():
        lo, hi = bounds[phase]
        rows = summarize(
            recs, workload_targets(old_plan if phase == "before" else new_plan), max_lag_ms=max_lag_ms
        )
        out[phase] = [
            replace(r, achieved_rps=r.ok / (hi - lo) if hi > lo else math.nan) for r in rows if r.requests > 0
        ]
    return out


def _write(out: Path, records: list[dict[str, Any]], result: TransitionResult, tr: Transition) -> list[Path]:
    step = result.events.get("step_s", tr.step_s)
    switched = result.events.get("switched_s", math.inf)
    result.results = phase_results(records, tr.old.plan, tr.new.plan, step, switched, tr.options.duration_s,
                                   tr.options.max_lag_ms)
    files = [write_requests_csv(out / "requests.csv", records)]
    header = ["phase", *WorkloadResult.__dataclass_fields__]
    lines = [",".join(header)]
    for phase in PHASES:
        for r in result.results[phase]:
            vals = [phase] + [("" if isinstance(v, float) and not math.isfinite(v) else
                               f"{v:.4f}" if isinstance(v, float) else str(v)) for v in r.__dict__.values()]
            lines.append(",".join(vals))
    files.append(atomic_write_text(out / "summary.csv", "\n".join(lines) + "\n"))
    files.append(atomic_write_json(out / "transition.json", {
        "schema": "igniter-opt/transition-results/v1",
        "step_s": tr.step_s,
        "events_s": result.events,
        "diff": tr.diff.to_dict(),
        "errors": result.errors,
        "interrupted": result.interrupted,
        "max_lag_ms": tr.options.max_lag_ms,
        "valid": all(r.valid for rs in result.results.values() for r in rs),
        "phases": {p: [{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                        for k, v in r.__dict__.items()} for r in rs] for p, rs in result.results.items()},
    }))
    marks = {"rate step": step}
    if math.isfinite(switched):
        marks["clients switched"] = switched
    png = plot_latency(out / "latency.png", records, _targets_union(result), marks)
    if png is not None:
        files.append(png)
    return files


def _targets_union(result: TransitionResult) -> list[WorkloadResult]:
    """One panel per workload (the latest phase it appears in names it)."""
    seen: dict[str, WorkloadResult] = {}
    for phase in PHASES:
        for r in result.results.get(phase, []):
            seen[r.workload] = r
    return list(seen.values())


def render_transition(result: TransitionResult) -> str:
    lines = []
    ev = result.events
    if ev:
        lines.append("events (s since start): " + ", ".join(f"{k[:-2]} {v:.2f}" for k, v in ev.items()))
    for phase in PHASES:
        if result.results.get(phase):
            lines += ["", f"{phase}:", summary_table(result.results[phase])]
            notes = invalid_notes(result.results[phase], result.max_lag_ms)
            lines += [f"{phase}: {n}" for n in notes]
    if result.files:
        lines += ["", "wrote " + ", ".join(str(f) for f in result.files)]
    return "\n".join(lines)
