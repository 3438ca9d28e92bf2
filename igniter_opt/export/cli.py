"""``igniter-opt export``: a plan for a platform other than ``apply`` (today: Kubernetes)."""

from __future__ import annotations

from pathlib import Path

import click

from igniter_opt.errors import IgniterOptError
from igniter_opt.export.gpulabels import PRODUCT_LABEL, parse_gpu_labels


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def export() -> None:
    """Export a plan for another platform: Kubernetes manifests (export k8s).

    Example: igniter-opt export k8s plan.json -o k8s/ --namespace inference
    """


@export.command("k8s")
@click.argument("plan_file", metavar="[PLAN.json]", type=click.Path(path_type=Path), required=False)
@click.option("--diff", "diff_files", nargs=2, type=click.Path(path_type=Path), default=None,
              metavar="OLD.json NEW.json",
              help="Export a plan change instead: NEW's manifests and the steps from OLD's deployment to "
                   "NEW's (new servers first, then the switch, then the old ones deleted).")
@click.option("-o", "--output", "out_dir", type=click.Path(path_type=Path), required=True,
              help="Folder to write: manifests/, steps.sh, DEPLOY.md, export.json.")
@click.option("--namespace", default=None, help="Namespace of every object (and a Namespace manifest). "
                                                "Default: kubectl's current namespace.")
@click.option("--image", default=None, help="Server image: Triton, Python 3 and igniter-opt with torch "
                                            "(docs/k8s.md). Default: igniter-opt-triton:<version>.")
@click.option("--name", "prefix", default="igniter", show_default=True,
              help="Prefix of the GPU pods' names and the instance label: one deployment per prefix and "
                   "namespace.")
@click.option("--model-store", default="configmap", show_default=True,
              help="Where the model repositories go: configmap (one per GPU pod) or pvc:CLAIM (an existing "
                   "PersistentVolumeClaim that you fill from model-repository/).")
@click.option("--gpu-label", "gpu_labels", multiple=True, metavar="TYPE=LABEL",
              help=f"The {PRODUCT_LABEL} value of a GPU type that is not an NVML name (repeatable).")
@click.option("--profile", "-p", default=None, help="Verify against this profile instead of the plan's.")
@click.option("--allow-unverified", is_flag=True,
              help="Export a plan that fails verification, or cannot be verified, with a warning.")
@click.option("--force", is_flag=True, help="Replace an earlier export in the output folder.")
def k8s(plan_file: Path | None, diff_files: tuple[Path, Path] | None, out_dir: Path, namespace: str | None,
        image: str | None, prefix: str, model_store: str, gpu_labels: tuple[str, ...], profile: str | None,
        allow_unverified: bool, force: bool) -> None:
    """Write Kubernetes manifests that run a plan as apply does, on whole GPUs of many nodes.

    One pod per plan GPU (nvidia.com/gpu: 1 on a node whose nvidia.com/gpu.product is the GPU's
    type) runs the GPU's MPS control daemon and one tritonserver per placement with its MPS share,
    batch and queue delay; one Service per workload. The plan is verified first. Prints the names
    it had to change and where a Service cannot split a workload's traffic by rate.

    Example: igniter-opt export k8s plan.json -o k8s/ --namespace inference

    Example: igniter-opt export k8s --diff plan.json new_plan.json -o k8s-change/
    """
    if (plan_file is None) == (diff_files is None):
        raise click.UsageError("give either PLAN.json or --diff OLD.json NEW.json")
    # Imported here: the exporter pulls in the replanner (scipy), which no other command's start-up needs.
    from igniter_opt.export.deploydoc import summary_lines
    from igniter_opt.export.k8s import ExportOptions, export_diff, export_plan
    from igniter_opt.export.manifests import ManifestOptions, ModelStore
    from igniter_opt.export.names import check_namespace, check_prefix

    try:
        manifests = ManifestOptions(prefix=check_prefix(prefix), namespace=check_namespace(namespace),
                                    model_store=ModelStore.parse(model_store),
                                    **({"image": image} if image else {}))
        options = ExportOptions(out_dir=out_dir, manifests=manifests, gpu_labels=parse_gpu_labels(gpu_labels),
                                profile=profile, force=force, allow_unverified=allow_unverified)
        if diff_files is not None:
            result = export_diff(diff_files[0], diff_files[1], options)
        else:
            assert plan_file is not None
            result = export_plan(plan_file, options)
    except IgniterOptError as exc:
        raise click.ClickException(str(exc)) from None
    for line in summary_lines(result):
        click.echo(line)
