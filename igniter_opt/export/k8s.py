"""``igniter-opt export k8s``: a plan as Kubernetes manifests, and the kubectl steps that deploy it.

``export_plan`` and ``export_diff`` verify the (new) plan, work out every object in memory
(``pods``, ``manifests``), then write the folder in one go: into a temporary folder next to it,
renamed into place at the end, so that a failed export leaves nothing behind and an existing
export is only replaced once the new one is complete. The folder holds ``manifests/`` (what
``kubectl apply`` takes), ``steps.sh`` (the ordered commands), ``DEPLOY.md`` (what they do and
what the cluster needs) and ``export.json`` (a machine-readable record of the export).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from igniter_opt import __version__
from igniter_opt.domain import DEFAULT_ATTAINMENT, DEFAULT_MARGIN, LatencyBudget, Plan, PlanningProblem, Workload
from igniter_opt.errors import IgniterOptError
from igniter_opt.export.errors import ExportError
from igniter_opt.export.gpulabels import PRODUCT_LABEL, product_labels
from igniter_opt.export.manifests import (
    ManifestOptions,
    RenderedPod,
    namespace_object,
    placement_summary,
    render_pod,
    workload_services,
)
from igniter_opt.export.names import KubeNames, kube_names
from igniter_opt.export.pods import build_pods
from igniter_opt.export.steps import Step, deploy_steps, diff_steps, render_script, render_steps_md
from igniter_opt.export.yamltext import dump_all
from igniter_opt.ioutil import atomic_write_text
from igniter_opt.perfmodel import load_profile
from igniter_opt.planio import read_plan
from igniter_opt.planner.verify import Violation, verify_plan
from igniter_opt.replan.diff import ChangeKind, PlanDiff, diff_plans

EXPORT_SCHEMA = "igniter-opt/k8s-export/v1"
RECORD = "export.json"
SCRIPT = "steps.sh"


@dataclass(frozen=True)
class ExportOptions:
    """Everything ``export k8s`` can be told besides the plan(s)."""

    out_dir: Path
    manifests: ManifestOptions = field(default_factory=ManifestOptions)
    gpu_labels: dict[str, str] = field(default_factory=dict)  # GPU type -> nvidia.com/gpu.product value
    profile: str | None = None  # verify against this profile instead of the plan's
    force: bool = False  # replace an earlier export in out_dir
    allow_unverified: bool = False  # export a plan that fails verification (or cannot be verified)


@dataclass(frozen=True)
class Verification:
    """What verification said: ``ok`` is None where the plan could not be verified."""

    ok: bool | None
    message: str


@dataclass(frozen=True)
class Rendered:
    """One plan's objects."""

    plan: Plan
    names: KubeNames
    pods: tuple[RenderedPod, ...]
    services: list[dict[str, Any]]


@dataclass(frozen=True)
class PodChanges:
    """A plan change at the level of GPU pods (Deployment names) and the placements that restart anyway."""

    started: tuple[str, ...]
    kept: tuple[str, ...]
    deleted: tuple[str, ...]
    kept_but_restarted: tuple[str, ...]  # workloads kept by the plan diff whose GPU gets a new pod


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    rendered: Rendered
    verification: Verification
    notes: tuple[str, ...]
    diff: PlanDiff | None = None
    changes: PodChanges | None = None


# ---- verification --------------------------------------------------------------------------------
def plan_violations(plan: Plan, profile: str | None) -> tuple[str, list[Violation]]:
    """The profile used and every violation of ``plan`` under the exact model: the one place export verifies.

    The workloads are the plan's own (per workload: its model and SLO, and the sum of its
    placements' rates); the budget, margin and serving model are the plan's. Raises an
    IgniterOptError when the profile cannot be loaded.
    """
    name = profile or plan.profile
    if not name:
        raise ExportError("the plan names no profile to verify it with; pass --profile")
    perf = load_profile(name).with_serving_overhead(plan.serving_overhead_ms, plan.serving_max_utilization)
    workloads: dict[str, Workload] = {}
    for _, p in plan.placements():
        w = workloads.get(p.workload)
        rate = p.rate_rps + (w.rate_rps if w is not None else 0.0)
        workloads[p.workload] = Workload(p.workload, p.model, p.slo_ms, rate)
    problem = PlanningProblem(
        tuple(workloads.values()), perf, LatencyBudget(plan.latency_budget),
        plan.margin if plan.margin is not None else DEFAULT_MARGIN,
        plan.attainment if plan.attainment is not None else DEFAULT_ATTAINMENT,
    )
    return name, verify_plan(plan, problem)


