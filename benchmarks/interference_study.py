"""Which interference term is wrong, and which form fixes it (issue 16, CPU part).

Built from stored records only (no GPU): the held-out co-located mixes that
``benchmarks/accuracy.py run`` measured, the profile's raw runs (``raw.json``, ``checkpoint.jsonl``),
optionally a second set of measured mixes to fit the forms' parameters on (``--train-runs``) and,
with ``--v100``, the paper's published V100 profile (read in place).

    python benchmarks/interference_study.py                      # H100: mixes + profiles/h100
    python benchmarks/interference_study.py --gpu h200           # H200: held-out seed 7, training seed 8
    python benchmarks/interference_study.py --v100 ../shared/data/igniter_v100_profile.jsonl

Writes ``interference_study_<tag>.{csv,md,png}`` (per-workload predictions of every candidate form,
the error decomposition, the accuracy tables, plots) and ``accuracy_<tag>_kernel_delay.csv`` (the
chosen form's predictions in ``accuracy.py``'s columns) and, with ``--v100``,
``interference_study_v100.{csv,md}`` (the paper's co-location measurements predicted by the paper's
form and the kernel-delay form). Forms with parameters are fitted once on the training mixes when
``--train-runs`` is given (and no training mix may equal a held-out one), else cross-validated
leave-one-mix-out on the held-out mixes. Every file is written atomically after everything has been
computed.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from igniter_opt.errors import IgniterOptError, InputError  # noqa: E402
from igniter_opt.ioutil import atomic_write_bytes  # noqa: E402
from igniter_opt.perfmodel import interference as itf  # noqa: E402
from igniter_opt.perfmodel.fit import fit_profile  # noqa: E402
from igniter_opt.perfmodel.model import PerformanceModel  # noqa: E402
from igniter_opt.perfmodel.raw import RawProfile, load_raw  # noqa: E402

RESULTS = HERE / "results"
CHOSEN = itf.MODEL_SCALED  # the kernel-delay form as fitted: a kappa per model
ONE_KAPPA = "kernel-delay-scaled"
KEY_FORMS = ("igniter", "kernel-delay", ONE_KAPPA, CHOSEN)
FORM_COLORS = {"igniter": "#d62728", "kernel-delay": "#1f77b4", ONE_KAPPA: "#9467bd", CHOSEN: "#2ca02c"}
COUNTS = (2, 3, 4)
# --gpu presets: (held-out mixes, profile folder, training mixes or None)
GPUS = {
    "h100": ("accuracy_h100_runs.jsonl", "h100", None),
    "h200": ("accuracy_h200_runs.jsonl", "h200", "accuracy_h200_train_runs.jsonl"),
}


# ---- data ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mixes:
    """The measured mixes, one ``CoRun`` per mix, with what else each record holds."""

    gpu: str
    mix_ids: tuple[int, ...]
    runs: tuple[itf.CoRun, ...]
    measured_rps: tuple[tuple[float, ...], ...]
    clock_mhz: tuple[float, ...]
    power_w: tuple[float, ...]


def load_mixes(path: Path) -> Mixes:
    try:
        recs = sorted(
            (json.loads(line) for line in path.read_text().splitlines() if line.strip()),
            key=lambda r: r["mix"],
        )
        gpus = {r["gpu"] for r in recs}
        if len(gpus) != 1:
            raise InputError(f"{path}: the mixes come from {len(gpus)} GPU models; study one GPU at a time")
        runs = tuple(
            itf.CoRun(
                tuple((w["model"], int(w["batch"]), float(w["share_pct"])) for w in r["workloads"]),
                tuple(float(w["measured_ms"]) for w in r["workloads"]),
            )
            for r in recs
        )
        return Mixes(
            gpus.pop(),
            tuple(r["mix"] for r in recs),
            runs,
            tuple(tuple(float(w["measured_rps"]) for w in r["workloads"]) for r in recs),
            tuple(float(r.get("clock_mhz", np.nan)) for r in recs),
            tuple(float(r.get("power_w", np.nan)) for r in recs),
        )
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: not a results file of 'benchmarks/accuracy.py run' ({exc})") from None


def _mix_key(run: itf.CoRun) -> tuple[tuple[str, int, float], ...]:
    return tuple(sorted(run.slots))


def same_mixes(held_out: Mixes, train: Mixes) -> list[tuple[int, int]]:
    """(held-out mix, training mix) pairs with the same workloads (same models, batches and shares,
    in any order)."""
    keys = {}
    for i, r in zip(train.mix_ids, train.runs, strict=True):
        keys.setdefault(_mix_key(r), []).append(i)
    return [(i, j) for i, r in zip(held_out.mix_ids, held_out.runs, strict=True) for j in keys.get(_mix_key(r), [])]


def concurrency_latencies(profile_dir: Path) -> dict[int, float]:
    """GPU time per batch of the n-copy concurrency runs (checkpoint.jsonl, ``conc/<n>``), if recorded."""
    path = profile_dir / "checkpoint.jsonl"
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line) if line.strip() else {}
        if str(rec.get("key", "")).startswith("conc/") and "latency_ms" in rec.get("value", {}):
            out[int(rec["value"]["copies"])] = float(rec["value"]["latency_ms"])
    return out


def base_models(perf: PerformanceModel, raw: RawProfile) -> dict[str, PerformanceModel]:
    """The two pair-run fits every candidate starts from (no mix is used here)."""
    return {
        form: itf.apply_interference(perf, itf.fit_interference(raw, perf, form=form))
        for form in itf.INTERFERENCE_FORMS
    }


# ---- predictions -----------------------------------------------------------------------------
def cv_predict(
    cand: itf.CandidateForm,
    base: PerformanceModel,
    runs: tuple[itf.CoRun, ...],
    raw: RawProfile,
    train: tuple[itf.CoRun, ...] = (),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Latency and throughput of every slot of ``runs``, never with parameters fitted on its own mix.

    With ``train``, parameters are fitted once on those mixes; without, each mix is predicted with
    parameters fitted on the other mixes (leave-one-mix-out). Forms without parameters use no mix at
    all. Returns (latency, throughput, parameters per fit).
    """
    rb = itf.run_batch(base, runs, raw)
    if not cand.params:
        lat, thr = itf.predict_batch(base, rb, cand.factor(rb, np.zeros(0)))
        return lat, thr, np.zeros((0, 0))
    if train:
        theta = itf.fit_candidate(base, cand, itf.run_batch(base, train, raw))
        lat, thr = itf.predict_batch(base, rb, cand.factor(rb, theta))
        return lat, thr, theta[None, :]
    lat, thr = np.full(rb.batch.shape, np.nan), np.full(rb.batch.shape, np.nan)
    thetas = []
    for i in range(len(runs)):
        train = itf.run_batch(base, runs[:i] + runs[i + 1 :], raw)
        theta = itf.fit_candidate(base, cand, train)
        lat_i, thr_i = itf.predict_batch(base, rb, cand.factor(rb, theta))
        lat[i], thr[i] = lat_i[i], thr_i[i]
        thetas.append(theta)
    return lat, thr, np.array(thetas)


