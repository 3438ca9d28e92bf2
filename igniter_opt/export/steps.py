"""The ordered kubectl steps of an export: a plan deployed, or a plan change as ``apply --diff`` makes it.

A plan change mirrors ``igniter-opt apply --diff``: the new servers start next to the old ones,
the traffic switches once they are ready, and only then are the old ones stopped. In Kubernetes
the unit that starts and stops is a GPU's pod, so a GPU whose servers change at all gets a new
pod (kept placements on it restart there), on a second free GPU of its type while the old pod
still runs; a GPU whose servers stay the same keeps its pod. The steps:

1. ``kubectl apply`` the Deployments of the GPUs that changed, and wait until each is available
   (every server ready);
2. the switch: ``kubectl apply`` the new plan's Services, then take the old pods out of every
   Service (label ``igniter-opt/serving=false``), so that new connections reach only the new
   servers;
3. delete the old pods' Deployments and ConfigMaps (each server finishes its requests in flight
   within its exit timeout) and the Services of workloads the new plan no longer has.

Old objects are found by label (this export's instance, a revision that is not the new plan's),
not by name, so the steps are right even when the old plan was exported with other options.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from igniter_opt.export.manifests import COMPONENT, GPU_SERVER, INSTANCE, REVISION, SERVING
from igniter_opt.export.services import SERVICE, WORKLOAD_SERVICE

SCRIPT = "steps.sh"
ROLLOUT_TIMEOUT_S = 900


@dataclass(frozen=True)
class Step:
    """One step: what it is for, and its commands (run from the export's folder)."""

    title: str
    commands: tuple[str, ...]


def _ns(namespace: str | None) -> str:
    return f" -n {namespace}" if namespace else ""


def _apply_pods(files: list[str], deployments: list[str], namespace: str | None) -> list[str]:
    wait = [f"kubectl rollout status deployment/{d}{_ns(namespace)} --timeout={ROLLOUT_TIMEOUT_S}s"
            for d in deployments]
    return [f"kubectl apply -f {f}" for f in files] + wait


def deploy_steps(namespace_file: str | None, pod_files: list[str], deployments: list[str], services_file: str,
                 namespace: str | None) -> list[Step]:
    """A plan deployed from nothing: the namespace, the GPU pods (until ready), the Services."""
    steps = []
    if namespace_file:
        steps.append(Step("the namespace", (f"kubectl apply -f {namespace_file}",)))
    steps.append(Step("the GPU pods: every GPU's MPS daemon and servers, until each is ready",
                      tuple(_apply_pods(pod_files, deployments, namespace))))
    steps.append(Step("the Services: one per workload", (f"kubectl apply -f {services_file}",)))
    return steps


def _not_in(values: list[str]) -> str:
    return f"({','.join(sorted(values))})"


def diff_steps(namespace_file: str | None, new_pod_files: list[str], new_deployments: list[str],
               services_file: str, prefix: str, new_revisions: list[str], new_services: list[str],
               namespace: str | None, *, pods_go: bool, services_go: bool) -> list[Step]:
    """A plan change: new servers first, then the switch, then the old ones deleted (module docstring).

    ``pods_go`` / ``services_go``: whether the old plan has pods / Services that the new one has not
    (without them there is nobody to take out of the Services or to delete).
    """
    old_pods = shlex.quote(
        f"{INSTANCE}={prefix},{COMPONENT}={GPU_SERVER},{REVISION} notin {_not_in(new_revisions)}")
    old_services = shlex.quote(
        f"{INSTANCE}={prefix},{COMPONENT}={WORKLOAD_SERVICE},{SERVICE} notin {_not_in(new_services)}")
    steps = []
    if namespace_file:
        steps.append(Step("the namespace", (f"kubectl apply -f {namespace_file}",)))
    start = _apply_pods(new_pod_files, new_deployments, namespace)
    steps.append(Step("new servers first: the pods of the GPUs whose servers change, next to the old ones, "
                      "until each is ready" + ("" if start else " (no GPU changes its servers)"),
                      tuple(start) or ("true  # nothing to start",)))
    switch = [f"kubectl apply -f {services_file}"]
    if pods_go:
        switch.append(f"kubectl label pods{_ns(namespace)} -l {old_pods} {SERVING}=false --overwrite")
    steps.append(Step("the switch: the new plan's Services, and the old pods leave every Service",
                      tuple(switch)))
    delete = []
    if pods_go:
        delete.append(f"kubectl delete deployments,configmaps{_ns(namespace)} -l {old_pods} "
                      "--cascade=foreground --wait=true")
    if services_go:
        delete.append(f"kubectl delete services{_ns(namespace)} -l {old_services}")
    steps.append(Step("the old servers deleted (each finishes its requests in flight), and the Services of "
                      "workloads the new plan no longer has",
                      tuple(delete) or ("true  # nothing to delete",)))
    return steps


def render_script(steps: list[Step], header: str) -> str:
    """``steps.sh``: every step's commands in order; it stops at the first that fails."""
    lines = ["#!/usr/bin/env bash", f"# {header}", "# Generated by igniter-opt export k8s; see DEPLOY.md.",
             "set -euo pipefail", 'cd "$(dirname "$0")"']
    for i, step in enumerate(steps, start=1):
        lines += ["", f"# {i}. {step.title}", f"echo {shlex.quote(f'== {i}. {step.title}')}", *step.commands]
    return "\n".join(lines) + "\n"


def render_steps_md(steps: list[Step]) -> list[str]:
    out = []
    for i, step in enumerate(steps, start=1):
        out += [f"{i}. {step.title}:", "", "   ```", *(f"   {c}" for c in step.commands), "   ```", ""]
    return out