def verify_for_export(plan: Plan, source: str, options: ExportOptions) -> Verification:
    """Verify ``plan``; refuse it when it fails (or cannot be verified) unless ``allow_unverified``."""
    try:
        profile, violations = plan_violations(plan, options.profile)
    except IgniterOptError as exc:
        if not options.allow_unverified:
            raise ExportError(f"{source}: cannot verify the plan ({exc}); pass --profile, or --allow-unverified "
                              "to export it unverified") from None
        return Verification(None, f"warning: {source} not verified ({exc}); exported anyway (--allow-unverified)")
    if not violations:
        return Verification(True, f"verified: {source} meets every limit and rate under profile '{profile}'")
    first = f"{violations[0].message}" + (f" (+{len(violations) - 1} more)" if len(violations) > 1 else "")
    if not options.allow_unverified:
        raise ExportError(f"{source} fails verification under profile '{profile}': {first}; fix the plan, or pass "
                          "--allow-unverified to export it anyway")
    return Verification(False, f"warning: {source} fails verification under profile '{profile}': {first}; "
                               "exported anyway (--allow-unverified)")


# ---- the output folder ---------------------------------------------------------------------------
def check_out_dir(out_dir: Path, force: bool) -> None:
    """Refuse a file, a non-empty folder without ``force``, and with it any folder that is not an earlier export."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"-o {out_dir}: a file is in the way; choose a folder")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not force:
        raise ExportError(f"-o {out_dir}: the folder exists and is not empty; pass --force to replace an earlier "
                          "export, or choose another folder")
    record = out_dir / RECORD
    try:
        ours = json.loads(record.read_text(encoding="utf-8")).get("schema") == EXPORT_SCHEMA
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise ExportError(f"-o {out_dir}: the folder holds no earlier export ({RECORD}), so --force will not "
                          "replace it; choose another folder")


def _visible_mode(mode: int) -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def write_tree(out_dir: Path, files: dict[str, str], executable: frozenset[str] = frozenset()) -> None:
    """Write ``files`` ({relative path: text}) as ``out_dir``, all at once; a failure leaves ``out_dir`` as it was."""
    out_dir = out_dir.absolute()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    old: Path | None = None
    try:
        os.chmod(tmp, _visible_mode(0o777))
        for rel, text in files.items():
            atomic_write_text(tmp / rel, text)
            if rel in executable:
                os.chmod(tmp / rel, _visible_mode(0o777))
        for d in (p for p in tmp.rglob("*") if p.is_dir()):
            os.chmod(d, _visible_mode(0o777))
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
            os.replace(out_dir, old / "export")
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out_dir.exists():
            os.replace(old / "export", out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---- objects and files ---------------------------------------------------------------------------
def render(plan: Plan, labels: dict[str, str], opts: ManifestOptions) -> Rendered:
    """Every object of ``plan`` (nothing written)."""
    names = kube_names(plan)
    pods = tuple(render_pod(p, opts) for p in build_pods(plan, names, labels))
    return Rendered(plan, names, pods, workload_services(tuple(rp.pod for rp in pods), opts))


def _pod_file(rp: RenderedPod) -> str:
    return f"manifests/10-{rp.name}.yaml"


NAMESPACE_FILE = "manifests/00-namespace.yaml"
SERVICES_FILE = "manifests/20-services.yaml"


def manifest_files(r: Rendered, opts: ManifestOptions) -> dict[str, str]:
    """The YAML files of ``manifests/`` and, for a volume model store, the repositories to copy into it."""
    files: dict[str, str] = {}
    if opts.namespace is not None:
        files[NAMESPACE_FILE] = dump_all([namespace_object(opts.namespace)])
    for rp in r.pods:
        files[_pod_file(rp)] = dump_all([rp.configmap, rp.deployment])
        files.update({f"model-repository/{path}": text for path, text in rp.repository_files.items()})
    files[SERVICES_FILE] = dump_all(r.services)
    return files


def traffic_notes(r: Rendered) -> list[str]:
    """One note per workload whose servers' rates differ: a Service cannot split its traffic by rate."""
    notes = []
    for svc in r.services:
        meta = svc["metadata"]
        note = meta["annotations"].get("igniter-opt/traffic", "")
        if "unequal" in note:
            per_server = [x["metadata"]["name"] for x in r.services
                          if x["metadata"]["labels"].get("igniter-opt/workload-service") == meta["name"]]
            notes.append(f"note: workload '{meta['annotations']['igniter-opt/workload']}': {note} "
                         f"({', '.join(per_server)}); see DEPLOY.md")
    return notes