def decompose(perf: PerformanceModel, rb: itf.RunBatch, factor: np.ndarray | float) -> dict[str, np.ndarray]:
    """Switch the terms on one by one: solo, + scheduling delay, + cache term, + clock drop (= prediction)."""
    hw = perf.hardware
    no_clock = replace(perf, hardware=replace(hw, alpha_f=0.0))
    no_sched = replace(perf, hardware=replace(hw, alpha_f=0.0, alpha_sch=0.0, beta_sch=0.0))
    solo = itf.predict_batch(no_sched, rb, 0.0)[0]
    sched = itf.predict_batch(no_clock, rb, 0.0)[0] - solo
    cache = itf.predict_batch(no_clock, rb, factor)[0] - solo - sched
    total = itf.predict_batch(perf, rb, factor)[0]
    return {
        "solo": solo,
        "sched": sched,
        "cache": cache,
        "clock": total - solo - sched - cache,
        "total": total,
    }


def predicted_gpu_ms(perf: PerformanceModel, slots: list[tuple[str, int, float]]) -> list[float]:
    """GPU time (no host copies) of each slot sharing one GPU."""
    out = []
    for (m, b, _), (lat, _) in zip(slots, perf.predict_gpu(slots), strict=True):
        c = perf.slot_constants(np.array([perf.model_index(m)]), np.array([float(b)]))
        out.append(lat - float(c["t_load"][0] + c["t_fb"][0]))
    return out


def predicted_clock_mhz(perf: PerformanceModel, slots: list[tuple[str, int, float]]) -> float:
    """The clock the model predicts for ``slots``: the ratio of its GPU time with and without the
    clock drop."""
    free = replace(perf, hardware=replace(perf.hardware, alpha_f=0.0))
    return perf.hardware.max_clock_mhz * predicted_gpu_ms(free, slots)[0] / predicted_gpu_ms(perf, slots)[0]


# ---- statistics ------------------------------------------------------------------------------
def error_stats(err: np.ndarray, n: np.ndarray) -> dict[str, Any]:
    """Median, p90, max of |relative error| and the signed median, overall and per number of workloads."""

    def one(e: np.ndarray) -> dict[str, float]:
        a = np.abs(e)
        return {
            "n": int(len(e)),
            "median": float(np.median(a)),
            "p90": float(np.quantile(a, 0.9)),
            "max": float(a.max()),
            "signed_median": float(np.median(e)),
        }

    return {"all": one(err), **{str(k): one(err[n == k]) for k in COUNTS if np.any(n == k)}}


def bootstrap_ci(err: np.ndarray, mix: np.ndarray, draws: int, seed: int) -> dict[str, tuple[float, float]]:
    """95 % intervals of the median and p90 of |error|, resampling whole mixes (rows of a mix are not
    independent)."""
    rng = np.random.default_rng(seed)
    ids = np.unique(mix)
    rows = [np.flatnonzero(mix == i) for i in ids]
    med, p90 = [], []
    for _ in range(draws):
        a = np.abs(err[np.concatenate([rows[j] for j in rng.integers(len(ids), size=len(ids))])])
        med.append(np.median(a))
        p90.append(np.quantile(a, 0.9))
    return {"median": tuple(np.quantile(med, [0.025, 0.975])), "p90": tuple(np.quantile(p90, [0.025, 0.975]))}


def realized_fraction(measured: np.ndarray, d: dict[str, np.ndarray], n: np.ndarray) -> dict[int, float]:
    """Per number of workloads: the factor on the predicted cache term that the measurements bear out
    (least squares in relative terms, like every error here: both sides divided by the measured latency)."""
    y = (measured - d["solo"] - d["sched"] - d["clock"]) / measured
    c = d["cache"] / measured
    return {k: float(np.sum(c[n == k] * y[n == k]) / np.sum(c[n == k] ** 2)) for k in COUNTS}


