"""Apply a plan: one ``tritonserver`` per placement under MPS, open-loop load, SLO attainment.

``build_deployment`` validates the plan against this machine and works out every server's
command, environment, ports and model configuration without starting or writing anything
(``render_dry_run`` prints it). ``apply_plan`` then writes the model repositories, starts MPS
and the servers, waits until they are ready, drives the load, and writes the results. Whatever
happens (a server that exits or never becomes ready, a load generator failure, Ctrl-C or
SIGTERM), every process it started is stopped, MPS is quit, and what was measured is written.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from igniter_opt.apply.gpus import GpuInfo, nvml_gpus, parse_gpu_map, resolve_gpus
from igniter_opt.apply.launcher import Launcher, LaunchMode, ServerSpec, make_launcher
from igniter_opt.apply.loadgen import Arrival, LoadGenerator, LoadOutcome, StreamSpec, split_streams
from igniter_opt.apply.models import ServedModel, served_model, zoo_models
from igniter_opt.apply.mps import MpsControl, MpsDaemon, NoMps
from igniter_opt.apply.ports import HOST, ServerPorts, allocate_ports, check_ports_free
from igniter_opt.apply.repository import ModelConfig, model_config_for, model_py_for, write_repository
from igniter_opt.apply.results import (
    WorkloadResult,
    WorkloadTarget,
    plot_latency,
    summarize,
    summary_table,
    write_requests_csv,
    write_summary,
)
from igniter_opt.apply.triton import (
    TritonInstall,
    TritonServerConfig,
    find_tritonserver,
    prepare_backend_dir,
    python_version,
    server_environment,
)
from igniter_opt.domain import LatencyBudget, Placement, Plan
from igniter_opt.errors import ApplyError
from igniter_opt.ioutil import atomic_write_json

log = logging.getLogger(__name__)

SHARE_EPS = 1e-6
# Variables of the caller that must not leak into a server (each server gets its own).
_SCRUB = ("CUDA_VISIBLE_DEVICES", "CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY",
          "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE")


@dataclass(frozen=True)
class ApplyOptions:
    """Everything ``apply`` can be told; defaults are what the CLI uses."""

    out_dir: Path = Path("apply-out")
    duration_s: float = 60.0
    arrival: str = Arrival.POISSON
    tritonserver: str | None = None
    gpus: str | None = None  # 'gpu0=GPU-<uuid>,gpu1=1'
    base_port: int | None = None
    ready_timeout_s: float = 180.0
    echo_ms: float | None = None  # serve the numpy-free stand-in on CPU instead of the zoo (no GPU, no MPS)
    seed: int = 0
    max_rps_per_process: float = 200.0
    request_timeout_s: float = 10.0
    drain_s: float = 5.0
    max_requests_factor: float = 2.0  # a stream sends at most rate * duration * factor + 10 requests
    launch_mode: LaunchMode = LaunchMode.LOCAL
    torch_threads: int = 1  # CPU threads of torch in each server (0: torch's default, one per core)
    output_device: str = "cpu"  # where the served model hands its outputs to Triton: cpu or gpu

    def __post_init__(self) -> None:
        if self.arrival not in Arrival.ALL:
            raise ApplyError(f"--arrival must be one of {', '.join(Arrival.ALL)}, got {self.arrival!r}")
        if not self.duration_s > 0:
            raise ApplyError(f"--duration must be positive, got {self.duration_s:g}")
        if self.echo_ms is not None and self.echo_ms < 0:
            raise ApplyError(f"--echo-ms must be >= 0, got {self.echo_ms:g}")
        if self.output_device not in ("cpu", "gpu"):
            raise ApplyError(f"output_device must be 'cpu' or 'gpu', got {self.output_device!r}")
        if self.torch_threads < 0:
            raise ApplyError(f"torch_threads must be >= 0, got {self.torch_threads}")


@dataclass(frozen=True)
class ServerPlan:
    """One placement and everything about the server that serves it."""

    gpu_id: str
    gpu_uuid: str | None  # None on CPU (--echo-ms)
    placement: Placement
    model: ServedModel
    config: ModelConfig
    model_py: str
    repository: Path
    spec: ServerSpec


@dataclass(frozen=True)
class Deployment:
    """A plan worked out for this machine: servers, load streams, MPS, files to write."""

    plan: Plan
    options: ApplyOptions
    servers: tuple[ServerPlan, ...]
    streams: tuple[StreamSpec, ...]
    targets: tuple[WorkloadTarget, ...]
    install: TritonInstall
    backend_dir: Path
    mps: MpsControl = field(compare=False)
    model_source: str = "zoo"
    gpu_names: dict[str, str] = field(default_factory=dict, compare=False)  # plan GPU id -> NVML name


@dataclass
class ApplyResult:
    out_dir: Path
    results: list[WorkloadResult]
    errors: list[str]
    interrupted: str | None = None
    ready_s: dict[str, float] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and self.interrupted is None


# ---- validation and deployment -----------------------------------------------------------------
def check_plan(plan: Plan, *, echo: bool) -> str:
    """Problems of the plan itself, before looking at the machine; returns where the model list came from."""
    if not plan.placements():
        raise ApplyError("the plan has no placements; nothing to apply")
    ids = [g.gpu_id for g in plan.gpus]
    if len(set(ids)) != len(ids):
        raise ApplyError(f"the plan names a GPU twice ({', '.join(ids)})")
    for g in plan.gpus:
        if g.total_share_pct > 100.0 + SHARE_EPS:
            shares = " + ".join(f"{p.workload} {p.share_pct:g}" for p in g.placements)
            raise ApplyError(f"GPU {g.gpu_id}: shares add up to {g.total_share_pct:g} % ({shares}), over 100 %")
    source = "echo stand-in"
    if not echo:
        _, source = zoo_models()
    for gid, p in plan.placements():
        served_model(p.model, echo=echo)
        if not (math.isfinite(p.rate_rps) and p.rate_rps > 0 and math.isfinite(p.slo_ms) and p.slo_ms > 0):
            raise ApplyError(
                f"placement {p.workload} on {gid}: rate_rps and slo_ms must be positive numbers to drive and judge "
                f"load, got {p.rate_rps:g} and {p.slo_ms:g}; write them into the plan"
            )
    return source


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _mps_dirs(out_dir: Path) -> tuple[Path, Path]:
    """Private MPS folders; the pipe folder is kept short (a UNIX socket path has at most 107 bytes)."""
    out = out_dir.resolve()
    pipe = out / "mps" / "pipe"
    if len(str(pipe)) > 80:
        digest = hashlib.sha1(str(out).encode()).hexdigest()[:12]
        pipe = Path(tempfile.gettempdir()) / f"igniter-opt-mps-{digest}"
    return pipe, out / "mps" / "log"


def _site_dirs() -> list[str]:
    """Where this interpreter finds packages: the served model.py adds them (the stub knows no venv).

    The site-packages folders (their .pth files make an editable install work), then the folder
    this igniter_opt was imported from, in case it is not installed but found through sys.path.
    """
    import igniter_opt

    dirs = [p for p in sys.path if p and ("site-packages" in p or "dist-packages" in p) and os.path.isdir(p)]
    here = str(Path(igniter_opt.__file__).resolve().parent.parent)
    return list(dict.fromkeys([*dirs, here]))


def build_deployment(
    plan: Plan,
    options: ApplyOptions,
    *,
    machine_gpus: list[GpuInfo] | None | Callable[[], list[GpuInfo] | None] = None,
    mps: MpsControl | None = None,
    base_env: dict[str, str] | None = None,
    exclude_ports: frozenset[int] = frozenset(),
) -> Deployment:
    """Validate the plan against this machine and work out every server; starts and writes nothing.

    ``machine_gpus``: the machine's GPUs, or a function listing them (default: NVML).
    """
    echo = options.echo_ms is not None
    source = check_plan(plan, echo=echo)
    placements = plan.placements()
    gpu_ids = [g.gpu_id for g in plan.gpus]
    gpu_names: dict[str, str] = {}
    if echo:
        uuids: dict[str, str | None] = {g: None for g in gpu_ids}
    else:
        source_of_gpus = machine_gpus if machine_gpus is not None else nvml_gpus  # None: ask NVML
        machine = source_of_gpus() if callable(source_of_gpus) else source_of_gpus
        uuids = dict(resolve_gpus(gpu_ids, machine, parse_gpu_map(options.gpus)))
        by_uuid = {g.uuid: g.name for g in machine or []}
        gpu_names = {gid: by_uuid.get(str(u), "unknown") for gid, u in uuids.items()}
    install = find_tritonserver(options.tritonserver)
    ports = allocate_ports(len(placements), options.base_port, exclude=exclude_ports)

    out = options.out_dir.resolve()
    backend_dir = out / "backends"
    pipe_dir, mps_log = _mps_dirs(out)
    if mps is None:
        mps = NoMps() if echo else MpsDaemon(pipe_dir, mps_log)
    env0 = {k: v for k, v in (base_env if base_env is not None else os.environ).items() if k not in _SCRUB}
    server_env0 = server_environment(install, env0)
    budget = LatencyBudget(plan.latency_budget)
    margin = plan.margin or 0.0

    servers = []
    streams: list[StreamSpec] = []
    for i, ((gid, p), sp) in enumerate(zip(placements, ports, strict=True)):
        name = _safe(f"s{i}-{gid}-{p.workload}")
        model = served_model(p.model, echo=echo)
        cfg = model_config_for(p, model, budget, margin, echo_ms=options.echo_ms,
                               exec_trace=exec_trace_path(out, name), torch_threads=options.torch_threads,
                               output_device=options.output_device)
        repo = out / "repository" / name
        flags = TritonServerConfig().update({
            "model-repository": repo,
            "backend-directory": backend_dir,
            "http-address": HOST, "http-port": sp.http,
            "grpc-address": HOST, "grpc-port": sp.grpc,
            "metrics-address": HOST, "metrics-port": sp.metrics,
            "allow-gpu-metrics": False,
            "strict-readiness": True,
            "exit-timeout-secs": 5,
        })
        overrides = {"LD_LIBRARY_PATH": server_env0.get("LD_LIBRARY_PATH", "")}
        if not echo:
            overrides["CUDA_VISIBLE_DEVICES"] = str(uuids[gid])
            overrides.update(mps.env_for_client(p.share_pct))
        spec = ServerSpec(
            name=name, argv=tuple(flags.to_argv(install.binary)), env={**server_env0, **overrides},
            env_overrides=overrides, ports=sp, log_path=out / "logs" / f"{name}.log", model=model.name,
        )
        server = ServerPlan(gid, uuids[gid], p, model, cfg, model_py_for(cfg, echo=echo, site_dirs=_site_dirs()),
                            repo, spec)
        servers.append(server)
        streams.extend(split_streams(base_stream(server, options, i), options.max_rps_per_process))
    return Deployment(plan, options, tuple(servers), tuple(streams), tuple(_targets(plan)), install, backend_dir,
                      mps, source, gpu_names)


def base_stream(server: ServerPlan, options: ApplyOptions, i: int, peak_rps: float | None = None) -> StreamSpec:
    """The request stream of one server at its placement's rate (before splitting over processes)."""
    p, model = server.placement, server.model
    peak = max(p.rate_rps, peak_rps or 0.0)
    return StreamSpec(
        stream=server.spec.name, workload=p.workload, server=server.spec.name, url=server.spec.grpc_url,
        model=model.name, inputs=model.inputs, outputs=tuple(t.name for t in model.outputs), rate_rps=p.rate_rps,
        duration_s=options.duration_s, arrival=options.arrival, seed=options.seed * 1009 + i,
        max_requests=math.ceil(peak * options.duration_s * options.max_requests_factor) + 10,
        timeout_s=options.request_timeout_s, drain_s=options.drain_s, check_echo=options.echo_ms is not None,
    )