def name_lines(names: KubeNames) -> list[str]:
    """The names that had to change, one line per kind: "names: workload 'W1' -> 'w1', 'big vgg' -> 'big-vgg'"."""
    lines = []
    for kind in ("workload", "GPU"):
        pairs = [f"'{a}' -> '{b}'" for what, a, b in names.changed() if what == kind]
        if pairs:
            lines.append(f"names: {kind} " + ", ".join(pairs))
    return lines


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
                  "deployment": rp.name, "revision": rp.revision, "file": _pod_file(rp),
                  "servers": [placement_summary(s) for s in rp.pod.servers]} for rp in r.pods],
        "services": [s["metadata"]["name"] for s in r.services],
    }
    if changes is not None and diff is not None:
        out["change"] = {"pods": {"started": list(changes.started), "kept": list(changes.kept),
                                  "deleted": list(changes.deleted)},
                         "kept_but_restarted": list(changes.kept_but_restarted), "placements": diff.to_dict()}
    return out


def _deploy_md(r: Rendered, opts: ManifestOptions, steps: list[Step], verification: Verification,
               notes: list[str], changes: PodChanges | None) -> str:
    lines = ["# Deploying this plan on Kubernetes", "",
             f"Generated by igniter-opt {__version__} (`igniter-opt export k8s`). {verification.message}.", "",
             "## What the cluster needs", "",
             "- GPU nodes labelled by GPU Feature Discovery (NVIDIA device plugin or GPU Operator), whole GPUs "
             "(no time-slicing or MPS sharing by the device plugin on these nodes): "
             + ", ".join(sorted({f"`{PRODUCT_LABEL}={rp.pod.product_label}`" for rp in r.pods})) + ".",
             f"- The image `{opts.image}`: Triton (`tritonserver` on PATH), Python 3, and igniter-opt with torch, "
             "torchvision and transformers (the served `model.py` imports `igniter_opt.zoo`). See docs/k8s.md.",
             "- The NVIDIA container toolkit puts `nvidia-cuda-mps-control` into GPU containers (the `compute` "
             "driver capability); each pod runs its own MPS daemon."]
    if opts.model_store.claim is not None:
        lines.append(f"- The PersistentVolumeClaim `{opts.model_store.claim}` holding the contents of "
                     "`model-repository/` at its root (each pod mounts its own folder).")
    lines += ["", "## GPU pods", "", "| plan GPU | Deployment | node label | servers (workload, model, batch, MPS share) |",
              "| --- | --- | --- | --- |"]
    for rp in r.pods:
        servers = "; ".join(f"{s.name}: {s.placement.workload}, {s.model_name}, {s.placement.batch}, "
                            f"{s.placement.share_pct:g} %" for s in rp.pod.servers)
        lines.append(f"| {rp.pod.gpu_id} | `{rp.name}` | `{rp.pod.product_label}` | {servers} |")
    lines += ["", "## Services", "", "| Service | workload | selects | traffic |", "| --- | --- | --- | --- |"]
    for svc in r.services:
        a = svc["metadata"]["annotations"]
        lines.append(f"| `{svc['metadata']['name']}` | {a['igniter-opt/workload']} | "
                     f"{a.get('igniter-opt/servers', a.get('igniter-opt/plan-gpu', ''))} | "
                     f"{a.get('igniter-opt/traffic', 'weight ' + a.get('igniter-opt/weight', ''))} |")
    if notes:
        lines += ["", "A Service spreads connections evenly over its ready servers; it cannot weight them. For a "
                  "workload whose servers have unequal rates, send its traffic through a router that splits by "
                  "weight (for example a Gateway API GRPCRoute with one backendRef per per-server Service and "
                  "the Service's `igniter-opt/weight` as its weight):", "", *[f"- {n}" for n in notes]]
    if changes is not None:
        lines += ["", "## The change", "",
                  f"GPU pods started: {', '.join(changes.started) or 'none'}; kept: {', '.join(changes.kept) or 'none'}; "
                  f"deleted: {', '.join(changes.deleted) or 'none'}."]
        if changes.kept_but_restarted:
            lines.append("Placements the plan keeps but whose GPU gets a new pod (they restart there): "
                         + ", ".join(changes.kept_but_restarted) + ".")
    changed = r.names.changed()
    if changed:
        lines += ["", "## Names", "", *[f"- {what} `{a}` is `{b}` in Kubernetes" for what, a, b in changed]]
    lines += ["", "## Steps (`steps.sh`)", "", *render_steps_md(steps)]
    return "\n".join(lines).rstrip("\n") + "\n"