# ---- the study -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Study:
    """Everything the report shows, computed once."""

    gpu: str
    rows: dict[str, np.ndarray]  # per workload: mix, n, model, batch, share, measured_ms, measured_rps
    latency: dict[str, np.ndarray]  # candidate -> predicted ms per workload (cross-validated)
    throughput: dict[str, np.ndarray]
    thetas: dict[str, np.ndarray]
    decomposition: dict[str, dict[str, np.ndarray]]  # "igniter" / CHOSEN -> terms per workload
    pairs: list[itf.PairRun]
    coefs: dict[str, itf.InterferenceCoefficients]
    paper_alpha: dict[str, float]
    delta_loo_ms: dict[str, float]  # delta_co with each model's pair run left out
    cross_check: tuple[float, float]  # (delta_co, kappa) fitted to all mixes at once, in-sample
    kappa_closed_form: itf.InterferenceCoefficients  # fit_interference on all training (else held-out) mixes
    concurrency: list[dict[str, float]]
    clock: dict[str, Any]
    train: Mixes | None = None  # the mixes the parameters were fitted on (None: leave-one-mix-out)
    train_path: Path | None = None
    candidates: dict[str, itf.CandidateForm] = field(default_factory=lambda: dict(itf.CANDIDATES))


def run_study(runs_path: Path, profile_dir: Path, train_path: Path | None = None) -> Study:
    mixes = load_mixes(runs_path)
    train = load_mixes(train_path) if train_path is not None else None
    if train is not None:
        if train.gpu != mixes.gpu:
            raise InputError(f"{train_path}: training mixes are from {train.gpu}, held-out mixes from {mixes.gpu}")
        same = same_mixes(mixes, train)
        if same:
            raise InputError(
                f"{train_path}: {len(same)} training mixes equal held-out mixes (held-out, training: "
                f"{same[:5]}); the held-out mixes must be unseen"
            )
    # The study compares forms from the paper's fit of the raw profile, whichever form the folder ships.
    raw = load_raw(profile_dir / "raw.json")
    perf = fit_profile(raw, profile_dir.name, interference_form="igniter")
    if perf.gpu.get("name") and perf.gpu["name"] != mixes.gpu:
        raise InputError(f"{profile_dir}: profile is for {perf.gpu['name']}, the mixes are from {mixes.gpu}")
    bases = base_models(perf, raw)
    rb = itf.run_batch(perf, mixes.runs, raw)
    mask = rb.mask
    names = np.array([[m for m, _, _ in r.slots] + [""] * (mask.shape[1] - len(r.slots)) for r in mixes.runs])
    rps = np.array([list(r) + [np.nan] * (mask.shape[1] - len(r)) for r in mixes.measured_rps])
    rows = {
        "mix": np.repeat(np.array(mixes.mix_ids)[:, None], mask.shape[1], 1)[mask],
        "n": np.broadcast_to(rb.members, mask.shape)[mask],
        "model": names[mask],
        "batch": rb.batch[mask],
        "share": rb.share_pct[mask],
        "measured_ms": rb.measured_ms[mask],
        "measured_rps": rps[mask],
    }
    latency, throughput, thetas = {}, {}, {}
    candidates = {**itf.CANDIDATES, CHOSEN: itf.model_scale_candidate(perf.model_names)}
    for name, cand in candidates.items():
        lat, thr, th = cv_predict(cand, bases[cand.base], mixes.runs, raw, train.runs if train else ())
        latency[name], throughput[name], thetas[name] = lat[mask], thr[mask], th
    kd = bases["kernel-delay"]
    # the fitted parameters (mean over folds where cross-validated) for the decomposition and the copies
    mean_theta = {f: thetas[f].mean(axis=0) for f in (ONE_KAPPA, CHOSEN)}
    decomposition = {
        "igniter": {k: v[mask] for k, v in decompose(bases["igniter"], rb, 1.0).items()},
        "kernel-delay": {k: v[mask] for k, v in decompose(kd, rb, 1.0).items()},
        **{f: {k: v[mask] for k, v in decompose(kd, rb, candidates[f].factor(rb, mean_theta[f])).items()}
           for f in (ONE_KAPPA, CHOSEN)},
    }
    coefs = {f: itf.fit_interference(raw, perf, form=f) for f in itf.INTERFERENCE_FORMS}
    own = dict(zip(perf.model_names, map(float, mean_theta[CHOSEN]), strict=True))
    fitted = {ONE_KAPPA: replace(coefs["kernel-delay"], cache_scale=float(mean_theta[ONE_KAPPA][0])),
              CHOSEN: replace(coefs["kernel-delay"], model_cache_scale=own)}
    return Study(
        mixes.gpu,
        rows,
        latency,
        throughput,
        thetas,
        decomposition,
        itf.pair_runs(raw, perf.hardware),
        coefs,
        {m: c.alpha_cache for m, c in perf.models.items()},
        _delta_leave_one_model_out(raw, perf),
        _cross_check(perf, raw, coefs["kernel-delay"], mixes.runs),
        itf.fit_interference(raw, perf, runs=(train or mixes).runs),
        _concurrency_check(perf, coefs["kernel-delay"], fitted, profile_dir, raw),
        _clock_check(mixes, perf),
        train,
        train_path,
        candidates,
    )


def _delta_leave_one_model_out(raw: RawProfile, perf: PerformanceModel) -> dict[str, float]:
    pairs = itf.pair_runs(raw, perf.hardware)
    return {p.model: itf.fit_pair_delay([q for q in pairs if q is not p])[0] for p in pairs}


def _cross_check(
    perf: PerformanceModel, raw: RawProfile, kd: itf.InterferenceCoefficients, runs: tuple[itf.CoRun, ...]
) -> tuple[float, float]:
    """(delta_co, kappa) fitted to the mixes themselves: an independent estimate of the per-kernel delay."""
    from scipy.optimize import least_squares

    rb = itf.run_batch(perf, runs, raw)
    y = rb.measured_ms[rb.mask]

    def residual(theta: np.ndarray) -> np.ndarray:
        m = itf.apply_interference(
            perf, replace(kd, co_kernel_delay_ms=float(theta[0]), cache_scale=float(theta[1]))
        )
        return (itf.predict_batch(m, rb)[0][rb.mask] - y) / y

    res = least_squares(
        residual, [kd.co_kernel_delay_ms, 1.0], bounds=([0.0, 0.0], [0.01, 10.0]), x_scale=[1e-3, 1.0]
    )
    return float(res.x[0]), float(res.x[1])


