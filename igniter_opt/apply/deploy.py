"""A plan worked out for this machine, without starting or writing anything.

``build_deployment`` validates the plan and works out every server's command, environment,
ports and model configuration, and every load stream; ``render_dry_run`` prints it and
``deployment_record`` is what ``deployment.json`` holds. A dry run is for the planning machine:
with ``dry_run=True``, what only the GPU machine can say (its GPUs, its ``tritonserver``) is
assumed, and the assumptions are listed, instead of failing.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from igniter_opt.apply.gpus import (
    GpuInfo,
    assumed_gpus,
    check_gpu_map,
    nvml_gpus,
    parse_gpu_map,
    resolve_gpus,
    typed_mapping,
    unresolvable_gpus,
)
from igniter_opt.apply.launcher import ServerSpec
from igniter_opt.apply.loadgen import StreamSpec, split_streams
from igniter_opt.apply.models import ServedModel, served_model, zoo_models
from igniter_opt.apply.options import ApplyOptions
from igniter_opt.apply.ports import HOST, ServerPorts, allocate_ports
from igniter_opt.apply.report import WorkloadTarget
from igniter_opt.apply.repository import ModelConfig, QueueDelaySource, model_config_for, model_py_for
from igniter_opt.apply.triton import (
    PYTRITON_WHEEL,
    TritonInstall,
    TritonServerConfig,
    find_tritonserver,
    python_version,
    server_environment,
)
from igniter_opt.domain import LatencyBudget, Placement, Plan
from igniter_opt.errors import ApplyError
from igniter_opt.gpu.mps import MpsDaemon
from igniter_opt.placement import over_capacity_message

log = logging.getLogger(__name__)

# Variables of the caller that must not leak into a server (each server gets its own).
_SCRUB = ("CUDA_VISIBLE_DEVICES", "CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY",
          "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE")
MachineGpus = list[GpuInfo] | None | Callable[[], list[GpuInfo] | None]


@dataclass(frozen=True)
class ServerPlan:
    """One placement and everything about the server that serves it."""

    gpu_id: str
    gpu_uuid: str | None  # None on CPU (--echo-ms); an NVML index where a dry run assumed it
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
    mps: MpsDaemon | None = field(compare=False)  # None on CPU (--echo-ms)
    model_source: str = "zoo"
    gpu_names: dict[str, str] = field(default_factory=dict, compare=False)  # plan GPU id -> NVML name
    assumptions: tuple[str, ...] = ()  # what a dry run assumed about the GPU machine


# ---- validation --------------------------------------------------------------------------------
def check_plan(plan: Plan, *, echo: bool) -> str:
    """Problems of the plan itself, before looking at the machine; returns where the model list came from."""
    if not plan.placements():
        raise ApplyError("the plan has no placements; nothing to apply")
    ids = [g.gpu_id for g in plan.gpus]
    if len(set(ids)) != len(ids):
        raise ApplyError(f"the plan names a GPU twice ({', '.join(ids)})")
    for g in plan.gpus:
        too_much = over_capacity_message(g)
        if too_much is not None:
            raise ApplyError(too_much)
    source = "echo stand-in"
    if not echo:
        _, source = zoo_models()
    for gid, p in plan.placements():
        served_model(p.model, echo=echo)
        if not (math.isfinite(p.rate_rps) and p.rate_rps > 0 and math.isfinite(p.slo_ms) and p.slo_ms > 0):
            raise ApplyError(
                f"placement {p.workload} on {gid}: rate_rps and slo_ms must be positive numbers to drive and "
                f"judge load, got {p.rate_rps:g} and {p.slo_ms:g}; write them into the plan"
            )
    return source


# ---- this machine (or, in a dry run, what is assumed of the GPU machine) -------------------------
@dataclass(frozen=True)
class GpuBinding:
    """Which physical GPU each plan GPU runs on (None on CPU), its NVML name, and what was assumed."""

    devices: dict[str, str | None]
    names: dict[str, str]
    assumptions: tuple[str, ...] = ()


def bind_gpus(plan: Plan, options: ApplyOptions, machine_gpus: MachineGpus, *, dry_run: bool) -> GpuBinding:
    """Plan GPU -> the value of its servers' CUDA_VISIBLE_DEVICES (a UUID, or None on CPU).

    A dry run where NVML is missing, or where this machine lacks a GPU that the plan maps to,
    assumes the GPU machine's: the ``--gpus`` value, else the plan's order as NVML indices.
    """
    gpu_ids = [g.gpu_id for g in plan.gpus]
    if options.echo:
        return GpuBinding(dict.fromkeys(gpu_ids), {})
    mapping = parse_gpu_map(options.gpus)
    check_gpu_map(gpu_ids, mapping)
    source = machine_gpus if machine_gpus is not None else nvml_gpus  # None: ask NVML
    machine = source() if callable(source) else source
    want = plan_gpu_name(plan)
    typed: tuple[str, ...] = ()
    missing = unresolvable_gpus(gpu_ids, machine, mapping)
    if machine is not None and want is not None and not (dry_run and missing):
        mapping, typed = typed_mapping(gpu_ids, machine, mapping, want)
        missing = unresolvable_gpus(gpu_ids, machine, mapping)
    if dry_run and missing:
        devices = assumed_gpus(gpu_ids, mapping)
        order = ", ".join(f"{g} -> {'GPU ' + d if d.isdigit() else d}" for g, d in devices.items())
        lacking = ", ".join(f"GPU {w}" for w in missing.values())
        why = "no NVML here" if machine is None else f"this machine has {len(machine)} GPU(s), not {lacking}"
        kind = f" of type {want} (the profile's)" if want else ""
        return GpuBinding(dict(devices), {}, (f"GPUs{kind} in plan order ({order}); {why}",))
    uuids = resolve_gpus(gpu_ids, machine, mapping)
    by_uuid = {g.uuid: g.name for g in machine or []}
    return GpuBinding(dict(uuids), {gid: by_uuid.get(u, "unknown") for gid, u in uuids.items()}, typed)


def plan_gpu_name(plan: Plan) -> str | None:
    """The NVML name of the GPU type the plan was made for (its profile's), or None when unknown."""
    from igniter_opt.errors import IgniterOptError
    from igniter_opt.perfmodel import load_profile

    try:
        name = load_profile(plan.profile).gpu.get("name")
    except IgniterOptError:
        return None
    return str(name) if name else None


def locate_tritonserver(options: ApplyOptions, *, dry_run: bool) -> tuple[TritonInstall, tuple[str, ...]]:
    """The server binary; a dry run without one here assumes the GPU machine has it."""
    try:
        return find_tritonserver(options.tritonserver), ()
    except ApplyError:
        if not dry_run:
            raise
    if options.tritonserver is not None:
        binary = Path(options.tritonserver)
        note = f"{binary} exists on the GPU machine (it is not here)"
    else:
        binary = Path("tritonserver")
        note = (f"the GPU machine's tritonserver (none here; apply uses tritonserver on PATH there, else the "
                f"{PYTRITON_WHEEL} wheel's)")
    return TritonInstall(binary=binary, python_backend=None, stubs=None, source="assumed"), (note,)


def mps_dirs(out_dir: Path) -> tuple[Path, Path]:
    """Private MPS folders; the pipe folder is kept short (a UNIX socket path has at most 107 bytes)."""
    out = out_dir.resolve()
    pipe = out / "mps" / "pipe"
    if len(str(pipe)) > 80:
        digest = hashlib.sha1(str(out).encode()).hexdigest()[:12]
        pipe = Path(tempfile.gettempdir()) / f"igniter-opt-mps-{digest}"
    return pipe, out / "mps" / "log"


def site_dirs() -> list[str]:
    """Where this interpreter finds packages: the served model.py adds them (the stub knows no venv).

    The site-packages folders (their .pth files make an editable install work), then the folder
    this igniter_opt was imported from, in case it is not installed but found through sys.path.
    """
    import igniter_opt

    dirs = [p for p in sys.path if p and ("site-packages" in p or "dist-packages" in p) and os.path.isdir(p)]
    here = str(Path(igniter_opt.__file__).resolve().parent.parent)
    return list(dict.fromkeys([*dirs, here]))


def exec_trace_path(out: Path, server: str) -> Path:
    """Where the served model of ``server`` writes one line per execution."""
    return out / "logs" / f"{server}.exec.csv"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


# ---- the deployment ----------------------------------------------------------------------------
def build_deployment(
    plan: Plan,
    options: ApplyOptions,
    *,
    machine_gpus: MachineGpus = None,
    mps: MpsDaemon | None = None,
    base_env: dict[str, str] | None = None,
    exclude_ports: frozenset[int] = frozenset(),
    dry_run: bool = False,
) -> Deployment:
    """Validate the plan against this machine and work out every server; starts and writes nothing.

    ``machine_gpus``: the machine's GPUs, or a function listing them (default: NVML). ``mps``: the
    daemon the servers are clients of (default: one with fixed folders under ``--out``; none on
    CPU). ``dry_run``: assume what only the GPU machine can say instead of failing (listed in
    ``assumptions``).
    """
    source = check_plan(plan, echo=options.echo)
    gpus = bind_gpus(plan, options, machine_gpus, dry_run=dry_run)
    install, install_notes = locate_tritonserver(options, dry_run=dry_run)
    placements = plan.placements()
    ports = allocate_ports(len(placements), options.base_port, exclude=exclude_ports)
    out = options.out_dir.resolve()
    if mps is None and not options.echo:
        pipe_dir, mps_log = mps_dirs(out)
        mps = MpsDaemon(pipe_dir=pipe_dir, log_dir=mps_log, stop_timeout_s=10.0)
    env0 = {k: v for k, v in (base_env if base_env is not None else os.environ).items() if k not in _SCRUB}
    here = _Machine(out, install, server_environment(install, env0), mps, gpus, site_dirs())
    servers, streams = [], []
    for i, ((gid, p), sp) in enumerate(zip(placements, ports, strict=True)):
        server = _server_plan(plan, options, here, i, gid, p, sp)
        servers.append(server)
        streams.extend(split_streams(base_stream(server, options, i), max_rps_per_stream(options)))
    return Deployment(plan, options, tuple(servers), tuple(streams), tuple(workload_targets(plan)), install,
                      out / "backends", mps, source, gpus.names, (*gpus.assumptions, *install_notes))


@dataclass(frozen=True)
class _Machine:
    """What every server of a deployment shares: the output folder, the server binary, the base
    environment, the MPS daemon, the GPUs and the package folders the served model adds."""

    out: Path
    install: TritonInstall
    env: dict[str, str]
    mps: MpsDaemon | None
    gpus: GpuBinding
    sites: list[str]


def _server_plan(plan: Plan, options: ApplyOptions, here: _Machine, i: int, gid: str, p: Placement,
                 ports: ServerPorts) -> ServerPlan:
    """The i-th server: its model configuration, command, environment and files."""
    name = _safe(f"s{i}-{gid}-{p.workload}")
    model = served_model(p.model, echo=options.echo)
    cfg = model_config_for(p, model, LatencyBudget(plan.latency_budget), plan.margin or 0.0,
                           echo_ms=options.echo_ms, exec_trace=exec_trace_path(here.out, name),
                           torch_threads=options.torch_threads, output_device=options.output_device)
    overrides = {"LD_LIBRARY_PATH": here.env.get("LD_LIBRARY_PATH", "")}
    if here.mps is not None and not options.echo:
        overrides["CUDA_VISIBLE_DEVICES"] = str(here.gpus.devices[gid])
        overrides.update(here.mps.client_env(p.share_pct, base={}))
    repository = here.out / "repository" / name
    spec = ServerSpec(name=name, argv=server_argv(here.install, repository, here.out / "backends", ports),
                      env={**here.env, **overrides}, env_overrides=overrides, ports=ports,
                      log_path=here.out / "logs" / f"{name}.log", model=model.name)
    model_py = model_py_for(cfg, echo=options.echo, site_dirs=here.sites)
    return ServerPlan(gid, here.gpus.devices[gid], p, model, cfg, model_py, repository, spec)


def server_argv(install: TritonInstall, repository: Path, backend_dir: Path,
                ports: ServerPorts) -> tuple[str, ...]:
    """The server's command line: its repository and backends, every port on 127.0.0.1 only."""
    flags = TritonServerConfig().update({
        "model-repository": repository,
        "backend-directory": backend_dir,
        "http-address": HOST, "http-port": ports.http,
        "grpc-address": HOST, "grpc-port": ports.grpc,
        "metrics-address": HOST, "metrics-port": ports.metrics,
        "allow-gpu-metrics": False,
        "strict-readiness": True,
        "exit-timeout-secs": 5,
    })
    return tuple(flags.to_argv(install.binary))


def max_rps_per_stream(options: ApplyOptions) -> float:
    """A Python load process keeps ``--max-rps-per-process``; one perf_analyzer keeps a placement's rate."""
    return math.inf if options.load_generator == "perf_analyzer" else options.max_rps_per_process


def base_stream(
    server: ServerPlan, options: ApplyOptions, i: int, peak_rps: float | None = None
) -> StreamSpec:
    """The request stream of one server at its placement's rate (before splitting over processes)."""
    p, model = server.placement, server.model
    peak = max(p.rate_rps, peak_rps or 0.0)
    return StreamSpec(
        stream=server.spec.name,
        workload=p.workload,
        server=server.spec.name,
        url=server.spec.grpc_url,
        model=model.name,
        inputs=model.inputs,
        outputs=tuple(t.name for t in model.outputs),
        rate_rps=p.rate_rps,
        duration_s=options.duration_s,
        arrival=options.arrival,
        seed=options.seed * 1009 + i,
        max_requests=math.ceil(peak * options.duration_s * options.max_requests_factor) + 10,
        timeout_s=options.request_timeout_s,
        drain_s=options.drain_s,
        check_echo=options.echo,
    )


def workload_targets(plan: Plan) -> list[WorkloadTarget]:
    """What the plan promises per workload (a split workload's placements summed or rate-weighted)."""
    by: dict[str, list[Placement]] = {}
    for _, p in plan.placements():
        by.setdefault(p.workload, []).append(p)
    out = []
    for w, ps in by.items():
        rate = sum(p.rate_rps for p in ps)
        preds = [(p.predicted.latency_ms, p.rate_rps) for p in ps if p.predicted is not None]
        pred = (
            sum(x * r for x, r in preds) / sum(r for _, r in preds)
            if len(preds) == len(ps) and rate
            else math.nan
        )
        out.append(
            WorkloadTarget(
                workload=w,
                model=ps[0].model,
                batch="+".join(str(p.batch) for p in ps),
                share_pct="+".join(f"{p.share_pct:g}" for p in ps),
                rate_rps=rate,
                slo_ms=ps[0].slo_ms,
                predicted_ms=pred,
            )
        )
    return out


# ---- what it looks like ------------------------------------------------------------------------
def queue_delay_text(config: ModelConfig) -> str:
    ms = f"{config.max_queue_delay_us / 1000:g} ms"
    if config.queue_delay_source == QueueDelaySource.PLAN:
        return f"{ms} (from the plan)"
    return f"{ms} (the plan has none: its latency budget's rule)"


def render_dry_run(dep: Deployment) -> str:
    """Every command, environment and configuration ``apply`` would use, as text."""
    o, plan = dep.options, dep.plan
    lines = [
        "dry run: nothing is started or written",
        (
            f"plan: {plan.num_gpus} GPU(s), {len(dep.servers)} server(s), planner {plan.planner}, "
            f"budget {plan.latency_budget}, profile {plan.profile}"
        ),
        *(f"assumed: {a}" for a in dep.assumptions),
        "models: "
        + (f"echo stand-in on CPU, {o.echo_ms:g} ms per batch" if o.echo else f"{dep.model_source} list"),
        f"tritonserver: {dep.install.binary} ({dep.install.source})",
        f"backend directory: {dep.backend_dir} (python backend, stub for Python {python_version()})",
    ]
    mps_cmds = dep.mps.describe() if dep.mps is not None else []
    lines.append("MPS: " + ("none (CPU)" if not mps_cmds else mps_cmds[0]))
    lines.extend(f"     {c}" for c in mps_cmds[1:])
    for s in dep.servers:
        lines += ["", *_render_server(dep, s)]
    lines += ["", f"load generator: {o.load_generator}"]
    for st in dep.streams:
        lines.append(
            f"load {st.stream}: {st.workload} -> {st.url} model {st.model}, {st.rate_rps:g} req/s "
            f"{st.arrival} for {st.duration_s:g} s (at most {st.max_requests} requests)"
        )
    lines.append(f"results: {o.out_dir.resolve()}/requests.csv, summary.csv, summary.json, latency.png")
    return "\n".join(lines)


def _render_server(dep: Deployment, s: ServerPlan) -> list[str]:
    p = s.placement
    if s.gpu_uuid is None:
        gpu = f"{s.gpu_id} (CPU)"
    elif s.gpu_id in dep.gpu_names:
        gpu = f"{s.gpu_id} ({s.gpu_uuid}, {dep.gpu_names[s.gpu_id]})"
    else:
        gpu = f"{s.gpu_id} ({s.gpu_uuid}, assumed)"
    lines = [
        (
            f"server {s.spec.name}: workload {p.workload}, model {p.model}, {gpu}, share {p.share_pct:g} %, "
            f"batch {p.batch}, {p.rate_rps:g} req/s, SLO {p.slo_ms:g} ms"
        ),
        f"  ports: http {s.spec.ports.http}, grpc {s.spec.ports.grpc}, metrics {s.spec.ports.metrics} "
        f"on {HOST}",
        f"  queue delay: {queue_delay_text(s.config)}",
        "  env: " + " ".join(f"{k}={v}" for k, v in s.spec.env_overrides.items()),
        "  command: " + " ".join(s.spec.argv),
        f"  log: {s.spec.log_path}",
        f"  {s.repository / s.model.name / 'config.pbtxt'}:",
    ]
    lines.extend("    " + ln for ln in s.config.render().splitlines())
    model_py = s.repository / s.model.name / "1" / "model.py"
    lines.append(f"  {model_py}: generated ({len(s.model_py.splitlines())} lines)")
    return lines


def deployment_record(dep: Deployment) -> dict[str, Any]:
    """What ``deployment.json`` holds: every server's command, environment, ports, GPU and queue delay."""
    return {
        "schema": "igniter-opt/apply/v1",
        "tritonserver": str(dep.install.binary),
        "python": python_version(),
        "mps": dep.mps.describe() if dep.mps is not None else [],
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in dep.options.__dict__.items()},
        "servers": [
            {
                "name": s.spec.name,
                "gpu": s.gpu_id,
                "gpu_uuid": s.gpu_uuid,
                "gpu_name": dep.gpu_names.get(s.gpu_id),
                "workload": s.placement.workload,
                "model": s.model.name,
                "batch": s.placement.batch,
                "share_pct": s.placement.share_pct,
                "rate_rps": s.placement.rate_rps,
                "slo_ms": s.placement.slo_ms,
                "max_queue_delay_us": s.config.max_queue_delay_us,
                "queue_delay_source": s.config.queue_delay_source,
                "ports": s.spec.ports.__dict__,
                "argv": list(s.spec.argv),
                "env": s.spec.env_overrides,
            }
            for s in dep.servers
        ],
        "streams": [
            {
                "stream": st.stream,
                "workload": st.workload,
                "url": st.url,
                "rate_rps": st.rate_rps,
                "arrival": st.arrival,
                "seed": st.seed,
            }
            for st in dep.streams
        ],
    }
