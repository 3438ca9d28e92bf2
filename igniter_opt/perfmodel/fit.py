"""Fitting the iGniter coefficients from a raw profile (design note section 2).

Estimators follow scikit-learn conventions: the constructor stores settings, ``fit`` learns and
returns ``self``, fitted attributes end in ``_``, ``predict`` refuses an unfitted estimator.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.linear_model import LinearRegression
from sklearn.utils.validation import check_is_fitted, validate_data

from igniter_opt.errors import ProfileError
from igniter_opt.perfmodel.model import HardwareCoefficients, ModelCoefficients, PerformanceModel
from igniter_opt.perfmodel.raw import RawHardware, RawModel, RawProfile
from igniter_opt.perfmodel.store import INTERFERENCE_FORMS

if TYPE_CHECKING:
    from igniter_opt.perfmodel.interference import CoRun

ACTIVE_TIME_FORMS = ("igniter",)
# "igniter": p_i = alpha_p h + beta_p per placement, summed (the paper). "shared-floor": one
# intercept per GPU (fitted jointly over all models' solo points), counted once per busy GPU.
POWER_FORMS = ("igniter", "shared-floor")
# What gpu["fit"] records about the interference form (raw.json and coefficients.json).
_INTERFERENCE_KEYS = ("interference_form", "interference", "cache_scale", "cache_scale_source", "model_cache_scale")


def _igniter_active_ms(x: tuple[np.ndarray, np.ndarray] | np.ndarray,
                       k1: float, k2: float, k3: float, k4: float, k5: float) -> np.ndarray:
    # (batches, shares); curve_fit hands the pair over as one two-row array.
    b, r = x
    return (k1 * b * b + k2 * b + k3) / (r + k4) + k5


class ActiveTimeModel(RegressorMixin, BaseEstimator):
    """Solo active time per batch as a function of (batch, share %).

    ``form="igniter"``: the paper's ``(k1 b^2 + k2 b + k3) / (r + k4) + k5``, fitted by nonlinear
    least squares (scipy ``curve_fit`` from its default start). ``coef_`` holds k1..k5.
    """

    def __init__(self, *, form: str = "igniter", max_evaluations: int = 100_000) -> None:
        self.form = form
        self.max_evaluations = max_evaluations

    def fit(self, X: np.ndarray, y: np.ndarray) -> ActiveTimeModel:
        X, y = validate_data(self, X, y, y_numeric=True)
        if self.form not in ACTIVE_TIME_FORMS:
            raise ValueError(f"form must be one of {ACTIVE_TIME_FORMS}, got {self.form!r}")
        if X.shape[1] != 2:
            raise ValueError("X must have two columns: batch, share_pct")
        if X.shape[0] < 5:
            raise ValueError(f"need at least 5 (batch, share) points to fit 5 coefficients, got {X.shape[0]}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            coef, _ = curve_fit(_igniter_active_ms, (X[:, 0], X[:, 1]), y, maxfev=self.max_evaluations)
        if not np.all(np.isfinite(coef)):
            raise ValueError("the active-time fit did not converge")
        self.coef_ = coef
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        return _igniter_active_ms((X[:, 0], X[:, 1]), *self.coef_)


def _line(x: np.ndarray, y: np.ndarray, *, intercept: bool = True) -> tuple[float, float]:
    reg = LinearRegression(fit_intercept=intercept).fit(np.asarray(x, float).reshape(-1, 1), np.asarray(y, float))
    return float(reg.coef_[0]), float(reg.intercept_) if intercept else 0.0


def fit_model(name: str, raw: RawModel, hw: RawHardware, *, form: str = "igniter") -> ModelCoefficients:
    """Fit one model's coefficients from its raw measurements."""
    F = hw.max_clock_mhz
    solo = raw.solo
    if len(solo) < 5:
        raise ProfileError(f"model '{name}': {len(solo)} solo measurements, at least 5 are needed to fit k1..k5")
    b = np.array([s.batch for s in solo], float)
    r = np.array([s.share_pct for s in solo], float)
    lat = np.array([s.latency_ms for s in solo], float)
    clock = np.array([s.clock_mhz for s in solo], float)
    power = np.array([s.power_w for s in solo], float)

    # k1..k5: active time corrected to the full clock, scheduling idle removed.
    target = lat * clock / F - raw.idle_ms
    try:
        k = ActiveTimeModel(form=form).fit(np.column_stack([b, r]), target).coef_
    except (ValueError, RuntimeError) as exc:
        raise ProfileError(f"model '{name}': active-time fit failed ({exc}); check its solo measurements") from None

    # Throughput as the paper measures it: raw latency, no clock correction.
    busy = lat - raw.idle_ms
    if np.any(busy <= 0):
        raise ProfileError(f"model '{name}': a solo latency is not above its idle time; re-measure")
    h = 1000.0 * b / busy

    unthrottled = clock > F - 1
    if unthrottled.sum() < 2:
        raise ProfileError(f"model '{name}': fewer than 2 solo points ran at full clock; cannot fit power")
    alpha_p, beta_p = _line(h[unthrottled], power[unthrottled] - hw.idle_power_w)

    lookup = {(s.batch, s.share_pct): i for i, s in enumerate(solo)}
    hc, l2 = [], []
    for rec in raw.l2:
        i = lookup.get((rec.batch, rec.share_pct))
        if i is None:
            raise ProfileError(
                f"model '{name}': L2 point (batch {rec.batch}, share {rec.share_pct}) has no solo latency"
            )
        hc.append(h[i])
        l2.append(rec.l2_pct)
    if len(l2) < 2:
        raise ProfileError(f"model '{name}': at least 2 L2 measurements are needed, got {len(l2)}")
    alpha_c, beta_c = _line(np.array(hc), np.array(l2))

    cp = raw.cache_pair
    alpha_cache = ((cp.pair_active_ms * cp.pair_clock_mhz / F) / cp.solo_active_ms - 1.0) / cp.solo_l2_pct

    return ModelCoefficients(
        k=tuple(float(x) for x in k),  # type: ignore[arg-type]
        alpha_c=alpha_c,
        beta_c=beta_c,
        alpha_p=alpha_p,
        beta_p=beta_p,
        alpha_cache=float(alpha_cache),
        idle_ms=raw.idle_ms,
        kernels_per_inference=raw.kernels_per_inference,
        input_bytes=raw.input_bytes,
        output_bytes=raw.output_bytes,
    )


