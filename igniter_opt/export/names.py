"""Kubernetes names for a plan's workloads and GPUs, and the labels and port names built from them.

Object names (Services, Deployments, ConfigMaps) must be DNS-1035 labels: at most 63 lowercase
letters, digits and '-', starting with a letter and ending with a letter or digit. A plan's names
are free text ("big vgg", "W1"), so every name is mapped by one pure function (the same name
always gives the same Kubernetes name, in every plan, which a plan change relies on); the
mapping of every name it changed is printed. Two names that map to the same Kubernetes name are
refused: each workload is one Service.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from igniter_opt.domain import Plan
from igniter_opt.export.errors import ExportError

DNS_LABEL_MAX = 63
# Room left in 63 characters for what is appended to a name ('-<gpu>', the revision, 'serves-').
WORKLOAD_NAME_MAX = 40
GPU_NAME_MAX = 16
PREFIX_MAX = 20
# A container port name (IANA service name) has at most 15 characters: '<stem>-grpc'.
PORT_STEM_MAX = 10
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# A label value: at most 63 characters, alphanumeric at both ends, '-', '_' and '.' inside.
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def digest(text: str, n: int = 6) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


def dns_label(name: str, *, max_len: int = DNS_LABEL_MAX, lead: str = "x") -> str:
    """``name`` as a DNS-1035 label of at most ``max_len`` characters.

    Lowercase; every run of other characters becomes one '-'; ``lead`` + '-' goes in front when the
    result would not start with a letter; a name that is still too long is cut and ends in '-' and
    six hex digits of its hash (so that two long names with a common start stay apart).
    """
    out = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not out[:1].isalpha():
        out = f"{lead}-{out}" if out else lead
    if len(out) > max_len:
        out = out[: max_len - 7].rstrip("-") + "-" + digest(name)
    return out


def is_dns_label(name: str, max_len: int = DNS_LABEL_MAX) -> bool:
    return len(name) <= max_len and bool(_DNS_1035.match(name))


def is_label_value(value: str) -> bool:
    return len(value) <= DNS_LABEL_MAX and bool(_LABEL_VALUE.match(value))


def port_stem(workload_label: str) -> str:
    """The stem of a workload's container port names ('<stem>-grpc', '<stem>-http'): at most 10 characters.

    The same workload has the same port names in every pod and every plan, so that its Service
    reaches it wherever it runs; a name too long for the stem is replaced by 'w' and 8 hex digits.
    """
    if len(workload_label) <= PORT_STEM_MAX:
        return workload_label
    return "w" + digest(workload_label, 8)


@dataclass(frozen=True)
class KubeNames:
    """The Kubernetes name of every workload and GPU of a plan, and which of them had to change."""

    workloads: dict[str, str]
    gpus: dict[str, str]

    def changed(self) -> list[tuple[str, str, str]]:
        """(what, plan name, Kubernetes name) for every name that is not already its own Kubernetes name."""
        return [("workload", a, b) for a, b in self.workloads.items() if a != b] + \
               [("GPU", a, b) for a, b in self.gpus.items() if a != b]


def _unique(names: list[str], what: str, max_len: int, lead: str) -> dict[str, str]:
    out: dict[str, str] = {}
    taken: dict[str, str] = {}
    for name in names:
        k = dns_label(name, max_len=max_len, lead=lead)
        if k in taken and taken[k] != name:
            raise ExportError(f"{what}s '{taken[k]}' and '{name}' both become the Kubernetes name '{k}'; "
                              f"rename one of them in the plan")
        taken[k] = name
        out[name] = k
    return out


def kube_names(plan: Plan) -> KubeNames:
    """Map every workload and GPU id of ``plan`` to a Kubernetes name, or refuse two that collide."""
    workloads = list(dict.fromkeys(p.workload for _, p in plan.placements()))
    workload_names = _unique(workloads, "workload", WORKLOAD_NAME_MAX, "w")
    stems: dict[str, str] = {}
    for w, k in workload_names.items():
        stem = port_stem(k)
        if stem in stems:
            raise ExportError(f"workloads '{stems[stem]}' and '{w}' get the same port names ('{stem}-grpc'); "
                              "rename one of them in the plan")
        stems[stem] = w
    return KubeNames(workload_names, _unique([g.gpu_id for g in plan.gpus], "GPU", GPU_NAME_MAX, "gpu"))


def check_prefix(prefix: str) -> str:
    """The ``--name`` prefix of every object: already a short DNS-1035 label, or a clear error."""
    if not is_dns_label(prefix, PREFIX_MAX):
        example = dns_label(prefix, max_len=PREFIX_MAX)
        raise ExportError(f"--name '{prefix}' is not a valid prefix: use at most {PREFIX_MAX} lowercase "
                          f"letters, digits and '-', starting with a letter (e.g. {example})")
    return prefix


def check_namespace(namespace: str | None) -> str | None:
    """A namespace name is a DNS-1123 label (it may start with a digit)."""
    if namespace is not None and not (len(namespace) <= DNS_LABEL_MAX and _DNS_1123.match(namespace)):
        raise ExportError(f"--namespace '{namespace}' is not a valid namespace name: use at most 63 "
                          "lowercase letters, digits and '-', alphanumeric at both ends "
                          f"(e.g. {dns_label(namespace)})")
    return namespace
