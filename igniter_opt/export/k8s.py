"""``igniter-opt export k8s``: a plan as Kubernetes manifests, and the kubectl steps that deploy it.

``export_plan`` and ``export_diff`` check the output folder, verify the (new) plan, work out
every object in memory (``pods``, ``manifests``, ``services``), then write the folder all at
once (``output.write_tree``): a failed export leaves nothing behind, and an earlier export is
replaced only by a complete one. The folder holds ``manifests/`` (what ``kubectl apply`` takes),
``steps.sh`` (the ordered commands), ``DEPLOY.md`` (what they do and what the cluster needs)
and ``export.json`` (a machine-readable record).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from igniter_opt import __version__
from igniter_opt.domain import (
    Plan,
)
from igniter_opt.errors import IgniterOptError
from igniter_opt.export.deploydoc import deploy_md
from igniter_opt.export.errors import ExportError
from igniter_opt.export.gpulabels import PRODUCT_LABEL, product_labels
from igniter_opt.export.manifests import (
    ManifestOptions,
    RenderedPod,
    namespace_object,
    placement_summary,
    render_pod,
)
from igniter_opt.export.names import kube_names
from igniter_opt.export.output import EXPORT_SCHEMA, RECORD, check_out_dir, write_tree
from igniter_opt.export.pods import build_pods
from igniter_opt.export.result import ExportResult, PodChanges, Rendered, Verification
from igniter_opt.export.services import traffic_notes, workload_services
from igniter_opt.export.steps import SCRIPT, Step, Target, plan_steps, render_script
from igniter_opt.export.yamltext import dump_all
from igniter_opt.perfmodel import load_profile
from igniter_opt.placement import Violation, plan_problem, verify_plan
from igniter_opt.planio import read_plan
from igniter_opt.replan.diff import ChangeKind, PlanDiff, diff_plans

NAMESPACE_FILE = "manifests/00-namespace.yaml"
SERVICES_FILE = "manifests/20-services.yaml"


@dataclass(frozen=True)
class ExportOptions:
    """Everything ``export k8s`` can be told besides the plan(s)."""

    out_dir: Path
    manifests: ManifestOptions = field(default_factory=ManifestOptions)
    gpu_labels: dict[str, str] = field(default_factory=dict)  # GPU type -> nvidia.com/gpu.product value
    profile: str | None = None  # verify against this profile instead of the plan's
    force: bool = False  # replace an earlier export in out_dir
    allow_unverified: bool = False  # export a plan that fails verification (or cannot be verified)


# ---- verification --------------------------------------------------------------------------------
def plan_violations(plan: Plan, profile: str | None) -> tuple[str, list[Violation]]:
    """The profile used, and every violation of ``plan`` under the exact model: the one place export verifies.

    The workloads are the plan's own (per workload: its model and SLO, and the sum of its
    placements' rates); the budget, margin and serving model are the plan's. Raises an
    IgniterOptError where the profile cannot be loaded.
    """
    name = profile or plan.profile
    if not name:
        raise ExportError("the plan names no profile to verify it with; pass --profile")
    problem = plan_problem(plan, load_profile(name))
    return name, verify_plan(plan, problem)


def verify_for_export(plan: Plan, source: str, options: ExportOptions) -> Verification:
    """Verify ``plan``; refuse it where it fails (or cannot be verified) unless ``allow_unverified``."""
    try:
        profile, violations = plan_violations(plan, options.profile)
    except IgniterOptError as exc:
        if not options.allow_unverified:
            raise ExportError(f"{source}: cannot verify the plan ({exc}); pass --profile, or "
                              "--allow-unverified to export it unverified") from None
        return Verification(None, f"warning: {source} not verified ({exc}); exported anyway "
                                  "(--allow-unverified)")
    if not violations:
        return Verification(True, f"verified: {source} meets every limit and rate under profile '{profile}'")
    first = violations[0].message + (f" (+{len(violations) - 1} more)" if len(violations) > 1 else "")
    failed = f"{source} fails verification under profile '{profile}': {first}"
    if not options.allow_unverified:
        raise ExportError(f"{failed}; fix the plan, or pass --allow-unverified to export it anyway")
    return Verification(False, f"warning: {failed}; exported anyway (--allow-unverified)")


# ---- objects and files ---------------------------------------------------------------------------
def render(plan: Plan, labels: dict[str, str], opts: ManifestOptions) -> Rendered:
    """Every object of ``plan`` (nothing written)."""
    names = kube_names(plan)
    pods = tuple(render_pod(p, opts) for p in build_pods(plan, names, labels))
    return Rendered(plan, names, pods, workload_services(tuple(rp.pod for rp in pods), opts))


def pod_file(rp: RenderedPod) -> str:
    return f"manifests/10-{rp.name}.yaml"


def target(r: Rendered, opts: ManifestOptions, to_start: tuple[RenderedPod, ...]) -> Target:
    """Where the steps lead: ``r``'s objects, starting the pods ``to_start``."""
    return Target(
        namespace=opts.namespace, namespace_file=NAMESPACE_FILE if opts.namespace else None,
        prefix=opts.prefix,
        pod_files=tuple(pod_file(rp) for rp in to_start), deployments=tuple(rp.name for rp in to_start),
        services_file=SERVICES_FILE, revisions=tuple(rp.revision for rp in r.pods),
        services=tuple(s["metadata"]["name"] for s in r.services),
    )


