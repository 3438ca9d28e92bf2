"""Running a deployment: write its files, start MPS and the servers, drive the load, always stop everything.

``apply_plan`` is the one-plan run; ``apply --diff`` (``transition.py``) composes the same public
steps: :func:`prepare_run` (last checks and files), :func:`start_mps`, :func:`start_servers`,
:func:`drive_load`, :func:`collect_server_stats`, :func:`stop_all`, :func:`stop_mps`, all under
:func:`interrupt_once`. Whatever happens (a server that exits or never becomes ready, a load
generator failure, Ctrl-C or SIGTERM), every process a run started is stopped and verified gone,
MPS is quit, and what was measured is written.
"""

from __future__ import annotations

import logging
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from igniter_opt.apply.deploy import Deployment, deployment_record, exec_trace_path
from igniter_opt.apply.launcher import Launcher, LauncherFactory, ServerSpec, make_launcher
from igniter_opt.apply.loadgen import LoadDriver, LoadFactory, LoadGenerator, LoadOutcome
from igniter_opt.apply.options import DEFAULT_MAX_LAG_MS
from igniter_opt.apply.perfanalyzer import (
    PerfAnalyzerLoad,
    check_perf_analyzer,
    find_perf_analyzer,
    perf_analyzer_env,
)
from igniter_opt.apply.ports import check_ports_free
from igniter_opt.apply.report import WorkloadResult, render_results, summarize, write_results
from igniter_opt.apply.repository import write_repository
from igniter_opt.apply.serverstats import read_exec_trace, server_statistics, workload_stats
from igniter_opt.apply.triton import prepare_backend_dir
from igniter_opt.errors import ApplyError, IgniterOptError, MpsError
from igniter_opt.gpu.mps import MpsDaemon
from igniter_opt.ioutil import atomic_write_json

log = logging.getLogger(__name__)

RESULT_FILES = ("requests.csv", "summary.csv", "summary.json", "latency.png")
Progress = Callable[[str], None]


@dataclass
class ApplyResult:
    out_dir: Path
    results: list[WorkloadResult]
    errors: list[str]
    interrupted: str | None = None
    ready_s: dict[str, float] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    max_lag_ms: float = DEFAULT_MAX_LAG_MS

    @property
    def ok(self) -> bool:
        return not self.errors and self.interrupted is None

    @property
    def valid(self) -> bool:
        """Every workload's load was sent on time (see ``report``)."""
        return all(r.valid for r in self.results)


# ---- steps -------------------------------------------------------------------------------------
@contextmanager
def interrupt_once() -> Iterator[dict[str, str]]:
    """In the main thread, the first SIGINT or SIGTERM raises KeyboardInterrupt; later ones are ignored.

    So a second Ctrl-C cannot cut the cleanup short (which is bounded by its own timeouts). The
    dict gets the name of the signal that interrupted.
    """
    seen: dict[str, str] = {}
    if threading.current_thread() is not threading.main_thread():
        yield seen
        return

    def handler(signum: int, frame: Any) -> None:
        if seen:
            log.warning("%s ignored: already stopping", signal.Signals(signum).name)
            return
        seen["signal"] = signal.Signals(signum).name
        raise KeyboardInterrupt

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield seen
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


@contextmanager
def failures_recorded(result: Any, interrupt: dict[str, str], say: Callable[[str], None]) -> Iterator[None]:
    """An interrupt or an ``IgniterOptError`` inside ends the run without raising: it is recorded in
    ``result`` (``interrupted``, ``errors``), so that the caller still stops everything and reports."""
    try:
        yield
    except KeyboardInterrupt:
        result.interrupted = interrupt.get("signal", "SIGINT")
        say(f"interrupted ({result.interrupted}); stopping everything")
    except IgniterOptError as exc:
        result.errors.append(str(exc))


def write_files(dep: Deployment) -> None:
    """The model repositories, the backend folder and deployment.json (before anything starts).

    What an earlier run left in the same --out is removed first (its repositories, whose models a
    server would load too, and its results, which would pass for this run's).
    """
    out = dep.options.out_dir.resolve()
    for d in ("repository", "backends", "parts", "logs"):
        shutil.rmtree(out / d, ignore_errors=True)
    (out / "logs").mkdir(parents=True)  # the served models write their execution traces there
    for f in RESULT_FILES:
        (out / f).unlink(missing_ok=True)
    prepare_backend_dir(dep.install, dep.backend_dir)
    for s in dep.servers:
        write_repository(s.repository, s.config, s.model_py)
    atomic_write_json(out / "deployment.json", deployment_record(dep))