def _concurrency_check(
    perf: PerformanceModel,
    coefs: itf.InterferenceCoefficients,
    fitted: dict[str, itf.InterferenceCoefficients],
    profile_dir: Path,
    raw: RawProfile,
) -> list[dict[str, float]]:
    """The n-copy concurrency runs' GPU times (used by no interference fit) against each key form."""
    lat = concurrency_latencies(profile_dir)
    plan = raw.gpu.get("plan", {})
    model = plan.get("concurrency_model", "vgg19")
    b, r = plan.get("concurrency_point", (32, 20.0))
    if model not in perf.models:
        return []
    forms = {
        "igniter": perf,
        "kernel-delay": itf.apply_interference(perf, coefs),
        **{f: itf.apply_interference(perf, c) for f, c in fitted.items()},
    }
    out = []
    for n, measured in sorted(lat.items()):
        row = {"copies": n, "measured_ms": measured}
        for name, m in forms.items():
            row[name] = predicted_gpu_ms(m, [(model, int(b), float(r))] * n)[0]
        out.append(row)
    return out


def _clock_check(mixes: Mixes, paper: PerformanceModel) -> dict[str, Any]:
    slots = [list(r.slots) for r in mixes.runs]
    predicted = np.array([predicted_clock_mhz(paper, s) for s in slots])
    measured = np.array(mixes.clock_mhz)
    return {
        "measured_min": float(np.nanmin(measured)),
        "measured_max": float(np.nanmax(measured)),
        "predicted_throttled": int(np.sum(predicted < paper.hardware.max_clock_mhz - 0.5)),
        "predicted_min": float(predicted.min()),
        "mixes": len(slots),
        "max_clock": paper.hardware.max_clock_mhz,
    }


# ---- report ----------------------------------------------------------------------------------
def _pct(x: float) -> str:
    return f"{x:.1%}"


def _errors(study: Study, name: str, kind: str = "latency") -> np.ndarray:
    pred = (study.latency if kind == "latency" else study.throughput)[name]
    meas = study.rows["measured_ms" if kind == "latency" else "measured_rps"]
    return (pred - meas) / meas