def manifest_files(r: Rendered, opts: ManifestOptions) -> dict[str, str]:
    """The YAML files of ``manifests/`` and, for a volume model store, the repositories to copy into it."""
    files: dict[str, str] = {}
    if opts.namespace is not None:
        files[NAMESPACE_FILE] = dump_all([namespace_object(opts.namespace)])
    for rp in r.pods:
        files[pod_file(rp)] = dump_all([rp.configmap, rp.deployment])
        files.update({f"model-repository/{path}": text for path, text in rp.repository_files.items()})
    files[SERVICES_FILE] = dump_all(r.services)
    return files


def _record(r: Rendered, opts: ManifestOptions, sources: dict[str, str], verification: Verification,
            changes: PodChanges | None, diff: PlanDiff | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "schema": EXPORT_SCHEMA,
        "igniter_opt_version": __version__,
        "plans": sources,
        "verification": {"ok": verification.ok, "message": verification.message},
        "options": {"prefix": opts.prefix, "namespace": opts.namespace, "image": opts.image,
                    "model_store": opts.model_store.describe()},
        "names": {"workloads": r.names.workloads, "gpus": r.names.gpus},
        "gpus": [{"plan_gpu": rp.pod.gpu_id, "gpu_type": rp.pod.gpu_type, PRODUCT_LABEL: rp.pod.product_label,
                  "deployment": rp.name, "revision": rp.revision, "file": pod_file(rp),
                  "servers": [placement_summary(s) for s in rp.pod.servers]} for rp in r.pods],
        "services": [s["metadata"]["name"] for s in r.services],
    }
    if changes is not None and diff is not None:
        out["change"] = {"pods": {"started": list(changes.started), "kept": list(changes.kept),
                                  "deleted": list(changes.deleted)},
                         "kept_but_restarted": list(changes.kept_but_restarted), "placements": diff.to_dict()}
    return out


def _write(r: Rendered, options: ExportOptions, steps: list[Step], header: str, sources: dict[str, str],
           verification: Verification, changes: PodChanges | None = None, diff: PlanDiff | None = None
           ) -> ExportResult:
    opts = options.manifests
    notes = traffic_notes(r.services)
    files = manifest_files(r, opts)
    files[SCRIPT] = render_script(steps, header)
    files["DEPLOY.md"] = deploy_md(r, opts, steps, verification, notes, changes)
    files[RECORD] = json.dumps(_record(r, opts, sources, verification, changes, diff), indent=2) + "\n"
    write_tree(options.out_dir, files, executable=frozenset({SCRIPT}))
    return ExportResult(options.out_dir, r, verification, tuple(notes), diff, changes)


# ---- the two exports -----------------------------------------------------------------------------
def export_plan(plan_path: Path, options: ExportOptions) -> ExportResult:
    """Export one plan: its manifests, and the steps that deploy it (or bring an earlier deployment to it)."""
    check_out_dir(options.out_dir, options.force)
    plan = read_plan(plan_path)
    verification = verify_for_export(plan, str(plan_path), options)
    opts = options.manifests
    r = render(plan, product_labels([plan], options.gpu_labels), opts)
    steps = plan_steps(target(r, opts, r.pods), change=False)
    header = f"Deploys {plan_path.name}: {len(r.pods)} GPU pod(s), {len(r.services)} Service(s)."
    return _write(r, options, steps, header, {"plan": str(plan_path)}, verification)


def pod_changes(old: Rendered, new: Rendered, diff: PlanDiff) -> PodChanges:
    """Which GPU pods a change starts, keeps and deletes, and which kept placements restart anyway."""
    old_names = {rp.name for rp in old.pods}
    new_names = {rp.name for rp in new.pods}
    started_gpus = {rp.pod.gpu_id for rp in new.pods if rp.name not in old_names}
    return PodChanges(
        started=tuple(rp.name for rp in new.pods if rp.name not in old_names),
        kept=tuple(rp.name for rp in new.pods if rp.name in old_names),
        deleted=tuple(rp.name for rp in old.pods if rp.name not in new_names),
        kept_but_restarted=tuple(c.workload for c in diff.changes
                                 if c.kind is ChangeKind.KEPT and c.new_gpu in started_gpus),
    )


def export_diff(old_path: Path, new_path: Path, options: ExportOptions) -> ExportResult:
    """Export a plan change: the new plan's manifests, and the steps from the old plan's deployment to it."""
    check_out_dir(options.out_dir, options.force)
    old_plan, new_plan = read_plan(old_path), read_plan(new_path)
    verification = verify_for_export(new_plan, str(new_path), options)
    opts = options.manifests
    labels = product_labels([old_plan, new_plan], options.gpu_labels)
    old, new = render(old_plan, labels, opts), render(new_plan, labels, opts)
    diff = diff_plans(old_plan, new_plan)
    changes = pod_changes(old, new, diff)
    started = tuple(rp for rp in new.pods if rp.name in changes.started)
    steps = plan_steps(target(new, opts, started), change=True)
    header = (f"Changes the deployment of {old_path.name} into {new_path.name}: {len(changes.started)} GPU "
              f"pod(s) started, {len(changes.kept)} kept, {len(changes.deleted)} deleted.")
    return _write(new, options, steps, header, {"old": str(old_path), "new": str(new_path)}, verification,
                  changes, diff)