# ---- the two exports -----------------------------------------------------------------------------
def _labels_for(plans: list[Plan], options: ExportOptions) -> dict[str, str]:
    return product_labels(plans, options.gpu_labels)


def _write(r: Rendered, options: ExportOptions, steps: list[Step], header: str, sources: dict[str, str],
           verification: Verification, changes: PodChanges | None = None, diff: PlanDiff | None = None
           ) -> ExportResult:
    opts = options.manifests
    notes = traffic_notes(r)
    files = manifest_files(r, opts)
    files[SCRIPT] = render_script(steps, header)
    files["DEPLOY.md"] = _deploy_md(r, opts, steps, verification, notes, changes)
    files[RECORD] = json.dumps(_record(r, opts, sources, verification, changes, diff), indent=2) + "\n"
    write_tree(options.out_dir, files, executable=frozenset({SCRIPT}))
    return ExportResult(options.out_dir, r, verification, tuple(notes), diff, changes)


def export_plan(plan_path: Path, options: ExportOptions) -> ExportResult:
    """Export one plan: its manifests and the steps that deploy it from nothing."""
    check_out_dir(options.out_dir, options.force)
    plan = read_plan(plan_path)
    verification = verify_for_export(plan, str(plan_path), options)
    opts = options.manifests
    r = render(plan, _labels_for([plan], options), opts)
    steps = deploy_steps(NAMESPACE_FILE if opts.namespace else None, [_pod_file(rp) for rp in r.pods],
                         [rp.name for rp in r.pods], SERVICES_FILE, opts.namespace)
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
    """Export a plan change: the new plan's manifests and the steps from the old plan's deployment to it."""
    check_out_dir(options.out_dir, options.force)
    old_plan, new_plan = read_plan(old_path), read_plan(new_path)
    verification = verify_for_export(new_plan, str(new_path), options)
    opts = options.manifests
    labels = _labels_for([old_plan, new_plan], options)
    old, new = render(old_plan, labels, opts), render(new_plan, labels, opts)
    diff = diff_plans(old_plan, new_plan)
    changes = pod_changes(old, new, diff)
    started = [rp for rp in new.pods if rp.name in changes.started]
    new_services = [s["metadata"]["name"] for s in new.services]
    services_go = any(s["metadata"]["name"] not in new_services for s in old.services)
    steps = diff_steps(NAMESPACE_FILE if opts.namespace else None, [_pod_file(rp) for rp in started],
                       [rp.name for rp in started], SERVICES_FILE, opts.prefix, [rp.revision for rp in new.pods],
                       new_services, opts.namespace, pods_go=bool(changes.deleted), services_go=services_go)
    header = (f"Changes the deployment of {old_path.name} into {new_path.name}: {len(changes.started)} GPU pod(s) "
              f"started, {len(changes.kept)} kept, {len(changes.deleted)} deleted.")
    return _write(new, options, steps, header, {"old": str(old_path), "new": str(new_path)}, verification,
                  changes, diff)


def summary_lines(result: ExportResult) -> list[str]:
    """What the command prints: verification, renamed names, what was written, the change, traffic notes."""
    r = result.rendered
    labels = ", ".join(sorted({rp.pod.product_label for rp in r.pods}))
    lines = [result.verification.message, *name_lines(r.names),
             f"wrote {result.out_dir}/: {len(r.pods)} GPU pod(s) ({PRODUCT_LABEL}={labels}), "
             f"{len(r.services)} Service(s), {SCRIPT}, DEPLOY.md, {RECORD}"]
    if result.changes is not None and result.diff is not None:
        c = result.changes
        counts = ", ".join(f"{n} {k}" for k, n in result.diff.counts.items() if n)
        lines.append(f"change: GPU pods {len(c.started)} started, {len(c.kept)} kept, {len(c.deleted)} deleted; "
                     f"placements {counts}")
        if c.kept_but_restarted:
            lines.append(f"note: kept placement(s) {', '.join(c.kept_but_restarted)} restart in their GPU's new pod")
    lines += list(result.notes)
    lines.append(f"deploy: bash {result.out_dir}/{SCRIPT}")
    return lines