def decomposition_lines(study: Study) -> list[str]:
    n, meas = study.rows["n"], study.rows["measured_ms"]
    dp, dk = study.decomposition["igniter"], study.decomposition["kernel-delay"]
    lines = [
        "| workloads on the GPU | n | measured interference | paper: scheduling | paper: cache | paper: "
        "clock | "
        "paper: total | kernel-delay: scheduling | kernel-delay: cache | kernel-delay: total |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for k in COUNTS:
        s = n == k

        def mean(x: np.ndarray, s: np.ndarray = s) -> str:
            return _pct(float(np.mean(x[s] / meas[s])))

        lines.append(
            f"| {k} | {int(s.sum())} | {mean(meas - dp['solo'])} | {mean(dp['sched'])} | "
            f"{mean(dp['cache'])} | {mean(dp['clock'])} | {mean(dp['total'] - dp['solo'])} | "
            f"{mean(dk['sched'])} | {mean(dk['cache'])} | {mean(dk['total'] - dk['solo'])} |"
        )
    fp = realized_fraction(meas, dp, n)
    fk = realized_fraction(meas, dk, n)
    lines += [
        "",
        "Share of the predicted cache term that the measurements bear out (least squares of measured "
        "minus the other terms on the cache term, relative to the measured latency, per number of "
        "workloads):",
        "",
        "| form | " + " | ".join(f"{k} workloads" for k in COUNTS) + " |",
        "| --- |" + " --- |" * len(COUNTS),
        "| paper | " + " | ".join(f"{fp[k]:.2f}" for k in COUNTS) + " |",
        "| kernel-delay | " + " | ".join(f"{fk[k]:.2f}" for k in COUNTS) + " |",
    ]
    return lines


def pair_lines(study: Study) -> list[str]:
    kd = study.coefs["kernel-delay"]
    d = kd.co_kernel_delay_ms
    loo = study.delta_loo_ms.values()
    lines = [
        f"Per-kernel co-location delay from the pair runs: **delta_co = {d * 1e3:.3f} us per kernel** "
        f"(leaving one model's pair out: {min(loo) * 1e3:.3f}-{max(loo) * 1e3:.3f} us); common L2 "
        "sensitivity "
        f"lambda = {kd.common_alpha_cache:.5f} per % of L2 peak. The paper's D(2) is already taken out of "
        "each excess.",
        "",
        "| model | kernels | solo ms | pair excess ms | co-runner L2 % | n_k delta_co / excess | "
        "alpha_cache paper | "
        "alpha' kernel-delay |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in study.pairs:
        lines.append(
            f"| {p.model} | {p.kernels} | {p.solo_active_ms:.3f} | {p.excess_ms:.3f} | {p.co_l2_pct:.2f} | "
            f"{_pct(p.kernels * d / p.excess_ms)} | {study.paper_alpha[p.model]:.5f} | "
            f"{kd.alpha_cache[p.model]:.5f} |"
        )
    pa, ka = np.array(list(study.paper_alpha.values())), np.array(list(kd.alpha_cache.values()))
    cd, ck = study.cross_check
    lines += [
        "",
        f"Spread of the sensitivities (max/min): paper {pa.max() / pa.min():.2f}, kernel-delay "
        f"{ka.max() / ka.min():.2f}. Cross-check, fitted to the {len(np.unique(study.rows['mix']))} held-out "
        "mixes alone (in-sample): delta_co = "
        f"{cd * 1e3:.3f} us per kernel, kappa = {ck:.3f}.",
    ]
    return lines


def accuracy_lines(study: Study) -> list[str]:
    n = study.rows["n"]
    lines = [
        "| form | parameters fitted to mixes"
        + (" (training mixes)" if study.train is not None else " (mean over folds)")
        + " | median | p90 | max | median 2/3/4 | "
        "p90 2/3/4 | max 2/3/4 | signed median 2/3/4 | MIP |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, cand in study.candidates.items():
        s = error_stats(_errors(study, name), n)
        th = study.thetas[name]
        if not th.size:
            params = "none"
        elif study.train is not None:
            params = ", ".join(f"{p} = {v:.3g}" for p, v in zip(cand.params, th[0], strict=True))
        else:
            params = ", ".join(
                f"{p} = {m:.3g} +/- {sd:.2g}"
                for p, m, sd in zip(cand.params, th.mean(0), th.std(0), strict=True)
            )

        def per(key: str, fmt: str = ".1%", s: dict[str, Any] = s) -> str:
            return " / ".join(format(s[str(k)][key], fmt) for k in COUNTS)

        a = s["all"]
        lines.append(
            f"| {name} | {params} | {_pct(a['median'])} | {_pct(a['p90'])} | {_pct(a['max'])} | "
            f"{per('median')} | {per('p90')} | {per('max')} | {per('signed_median', '+.1%')} | {cand.mip} |"
        )
    return lines


def confidence_lines(study: Study, draws: int, seed: int) -> list[str]:
    lines = [
        f"95 % intervals from {draws} bootstrap resamples of whole mixes (seed {seed}):",
        "",
        "| form | median [95 % CI] | p90 [95 % CI] | throughput median | throughput p90 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in KEY_FORMS:
        e = _errors(study, name)
        ci = bootstrap_ci(e, study.rows["mix"], draws, seed)
        t = np.abs(_errors(study, name, "throughput"))
        lines.append(
            f"| {name} | {_pct(np.median(np.abs(e)))} [{_pct(ci['median'][0])}, {_pct(ci['median'][1])}] | "
            f"{_pct(np.quantile(np.abs(e), 0.9))} [{_pct(ci['p90'][0])}, {_pct(ci['p90'][1])}] | "
            f"{_pct(np.median(t))} | {_pct(np.quantile(t, 0.9))} |"
        )
    return lines


def paired_lines(study: Study, draws: int, seed: int) -> list[str]:
    """Paper vs the chosen form per number of workloads, with 95 % intervals of the difference
    (chosen minus paper) resampling whole mixes of that count, the same resample for both forms."""
    n, mix = study.rows["n"], study.rows["mix"]
    a, b = np.abs(_errors(study, "igniter")), np.abs(_errors(study, CHOSEN))
    ta, tb = np.abs(_errors(study, "igniter", "throughput")), np.abs(_errors(study, CHOSEN, "throughput"))
    rng = np.random.default_rng(seed)
    lines = [
        f"Paper (`igniter`) vs `{CHOSEN}` on the same workloads; difference = {CHOSEN} minus paper, 95 % "
        f"interval from {draws} resamples of whole mixes (negative: the new form is better).",
        "",
        "| workloads | n | latency median paper / new | difference [95 % CI] | latency p90 paper / new | "
        "difference [95 % CI] | latency max paper / new | throughput median paper / new | "
        "throughput p90 paper / new |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for k in ("all", *COUNTS):
        s = np.ones_like(n, bool) if k == "all" else n == k
        ids = np.unique(mix[s])
        rows = [np.flatnonzero(s & (mix == i)) for i in ids]
        dmed, dp90 = [], []
        for _ in range(draws):
            r = np.concatenate([rows[j] for j in rng.integers(len(ids), size=len(ids))])
            dmed.append(np.median(b[r]) - np.median(a[r]))
            dp90.append(np.quantile(b[r], 0.9) - np.quantile(a[r], 0.9))
        lo_m, hi_m = np.quantile(dmed, [0.025, 0.975])
        lo_p, hi_p = np.quantile(dp90, [0.025, 0.975])
        lines.append(
            f"| {k} | {int(s.sum())} | {_pct(np.median(a[s]))} / {_pct(np.median(b[s]))} | "
            f"{np.median(b[s]) - np.median(a[s]):+.1%} [{lo_m:+.1%}, {hi_m:+.1%}] | "
            f"{_pct(np.quantile(a[s], 0.9))} / {_pct(np.quantile(b[s], 0.9))} | "
            f"{np.quantile(b[s], 0.9) - np.quantile(a[s], 0.9):+.1%} [{lo_p:+.1%}, {hi_p:+.1%}] | "
            f"{_pct(a[s].max())} / {_pct(b[s].max())} | {_pct(np.median(ta[s]))} / {_pct(np.median(tb[s]))} | "
            f"{_pct(np.quantile(ta[s], 0.9))} / {_pct(np.quantile(tb[s], 0.9))} |"
        )
    return lines


def concurrency_lines(study: Study) -> list[str]:
    if not study.concurrency:
        return ["(no concurrency-run latencies in the profile's checkpoint)"]
    lines = [
        "| copies | measured ms | " + " | ".join(KEY_FORMS) + " |",
        "| --- | --- |" + " --- |" * len(KEY_FORMS),
    ]
    for row in study.concurrency:
        m = row["measured_ms"]
        lines.append(
            f"| {int(row['copies'])} | {m:.2f} | "
            + " | ".join(f"{row[f]:.2f} ({row[f] / m - 1:+.1%})" for f in KEY_FORMS)
            + " |"
        )
    return lines


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it (reports carry no machine paths)."""
    try:
        return str(path.resolve().relative_to(HERE.parent))
    except ValueError:
        return str(path)


def validation_text(study: Study) -> str:
    if study.train is None:
        return (
            "Forms with parameters fitted to mixes are cross-validated leave-one-mix-out (each mix "
            "predicted with parameters fitted to the other mixes)."
        )
    t = study.train
    counts = {k: sum(len(r.slots) == k for r in t.runs) for k in sorted({len(r.slots) for r in t.runs})}
    return (
        f"Forms with parameters fitted to mixes are fitted once on {len(t.runs)} separate training mixes "
        f"(`{study.train_path.name if study.train_path else '?'}`; "
        + ", ".join(f"{v} of {k} workloads" for k, v in counts.items())
        + "), none of which has the same workloads as a held-out mix (checked), and evaluated on the "
        "held-out mixes only."
    )


def render_markdown(study: Study, runs_path: Path, profile_dir: Path, draws: int, seed: int) -> str:
    c = study.clock
    rows = len(study.rows["n"])
    mixes = len(np.unique(study.rows["mix"]))
    head = [
        f"# Interference study on {study.gpu}",
        "",
        f"{mixes} held-out mixes, {rows} workloads (`{runs_path.name}`), profile `{_shown(profile_dir)}`. "
        "Error = (predicted - measured) / measured latency (iGniter's t_inf). "
        + validation_text(study)
        + " Forms without such parameters use no mix at all. Written by `benchmarks/interference_study.py`; "
        "docs/interference.md explains it.",
        "",
        "## Where the error comes from",
        "",
        "Means over the workloads (means add up, medians do not), % of the measured latency; measured "
        "interference = measured minus the solo prediction (so it carries the solo fit's error too). "
        "The terms "
        "are switched on one at a time: scheduling delay, cache term, clock drop.",
        "",
    ]
    clock = [
        f"Clock: measured {c['measured_min']:.0f}-{c['measured_max']:.0f} MHz in all {c['mixes']} mixes (max "
        f"{c['max_clock']:.0f}); the model predicts a drop in {c['predicted_throttled']} of them (lowest "
        f"{c['predicted_min']:.0f} MHz). The clock term explains none of the growth with the number of "
        "workloads."
    ]
    return (
        "\n".join(
            head
            + decomposition_lines(study)
            + [""]
            + clock
            + ["", "## The pair runs hold a per-kernel delay", ""]
            + pair_lines(study)
            + ["", "## Accuracy on the held-out mixes", ""]
            + accuracy_lines(study)
            + [
                "",
                "Fitted to all "
                + ("training" if study.train is not None else "held-out")
                + f" mixes by the closed forms: kappa of `{ONE_KAPPA}` (`fit_cache_scale`) "
                f"{study.kappa_closed_form.cache_scale:.4f}; kappas of `{CHOSEN}` (`fit_model_cache_scales`, "
                "what `igniter-opt fit/profile` records) "
                + ", ".join(f"{m} {v:.3f}" for m, v in sorted(study.kappa_closed_form.model_cache_scale.items()))
                + ".",
                "",
            ]
            + confidence_lines(study, draws, seed)
            + ["", "### Paper vs new, per number of workloads", ""]
            + paired_lines(study, draws, seed)
            + ["", "## Concurrency runs of the profile (GPU time, used by no interference fit)", ""]
            + concurrency_lines(study)
        )
        + "\n"
    )


def render_csv(study: Study) -> str:
    buf = io.StringIO()
    cols = ["mix", "n_workloads", "model", "batch", "share_pct", "measured_ms", "measured_rps", "solo_ms"]
    forms = list(study.candidates)
    terms = [f"{f}_{t}_ms" for f in ("igniter", CHOSEN) for t in ("sched", "cache", "clock")]
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols + [f"{f}_ms" for f in forms] + [f"{f}_rps" for f in KEY_FORMS] + terms)
    r, dp = study.rows, study.decomposition
    for i in range(len(r["n"])):
        row = [
            int(r["mix"][i]),
            int(r["n"][i]),
            r["model"][i],
            int(r["batch"][i]),
            f"{r['share'][i]:g}",
            f"{r['measured_ms'][i]:.4f}",
            f"{r['measured_rps'][i]:.2f}",
            f"{dp['igniter']['solo'][i]:.4f}",
        ]
        row += [f"{study.latency[f][i]:.4f}" for f in forms] + [
            f"{study.throughput[f][i]:.2f}" for f in KEY_FORMS
        ]
        row += [f"{dp[f][t][i]:.4f}" for f in ("igniter", CHOSEN) for t in ("sched", "cache", "clock")]
        w.writerow(row)
    return buf.getvalue()


def render_accuracy_csv(study: Study, form: str) -> str:
    """``form``'s predictions in ``benchmarks/accuracy.py report``'s columns (``accuracy_<gpu>.csv``)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["mix", "model", "batch", "share", "predicted_ms", "measured_ms", "predicted_rps", "measured_rps"])
    r = study.rows
    for i in range(len(r["n"])):
        w.writerow(
            [
                int(r["mix"][i]),
                r["model"][i],
                int(r["batch"][i]),
                f"{r['share'][i]:.1f}",
                round(float(study.latency[form][i]), 4),
                round(float(r["measured_ms"][i]), 4),
                round(float(study.throughput[form][i]), 2),
                round(float(r["measured_rps"][i]), 2),
            ]
        )
    return buf.getvalue()


def render_png(study: Study) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, meas = study.rows["n"], study.rows["measured_ms"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
    _plot_decomposition(axes[0], study, n, meas)
    for name, marker in (("igniter", "x"), (CHOSEN, "o")):
        axes[1].scatter(
            meas,
            _errors(study, name) * 100,
            s=14,
            marker=marker,
            label=name,
            alpha=0.8,
            color=FORM_COLORS[name],
        )
    for level, style in ((0, "k--"), (10, "k:"), (-10, "k:")):
        axes[1].axhline(level, ls=style[1:], color="k", lw=0.7)
    axes[1].set(
        xscale="log",
        xlabel="measured latency (ms)",
        ylabel="predicted / measured - 1 (%)",
        title="predicted vs measured, each held-out workload",
    )
    axes[1].legend(fontsize=8)
    data = [np.abs(_errors(study, f))[n == k] * 100 for k in COUNTS for f in KEY_FORMS]
    pos = [i * (len(KEY_FORMS) + 1) + j for i in range(len(COUNTS)) for j in range(len(KEY_FORMS))]
    box = axes[2].boxplot(data, positions=pos, widths=0.8, patch_artist=True, showfliers=True)
    for patch, color in zip(box["boxes"], [FORM_COLORS[f] for f in KEY_FORMS] * len(COUNTS), strict=True):
        patch.set_facecolor(color)
    axes[2].set_xticks(
        [i * (len(KEY_FORMS) + 1) + (len(KEY_FORMS) - 1) / 2 for i in range(len(COUNTS))],
        [f"{k} workloads" for k in COUNTS],
    )
    axes[2].set(ylabel="|latency error| (%)",
                title="red: paper, blue: pair runs only, purple: one kappa, green: kappa per model")
    how = "parameters from training mixes" if study.train is not None else "cross-validated by mix"
    fig.suptitle(f"Interference on {study.gpu}: paper's form vs kernel-delay form (held-out mixes; {how})")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _plot_decomposition(ax: Any, study: Study, n: np.ndarray, meas: np.ndarray) -> None:
    x = np.arange(len(COUNTS))
    width = 0.8 / len(KEY_FORMS)
    top = 0.0
    for j, form in enumerate(KEY_FORMS):
        d = study.decomposition[form]
        bottom = np.zeros(len(COUNTS))
        for term, hatch in (("sched", "//"), ("cache", ""), ("clock", "..")):
            h = np.array([np.mean(d[term][n == k] / meas[n == k]) * 100 for k in COUNTS])
            ax.bar(
                x + (j - (len(KEY_FORMS) - 1) / 2) * width,
                h,
                width,
                bottom=bottom,
                hatch=hatch,
                color=FORM_COLORS[form],
                alpha=0.5 if term != "cache" else 0.85,
                edgecolor="k",
                label=f"{form}: {term}",
            )
            bottom += h
        top = max(top, float(bottom.max()))
    dp = study.decomposition["igniter"]
    ax.plot(
        x,
        [np.mean((meas - dp["solo"])[n == k] / meas[n == k]) * 100 for k in COUNTS],
        "ko-",
        label="measured minus solo prediction",
    )
    ax.set_xticks(x, [f"{k} workloads" for k in COUNTS])
    ax.set_ylim(0, top * 1.45)
    ax.set(ylabel="% of measured latency (mean)", title="interference terms, predicted vs measured")
    ax.legend(fontsize=6.5, ncol=2, loc="upper left")


# ---- the paper's V100 profile ----------------------------------------------------------------
V100_CONCURRENCY = ("vgg19", 32, 20.0)  # design note section 2: copies of VGG-19 at batch 32 and 20 %


def _row(kind: str, case: str, unit: str, measured: float, predicted: dict[str, float]) -> dict[str, Any]:
    return {"kind": kind, "case": case, "unit": unit, "measured": measured, **predicted}


def v100_rows(path: Path) -> list[dict[str, Any]]:
    """Each co-location measurement of the paper's profile, predicted by both forms."""
    raw = load_raw(path)
    perf = fit_profile(raw, "v100")
    coefs = {f: itf.fit_interference(raw, perf, form=f) for f in itf.INTERFERENCE_FORMS}
    forms = {f: itf.apply_interference(perf, c) for f, c in coefs.items()}
    return _v100_pair_rows(raw, perf, coefs, forms) + _v100_concurrency_rows(raw, perf, forms)


def _v100_pair_rows(
    raw: RawProfile,
    perf: PerformanceModel,
    coefs: dict[str, itf.InterferenceCoefficients],
    forms: dict[str, PerformanceModel],
) -> list[dict[str, Any]]:
    pairs = {f: itf.predict_pair_runs(m, raw) for f, m in forms.items()}
    ident = {f: itf.pair_residuals_ms(c, raw, perf.hardware) for f, c in coefs.items()}
    F = perf.hardware.max_clock_mhz
    rows = []
    for name in perf.model_names:
        b, r = itf.pair_point(raw, name)
        case = f"{name} x2 at ({b}, {r:g} %)"
        cp = raw.models[name].cache_pair
        rows.append(
            _row(
                "pair GPU time (whole model)",
                case,
                "ms",
                cp.pair_active_ms,
                {f: pairs[f][name][0] for f in forms},
            )
        )
        # From the run's own inputs (solo time, co-runner L2, measured clock): what each fit must reproduce.
        rows.append(
            _row(
                "pair GPU time (fit inputs)",
                case,
                "ms",
                cp.pair_active_ms,
                {f: cp.pair_active_ms + ident[f][name] * F / cp.pair_clock_mhz for f in forms},
            )
        )
    return rows


def _v100_concurrency_rows(
    raw: RawProfile, perf: PerformanceModel, forms: dict[str, PerformanceModel]
) -> list[dict[str, Any]]:
    model, b, r = V100_CONCURRENCY
    F = perf.hardware.max_clock_mhz
    recs = sorted(raw.hardware.concurrency, key=lambda c: c.copies)
    base_idle = recs[0].idle_per_kernel_ms * recs[0].clock_mhz / F
    rows = []
    for rec in recs:
        slots = [(model, b, r)] * rec.copies
        rows.append(
            _row(
                "clock",
                f"{rec.copies} x {model} ({b}, {r:g} %)",
                "MHz",
                rec.clock_mhz,
                {f: predicted_clock_mhz(m, slots) for f, m in forms.items()},
            )
        )
        # The idle-gap part of each form's scheduling delay (the kernel-delay form records it apart).
        idle = {
            f: 0.0
            if rec.copies < 2
            else perf.hardware.alpha_sch * rec.copies + m.gpu["fit"]["interference"]["idle_beta_sch"]
            for f, m in forms.items()
        }
        rows.append(
            _row(
                "idle gap per kernel above 1 copy",
                f"{rec.copies} copies",
                "us",
                (rec.idle_per_kernel_ms * rec.clock_mhz / F - base_idle) * 1e3,
                {f: v * 1e3 for f, v in idle.items()},
            )
        )
    return rows


def v100_markdown(rows: list[dict[str, Any]], path: Path) -> str:
    forms = list(itf.INTERFERENCE_FORMS)
    lines = [
        "# Interference forms on the paper's V100 profile",
        "",
        f"Every co-location measurement in `{path.name}` (the iGniter authors' profile, read in place), "
        "predicted by the paper's form and the kernel-delay form (pair runs only, kappa = 1; the V100 "
        "profile "
        "has no co-location runs of different models). Written by `benchmarks/interference_study.py --v100`.",
        "",
        "| measurement | case | measured | " + " | ".join(forms) + " |",
        "| --- | --- | --- |" + " --- |" * len(forms),
    ]
    for r in rows:

        def cell(f: str, r: dict[str, Any] = r) -> str:
            err = f" ({r[f] / r['measured'] - 1:+.2%})" if r["unit"] != "us" and r["measured"] else ""
            return f"{r[f]:.3f}{err}"

        lines.append(
            f"| {r['kind']} ({r['unit']}) | {r['case']} | {r['measured']:.3f} | "
            + " | ".join(cell(f) for f in forms)
            + " |"
        )
    lines += [
        "",
        "Mean |error| per measurement kind (relative; the idle gaps, which start at 0, in us):",
        "",
        "| measurement | " + " | ".join(forms) + " |",
        "| --- |" + " --- |" * len(forms),
    ]
    for kind in dict.fromkeys(r["kind"] for r in rows):
        sel = [r for r in rows if r["kind"] == kind]
        if sel[0]["unit"] == "us":
            cells = [f"{np.mean([abs(r[f] - r['measured']) for r in sel]):.4f} us" for f in forms]
        else:
            cells = [f"{np.mean([abs(r[f] / r['measured'] - 1) for r in sel]):.3%}" for f in forms]
        lines.append(f"| {kind} ({sel[0]['unit']}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def v100_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    cols = ["kind", "case", "unit", "measured", *itf.INTERFERENCE_FORMS]
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in cols})
    return buf.getvalue()


# ---- entry point -----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--gpu",
        choices=sorted(GPUS),
        default="h100",
        help="preset for --runs, --profile and --train-runs (h200: held-out seed-7 mixes, training seed-8 mixes)",
    )
    ap.add_argument("--runs", type=Path, default=None, help="held-out measured mixes (jsonl)")
    ap.add_argument("--profile", type=Path, default=None, help="profile folder")
    ap.add_argument(
        "--train-runs",
        type=Path,
        default=None,
        help="measured mixes to fit the forms' parameters on (jsonl; default: leave-one-mix-out on --runs)",
    )
    ap.add_argument("--no-train-runs", action="store_true", help="ignore the preset's training mixes")
    ap.add_argument(
        "--v100", type=Path, default=None, help="the paper's V100 profile (.jsonl), read in place"
    )
    ap.add_argument("-o", "--output", type=Path, default=RESULTS)
    ap.add_argument("--tag", default=None, help="output name suffix (default: from the GPU name)")
    ap.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of whole mixes")
    ap.add_argument("--seed", type=int, default=16)
    args = ap.parse_args(argv)
    runs_name, profile_name, train_name = GPUS[args.gpu]
    runs = args.runs or RESULTS / runs_name
    profile = args.profile or HERE.parent / "profiles" / profile_name
    train = args.train_runs or (RESULTS / train_name if train_name and args.runs is None else None)
    if args.no_train_runs:
        train = None
    try:
        study = run_study(runs, profile, train)
        tag = args.tag or next(
            (t for t in ("h100", "h200", "v100") if t in study.gpu.lower()),
            study.gpu.replace(" ", "_").lower(),
        )
        outputs = {
            f"interference_study_{tag}.md": render_markdown(study, runs, profile, args.bootstrap, args.seed).encode(),
            f"interference_study_{tag}.csv": render_csv(study).encode(),
            f"interference_study_{tag}.png": render_png(study),
            f"accuracy_{tag}_kernel_delay.csv": render_accuracy_csv(study, CHOSEN).encode(),
        }
        if args.v100 is not None:
            rows = v100_rows(args.v100)
            outputs["interference_study_v100.md"] = v100_markdown(rows, args.v100).encode()
            outputs["interference_study_v100.csv"] = v100_csv(rows).encode()
    except IgniterOptError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    for name, data in outputs.items():
        atomic_write_bytes(args.output / name, data)
    print(outputs[f"interference_study_{tag}.md"].decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
