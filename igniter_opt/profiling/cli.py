"""``igniter-opt profile``: measure a GPU and write ``raw.json`` (+ ``coefficients.json``)."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from typing import Any

import click

from igniter_opt.errors import IgniterOptError, InputError, ProfileError
from igniter_opt.profiling.corun import (
    CO_RUNS_FILE,
    DEFAULT_RUNS_PER_MODEL,
    CoRunDesign,
    measure_co_runs,
    measured_cost_s,
)
from igniter_opt.profiling.plan import DEFAULT_BATCHES, DEFAULT_SHARES_PCT, ProfilePlan
from igniter_opt.zoo import parse_models

log = logging.getLogger(__name__)


def _number_list(text: str, what: str, kind: type[int] | type[float]) -> tuple:
    """``'1,2,4'`` -> (1, 2, 4) of ``kind``; a clear error for anything else."""
    noun = "integers" if kind is int else "numbers"
    try:
        vals = tuple(kind(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InputError(f"{what}: expected comma-separated {noun}, got '{text}'") from None
    if not vals:
        raise InputError(f"{what}: empty list")
    return vals


def make_backend(kind: str, gpu: int, out_dir: Path, truth: str | None, models: list[str]) -> Any:
    """The backend named on the command line."""
    if kind == "simulated":
        from igniter_opt.profiling.simulated import SimulatedBackend, synthetic_model

        if truth:
            from igniter_opt.perfmodel.store import load_profile

            return SimulatedBackend(load_profile(truth))
        # The concurrency runs use VGG-19 whatever is profiled.
        return SimulatedBackend(synthetic_model(sorted({*models, "vgg19"})))
    from igniter_opt.profiling.cuda import CudaBackend

    return CudaBackend(gpu, log_dir=out_dir / "logs")


def profile_gpu(plan: ProfilePlan, backend: Any, out_dir: str | Path, *, fit: bool = True,
                progress: bool = True, name: str | None = None, power_form: str = "shared-floor",
                interference_form: str = "igniter", co_runs: Any = (),
                co_runs_source: str | None = None, co_run_design: CoRunDesign | None = None) -> tuple[Path, Any]:
    """Run the plan (resuming from the checkpoint), write raw.json and, with ``fit``, coefficients.json.

    ``power_form`` and ``interference_form`` are recorded in raw.json (``gpu.fit``) as the fits to
    use; ``igniter-opt fit`` follows them unless told otherwise. ``co_runs`` (``CoRun``, with
    ``fit`` and the kernel-delay form only) set its cache scale, which raw.json then records too.
    Without them, ``co_run_design`` (kernel-delay form only) is measured after the plan into
    ``co_runs.jsonl`` (resumable) and kappa is fitted on those runs; raw.json records the design
    and its cost in ``gpu.co_runs``.
    """
    import dataclasses

    from igniter_opt.ioutil import atomic_write_json
    from igniter_opt.perfmodel.fit import fit_profile, record_interference
    from igniter_opt.perfmodel.store import RAW_FILE, write_profile
    from igniter_opt.profiling.profiler import run_plan

    if co_runs and (not fit or interference_form != "kernel-delay"):
        raise ProfileError("--co-runs is used by the kernel-delay form's fit only: give "
                           "--interference-form kernel-delay (and --fit), or leave --co-runs out")
    if co_run_design is not None and (co_runs or interference_form != "kernel-delay"):
        raise ProfileError("co-location runs are measured for the kernel-delay form without --co-runs only: "
                           "give --interference-form kernel-delay, or leave --co-runs-per-model out")
    if co_run_design is not None:
        co_run_design.check_budget()  # before any GPU time is spent
    out = Path(out_dir)
    with backend:
        raw = run_plan(plan, backend, out, progress=progress)
        measured = () if co_run_design is None else measure_co_runs(co_run_design, backend, out / CO_RUNS_FILE, raw.gpu)
    gpu = {**raw.gpu, "fit": {"power_form": power_form, "interference_form": interference_form}}
    if co_run_design is not None:
        gpu["co_runs"] = {"file": CO_RUNS_FILE, **co_run_design.describe(),
                          "cost_s": {m: round(v, 1) for m, v in measured_cost_s(co_run_design, measured).items()}}
    raw = dataclasses.replace(raw, gpu=gpu)
    if not fit:
        atomic_write_json(out / RAW_FILE, raw.to_dict())
        return out, None
    if co_run_design is not None:
        from igniter_opt.perfmodel.interference import load_co_runs

        co_runs, co_runs_source = load_co_runs(out / CO_RUNS_FILE, gpu=raw.gpu.get("name")), CO_RUNS_FILE
    model = fit_profile(raw, name=name or out.name, co_runs=co_runs, co_runs_source=co_runs_source)
    write_profile(record_interference(raw, model), model, out)
    return out, model


def _sigterm(*_: object) -> None:
    raise SystemExit(143)  # run finally-blocks: stop MPS, kill measurement processes


@click.command("profile")
@click.option("--models", "models_text", default=None,

              help="Comma-separated zoo models (alexnet, resnet50, vgg19, ssd, vit_b_16, bert_base) or 'all'.")
@click.option("--gpu", type=int, default=0, show_default=True, help="GPU index (as NVML numbers them).")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Profile folder; receives raw.json, coefficients.json, checkpoint.jsonl and logs/.")
@click.option("--backend", type=click.Choice(["cuda", "simulated"]), default="cuda", show_default=True,
              help="cuda: measure the GPU under MPS; simulated: generate measurements from a known model.")
@click.option("--truth", default=None,
              help="simulated backend only: the profile to simulate (default: invented H100-like).")
@click.option("--batches", default=",".join(map(str, DEFAULT_BATCHES)), show_default=True,
              help="Solo-grid batch sizes.")
@click.option("--shares", default=",".join(f"{s:g}" for s in DEFAULT_SHARES_PCT), show_default=True,
              help="Solo-grid shares (% of SMs).")
@click.option("--max-copies", type=int, default=5, show_default=True, help="Concurrency runs: 1..N copies of VGG-19.")
@click.option("--fit/--no-fit", default=True, show_default=True, help="Also fit and write coefficients.json.")
@click.option("--power-form", type=click.Choice(["shared-floor", "igniter"]), default="shared-floor", show_default=True,
              help="Power fit recorded for this GPU: one power floor per busy GPU (shared-floor) or the paper's "
                   "per-placement intercept (igniter).")
@click.option("--interference-form", type=click.Choice(["igniter", "kernel-delay"]), default="igniter",
              show_default=True,
              help="Co-location interference form recorded and fitted for this GPU: the paper's (igniter) or a "
                   "per-kernel delay plus a scaled cache term (kernel-delay, docs/interference.md).")
@click.option("--co-runs", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="kernel-delay only: measured co-locations of different models (the JSON lines of "
                   "'benchmarks/accuracy.py run') to fit its cache scale kappa on, instead of measuring them; read "
                   "before measuring.")
@click.option("--co-runs-per-model", type=int, default=None, metavar="N",
              help=f"kernel-delay without --co-runs: co-location runs of different models measured after the "
                   f"plan, N led by each model (pairs and triples, seeded; 0: none, kappa = 1) into "
                   f"OUTPUT/{CO_RUNS_FILE}, to fit kappa on.  [default: {DEFAULT_RUNS_PER_MODEL}]")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar with ETA.")
@click.option("--serving", is_flag=True,
              help="Measure the serving stack (per-batch overhead, client cost, service-time variation) through "
                   "real Triton servers, into OUTPUT/serving.json; after the GPU profile with --models, or alone "
                   "on an existing profile.")
@click.option("--load-generator", type=click.Choice(["perf_analyzer", "python"]), default="perf_analyzer",
              show_default=True, help="--serving: who sends the requests (see docs/executor.md).")
@click.option("--serving-models", default=None, metavar="all|M1,M2,...",
              help="--serving: measure each of these models at two batches (three servers per run), so that a "
                   "model whose serving costs more than the others' gets its own overhead. Default: one run of three "
                   "models at one batch each.")
def profile(models_text: str | None, gpu: int, out_dir: Path, backend: str, truth: str | None, batches: str,
            shares: str, max_copies: int, fit: bool, power_form: str, interference_form: str,
            co_runs: Path | None, co_runs_per_model: int | None, progress: bool, serving: bool,
            load_generator: str, serving_models: str | None) -> None:
    """Measure a GPU with iGniter's plan and write a profile folder.

    Each measurement runs in its own process under an MPS daemon that the command starts and
    stops itself; nothing changes clocks, power limits, compute mode or MIG. Every measurement
    is checkpointed to OUTPUT/checkpoint.jsonl as it finishes: if the run is cut off, run the
    same command again and it resumes where it stopped. With --serving, the serving stack is
    measured too (what the tail latency budget plans with).

    Example:

        igniter-opt profile --models all --gpu 0 -o profiles/h200/ --serving

        igniter-opt profile --serving -o profiles/h200/     # the serving stack only, on an existing profile

        igniter-opt profile --serving --serving-models all -o profiles/h200/   # every model, own overheads

        igniter-opt profile --models all -o profiles/h200/ --interference-form kernel-delay   # + co-location runs
    """
    signal.signal(signal.SIGTERM, _sigterm)
    if models_text is None and not serving:
        raise click.UsageError("give --models (a GPU profile), --serving (the serving stack), or both")
    if co_runs is not None and models_text is None:
        raise click.UsageError("--co-runs fits a GPU profile: give --models too")
    if models_text is not None:
        _profile_models(models_text, gpu, out_dir, backend, truth, batches, shares, max_copies, fit, power_form,
                        progress, interference_form, co_runs, co_runs_per_model)
    if serving_models is not None and not serving:
        raise click.UsageError("--serving-models goes with --serving")
    if serving:
        _profile_serving(out_dir, gpu, load_generator, serving_models)


def _profile_serving(out_dir: Path, gpu: int, load_generator: str, serving_models: str | None) -> None:
    from igniter_opt.profiling.serving import measure_serving

    try:
        models = () if serving_models is None else ("all",) if serving_models.strip() == "all" else tuple(
            parse_models(serving_models))
        params, per_server = measure_serving(out_dir, gpus=f"gpu0={gpu}", load_generator=load_generator,
                                             progress=lambda m: click.echo(m, err=True), models=models)
    except IgniterOptError as exc:
        raise click.ClickException(str(exc)) from None
    for s in per_server:
        state = " (INVALID run)" if not s.valid else " (OVERLOADED: not fitted)" if s.overloaded else ""
        click.echo(f"{s.workload}: batch {s.batch} (ran {s.executed_batch:.2f}), overhead {s.overhead_ms:.3f} ms, "
                   f"client {s.client_ms:.3f} ms, service cv {s.service_cv:.3f}{state}")
    own = "".join(f"; {m}'s own: +{a:g} ms per batch + {r:g} ms per request" for m, a, r in params.model_overheads)
    click.echo(f"wrote {out_dir}/serving.json: overhead {params.overhead_ms:g} ms per batch + "
               f"{params.overhead_per_request_ms:g} ms per request{own}, client {params.client_ms:g} ms per request, "
               f"service cv {params.service_cv:g}")


def _profile_models(models_text: str, gpu: int, out_dir: Path, backend: str, truth: str | None, batches: str,
                    shares: str, max_copies: int, fit: bool, power_form: str, progress: bool,
                    interference_form: str = "igniter", co_runs: Path | None = None,
                    co_runs_per_model: int | None = None) -> None:
    try:
        runs: Any = ()
        if co_runs is not None:  # a bad file is refused before any GPU time is spent
            from igniter_opt.perfmodel.interference import load_co_runs

            runs = load_co_runs(co_runs)
            if interference_form != "kernel-delay" or not fit:
                raise ProfileError("--co-runs is used by the kernel-delay form's fit only: give "
                                   "--interference-form kernel-delay (and --fit), or leave --co-runs out")
        models = parse_models(models_text)
        plan = ProfilePlan(models=tuple(models), batches=_number_list(batches, "--batches", int),
                           shares_pct=_number_list(shares, "--shares", float), max_copies=max_copies)
        design = _co_run_design(plan, interference_form, co_runs, co_runs_per_model)
        be = make_backend(backend, gpu, out_dir, truth, models)
        out, model = profile_gpu(plan, be, out_dir, fit=fit, progress=progress, power_form=power_form,
                                 interference_form=interference_form, co_runs=runs,
                                 co_runs_source=co_runs.name if co_runs is not None else None,
                                 co_run_design=design)
    except IgniterOptError as exc:
        kept = out_dir / "checkpoint.jsonl"
        hint = f" (measurements so far are kept in {kept}; run again to resume)" if kept.exists() else ""
        raise click.ClickException(f"{exc}{hint}") from None
    what = "raw.json and coefficients.json" if model is not None else "raw.json"
    click.echo(f"wrote {what} to {out}")


def _co_run_design(plan: ProfilePlan, interference_form: str, co_runs: Path | None,
                   co_runs_per_model: int | None) -> CoRunDesign | None:
    """The co-location runs to measure: the kernel-delay form without --co-runs, unless N is 0."""
    if co_runs_per_model is not None and interference_form != "kernel-delay":
        raise ProfileError("--co-runs-per-model measures runs for the kernel-delay form: give "
                           "--interference-form kernel-delay, or leave --co-runs-per-model out")
    if co_runs_per_model is not None and co_runs is not None:
        raise ProfileError("give either --co-runs FILE (runs measured before) or --co-runs-per-model N (runs to "
                           "measure now), not both")
    if interference_form != "kernel-delay" or co_runs is not None or co_runs_per_model == 0:
        return None
    if co_runs_per_model is not None and co_runs_per_model < 0:
        raise ProfileError(f"--co-runs-per-model must be >= 0, got {co_runs_per_model}")
    design = CoRunDesign(models=plan.models, batches=plan.batches, phase_s=plan.co_phase_s,
                         runs_per_model=DEFAULT_RUNS_PER_MODEL if co_runs_per_model is None else co_runs_per_model)
    design.check_budget()
    return design


if __name__ == "__main__":  # pragma: no cover
    profile(sys.argv[1:])