def fit_hardware(hw: RawHardware) -> HardwareCoefficients:
    """Fit the clock-drop and scheduling-delay coefficients from the 1..n concurrent-copies runs."""
    recs = sorted(hw.concurrency, key=lambda c: c.copies)
    if len(recs) < 3 or recs[0].copies != 1:
        raise ProfileError("hardware: need concurrency runs with 1, 2, 3... copies (at least 3, starting at 1)")
    F, P_max = hw.max_clock_mhz, hw.max_power_w
    copies = np.array([c.copies for c in recs], float)
    power = np.array([c.power_w for c in recs], float)
    clock = np.array([c.clock_mhz for c in recs], float)

    # Power readings saturate at P_max: extrapolate the demand of throttled runs from the mean
    # per-copy increase over the runs that kept the full clock.
    full = clock > F - 1
    throttled = ~full
    if throttled.any():
        n_full = int(np.argmin(full)) if not full.all() else len(full)
        if n_full < 2:
            raise ProfileError("hardware: fewer than 2 concurrency runs at full clock; cannot extrapolate power")
        per_copy = float(np.mean(np.diff(power[:n_full])))
        demand = power[n_full - 1] + (copies[throttled] - copies[n_full - 1]) * per_copy
        alpha_f, _ = _line(demand - P_max, clock[throttled] - F, intercept=False)
    else:
        # The GPU never throttled in the profile: no evidence of a clock drop.
        alpha_f = 0.0

    idle = np.array([c.idle_per_kernel_ms for c in recs], float) * clock / F
    idle = idle - idle[0]
    alpha_sch, beta_sch = _line(copies[1:], idle[1:])
    return HardwareCoefficients(
        max_clock_mhz=F,
        max_power_w=P_max,
        idle_power_w=hw.idle_power_w,
        alpha_f=alpha_f,
        alpha_sch=alpha_sch,
        beta_sch=beta_sch,
        share_unit_pct=hw.share_unit_pct,
        pcie_bandwidth_bytes_per_ms=hw.pcie_bandwidth_bytes_per_ms,
        price_per_gpu_hour=hw.price_per_gpu_hour,
    )


def fit_shared_power_floor(raw: RawProfile) -> tuple[float, dict[str, float]]:
    """Joint least squares over all models' full-clock solo points: ``P - p_idle = P0 + alpha_p[m] h``.

    Returns the common intercept ``P0`` (W) and each model's slope (W per req/s).
    """
    hw = raw.hardware
    F = hw.max_clock_mhz
    names = sorted(raw.models)
    rows, ys = [], []
    for j, name in enumerate(names):
        rm = raw.models[name]
        for s in rm.solo:
            if s.clock_mhz <= F - 1:
                continue
            h = 1000.0 * s.batch / (s.latency_ms - rm.idle_ms)
            x = np.zeros(len(names) + 1)
            x[0], x[1 + j] = 1.0, h
            rows.append(x)
            ys.append(s.power_w - hw.idle_power_w)
    if len(rows) < len(names) + 2:
        raise ProfileError("too few full-clock solo points to fit a shared power floor; use --power-form igniter")
    coef, *_ = np.linalg.lstsq(np.array(rows), np.array(ys), rcond=None)
    return float(coef[0]), {n: float(coef[1 + j]) for j, n in enumerate(names)}


