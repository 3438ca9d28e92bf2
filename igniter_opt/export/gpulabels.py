"""Which nodes a plan GPU may run on: the GPU Feature Discovery label ``nvidia.com/gpu.product``.

GPU Feature Discovery (part of the NVIDIA device plugin and the GPU Operator) labels every GPU
node with the NVML name of its GPUs. It drops every character outside ``[A-Za-z0-9-_. ]`` and
joins the remaining words with '-' ("NVIDIA H100 80GB HBM3" becomes "NVIDIA-H100-80GB-HBM3"),
and appends "-SHARED" where the device plugin shares the GPU (time-slicing or MPS replicas,
unless the resource is renamed) (k8s-device-plugin, internal/lm/resource.go, ``sanitise`` and
``getProductName``). A plan's GPU type is the NVML name the profiler recorded, so the label
follows from it. Selecting the plain label also keeps pods off nodes whose GPUs the plugin
shares: those carry the "-SHARED" label or no ``nvidia.com/gpu`` resource at all.

A GPU type that is not an NVML name (a profile fitted from data without one names the GPU
after the profile, e.g. 'v100') has no known label: the user names it with ``--gpu-label``.
"""

from __future__ import annotations

import re

from igniter_opt.domain import Plan
from igniter_opt.export.errors import ExportError
from igniter_opt.export.names import is_label_value

PRODUCT_LABEL = "nvidia.com/gpu.product"
# The first word of every NVML product name: 'NVIDIA H100 80GB HBM3', 'Tesla V100-SXM2-16GB',
# 'Quadro RTX 8000', 'GeForce RTX 2080 Ti', 'TITAN V', 'GRID A100D-80C'.
NVML_BRANDS = ("NVIDIA", "Tesla", "Quadro", "GeForce", "TITAN", "GRID")
_DROPPED = re.compile(r"[^A-Za-z0-9\-_. ]")


def gfd_product_label(nvml_name: str) -> str:
    """The ``nvidia.com/gpu.product`` value GPU Feature Discovery gives an unshared GPU of this NVML name."""
    return "-".join(_DROPPED.sub("", nvml_name).split())


def is_nvml_name(gpu_type: str) -> bool:
    words = gpu_type.split()
    return len(words) >= 2 and words[0] in NVML_BRANDS


def parse_gpu_labels(values: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``--gpu-label TYPE=LABEL`` options as {GPU type: label value}, each label value checked."""
    out: dict[str, str] = {}
    for v in values:
        gpu_type, sep, label = v.rpartition("=")
        gpu_type, label = gpu_type.strip(), label.strip()
        if not sep or not gpu_type:
            raise ExportError(f"--gpu-label '{v}': write GPU_TYPE=LABEL, e.g. "
                              "'NVIDIA H100 80GB HBM3=NVIDIA-H100-80GB-HBM3'")
        if not is_label_value(label):
            raise ExportError(f"--gpu-label '{v}': '{label}' is not a valid label value (at most 63 letters, "
                              "digits, '-', '_' and '.', alphanumeric at both ends)")
        out[gpu_type] = label
    return out


def product_labels(plans: list[Plan], overrides: dict[str, str]) -> dict[str, str]:
    """{GPU type: the ``nvidia.com/gpu.product`` value to select} for every GPU type of the plans.

    ``overrides`` (from ``--gpu-label``) win; every other type must be an NVML name. An override
    for a type no plan uses is refused (it is most likely a typo).
    """
    gpus = [g for plan in plans for g in plan.gpus]
    types = list(dict.fromkeys(g.gpu_type for g in gpus))
    unused = sorted(set(overrides) - set(types))
    if unused:
        raise ExportError(f"--gpu-label names GPU type '{unused[0]}', which the plan does not use; its GPU "
                          "types: " + ", ".join(f"'{t}'" for t in types))
    out: dict[str, str] = {}
    for t in types:
        label = overrides.get(t)
        if label is None:
            gpu = next(g.gpu_id for g in gpus if g.gpu_type == t)
            label = gfd_product_label(t) if is_nvml_name(t) else ""
            if not is_label_value(label):
                raise ExportError(
                    f"GPU type '{t}' (plan GPU {gpu}) has no known {PRODUCT_LABEL} label; pass --gpu-label "
                    f"'{t}=<label>' with the value on its nodes (kubectl get nodes -L {PRODUCT_LABEL})")
        out[t] = label
    return out