def _targets(plan: Plan) -> list[WorkloadTarget]:
    by: dict[str, list[Placement]] = {}
    for _, p in plan.placements():
        by.setdefault(p.workload, []).append(p)
    out = []
    for w, ps in by.items():
        rate = sum(p.rate_rps for p in ps)
        preds = [(p.predicted.latency_ms, p.rate_rps) for p in ps if p.predicted is not None]
        pred = sum(x * r for x, r in preds) / sum(r for _, r in preds) if len(preds) == len(ps) and rate else math.nan
        out.append(WorkloadTarget(
            workload=w, model=ps[0].model, batch="+".join(str(p.batch) for p in ps),
            share_pct="+".join(f"{p.share_pct:g}" for p in ps), rate_rps=rate, slo_ms=ps[0].slo_ms, predicted_ms=pred,
        ))
    return out


# ---- dry run -----------------------------------------------------------------------------------
def render_dry_run(dep: Deployment) -> str:
    """Every command, environment and configuration ``apply`` would use, as text."""
    o = dep.options
    plan = dep.plan
    lines = [
        "dry run: nothing is started or written",
        (f"plan: {plan.num_gpus} GPU(s), {len(dep.servers)} server(s), planner {plan.planner}, "
        f"budget {plan.latency_budget}, profile {plan.profile}"),
        "models: " + (f"echo stand-in on CPU, {o.echo_ms:g} ms per batch" if o.echo_ms is not None
                      else f"{dep.model_source} list"),
        f"tritonserver: {dep.install.binary} ({dep.install.source})",
        f"backend directory: {dep.backend_dir} (python backend, stub for Python {python_version()})",
    ]
    mps_cmds = dep.mps.describe()
    lines.append("MPS: " + ("none (CPU)" if not mps_cmds else mps_cmds[0]))
    lines.extend(f"     {c}" for c in mps_cmds[1:])
    for s in dep.servers:
        p = s.placement
        gpu = f"{s.gpu_id} ({s.gpu_uuid})" if s.gpu_uuid else f"{s.gpu_id} (CPU)"
        if s.gpu_id in dep.gpu_names:
            gpu = gpu[:-1] + f", {dep.gpu_names[s.gpu_id]})"
        lines += [
            "",
            (f"server {s.spec.name}: workload {p.workload}, model {p.model}, {gpu}, share {p.share_pct:g} %, "
            f"batch {p.batch}, {p.rate_rps:g} req/s, SLO {p.slo_ms:g} ms"),
            f"  ports: http {s.spec.ports.http}, grpc {s.spec.ports.grpc}, metrics {s.spec.ports.metrics} on {HOST}",
            "  env: " + " ".join(f"{k}={v}" for k, v in s.spec.env_overrides.items()),
            "  command: " + " ".join(s.spec.argv),
            f"  log: {s.spec.log_path}",
            f"  {s.repository / s.model.name / 'config.pbtxt'}:",
        ]
        lines.extend("    " + ln for ln in s.config.render().splitlines())
        lines.append(f"  {s.repository / s.model.name / '1' / 'model.py'}: generated ({len(s.model_py.splitlines())} lines)")
    lines.append("")
    for st in dep.streams:
        lines.append(f"load {st.stream}: {st.workload} -> {st.url} model {st.model}, {st.rate_rps:g} req/s {st.arrival} "
                     f"for {st.duration_s:g} s (at most {st.max_requests} requests)")
    lines.append(f"results: {o.out_dir.resolve()}/requests.csv, summary.csv, summary.json, latency.png")
    return "\n".join(lines)


