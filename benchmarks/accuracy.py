"""Prediction accuracy on held-out co-located mixes, run for real under MPS.

Two steps, so that the report is built from stored records and never from a live run:

``python benchmarks/accuracy.py run -o RESULTS.jsonl [--mixes 48] [--seed 7] [--deadline-s N]``
    On the GPU: draws seeded random mixes of 2-4 workloads (zoo models, batches from
    {1, 2, 3, 4, 6, 8, 12, 16, 24, 32}, shares in steps of 5 % from 10 %, summing to at most
    100 %), runs each mix for real (one MPS client per workload, all started together, closed
    loops with host copies for ``--phase-s`` seconds), and appends one JSON line per mix as it
    finishes (a cut-off run resumes). The mixes are held out: none of them is used by the fit,
    and most batches and shares are off the profiling grid.

``python benchmarks/accuracy.py report RESULTS.jsonl --profile profiles/h100 -o benchmarks/results``
    Anywhere: predicts every mix with the fitted profile and writes ``accuracy_<gpu>.csv``
    (``mix,model,batch,share,predicted_ms,measured_ms,predicted_rps,measured_rps``), a summary
    (median, p90 and max absolute relative error) as JSON and Markdown, and a scatter PNG.

Measured latency is iGniter's ``t_inf`` (input copy + graph + output copy, mean per batch);
measured throughput is ``1000 b / (graph + output copy)``, the rate of a server that overlaps
input copies with execution, which is what iGniter's throughput formula assumes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import signal
import statistics
import sys
from pathlib import Path
from typing import Any

BATCHES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
MODELS = ("alexnet", "resnet50", "vgg19", "ssd", "vit_b_16", "bert_base")


def draw_mixes(n: int, seed: int, models: tuple[str, ...] = MODELS) -> list[dict[str, Any]]:
    """``n`` seeded random mixes: 2-4 workloads, shares (multiples of 5, >= 10) summing to <= 100."""
    rng = random.Random(seed)
    mixes = []
    while len(mixes) < n:
        k = rng.choice((2, 2, 3, 3, 4))
        hi = min(70, int(150 / k))  # up to 1.5x a fair share
        shares = [rng.randrange(10, hi + 1, 5) for _ in range(k)]
        if sum(shares) > 100:
            continue
        wl = [{"model": rng.choice(models), "batch": rng.choice(BATCHES), "share_pct": float(s)} for s in shares]
        mixes.append({"mix": len(mixes), "workloads": wl})
    return mixes


def _alarm(*_: object) -> None:
    raise SystemExit(124)


def cmd_run(args: argparse.Namespace) -> int:
    from igniter_opt.profiling.corun import Mix, run_mixes
    from igniter_opt.profiling.cuda import CudaBackend

    signal.signal(signal.SIGTERM, _alarm)
    if args.deadline_s:
        signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(args.deadline_s)
    out = Path(args.output)
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            # A line cut short by a killed run, or one without a mix, is measured again.
            with contextlib.suppress(json.JSONDecodeError, KeyError):
                done.add(json.loads(line)["mix"])
    todo = [Mix.from_dict(m) for m in draw_mixes(args.mixes, args.seed) if m["mix"] not in done]
    print(f"{len(done)} mixes already measured, {len(todo)} to go", file=sys.stderr, flush=True)
    if not todo:
        return 0
    import os

    # Pre-spawned processes import the model libraries while the previous mix runs.
    os.environ.setdefault("IGNITER_PRELOAD", "torchvision,transformers")
    backend = CudaBackend(0, log_dir=Path(args.log_dir))

    def append(rec: dict[str, Any]) -> None:
        with out.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        print(f"mix {rec['mix']}: {rec['wall_s']:.1f} s", file=sys.stderr, flush=True)

    try:
        run_mixes(backend, todo, phase_s=args.phase_s, gpu=backend._facts, on_record=append)
    finally:
        backend.close()
    return 0


def _quantile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _stats(errs: list[float]) -> dict[str, float]:
    a = [abs(e) for e in errs]
    return {"n": len(a), "median": statistics.median(a), "p90": _quantile(a, 0.9), "max": max(a),
            "mean": statistics.fmean(a), "mean_signed": statistics.fmean(errs)}


def cmd_report(args: argparse.Namespace) -> int:
    from igniter_opt.ioutil import atomic_write_csv, atomic_write_json, atomic_write_text
    from igniter_opt.perfmodel.store import interference_form, load_profile

    if args.power_form or args.interference_form:
        from igniter_opt.perfmodel.fit import fit_profile
        from igniter_opt.perfmodel.raw import load_raw

        # A refit of the raw profile; kernel-delay's kappas come from the runs the raw profile records.
        model = fit_profile(load_raw(Path(args.profile) / "raw.json"), "refit", power_form=args.power_form,
                            interference_form=args.interference_form)
    else:
        model = load_profile(args.profile)
    recs = [json.loads(line) for line in Path(args.results).read_text().splitlines() if line.strip()]
    if not recs:
        print("no measured mixes", file=sys.stderr)
        return 1
    gpus = {r["gpu"] for r in recs}
    if len(gpus) != 1:
        print(f"results mix GPUs {sorted(gpus)}; report them separately", file=sys.stderr)
        return 1
    gpu = gpus.pop()
    prof_gpu = model.gpu.get("name")
    if prof_gpu and prof_gpu != gpu:
        print(f"profile is for '{prof_gpu}', results for '{gpu}'", file=sys.stderr)
        return 1
    tag = args.tag or ("h100" if "H100" in gpu else "h200" if "H200" in gpu else gpu.replace(" ", "_").lower())
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in sorted(recs, key=lambda r: r["mix"]):
        slots = [(w["model"], int(w["batch"]), float(w["share_pct"])) for w in r["workloads"]]
        pred = model.predict_gpu(slots)
        for w, (p_ms, p_rps) in zip(r["workloads"], pred, strict=True):
            rows.append({"mix": r["mix"], "model": w["model"], "batch": w["batch"], "share": w["share_pct"],
                         "predicted_ms": round(p_ms, 4), "measured_ms": round(w["measured_ms"], 4),
                         "predicted_rps": round(p_rps, 2), "measured_rps": round(w["measured_rps"], 2),
                         "n_workloads": len(slots)})
    cols = ["mix", "model", "batch", "share", "predicted_ms", "measured_ms", "predicted_rps", "measured_rps"]
    lat_err = [(x["predicted_ms"] - x["measured_ms"]) / x["measured_ms"] for x in rows]
    thr_err = [(x["predicted_rps"] - x["measured_rps"]) / x["measured_rps"] for x in rows]
    by_model = {}
    for m in sorted({x["model"] for x in rows}):
        idx = [i for i, x in enumerate(rows) if x["model"] == m]
        by_model[m] = {"latency": _stats([lat_err[i] for i in idx]), "throughput": _stats([thr_err[i] for i in idx])}
    by_count = {n: _stats([lat_err[i] for i, x in enumerate(rows) if x["n_workloads"] == n])
                for n in sorted({x["n_workloads"] for x in rows})}
    power_form = model.gpu.get("fit", {}).get("power_form", "igniter")
    form = interference_form(model)
    summary = {"gpu": gpu, "profile": str(args.profile), "power_form": power_form, "interference_form": form,
               "mixes": len(recs), "workloads": len(rows),
               "latency_rel_error": _stats(lat_err), "throughput_rel_error": _stats(thr_err), "by_model": by_model,
               "latency_by_workloads": {str(n): s for n, s in by_count.items()}}
    lines = [f"# Prediction accuracy on {gpu}", "",
             f"{len(recs)} held-out mixes, {len(rows)} workloads; profile `{args.profile}`, power form "
             f"`{power_form}`, interference form `{form}`.", "",
             "| quantity | median | p90 | max | mean signed |", "| --- | --- | --- | --- | --- |"]
    for name, key in (("latency", "latency_rel_error"), ("throughput", "throughput_rel_error")):
        s = summary[key]
        lines.append(f"| {name} | {s['median']:.1%} | {s['p90']:.1%} | {s['max']:.1%} | {s['mean_signed']:+.1%} |")
    lines += ["", "| model | n | latency median | latency p90 | throughput median | throughput p90 |",
              "| --- | --- | --- | --- | --- | --- |"]
    for m, s in by_model.items():
        lines.append(f"| {m} | {s['latency']['n']} | {s['latency']['median']:.1%} | {s['latency']['p90']:.1%} | "
                     f"{s['throughput']['median']:.1%} | {s['throughput']['p90']:.1%} |")
    lines += ["", "| workloads on the GPU | n | latency median | latency p90 | latency max |",
              "| --- | --- | --- | --- | --- |"]
    lines += [f"| {n} | {s['n']} | {s['median']:.1%} | {s['p90']:.1%} | {s['max']:.1%} |" for n, s in by_count.items()]
    atomic_write_csv(out / f"accuracy_{tag}.csv", cols, ({c: x[c] for c in cols} for x in rows))
    atomic_write_json(out / f"accuracy_{tag}.json", summary)
    atomic_write_text(out / f"accuracy_{tag}.md", "\n".join(lines) + "\n")
    _scatter(rows, out / f"accuracy_{tag}.png", gpu)
    print("\n".join(lines))
    return 0


def _scatter(rows: list[dict[str, Any]], path: Path, gpu: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    models = sorted({x["model"] for x in rows})
    for ax, (pk, mk, label) in zip(axes, (("predicted_ms", "measured_ms", "latency (ms)"),
                                         ("predicted_rps", "measured_rps", "throughput (req/s)")), strict=True):
        for m in models:
            xs = [x[mk] for x in rows if x["model"] == m]
            ys = [x[pk] for x in rows if x["model"] == m]
            ax.scatter(xs, ys, s=14, label=m)
        lo = min(min(x[pk], x[mk]) for x in rows)
        hi = max(max(x[pk], x[mk]) for x in rows)
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.plot([lo, hi], [lo * 1.1, hi * 1.1], "k:", lw=0.6)
        ax.plot([lo, hi], [lo * 0.9, hi * 0.9], "k:", lw=0.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"measured {label}")
        ax.set_ylabel(f"predicted {label}")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"iGniter model vs co-located runs under MPS, {gpu} (dotted: +/-10 %)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("-o", "--output", required=True)
    r.add_argument("--mixes", type=int, default=48)
    r.add_argument("--seed", type=int, default=7)
    r.add_argument("--phase-s", type=float, default=2.0)
    r.add_argument("--deadline-s", type=int, default=0)
    r.add_argument("--log-dir", default="accuracy-logs")
    p = sub.add_parser("report")
    p.add_argument("results")
    p.add_argument("--profile", required=True)
    p.add_argument("-o", "--output", default="benchmarks/results")
    p.add_argument("--tag", default=None)
    p.add_argument("--power-form", default=None, help="refit the profile's raw.json with this power form")
    p.add_argument("--interference-form", default=None, choices=["igniter", "kernel-delay"],
                   help="refit the profile's raw.json with this interference form (igniter: the paper's)")
    args = ap.parse_args()
    return cmd_run(args) if args.cmd == "run" else cmd_report(args)


if __name__ == "__main__":
    sys.exit(main())