@dataclass(frozen=True)
class RunTools:
    """How a run reports progress, starts servers and drives load (tests inject fakes)."""

    say: Progress
    launcher: LauncherFactory
    load: LoadFactory


def prepare_run(
    deployments: list[Deployment],
    specs: list[ServerSpec],
    launcher_factory: LauncherFactory | None,
    progress: Progress | None,
    load_factory: LoadFactory | None = None,
) -> RunTools:
    """Last checks before anything starts (the servers' ports free, MPS startable), then the files of every
    deployment; returns the tools of the run (defaults where not given). ApplyError on a problem."""
    if any(dep.assumptions for dep in deployments):
        raise ApplyError("this deployment was worked out for a dry run (it assumes "
                         f"{deployments[0].assumptions[0]}); build it without dry_run to run it")
    check_ports_free([s.ports for s in specs])
    mps = deployments[0].mps
    if mps is not None:
        try:
            mps.check()
        except MpsError as exc:
            raise ApplyError(str(exc)) from None
    load = load_factory or default_load_factory(deployments[0])
    for dep in deployments:
        write_files(dep)
    return RunTools(progress or (lambda msg: log.info("%s", msg)),
                    launcher_factory or make_launcher(deployments[0].options.launch_mode), load)


def default_load_factory(dep: Deployment) -> LoadFactory:
    """The load generator the options name; perf_analyzer is found and checked to start here first."""
    if dep.options.load_generator != "perf_analyzer":
        return LoadGenerator
    binary = find_perf_analyzer(dep.options.perf_analyzer)
    env = perf_analyzer_env(dep.install.lib_dirs, dep.options.out_dir.resolve() / "perf_analyzer-lib")
    check_perf_analyzer(binary, env)
    return PerfAnalyzerLoad.factory(binary, env)


def start_mps(mps: MpsDaemon | None, say: Progress) -> bool:
    """Start the deployment's MPS control daemon (none on CPU); True when one was started."""
    if mps is None:
        return False
    say("starting the MPS control daemon")
    mps.start()
    return True


def stop_mps(mps: MpsDaemon | None, errors: list[str]) -> None:
    """Quit MPS; a failure is recorded, not raised (everything else is stopped anyway)."""
    if mps is None:
        return
    try:
        mps.stop()
    except Exception as exc:  # noqa: BLE001 - reported; everything else is stopped anyway
        errors.append(f"stopping MPS: {exc}")


def start_servers(specs: list[ServerSpec], factory: LauncherFactory, timeout_s: float,
                  into: dict[str, Launcher]) -> dict[str, float]:
    """Start every server at once, then wait until all are ready within one ``timeout_s``.

    Each launcher goes into ``into`` before it starts, so that whoever cleans up stops it even when
    a later one fails. Returns each server's seconds to ready, from when the last one was started.
    """
    for spec in specs:
        into[spec.name] = lc = factory(spec)
        lc.start()
    t0 = time.monotonic()
    ready: dict[str, float] = {}
    for spec in specs:
        into[spec.name].wait_ready(max(1.0, timeout_s - (time.monotonic() - t0)))
        ready[spec.name] = round(time.monotonic() - t0, 3)
    return ready