def fit_profile(raw: RawProfile, name: str, *, form: str = "igniter",
                power_form: str | None = None, interference_form: str | None = None,
                co_runs: Sequence[CoRun] = (), co_runs_source: str | None = None) -> PerformanceModel:
    """Fit every model of a raw profile and the hardware coefficients.

    ``power_form`` (see ``POWER_FORMS``) defaults to the one the profile recommends in
    ``gpu["fit"]["power_form"]`` (written by the profiler), else the paper's.

    ``interference_form`` (``igniter`` or ``kernel-delay``, docs/interference.md) likewise defaults
    to ``gpu["fit"]["interference_form"]``, else the paper's. ``kernel-delay`` fits the per-kernel
    co-location delay from the pair runs and its cache scale kappa by least squares over
    ``co_runs`` (measured co-locations of different models; ``co_runs_source`` names where they
    came from), and a kappa of its own for each model with enough workloads in them; without them
    kappa is the one the raw profile records (``gpu["fit"]["cache_scale"]`` and
    ``["model_cache_scale"]``, see ``record_interference``), else 1. The fitted model records the
    form and its coefficients.
    """
    recorded = raw.gpu.get("fit", {})
    if power_form is None:
        power_form = str(recorded.get("power_form", "igniter"))
    if power_form not in POWER_FORMS:
        raise ProfileError(f"power form must be one of {', '.join(POWER_FORMS)}, got '{power_form}'")
    if interference_form is None:
        interference_form = str(recorded.get("interference_form", "igniter"))
    if interference_form not in INTERFERENCE_FORMS:
        raise ProfileError(
            f"interference form must be one of {', '.join(INTERFERENCE_FORMS)}, got '{interference_form}'"
        )
    if co_runs and interference_form != "kernel-delay":
        raise ProfileError(
            f"co-location runs fit the kernel-delay form's cache scale; the '{interference_form}' form takes none "
            "(use --interference-form kernel-delay, or leave the runs out)"
        )
    hardware = fit_hardware(raw.hardware)
    models = {m: fit_model(m, rm, raw.hardware, form=form) for m, rm in sorted(raw.models.items())}
    if power_form == "shared-floor":
        floor, slopes = fit_shared_power_floor(raw)
        models = {m: replace(c, alpha_p=slopes[m], beta_p=floor) for m, c in models.items()}
        hardware = replace(hardware, power_floor_w=floor)
    kept = {k: v for k, v in recorded.items() if k not in _INTERFERENCE_KEYS}
    gpu = {**raw.gpu, "fit": {**kept, "form": form, "power_form": power_form, "interference_form": "igniter"},
           "max_measured_batch": max(r.batch for m in raw.models.values() for r in m.solo)}
    paper = PerformanceModel(name=name, hardware=hardware, models=models, gpu=gpu)
    if interference_form == "igniter":
        return paper
    from igniter_opt.perfmodel.interference import apply_interference, fit_interference

    coefs = fit_interference(raw, paper, form=interference_form, runs=co_runs)
    if co_runs and co_runs_source:
        coefs = replace(coefs, cache_scale_source=f"{coefs.cache_scale_source} ({co_runs_source})")
    elif not co_runs and recorded.get("interference_form") == interference_form and "cache_scale" in recorded:
        try:
            kappa = float(recorded["cache_scale"])
        except (TypeError, ValueError):
            raise ProfileError(
                f"the raw profile's recorded cache_scale {recorded['cache_scale']!r} is not a number; fix or "
                "remove it, or refit with co-location runs"
            ) from None
        source = str(recorded.get("cache_scale_source", "recorded in the raw profile"))
        coefs = replace(coefs, cache_scale=kappa, cache_scale_source=source,
                        model_cache_scale=_recorded_model_kappas(recorded))
    return apply_interference(paper, coefs)


def _recorded_model_kappas(recorded: dict[str, Any]) -> dict[str, float]:
    """The per-model kappas a raw profile records (``gpu.fit.model_cache_scale``), checked."""
    own = recorded.get("model_cache_scale", {})
    try:
        return {str(m): float(v) for m, v in own.items()}
    except (AttributeError, TypeError, ValueError):
        raise ProfileError(
            f"the raw profile's recorded model_cache_scale {own!r} is not a map of model to number; fix or "
            "remove it, or refit with co-location runs"
        ) from None


def record_interference(raw: RawProfile, model: PerformanceModel) -> RawProfile:
    """``raw`` recording the interference form ``model`` was fitted with (and kappa with its source,
    which come from runs outside the raw profile), so that fitting it again gives the same model."""
    fit: dict[str, Any] = {k: v for k, v in raw.gpu.get("fit", {}).items() if k not in _INTERFERENCE_KEYS}
    mf = model.gpu.get("fit", {})
    fit["interference_form"] = mf.get("interference_form", "igniter")
    if fit["interference_form"] != "igniter":
        block = mf["interference"]
        fit["cache_scale"] = block["cache_scale"]
        fit["cache_scale_source"] = block["cache_scale_source"]
        if block.get("model_cache_scale"):
            fit["model_cache_scale"] = block["model_cache_scale"]
    return replace(raw, gpu={**raw.gpu, "fit": fit})
