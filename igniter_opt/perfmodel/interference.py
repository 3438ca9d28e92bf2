"""Co-location interference: the paper's form, the kernel-delay form, and the candidates studied.

The paper's form (``model.py``) charges a co-located workload two terms besides the clock drop:

    t_sch_i = n_k D(n) + idle_1,          D(n) = alpha_sch n + beta_sch   (n >= 2, else 0)
    t_act_i = k_act (1 + alpha_cache (C - c_i))

``alpha_cache`` comes from one two-copy run per model, and it takes *all* of that run's slowdown.
On the H100 a large part of it is a fixed delay per kernel that any co-runner causes (docs/
interference.md): charging it to the L2 term makes the prediction grow with the co-runners'
summed L2 demand, so it over-predicts more with every co-runner. The **kernel-delay form**
keeps the paper's equations and fits them differently:

    D'(n) = alpha_sch n + beta_sch + delta_co            (n >= 2, else 0)
    t_act_i = k_act (1 + kappa_m alpha'_m (C - c_i))

- ``delta_co`` (ms per kernel, per GPU type): the extra delay per kernel with company, beyond
  the inter-kernel idle gap that ``alpha_sch, beta_sch`` measure. Fitted from the pair runs of
  all models at once: ``pair excess / solo = delta_co n_k / solo + lambda c_pair`` (non-negative
  least squares, one common sensitivity ``lambda`` as the identifying assumption).
- ``alpha'_m``: each model's own pair run with ``n_k (D(2) + delta_co)`` taken out, so that the
  form reproduces every pair run exactly, as the paper's does.
- ``kappa`` (``cache_scale``): 1 from the pair runs alone; < 1 when fitted (least squares) to
  co-location runs of *different* models (``CoRun``), which interfere less than two identical
  copies at 50 % + 50 %. With the runs each model with enough co-located workloads in them gets its
  own kappa (``model_cache_scale``, ``fit_model_cache_scales``): the pair runs overstate some
  models' sensitivity more than others'.

Both forms are the paper's functional form, so ``apply_interference`` returns an ordinary
``PerformanceModel`` (``beta_sch`` then includes ``delta_co``; the idle-gap part alone and the
form are recorded in ``gpu["fit"]``) that every planner uses as is. The exact planner stays
exact: where ``alpha_sch + beta_sch > 0`` the plain row ``sched[g] >= max(0, alpha_sch n + beta_sch)``
would over-estimate a lone workload's delay, so the MIP uses the rows of ``sched_delay_rows`` (a
binary ``shared[g]`` per GPU, ``planner/exact/model.py``). ``fit_profile(..., interference_form=...)``
and ``igniter-opt fit/profile --interference-form`` fit and record the form.

``CANDIDATES`` lists the other forms the study (``benchmarks/interference_study.py``) compared,
each with how the MIP would represent it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import least_squares
from sklearn.linear_model import LinearRegression

from igniter_opt.errors import ProfileError
from igniter_opt.perfmodel.model import HardwareCoefficients, PerformanceModel
from igniter_opt.perfmodel.raw import RawProfile
from igniter_opt.perfmodel.store import INTERFERENCE_FORMS as INTERFERENCE_FORMS  # named where profiles load

INTERFERENCE_SCHEMA = "igniter-opt/interference/v1"
# Below this rank tolerance the pair runs cannot tell a per-kernel delay from an L2 effect.
_RANK_TOL = 1e-9

Slot = tuple[str, int, float]  # (model, batch, share_pct)


# ---- the pair runs ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PairRun:
    """One model's two-copy run, reduced to what the kernel-delay fit needs.

    ``excess_ms``: pair GPU time at the full clock minus the solo time, minus the paper's
    scheduling delay ``n_k D(2)`` (the inter-kernel idle growth the concurrency runs measure).
    """

    model: str
    kernels: int
    solo_active_ms: float
    co_l2_pct: float
    excess_ms: float


def pair_runs(raw: RawProfile, hardware: HardwareCoefficients) -> list[PairRun]:
    """Every model's pair run, with the paper's n = 2 scheduling delay taken out."""
    F = hardware.max_clock_mhz
    d2 = hardware.alpha_sch * 2 + hardware.beta_sch
    runs = []
    for name, rm in sorted(raw.models.items()):
        cp = rm.cache_pair
        excess = cp.pair_active_ms * cp.pair_clock_mhz / F - cp.solo_active_ms - rm.kernels_per_inference * d2
        runs.append(PairRun(name, rm.kernels_per_inference, cp.solo_active_ms, cp.solo_l2_pct, excess))
    return runs


def fit_pair_delay(pairs: Sequence[PairRun]) -> tuple[float, float]:
    """(delta_co in ms per kernel, common L2 sensitivity lambda) from the pair runs.

    Non-negative least squares on the relative excess: ``excess / solo = delta n_k / solo +
    lambda c_pair``. Needs two pair runs whose kernels per ms of solo time differ.
    """
    X = np.array([[p.kernels / p.solo_active_ms, p.co_l2_pct] for p in pairs], float).reshape(-1, 2)
    y = np.array([p.excess_ms / p.solo_active_ms for p in pairs], float)
    if len(pairs) < 2 or np.linalg.matrix_rank(X, tol=_RANK_TOL * max(1.0, float(np.abs(X).max()))) < 2:
        raise ProfileError(
            f"the kernel-delay form needs pair runs of at least 2 models with different kernels per ms, got "
            f"{len(pairs)}; profile more models or use the interference form 'igniter'"
        )
    reg = LinearRegression(fit_intercept=False, positive=True).fit(X, y)
    delta, lam = (float(v) for v in reg.coef_)
    return delta, lam


# ---- fitted coefficients ---------------------------------------------------------------------
@dataclass(frozen=True)
class InterferenceCoefficients:
    """Which interference form a profile uses, and its fitted coefficients.

    ``alpha_cache`` holds each model's pair-derived sensitivity (per % of L2 peak) before the
    ``cache_scale``; ``clamped`` names models whose pair run left a negative sensitivity (set to 0,
    their pair is then over-predicted).
    """

    form: str
    co_kernel_delay_ms: float
    cache_scale: float
    alpha_cache: dict[str, float]
    common_alpha_cache: float | None = None
    cache_scale_source: str = "pair runs only"
    clamped: tuple[str, ...] = field(default_factory=tuple)
    # kappa of each model with enough workloads in the co-location runs (fit_model_cache_scales);
    # the others use ``cache_scale``.
    model_cache_scale: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.form not in INTERFERENCE_FORMS:
            raise ProfileError(
                f"interference form must be one of {', '.join(INTERFERENCE_FORMS)}, got '{self.form}'"
            )
        values = [("co_kernel_delay_ms", self.co_kernel_delay_ms), ("cache_scale", self.cache_scale)]
        values += [(f"cache_scale of {m}", v) for m, v in sorted(self.model_cache_scale.items())]
        for what, v in values:
            if not (math.isfinite(v) and v >= 0):
                raise ProfileError(f"interference {what} must be a number >= 0, got {v}; re-run the fit")

    def scale(self, model: str) -> float:
        """kappa of ``model``: its own where the runs gave one, else the common one."""
        return self.model_cache_scale.get(model, self.cache_scale)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": INTERFERENCE_SCHEMA, **asdict(self), "clamped": list(self.clamped)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "<dict>") -> InterferenceCoefficients:
        if d.get("schema") != INTERFERENCE_SCHEMA:
            raise ProfileError(
                f"{source}: interference schema is {d.get('schema')!r}, expected '{INTERFERENCE_SCHEMA}'"
            )
        try:
            common = d.get("common_alpha_cache")
            return cls(
                form=str(d["form"]),
                co_kernel_delay_ms=float(d["co_kernel_delay_ms"]),
                cache_scale=float(d["cache_scale"]),
                alpha_cache={str(k): float(v) for k, v in d["alpha_cache"].items()},
                common_alpha_cache=None if common is None else float(common),
                cache_scale_source=str(d.get("cache_scale_source", "")),
                clamped=tuple(str(m) for m in d.get("clamped", ())),
                model_cache_scale={str(k): float(v) for k, v in d.get("model_cache_scale", {}).items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProfileError(
                f"{source}: corrupt interference coefficients ({exc}); re-run the fit"
            ) from None


def _require_paper_fit(perf: PerformanceModel) -> None:
    """Refuse a model already fitted with another form: its beta_sch holds a delta_co, which a
    second fit would take out of the pair runs and a second apply would add again."""
    applied = perf.gpu.get("fit", {}).get("interference_form", "igniter")
    if applied != "igniter":
        raise ProfileError(
            f"profile '{perf.name}' is already fitted with the '{applied}' interference form; "
            "use the paper's fit of its raw profile (fit_profile) instead"
        )


def fit_interference(
    raw: RawProfile, perf: PerformanceModel, *, form: str = "kernel-delay", runs: Sequence[CoRun] = ()
) -> InterferenceCoefficients:
    """Fit an interference form from a raw profile and the paper's fit of it (``fit_profile``).

    ``runs``: co-location runs of different models (``CoRun``); with the kernel-delay form they
    set ``cache_scale`` by least squares, and each model with at least ``MIN_MODEL_WORKLOADS``
    workloads in them its own kappa (``model_cache_scale``); without runs kappa is 1 (the pair runs
    alone).
    """
    if form not in INTERFERENCE_FORMS:
        raise ProfileError(f"interference form must be one of {', '.join(INTERFERENCE_FORMS)}, got '{form}'")
    _require_paper_fit(perf)
    if set(raw.models) != set(perf.models):
        raise ProfileError(
            "the raw profile and the fitted model list different models; fit the raw profile first"
        )
    if form == "igniter":
        if runs:
            raise ProfileError("the 'igniter' form takes no co-location runs; use the form 'kernel-delay'")
        return InterferenceCoefficients(
            "igniter", 0.0, 1.0, {m: c.alpha_cache for m, c in perf.models.items()}
        )
    unknown = sorted({m for r in runs for m, _, _ in r.slots} - set(perf.models))
    if unknown:
        raise ProfileError(
            f"the co-location runs use models the profile lacks ({', '.join(unknown)}); profile them or "
            "drop those runs"
        )
    pairs = pair_runs(raw, perf.hardware)
    delta, lam = fit_pair_delay(pairs)
    alpha, clamped = {}, []
    for p in pairs:
        a = (p.excess_ms - p.kernels * delta) / (p.solo_active_ms * p.co_l2_pct)
        if a < 0:
            clamped.append(p.model)
        alpha[p.model] = max(0.0, a)
    coefs = InterferenceCoefficients("kernel-delay", delta, 1.0, alpha, lam, clamped=tuple(clamped))
    if not runs:
        return coefs
    unscaled = apply_interference(perf, coefs)
    own = fit_model_cache_scales(unscaled, runs)
    source = f"least squares over {len(runs)} co-location runs"
    if own:
        source += f", own kappa for {len(own)} of {len(perf.models)} models"
    return replace(coefs, cache_scale=fit_cache_scale(unscaled, runs), model_cache_scale=own,
                   cache_scale_source=source)


def apply_interference(perf: PerformanceModel, coefs: InterferenceCoefficients) -> PerformanceModel:
    """``perf`` (the paper's fit) predicting with ``coefs``: beta_sch + delta_co, alpha_cache = kappa alpha'.

    The form and the idle-gap intercept (``beta_sch`` before adding ``delta_co``) are recorded in
    ``gpu["fit"]`` so that the profile says which form it was fitted with.
    """
    missing = sorted(set(perf.models) - set(coefs.alpha_cache))
    if missing:
        raise ProfileError(
            f"interference coefficients lack models {', '.join(missing)}; refit them with this profile"
        )
    _require_paper_fit(perf)
    hw = replace(perf.hardware, beta_sch=perf.hardware.beta_sch + coefs.co_kernel_delay_ms)
    models = {m: replace(c, alpha_cache=coefs.scale(m) * coefs.alpha_cache[m]) for m, c in perf.models.items()}
    fit = {
        **perf.gpu.get("fit", {}),
        "interference_form": coefs.form,
        "interference": {**coefs.to_dict(), "idle_beta_sch": perf.hardware.beta_sch},
    }
    return replace(perf, hardware=hw, models=models, gpu={**perf.gpu, "fit": fit})


def pair_residuals_ms(
    coefs: InterferenceCoefficients, raw: RawProfile, hardware: HardwareCoefficients
) -> dict[str, float]:
    """Per model: predicted minus measured pair GPU time (ms, full clock), from the run's own inputs.

    ``hardware`` is the paper's fit (its ``beta_sch`` without ``delta_co``).

    The inputs are what the fit consumes (solo time, the co-runner's measured L2): the prediction
    is ``solo + n_k (D(2) + delta_co) + solo kappa alpha c_pair``. The paper's form leaves
    ``n_k D(2)`` here (its alpha_cache already absorbed the whole slowdown); the kernel-delay form
    leaves 0 unless a sensitivity was clamped or kappa < 1.
    """
    F = hardware.max_clock_mhz
    d2 = hardware.alpha_sch * 2 + hardware.beta_sch + coefs.co_kernel_delay_ms
    out = {}
    for name, rm in sorted(raw.models.items()):
        cp = rm.cache_pair
        pred = cp.solo_active_ms * (1 + coefs.scale(name) * coefs.alpha_cache[name] * cp.solo_l2_pct)
        out[name] = pred + rm.kernels_per_inference * d2 - cp.pair_active_ms * cp.pair_clock_mhz / F
    return out


def pair_point(raw: RawProfile, model: str) -> tuple[int, float]:
    """(batch, share %) of ``model``'s pair run: the profile's plan, else the L2 point whose value
    the pair's co-runner L2 matches (the pair point is one of the L2 points, see ProfilePlan).

    The paper's published profile does not record it; its pair L2 values match the (16, 50 %) point.
    """
    plan = raw.gpu.get("plan", {}).get("pair_point")
    if plan:
        return int(plan[0]), float(plan[1])
    rm = raw.models[model]
    if not rm.l2:
        raise ProfileError(
            f"model '{model}': no L2 points, so the pair run's point is unknown; re-profile it"
        )
    best = min(rm.l2, key=lambda rec: abs(rec.l2_pct - rm.cache_pair.solo_l2_pct))
    return best.batch, best.share_pct


def predict_pair_runs(perf: PerformanceModel, raw: RawProfile) -> dict[str, tuple[float, float]]:
    """Per model: (predicted, measured) GPU time (ms) of the model next to a copy of itself at its pair point.

    The whole model predicts, its clock included; host copies are left out, as in the measurement.
    """
    perf = perf.with_serving_overhead(None)
    out = {}
    for name in perf.model_names:
        b, r = pair_point(raw, name)
        consts = perf.slot_constants(np.array([perf.model_index(name)]), np.array([float(b)]))
        lat = perf.predict_gpu([(name, b, r), (name, b, r)])[0][0]
        out[name] = (
            lat - float(consts["t_load"][0] + consts["t_fb"][0]),
            raw.models[name].cache_pair.pair_active_ms,
        )
    return out


# ---- co-location runs and prediction over many of them ---------------------------------------
@dataclass(frozen=True)
class CoRun:
    """A measured co-location: the workloads sharing one GPU and each one's mean latency (ms).

    Latency is iGniter's ``t_inf`` (input copy + GPU time + output copy), as ``predict_gpu``
    predicts it and ``benchmarks/accuracy.py`` measures it.
    """

    slots: tuple[Slot, ...]
    latency_ms: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.slots) != len(self.latency_ms) or not self.slots:
            raise ProfileError(
                "a co-location run needs one measured latency per workload, and at least one workload"
            )
        if not all(math.isfinite(x) and x > 0 for x in self.latency_ms):
            raise ProfileError(
                f"co-location latencies must be positive numbers of ms, got {list(self.latency_ms)}"
            )


def load_co_runs(path: str | os.PathLike[str], *, gpu: str | None = None) -> list[CoRun]:
    """The co-location runs of a ``benchmarks/accuracy.py run`` results file (JSON lines, one mix
    each: ``workloads`` with ``model, batch, share_pct, measured_ms``), in mix order.

    ``gpu``: the profile's GPU name; records of another GPU are refused.
    """
    what = "not a co-location record of 'benchmarks/accuracy.py run'"
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: cannot read the co-location runs ({exc})") from None
    recs = []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            run = CoRun(
                tuple((str(w["model"]), int(w["batch"]), float(w["share_pct"])) for w in rec["workloads"]),
                tuple(float(w["measured_ms"]) for w in rec["workloads"]),
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProfileError(f"{path}: line {no}: {what} ({type(exc).__name__}: {exc})") from None
        except ProfileError as exc:
            raise ProfileError(f"{path}: line {no}: {exc}") from None
        rec_gpu = rec.get("gpu")
        if gpu and rec_gpu and rec_gpu != gpu:
            raise ProfileError(f"{path}: line {no}: measured on '{rec_gpu}', the profile is of '{gpu}'")
        recs.append(run)
    if not recs:
        raise ProfileError(f"{path}: no co-location runs in it")
    return recs


@dataclass(frozen=True)
class RunBatch:
    """Many co-location runs as padded arrays (rows = runs, columns = slots), for vectorised prediction."""

    model_idx: np.ndarray
    batch: np.ndarray
    share_pct: np.ndarray
    mask: np.ndarray
    measured_ms: np.ndarray  # NaN in empty slots
    cache_other: np.ndarray  # L2 demand of the co-runners, sum_l c_l - c_i (ignore in empty slots)
    pair_l2_pct: np.ndarray  # L2 demand of the co-runner in each slot's model's pair run (1 if unknown)

    @property
    def members(self) -> np.ndarray:
        return self.mask.sum(axis=1, keepdims=True)

    @property
    def total_share_pct(self) -> np.ndarray:
        return np.where(self.mask, self.share_pct, 0.0).sum(axis=1, keepdims=True)


def run_batch(perf: PerformanceModel, runs: Sequence[CoRun], raw: RawProfile | None = None) -> RunBatch:
    """Pad ``runs`` into arrays; L2 demands come from ``perf`` (every form shares them)."""
    if not runs:
        raise ProfileError("no co-location runs given; measure some or leave them out")
    width = max(len(r.slots) for r in runs)
    shape = (len(runs), width)
    idx, b, r, meas = np.zeros(shape, np.intp), np.ones(shape), np.full(shape, 100.0), np.full(shape, np.nan)
    mask = np.zeros(shape, bool)
    pair_l2 = np.ones(shape)
    for i, run in enumerate(runs):
        for j, (m, batch, share) in enumerate(run.slots):
            idx[i, j], b[i, j], r[i, j], meas[i, j], mask[i, j] = (
                perf.model_index(m),
                batch,
                share,
                run.latency_ms[j],
                True,
            )
            if raw is not None and m in raw.models:
                pair_l2[i, j] = raw.models[m].cache_pair.solo_l2_pct
    _, c, _ = perf.solo_terms(idx, b, r)
    c = np.where(mask, c, 0.0)
    return RunBatch(idx, b, r, mask, meas, c.sum(axis=1, keepdims=True) - c, pair_l2)


def predict_batch(
    perf: PerformanceModel, rb: RunBatch, alpha_factor: np.ndarray | float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Latency (ms) and throughput (req/s) of every slot of ``rb`` under ``perf``, with
    ``alpha_cache`` multiplied per slot by ``alpha_factor``; NaN in empty slots.

    The masking mirrors ``PerformanceModel.predict_padded``; the equations are its ``co_located``.
    """
    k_act, c, p = perf.solo_terms(rb.model_idx, rb.batch, rb.share_pct)
    c = np.where(rb.mask, c, 0.0)
    p = np.where(rb.mask, p, 0.0)
    consts = perf.slot_constants(rb.model_idx, rb.batch)
    consts["alpha_cache"] = consts["alpha_cache"] * alpha_factor
    lat, thr = perf.co_located(k_act, c, p, rb.members, rb.batch, **consts)
    return np.where(rb.mask, lat, np.nan), np.where(rb.mask, thr, np.nan)


def _affine_in_kappa(perf: PerformanceModel, runs: Sequence[CoRun]) -> tuple[RunBatch, np.ndarray, np.ndarray]:
    """(runs, A, B): every slot's latency is A + kappa B, A at kappa = 0 (the clock depends on power only)."""
    rb = run_batch(perf, runs)
    a = predict_batch(perf, rb, 0.0)[0]
    return rb, a, predict_batch(perf, rb, 1.0)[0] - a


def _least_squares_kappa(a: np.ndarray, b: np.ndarray, y: np.ndarray) -> float | None:
    """argmin over kappa >= 0 of sum ((a + kappa b - y) / y)^2; None when b is 0 everywhere."""
    den = float(np.sum(b * b / (y * y)))
    return None if den <= 0 else max(0.0, float(np.sum(b * (y - a) / (y * y))) / den)


def fit_cache_scale(perf: PerformanceModel, runs: Sequence[CoRun]) -> float:
    """The ``kappa`` >= 0 minimising the squared relative latency error of ``runs``.

    Latency is affine in kappa (the clock depends on power only), so the minimum has a closed
    form: with predictions A at kappa = 0 and A + B at kappa = 1, kappa = sum B (y - A) / y^2 / sum B^2 / y^2.
    """
    rb, a, b = _affine_in_kappa(perf, runs)
    kappa = _least_squares_kappa(a[rb.mask], b[rb.mask], rb.measured_ms[rb.mask])
    if kappa is None:
        raise ProfileError(
            "the co-location runs have no L2 interference to fit (every run is a lone workload)"
        )
    return kappa


# A model's own kappa needs this many of its workloads in the runs; fewer keep the common kappa.
MIN_MODEL_WORKLOADS = 5


def fit_model_cache_scales(perf: PerformanceModel, runs: Sequence[CoRun]) -> dict[str, float]:
    """Per model with at least ``MIN_MODEL_WORKLOADS`` co-located workloads in ``runs``: its own kappa.

    A workload's latency depends on its own model's ``alpha_cache`` only (the co-runners enter
    through their L2 demand), so the least squares of ``fit_cache_scale`` separates by model and
    each model's kappa has the same closed form over its own workloads. Why per model: the pair
    runs of models with few long kernels (SSD, VGG-19) overstate their sensitivity next to other
    models, those with many short ones understate it (docs/interference.md).
    """
    rb, a, b = _affine_in_kappa(perf, runs)
    company = rb.mask & (rb.members > 1)
    out = {}
    for name in perf.model_names:
        sel = company & (rb.model_idx == perf.model_index(name))
        if sel.sum() < MIN_MODEL_WORKLOADS:
            continue
        kappa = _least_squares_kappa(a[sel], b[sel], rb.measured_ms[sel])
        if kappa is not None:
            out[name] = kappa
    return out


# ---- the exact planner's scheduling rows -----------------------------------------------------
@dataclass(frozen=True)
class SchedDelayRows:
    """Rows that make the MIP's scheduling delay exact for any sign of alpha_sch + beta_sch.

    With a binary ``shared[g]`` per GPU slot:
        n[g] - 1 <= (max_members - 1) shared[g]
        sched[g] >= slope n[g] + intercept - big_m (1 - shared[g]),   sched[g] >= 0
    ``shared[g]`` must be 1 with company; alone the solver sets it to 0 and the row vanishes, so
    sched[g] = D(n) exactly. ``needs_binary`` is False when the plain row (the current MIP's)
    is already exact, i.e. alpha_sch + beta_sch <= 0.
    """

    slope: float
    intercept: float
    big_m: float
    needs_binary: bool


def sched_delay_rows(hardware: HardwareCoefficients) -> SchedDelayRows:
    a, b = hardware.alpha_sch, hardware.beta_sch
    big_m = max(0.0, b, a + b)  # cancels the row at n = 0 and n = 1
    return SchedDelayRows(a, b, big_m, a + b > 0)


# ---- candidate forms compared in the study ---------------------------------------------------
AlphaFactor = Callable[[RunBatch, np.ndarray], np.ndarray]


def _saturating(x: np.ndarray, x0: float) -> np.ndarray:
    return x0 * np.log1p(x / x0)


def _saturating_factor(rb: RunBatch, theta: np.ndarray) -> np.ndarray:
    # alpha g(C_other) with g concave, g(x) ~ x for small x, re-anchored at each model's pair run.
    x0 = float(theta[0])
    co = np.maximum(rb.cache_other, 1e-12)
    return (_saturating(co, x0) / co) * (rb.pair_l2_pct / _saturating(rb.pair_l2_pct, x0))


@dataclass(frozen=True)
class CandidateForm:
    """A candidate interference form: a base fit plus a per-slot factor on alpha_cache.

    ``params`` are fitted from co-location runs (``fit_candidate``); ``mip`` says how the exact
    planner would represent the form.
    """

    name: str
    base: str  # "igniter" or "kernel-delay": which pair-run fit it starts from
    params: tuple[str, ...]
    initial: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    factor: AlphaFactor
    summary: str
    mip: str


CANDIDATES: dict[str, CandidateForm] = {
    c.name: c
    for c in (
        CandidateForm(
            "igniter",
            "igniter",
            (),
            (),
            (),
            (),
            lambda rb, th: np.ones_like(rb.batch),
            "the paper: alpha_cache from one pair run takes all of its slowdown",
            "linear in per-GPU sums (n, C, P): the current rows",
        ),
        CandidateForm(
            "igniter-scaled",
            "igniter",
            ("kappa",),
            (1.0,),
            (0.0,),
            (10.0,),
            lambda rb, th: np.full_like(rb.batch, th[0]),
            "the paper with every alpha_cache times one kappa",
            "linear: alpha_cache scaled, rows unchanged",
        ),
        CandidateForm(
            "count-factor",
            "igniter",
            ("phi3", "phi4"),
            (1.0, 1.0),
            (0.0, 0.0),
            (10.0, 10.0),
            lambda rb, th: (
                np.select([rb.members <= 2, rb.members == 3], [1.0, th[0]], th[1]) * np.ones_like(rb.batch)
            ),
            "the paper's cache term times phi(n): 1 for 2 workloads, phi3 for 3, phi4 for 4 or more",
            "exact with binaries z[g,j] (n[g] = j) and one budget row per (d, g, k, j) relaxed by big-M "
            "(1 - z)",
        ),
        CandidateForm(
            "saturating",
            "igniter",
            ("x0",),
            (20.0,),
            (0.5,),
            (1e4,),
            _saturating_factor,
            "alpha g(C_other), g(x) = x0 ln(1 + x/x0), anchored at each pair run",
            "not linear: piecewise-linear g with segment binaries per (d, g, k), or a tangent over-estimate "
            "(conservative)",
        ),
        CandidateForm(
            "kernel-delay",
            "kernel-delay",
            (),
            (),
            (),
            (),
            lambda rb, th: np.ones_like(rb.batch),
            "per-kernel co-location delay delta_co and alpha' from the pair runs alone",
            "linear; exact for lone workloads with one binary per GPU (shared[g], sched_delay_rows)",
        ),
        CandidateForm(
            "kernel-delay-scaled",
            "kernel-delay",
            ("kappa",),
            (1.0,),
            (0.0,),
            (10.0,),
            lambda rb, th: np.full_like(rb.batch, th[0]),
            "kernel-delay with alpha' times kappa fitted to co-location runs of different models",
            "linear: alpha_cache scaled; exact with one binary per GPU (shared[g], sched_delay_rows)",
        ),
        CandidateForm(
            "kernel-delay-count",
            "kernel-delay",
            ("kappa2", "kappa3", "kappa4"),
            (1.0, 1.0, 1.0),
            (0.0, 0.0, 0.0),
            (10.0, 10.0, 10.0),
            lambda rb, th: (
                np.select([rb.members <= 2, rb.members == 3], [th[0], th[1]], th[2]) * np.ones_like(rb.batch)
            ),
            "kernel-delay with one kappa per number of workloads on the GPU (2, 3, 4 or more)",
            "exact with binaries z[g,j] (n[g] = j) and one budget row per (d, g, k, j) relaxed by big-M "
            "(1 - z), plus the shared[g] binary",
        ),
        CandidateForm(
            "kernel-delay-share",
            "kernel-delay",
            ("beta_share",),
            (0.5,),
            (0.0,),
            (1.0,),
            lambda rb, th: (
                np.maximum(0.0, 1.0 - th[0] * (100.0 - rb.total_share_pct) / 100.0) * np.ones_like(rb.batch)
            ),
            "kernel-delay with the cache term times 1 - beta (100 - total share %) / 100",
            "bilinear in (C[g], total share[g]): exact only with share-band binaries and duplicated rows",
        ),
    )
}


MODEL_SCALED = "kernel-delay-model"


def model_scale_candidate(model_names: Sequence[str]) -> CandidateForm:
    """The kernel-delay form as fitted (``fit_model_cache_scales``): one kappa per model of a profile
    whose models are ``model_names`` (in the profile's order, which ``RunBatch.model_idx`` indexes)."""
    names = tuple(model_names)
    return CandidateForm(
        MODEL_SCALED,
        "kernel-delay",
        names,
        (1.0,) * len(names),
        (0.0,) * len(names),
        (10.0,) * len(names),
        lambda rb, th: np.asarray(th)[rb.model_idx] * np.ones_like(rb.batch),
        "kernel-delay with a kappa per model fitted to co-location runs of different models",
        "linear: each model's alpha_cache scaled, rows unchanged; exact with one binary per GPU (shared[g])",
    )


def fit_candidate(perf: PerformanceModel, candidate: CandidateForm, rb: RunBatch) -> np.ndarray:
    """Parameters of ``candidate`` (on ``perf``, its base fit) minimising squared relative error over
    ``rb``."""
    if not candidate.params:
        return np.zeros(0)
    y = rb.measured_ms[rb.mask]

    def residual(theta: np.ndarray) -> np.ndarray:
        return (predict_batch(perf, rb, candidate.factor(rb, theta))[0][rb.mask] - y) / y

    res = least_squares(residual, np.array(candidate.initial), bounds=(candidate.lower, candidate.upper))
    return res.x