def deployment_record(dep: Deployment) -> dict[str, Any]:
    return {
        "schema": "igniter-opt/apply/v1",
        "tritonserver": str(dep.install.binary),
        "python": python_version(),
        "mps": dep.mps.describe(),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in dep.options.__dict__.items()},
        "servers": [
            {"name": s.spec.name, "gpu": s.gpu_id, "gpu_uuid": s.gpu_uuid,
             "gpu_name": dep.gpu_names.get(s.gpu_id), "workload": s.placement.workload,
             "model": s.model.name, "batch": s.placement.batch, "share_pct": s.placement.share_pct,
             "rate_rps": s.placement.rate_rps, "slo_ms": s.placement.slo_ms,
             "max_queue_delay_us": s.config.max_queue_delay_us, "ports": s.spec.ports.__dict__,
             "argv": list(s.spec.argv), "env": s.spec.env_overrides}
            for s in dep.servers
        ],
        "streams": [{"stream": st.stream, "workload": st.workload, "url": st.url, "rate_rps": st.rate_rps,
                     "arrival": st.arrival, "seed": st.seed} for st in dep.streams],
    }


# ---- running -----------------------------------------------------------------------------------
@contextmanager
def _interrupt_once() -> Iterator[dict[str, str]]:
    """In the main thread, the first SIGINT or SIGTERM raises KeyboardInterrupt; later ones are ignored.

    So a second Ctrl-C cannot cut the cleanup short (which is bounded by its own timeouts).
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


def exec_trace_path(out: Path, server: str) -> Path:
    """Where the served model of ``server`` writes one line per execution."""
    return out / "logs" / f"{server}.exec.csv"


def server_statistics(spec: ServerSpec, timeout_s: float = 5.0) -> dict[str, float]:
    """Triton's own statistics of one server: executions, samples, their compute time, queueing.

    Triton adds a batch's compute time once per request to ``inference_stats``; ``batch_stats``
    counts each execution once, so the time per execution comes from there.
    """
    url = f"http://{HOST}:{spec.ports.http}/v2/models/{spec.model}/stats"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            data = json.loads(r.read())
        ms = data["model_stats"][0]
        executions = samples = exec_ns = 0
        for b in ms.get("batch_stats", []):
            n = int(b["compute_infer"]["count"])
            executions += n
            samples += n * int(b["batch_size"])
            exec_ns += sum(int(b[k]["ns"]) for k in ("compute_input", "compute_infer", "compute_output"))
        q = ms["inference_stats"]["queue"]
        return {"executions": executions, "samples": samples, "exec_ns": exec_ns,
                "queue_count": int(q["count"]), "queue_ns": int(q["ns"])}
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        log.warning("could not read statistics of server %s: %s", spec.name, exc)
        return {}


def read_exec_trace(path: Path) -> dict[str, float]:
    """Sums over the served model's execution trace (empty where there is none)."""
    acc = {"traced": 0, "model_ms": 0.0, "backend_ms": 0.0}
    try:
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                acc["traced"] += 1
                acc["model_ms"] += float(row["run_ms"])
                acc["backend_ms"] += float(row["input_ms"]) + float(row["respond_ms"])
    except (OSError, ValueError, KeyError) as exc:
        log.debug("no execution trace at %s: %s", path, exc)
        return {}
    return acc