def stop_all(launchers: list[Launcher]) -> list[str]:
    """Stop every server at once (each in a thread: a server takes seconds to shut down); returns errors."""
    errors: list[str] = []

    def one(lc: Launcher) -> None:
        try:
            lc.stop()
        except Exception as exc:  # noqa: BLE001 - keep stopping the others
            errors.append(f"stopping server {lc.spec.name}: {exc}")

    threads = [threading.Thread(target=one, args=(lc,), name=f"stop-{lc.spec.name}") for lc in launchers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def watch_servers(
    launchers: list[Launcher], gen: LoadDriver, errors: list[str], done: threading.Event
) -> None:
    """Stop the load as soon as a server dies during the run."""
    while not done.wait(0.5):
        for lc in list(launchers):  # a plan change removes the servers it stops on purpose
            if not lc.is_running():
                errors.append(f"server {lc.spec.name} exited during the run; log {lc.spec.log_path}")
                gen.stop()
                return


def drive_load(gen: LoadDriver, watched: list[Launcher], errors: list[str],
               also: Callable[[], None] | None = None, say: Progress | None = None) -> LoadOutcome:
    """Run the load while a watcher stops it as soon as a server in ``watched`` dies.

    ``also`` runs once the load processes exist (threads start there, after the fork); ``say``
    hears when every stream is connected and the load begins.
    """
    done = threading.Event()
    mon = threading.Thread(target=watch_servers, args=(watched, gen, errors, done), daemon=True)

    def started() -> None:
        mon.start()
        if also is not None:
            also()

    def go(_: float) -> None:
        if say is not None:
            say(f"load started ({len(gen.streams)} stream(s) connected and warmed up)")

    try:
        return gen.run(on_started=started, on_go=go)
    finally:
        done.set()
        if mon.is_alive():
            mon.join()


def collect_server_stats(launchers: list[Launcher]) -> dict[str, dict[str, float]]:
    """Triton's statistics of every server still running (ask before stopping them)."""
    return {lc.spec.name: server_statistics(lc.spec) for lc in launchers if lc.is_running()}


# ---- one plan ----------------------------------------------------------------------------------
def apply_plan(dep: Deployment, *, launcher_factory: LauncherFactory | None = None,
               progress: Progress | None = None, load_factory: LoadFactory | None = None) -> ApplyResult:
    """Run a deployment and measure it. Cleans up whatever happens; raises only for errors before the start.

    ``launcher_factory`` and ``load_factory``: how servers are started and load is driven (default:
    local ``tritonserver`` processes, ``LoadGenerator``).
    """
    tools = prepare_run([dep], [s.spec for s in dep.servers], launcher_factory, progress, load_factory)
    say = tools.say
    out = dep.options.out_dir.resolve()
    result = ApplyResult(out_dir=out, results=[], errors=[], max_lag_ms=dep.options.max_lag_ms)
    launchers: dict[str, Launcher] = {}
    gen: LoadDriver | None = None
    mps_started = False
    with interrupt_once() as sig:
        try:
            with failures_recorded(result, sig, say):
                mps_started = start_mps(dep.mps, say)
                say(f"starting {len(dep.servers)} server(s); waiting until ready "
                    f"(at most {dep.options.ready_timeout_s:g} s)")
                result.ready_s = start_servers([s.spec for s in dep.servers], tools.launcher,
                                               dep.options.ready_timeout_s, launchers)
                say(
                    f"servers ready after {max(result.ready_s.values(), default=0.0):.1f} s; driving load for "
                    f"{dep.options.duration_s:g} s ({len(dep.streams)} stream process(es), "
                    f"{dep.options.arrival} arrivals)"
                )
                gen = tools.load(list(dep.streams), out / "parts")
                result.errors.extend(drive_load(gen, list(launchers.values()), result.errors, say=say).errors)
        finally:
            _finish(dep, result, gen, launchers, mps_started)
    return result


def _finish(dep: Deployment, result: ApplyResult, gen: LoadDriver | None, launchers: dict[str, Launcher],
            mps_started: bool) -> None:
    """Stop the load, read the servers' statistics, stop every server and MPS, write what was measured."""
    if gen is not None:
        gen.stop()
    measured = gen is not None and gen.outcome is not None
    stats = collect_server_stats(list(launchers.values())) if measured else {}
    result.errors.extend(stop_all(list(launchers.values())))
    for name, st in stats.items():  # the traces are complete once the servers have stopped
        st.update(read_exec_trace(exec_trace_path(result.out_dir, name)))
    if mps_started:
        stop_mps(dep.mps, result.errors)
    if measured:
        assert gen is not None and gen.outcome is not None
        per_workload = workload_stats(stats, [(s.spec.name, s.placement.workload) for s in dep.servers])
        result.results = summarize(
            gen.outcome.records, dep.targets, per_workload, max_lag_ms=dep.options.max_lag_ms
        )
        result.files = write_results(result.out_dir, gen.outcome.records, result.results, _meta(dep, result))


def _meta(dep: Deployment, result: ApplyResult) -> dict[str, Any]:
    """The run's facts that go into summary.json next to the per-workload rows."""
    return {
        "schema": "igniter-opt/apply-results/v1",
        "planner": dep.plan.planner,
        "latency_budget": dep.plan.latency_budget,
        "profile": dep.plan.profile,
        "duration_s": dep.options.duration_s,
        "arrival": dep.options.arrival,
        "echo_ms": dep.options.echo_ms,
        "max_lag_ms": dep.options.max_lag_ms,
        "gpus": {s.gpu_id: {"uuid": s.gpu_uuid, "name": dep.gpu_names.get(s.gpu_id)} for s in dep.servers},
        "server_ready_s": result.ready_s,
        "errors": result.errors,
        "interrupted": result.interrupted,
    }


def render_result(result: ApplyResult) -> str:
    """The summary table, notes on invalid workloads, the serving overhead, the files written."""
    return render_results(result.results, result.files, result.max_lag_ms)
