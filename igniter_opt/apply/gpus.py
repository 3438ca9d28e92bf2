"""Which physical GPU (by UUID) each GPU of a plan runs on.

A plan names its GPUs ``gpu0``, ``gpu1``, ... By default the plan's i-th GPU is the machine's
i-th GPU (NVML order); ``--gpus gpu0=GPU-<uuid>,gpu1=1`` maps them explicitly, by UUID or index.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from igniter_opt.errors import ApplyError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuInfo:
    index: int
    uuid: str
    name: str


def nvml_gpus() -> list[GpuInfo] | None:
    """The machine's GPUs through NVML (``import pynvml`` from nvidia-ml-py); None when NVML is unusable."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - pynvml.NVMLError and library-not-found errors
        log.debug("NVML unusable: %s", exc)
        return None
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            uuid, name = pynvml.nvmlDeviceGetUUID(h), pynvml.nvmlDeviceGetName(h)
            out.append(GpuInfo(i, uuid.decode() if isinstance(uuid, bytes) else str(uuid),
                               name.decode() if isinstance(name, bytes) else str(name)))
        return out
    finally:
        pynvml.nvmlShutdown()


def parse_gpu_map(text: str | None) -> dict[str, str]:
    """``gpu0=GPU-abc,gpu1=1`` -> {'gpu0': 'GPU-abc', 'gpu1': '1'}."""
    if not text:
        return {}
    out: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ApplyError(f"--gpus: '{item}' is not PLAN_GPU=UUID_OR_INDEX (e.g. gpu0=GPU-1234...,gpu1=1)")
        out[key.strip()] = value.strip()
    return out


def check_gpu_map(plan_gpu_ids: Sequence[str], mapping: dict[str, str]) -> None:
    """--gpus may name only the plan's GPUs."""
    unknown = sorted(set(mapping) - set(plan_gpu_ids))
    if unknown:
        raise ApplyError(
            f"--gpus names {', '.join(unknown)}, which the plan does not have ({', '.join(plan_gpu_ids)})"
        )


def _check_distinct(out: dict[str, str]) -> dict[str, str]:
    dup = sorted({u for u in out.values() if list(out.values()).count(u) > 1})
    if dup:
        raise ApplyError(f"two plan GPUs map to the same GPU {dup[0]}; each plan GPU needs its own")
    return out


def assumed_gpus(plan_gpu_ids: Sequence[str], mapping: dict[str, str]) -> dict[str, str]:
    """For a dry run where this machine cannot say which GPUs the GPU machine has: plan GPU id -> the
    ``--gpus`` value (UUID or index), else its position in the plan as an NVML index."""
    check_gpu_map(plan_gpu_ids, mapping)
    return _check_distinct({gid: mapping.get(gid, str(pos)) for pos, gid in enumerate(plan_gpu_ids)})


def typed_mapping(plan_gpu_ids: Sequence[str], machine: list[GpuInfo], mapping: dict[str, str],
                  gpu_name: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """Every plan GPU -> a GPU of this machine: ``--gpus`` where it says, else the next unused GPU (by
    index) whose NVML name is the profile's ``gpu_name``; and a note for each ``--gpus`` entry that maps
    a plan GPU to a GPU of another type (asked for explicitly, so allowed). A clear error when the
    machine has too few GPUs of the type."""
    explicit = {gid: _find(want, machine) for gid, want in mapping.items()}
    used = {g.index for g in explicit.values() if g is not None}
    free = [g for g in machine if g.name == gpu_name and g.index not in used]
    rest = [gid for gid in plan_gpu_ids if gid not in mapping]
    if len(rest) > len(free):
        have = ", ".join(f"{g.index}={g.name}" for g in machine) or "none"
        raise ApplyError(
            f"the plan was made for {gpu_name} GPUs and needs {len(rest)}{' more' if mapping else ''} of them, but "
            f"this machine has {len(free)}{' free' if mapping else ''} (GPUs: {have}); run it on {gpu_name} GPUs, "
            "or map plan GPUs explicitly with --gpus to run them on another type"
        )
    out = dict(mapping) | {gid: str(g.index) for gid, g in zip(rest, free, strict=False)}
    notes = tuple(f"{gid} runs on GPU {g.index} ({g.name}) although the plan was made for {gpu_name} (--gpus)"
                  for gid, g in explicit.items() if g is not None and g.name != gpu_name)
    return out, notes


def _find(want: str, machine: list[GpuInfo]) -> GpuInfo | None:
    return next((g for g in machine if want == g.uuid or want == str(g.index)), None)


def unresolvable_gpus(plan_gpu_ids: Sequence[str], machine: list[GpuInfo] | None,
                      mapping: dict[str, str]) -> dict[str, str]:
    """The plan GPUs this machine cannot resolve (plan GPU id -> what it maps to): without NVML every one
    not given by UUID, else those the machine does not have."""
    out = {}
    for pos, gid in enumerate(plan_gpu_ids):
        want = mapping.get(gid, str(pos))
        ok = want.startswith(("GPU-", "MIG-")) if machine is None else _find(want, machine) is not None
        if not ok:
            out[gid] = want
    return out


def resolve_gpus(
    plan_gpu_ids: Sequence[str], machine: list[GpuInfo] | None, mapping: dict[str, str]
) -> dict[str, str]:
    """Plan GPU id -> the UUID to put in CUDA_VISIBLE_DEVICES; a clear error for a GPU that does not exist.

    ``machine`` is None when the GPUs cannot be listed (no NVML): then only UUIDs given in
    ``mapping`` are accepted, as they are.
    """
    check_gpu_map(plan_gpu_ids, mapping)
    out: dict[str, str] = {}
    for pos, gid in enumerate(plan_gpu_ids):
        want = mapping.get(gid, str(pos))
        if machine is None:
            if want.startswith(("GPU-", "MIG-")):
                out[gid] = want
                continue
            raise ApplyError(
                f"cannot list this machine's GPUs (NVML unavailable), so plan GPU {gid} -> GPU {want} cannot "
                "be resolved; install nvidia-ml-py on a GPU machine, pass --gpus with UUIDs, or --echo-ms to "
                "test on CPU"
            )
        found = _find(want, machine)
        if found is None:
            have = ", ".join(f"{g.index}={g.uuid}" for g in machine) or "none"
            raise ApplyError(
                f"plan GPU {gid} -> GPU {want}, which does not exist on this machine (GPUs: {have}); "
                f"the plan needs {len(plan_gpu_ids)} GPU(s)"
            )
        out[gid] = found.uuid
    return _check_distinct(out)