def _workload_stats(per_server: dict[str, dict[str, float]], dep: Deployment) -> dict[str, dict[str, float]]:
    """Per workload: ms per execution in the server and in the model, executed batch, ms queued per request."""
    keys = ("executions", "samples", "exec_ns", "queue_count", "queue_ns", "traced", "model_ms", "backend_ms")
    acc: dict[str, dict[str, float]] = {}
    for s in dep.servers:
        st = per_server.get(s.spec.name)
        if not st:
            continue
        a = acc.setdefault(s.placement.workload, dict.fromkeys(keys, 0))
        for k in keys:
            a[k] += st.get(k, 0)

    def ratio(x: float, n: float) -> float:
        return x / n if n else math.nan

    return {
        w: {"infer_ms": ratio(a["exec_ns"] / 1e6, a["executions"]),
            "executed_batch": ratio(a["samples"], a["executions"]),
            "queue_ms": ratio(a["queue_ns"] / 1e6, a["queue_count"]),
            "model_ms": ratio(a["model_ms"], a["traced"]),
            "backend_ms": ratio(a["backend_ms"], a["traced"])}
        for w, a in acc.items()
    }


RESULT_FILES = ("requests.csv", "summary.csv", "summary.json", "latency.png")


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
    atomic_write_json(dep.options.out_dir.resolve() / "deployment.json", deployment_record(dep))


