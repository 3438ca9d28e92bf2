"""What an export produced: one plan's objects, how it was verified, what a plan change does to the pods."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from igniter_opt.domain import Plan
from igniter_opt.export.manifests import RenderedPod
from igniter_opt.export.names import KubeNames
from igniter_opt.replan.diff import PlanDiff


@dataclass(frozen=True)
class Verification:
    """What verification said: ``ok`` is None where the plan could not be verified."""

    ok: bool | None
    message: str


@dataclass(frozen=True)
class Rendered:
    """One plan's Kubernetes objects (nothing written yet)."""

    plan: Plan
    names: KubeNames
    pods: tuple[RenderedPod, ...]
    services: list[dict[str, Any]]


@dataclass(frozen=True)
class PodChanges:
    """A plan change at the level of GPU pods (by Deployment name), and the kept placements that restart."""

    started: tuple[str, ...]
    kept: tuple[str, ...]
    deleted: tuple[str, ...]
    kept_but_restarted: tuple[str, ...]  # workloads the plan diff keeps, on a GPU that gets a new pod


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    rendered: Rendered
    verification: Verification
    notes: tuple[str, ...]  # where a Service cannot split a workload's traffic as the plan does
    diff: PlanDiff | None = None
    changes: PodChanges | None = None