def _monitor(launchers: list[Launcher], gen: LoadGenerator, errors: list[str], done: threading.Event) -> None:
    """Stop the load as soon as a server dies during the run."""
    while not done.wait(0.5):
        for lc in list(launchers):  # a plan change removes the servers it stops on purpose
            if not lc.is_running():
                errors.append(f"server {lc.spec.name} exited during the run; log {lc.spec.log_path}")
                gen.stop()
                return


def drive_load(gen: LoadGenerator, watched: list[Launcher], errors: list[str],
               also: Callable[[], None] | None = None) -> LoadOutcome:
    """Run the load while a watcher stops it as soon as a server in ``watched`` dies.

    ``also`` runs once the load processes exist (threads start there, after the fork).
    """
    done = threading.Event()
    mon = threading.Thread(target=_monitor, args=(watched, gen, errors, done), daemon=True)

    def started() -> None:
        mon.start()
        if also is not None:
            also()

    try:
        return gen.run(on_started=started)
    finally:
        done.set()
        if mon.is_alive():
            mon.join()


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


def start_servers(specs: list[ServerSpec], factory: Callable[[ServerSpec], Launcher], timeout_s: float,
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


def start_mps(dep: Deployment) -> None:
    """The deployment's MPS control daemon, in its private folders under --out."""
    dep.mps.start(*_mps_dirs(dep.options.out_dir))


def stop_mps(mps: MpsControl, errors: list[str]) -> None:
    try:
        mps.stop()
    except Exception as exc:  # noqa: BLE001 - reported; everything else is stopped anyway
        errors.append(f"stopping MPS: {exc}")


def prepare_run(
    deployments: list[Deployment],
    specs: list[ServerSpec],
    launcher_factory: Callable[[ServerSpec], Launcher] | None,
    progress: Callable[[str], None] | None,
) -> tuple[Callable[[str], None], Callable[[ServerSpec], Launcher]]:
    """Last checks before anything starts (the servers' ports free, MPS startable), then the files of every
    deployment; returns the progress callback and the launcher factory to use."""
    check_ports_free([s.ports for s in specs])
    deployments[0].mps.check()
    for dep in deployments:
        write_files(dep)
    mode = deployments[0].options.launch_mode
    return (progress or (lambda msg: log.info("%s", msg)),
            launcher_factory or (lambda spec: make_launcher(mode, spec)))


def apply_plan(
    dep: Deployment,
    *,
    launcher_factory: Callable[[ServerSpec], Launcher] | None = None,
    progress: Callable[[str], None] | None = None,
) -> ApplyResult:
    """Run a deployment and measure it. Cleans up whatever happens; raises only for errors before the start."""
    say, factory = prepare_run([dep], [s.spec for s in dep.servers], launcher_factory, progress)
    out = dep.options.out_dir.resolve()

    result = ApplyResult(out_dir=out, results=[], errors=[])
    launchers: dict[str, Launcher] = {}
    gen: LoadGenerator | None = None
    mps_started = False
    with _interrupt_once() as sig:
        try:
            if dep.mps.describe():
                say("starting the MPS control daemon")
            start_mps(dep)
            mps_started = True
            say(f"starting {len(dep.servers)} server(s); waiting until ready "
                f"(at most {dep.options.ready_timeout_s:g} s)")
            result.ready_s = start_servers([s.spec for s in dep.servers], factory, dep.options.ready_timeout_s,
                                           launchers)
            say(f"servers ready after {max(result.ready_s.values(), default=0.0):.1f} s; driving load for "
                f"{dep.options.duration_s:g} s ({len(dep.streams)} stream process(es), {dep.options.arrival} arrivals)")
            gen = LoadGenerator(list(dep.streams), out / "parts")
            outcome = drive_load(gen, list(launchers.values()), result.errors)
            result.errors.extend(outcome.errors)
        except KeyboardInterrupt:
            result.interrupted = sig.get("signal", "SIGINT")
            say(f"interrupted ({result.interrupted}); stopping everything")
        except ApplyError as exc:
            result.errors.append(str(exc))
        finally:
            if gen is not None:
                gen.stop()
            stats: dict[str, dict[str, float]] = {}
            if gen is not None and gen.outcome is not None:
                for lc in launchers.values():
                    if lc.is_running():
                        stats[lc.spec.name] = server_statistics(lc.spec)
            result.errors.extend(stop_all(list(launchers.values())))
            for name, st in stats.items():  # the traces are complete once the servers have stopped
                st.update(read_exec_trace(exec_trace_path(out, name)))
            if mps_started:
                stop_mps(dep.mps, result.errors)
            if gen is not None and gen.outcome is not None:
                records = gen.outcome.records
                result.results = summarize(records, dep.targets, _workload_stats(stats, dep))
                result.files = _write_results(out, records, result, dep)
    return result


def _write_results(out: Path, records: list[dict[str, Any]], result: ApplyResult, dep: Deployment) -> list[Path]:
    files = [write_requests_csv(out / "requests.csv", records)]
    meta = {
        "schema": "igniter-opt/apply-results/v1",
        "planner": dep.plan.planner,
        "latency_budget": dep.plan.latency_budget,
        "profile": dep.plan.profile,
        "duration_s": dep.options.duration_s,
        "arrival": dep.options.arrival,
        "echo_ms": dep.options.echo_ms,
        "gpus": {s.gpu_id: {"uuid": s.gpu_uuid, "name": dep.gpu_names.get(s.gpu_id)} for s in dep.servers},
        "server_ready_s": result.ready_s,
        "errors": result.errors,
        "interrupted": result.interrupted,
    }
    write_summary(out, result.results, meta)
    files += [out / "summary.csv", out / "summary.json"]
    png = plot_latency(out / "latency.png", records, result.results)
    if png is not None:
        files.append(png)
    return files


LATE_SEND_MS = 5.0


def render_result(result: ApplyResult) -> str:
    lines = [summary_table(result.results)] if result.results else []
    late = [r for r in result.results if r.send_lag_p99_ms > LATE_SEND_MS]
    if late:
        lines.append("")
        lines.extend(
            f"note: {r.workload}'s requests went out up to {r.send_lag_p99_ms:.1f} ms late (p99): the load generator "
            "did not keep the rate; lower --max-rps-per-process or use a machine with more cores"
            for r in late
        )
    overhead = serving_overhead_ms(result.results)
    if overhead is not None:
        lines.append("")
        lines.append(f"serving overhead per batch (Triton's time per execution - the model's): {overhead:.2f} ms "
                     "(largest over workloads); plan with --serving-overhead-ms to include it")
    if result.files:
        lines.append("")
        lines.append("wrote " + ", ".join(str(f) for f in result.files))
    return "\n".join(lines)


def serving_overhead_ms(results: list[WorkloadResult]) -> float | None:
    """The largest measured per-execution overhead of the servers (Triton's time minus the model's), if measured."""
    gaps = [r.server_infer_ms - r.model_ms for r in results
            if math.isfinite(r.server_infer_ms) and math.isfinite(r.model_ms)]
    return max(gaps) if gaps else None


__all__ = ["ApplyOptions", "ApplyResult", "Deployment", "ServerPorts", "apply_plan", "build_deployment",
           "render_dry_run", "render_result"]
