"""The iGniter performance model: fitted coefficients and vectorised prediction.

Equations (design note section 1; times ms, rates req/s, shares %):

    k_act(b, r) = (k1 b^2 + k2 b + k3) / (r + k4) + k5
    h_i = 1000 b_i / k_act(b_i, r_i)
    c_i = alpha_c h_i + beta_c          p_i = alpha_p h_i + beta_p
    P = p_idle + sum_i p_i              f = F if P <= P_max else F + alpha_f (P - P_max)
    (with a shared power floor P0 > 0: P = p_idle + P0 + sum_i (p_i - P0), see HardwareCoefficients)
    D = alpha_sch |S| + beta_sch if |S| >= 2 else 0
    t_sch_i = n_k D + idle_1
    t_act_i = k_act_i (1 + alpha_cache (sum_l c_l - c_i))
    t_gpu_i = (t_sch_i + t_act_i) / (f / F)
    t_inf_i = d_load b / B + t_gpu_i + d_fb b / B
    thr_i = 1000 b / (t_gpu_i + t_fb_i)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, TypedDict

import numpy as np

from igniter_opt.domain import ModelOverheads, ServingParams
from igniter_opt.errors import ProfileError

COEFFICIENTS_SCHEMA = "igniter-opt/profile-coefficients/v1"


@dataclass(frozen=True)
class ModelCoefficients:
    """Fitted coefficients of one model on one GPU type."""

    k: tuple[float, float, float, float, float]
    alpha_c: float
    beta_c: float
    alpha_p: float
    beta_p: float
    alpha_cache: float
    idle_ms: float
    kernels_per_inference: int
    input_bytes: float
    output_bytes: float

    def active_ms(self, batch: float, share_pct: float) -> float:
        k1, k2, k3, k4, k5 = self.k
        return (k1 * batch * batch + k2 * batch + k3) / (share_pct + k4) + k5


@dataclass(frozen=True)
class HardwareCoefficients:
    """Fitted coefficients and constants of one GPU type."""

    max_clock_mhz: float
    max_power_w: float
    idle_power_w: float
    alpha_f: float
    alpha_sch: float
    beta_sch: float
    share_unit_pct: float
    pcie_bandwidth_bytes_per_ms: float
    price_per_gpu_hour: float = 1.0
    # Power drawn once by a busy GPU, whatever runs on it (W). 0 is the paper's form, where every
    # placement adds its own intercept beta_p; > 0 ("shared-floor" fit): the intercept is counted
    # once per GPU and each placement adds alpha_p h + beta_p - power_floor_w.
    power_floor_w: float = 0.0


_MODEL_FIELDS = [f for f in ModelCoefficients.__dataclass_fields__]
_HW_FIELDS = [f for f in HardwareCoefficients.__dataclass_fields__]


class ServingPlanFields(TypedDict, total=False):
    """The serving-model fields of a :class:`igniter_opt.domain.Plan`, as keyword arguments."""

    serving_overhead_ms: float
    serving_max_utilization: float
    serving_overhead_per_request_ms: float
    serving_model_overheads: ModelOverheads


def _row_sum(x: np.ndarray) -> np.ndarray:
    """Sum over the last axis, left to right, keeping it (shape (..., 1)).

    Left to right on purpose: empty slots are zeros at the end of a row, so a padded row sums to
    exactly what the unpadded one does (numpy's pairwise sum would regroup rows of 8 or more).
    For the few slots a GPU holds it is also several times faster than ``sum(axis=-1)``.
    """
    total = x[..., 0]
    for j in range(1, x.shape[-1]):
        total = total + x[..., j]
    return total[..., None]


@dataclass(frozen=True)
class PerformanceModel:
    """Fitted model of one GPU type; predicts co-located placements, vectorised over many GPUs."""

    name: str
    hardware: HardwareCoefficients
    models: dict[str, ModelCoefficients]
    gpu: dict[str, Any] = field(default_factory=dict)
    # Serving overhead per batch execution (ms), or None for the paper's model. When set, a server
    # is taken to handle one batch at a time (take the inputs, run, respond, then the next), as a
    # Triton Python-backend server does: latency t_inf + o and throughput u * 1000 b / (t_inf + o),
    # instead of the paper's throughput 1000 b / (t_gpu + t_fb) with loading overlapped. u is the
    # utilization a server may be planned to (below 1 leaves room for bursts of random arrivals).
    serving_overhead_ms: float | None = None
    serving_max_utilization: float = 1.0
    # and this much more per request of a batch (the Python backend takes each request's inputs and
    # builds its response): a batch of b costs serving_overhead_ms + b * this
    serving_overhead_per_request_ms: float = 0.0
    # and, per model, its own serving cost beyond that line (SSD's large outputs), when measured
    serving_model_overheads: ModelOverheads = ()
    # The serving stack's measurements (profile's serving.json), for per-request latency
    # predictions; None when the profile has none (the user passes --serving-overhead-ms).
    serving: ServingParams | None = None
    _index: dict[str, int] = field(init=False, repr=False, compare=False)
    _arrays: dict[str, np.ndarray] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = sorted(self.models)
        object.__setattr__(self, "_index", {n: i for i, n in enumerate(names)})
        cs = [self.models[n] for n in names]
        arrays = {
            "k": np.array([c.k for c in cs], dtype=float).reshape(len(cs), 5),
            "alpha_c": np.array([c.alpha_c for c in cs]),
            "beta_c": np.array([c.beta_c for c in cs]),
            "alpha_p": np.array([c.alpha_p for c in cs]),
            "beta_p": np.array([c.beta_p for c in cs]),
            "alpha_cache": np.array([c.alpha_cache for c in cs]),
            "idle_ms": np.array([c.idle_ms for c in cs]),
            "kernels": np.array([c.kernels_per_inference for c in cs], dtype=float),
            "input_bytes": np.array([c.input_bytes for c in cs]),
            "output_bytes": np.array([c.output_bytes for c in cs]),
        }
        own = {m: (a, r) for m, a, r in self.serving_model_overheads}
        arrays["own_overhead_ms"] = np.array([own.get(n, (0.0, 0.0))[0] for n in names])
        arrays["own_overhead_per_request_ms"] = np.array([own.get(n, (0.0, 0.0))[1] for n in names])
        object.__setattr__(self, "_arrays", arrays)

    # ---- lookup -------------------------------------------------------------------------
    @property
    def model_names(self) -> list[str]:
        return sorted(self.models)

    def model_index(self, model: str) -> int:
        try:
            return self._index[model]
        except KeyError:
            raise ProfileError(
                f"model '{model}' is not in profile '{self.name}' (it has: {', '.join(self.model_names)}); "
                "profile it or use another profile"
            ) from None

    @property
    def unit_pct(self) -> float:
        return self.hardware.share_unit_pct

    @property
    def max_units(self) -> int:
        """How many share units fit in 100 % of a GPU (1e-9 absorbs float noise in 100 / unit)."""
        return int(math.floor(100.0 / self.unit_pct + 1e-9))

    @property
    def max_measured_batch(self) -> int | None:
        """The largest batch the profile measured (batches beyond it extrapolate the fit), if known."""
        if self.gpu.get("max_measured_batch") is not None:
            return int(self.gpu["max_measured_batch"])
        batches = (self.gpu.get("plan") or {}).get("batches")
        return int(max(batches)) if batches else None

    # ---- prediction ---------------------------------------------------------------------
    def solo_terms(
        self, model_idx: np.ndarray, batch: np.ndarray, share_pct: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-placement terms that depend only on its own configuration: (k_act, c, p)."""
        a = self._arrays
        k = a["k"][model_idx]
        b = batch
        k_act = (k[..., 0] * b * b + k[..., 1] * b + k[..., 2]) / (share_pct + k[..., 3]) + k[..., 4]
        h = 1000.0 * b / k_act
        c = a["alpha_c"][model_idx] * h + a["beta_c"][model_idx]
        p = a["alpha_p"][model_idx] * h + a["beta_p"][model_idx] - self.hardware.power_floor_w
        return k_act, c, p

    def slot_constants(self, model_idx: np.ndarray, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Per-placement constants independent of the share: kernels, idle, cache sensitivity, transfers."""
        a = self._arrays
        bw = self.hardware.pcie_bandwidth_bytes_per_ms
        return {
            "kernels": a["kernels"][model_idx],
            "idle_ms": a["idle_ms"][model_idx],
            "alpha_cache": a["alpha_cache"][model_idx],
            "t_load": a["input_bytes"][model_idx] * batch / bw,
            "t_fb": a["output_bytes"][model_idx] * batch / bw,
            "overhead_ms": self.batch_overhead_ms(batch, model_idx),
        }

    def co_located(
        self,
        k_act: np.ndarray,
        c: np.ndarray,
        p: np.ndarray,
        n: np.ndarray,
        batch: np.ndarray,
        kernels: np.ndarray,
        idle_ms: np.ndarray,
        alpha_cache: np.ndarray,
        t_load: np.ndarray,
        t_fb: np.ndarray,
        overhead_ms: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Latency and throughput from per-slot terms; rows are GPUs, empty slots have c = p = 0.

        ``n`` is the number of placements per row, shaped (rows, 1); ``overhead_ms`` is each slot's
        serving overhead per batch (``batch_overhead_ms``; unused by the paper's model).
        """
        hw = self.hardware
        power = hw.idle_power_w + np.where(n >= 1, hw.power_floor_w, 0.0) + _row_sum(p)
        clock = np.where(power <= hw.max_power_w, hw.max_clock_mhz,
                         hw.max_clock_mhz + hw.alpha_f * (power - hw.max_power_w))
        d_sched = np.where(n >= 2, hw.alpha_sch * n + hw.beta_sch, 0.0)
        t_sch = kernels * d_sched + idle_ms
        t_act = k_act * (1.0 + alpha_cache * (_row_sum(c) - c))
        t_gpu = (t_sch + t_act) * (hw.max_clock_mhz / clock)
        if self.serving_overhead_ms is None:
            return t_load + t_gpu + t_fb, 1000.0 * batch / (t_gpu + t_fb)
        served = t_load + t_gpu + t_fb + overhead_ms
        return served, self.serving_max_utilization * 1000.0 * batch / served

    def gpu_time_budget_ms(
        self, model_idx: np.ndarray, batch: np.ndarray, limit_ms: np.ndarray, rate_rps: np.ndarray
    ) -> np.ndarray:
        """The largest GPU time t_gpu (ms, at full clock) with latency <= ``limit_ms`` and
        throughput >= ``rate_rps``: ``co_located``'s two outputs inverted.

        Paper's model: min(limit - t_load - t_fb, 1000 b / R - t_fb). Serial server (overhead o,
        utilization u): min(limit, u 1000 b / R) - t_load - t_fb - o.
        """
        c = self.slot_constants(model_idx, batch)
        if self.serving_overhead_ms is None:
            return np.minimum(limit_ms - c["t_load"] - c["t_fb"], 1000.0 * batch / rate_rps - c["t_fb"])
        served = np.minimum(limit_ms, self.serving_max_utilization * 1000.0 * batch / rate_rps)
        return served - c["t_load"] - c["t_fb"] - c["overhead_ms"]

    def lower_share_pct(self, model_idx: np.ndarray, batch: np.ndarray, limit_ms: np.ndarray) -> np.ndarray:
        """The share (%) at which the interference-free solo latency just meets ``limit_ms``:
        k_act(b, r) = limit - idle_1 - t_load - t_fb (- o) solved for r; NaN where no share can.

        ``r = g / delta - k4`` with g = k1 b^2 + k2 b + k3 and delta = limit - idle_1 - t_load -
        t_fb (- o) - k5 (the paper's r_lower before rounding to units). A lower bound: interference
        and the clock can only add to the latency.
        """
        k = self._arrays["k"][model_idx]
        c = self.slot_constants(model_idx, batch)
        g = k[..., 0] * batch * batch + k[..., 1] * batch + k[..., 2]
        delta = limit_ms - c["idle_ms"] - (c["t_load"] + c["t_fb"]) - k[..., 4] - c["overhead_ms"]
        ok = delta > 0
        return np.where(ok, g / np.where(ok, delta, 1.0) - k[..., 3], np.nan)

    def batch_overhead_ms(self, batch: np.ndarray | float, model_idx: np.ndarray | int | None = None
                          ) -> np.ndarray | float:
        """The serving overhead of one batch execution under this model (0 for the paper's model),
        with each model's own serving cost where ``model_idx`` is given."""
        if self.serving_overhead_ms is None:
            return 0.0 * batch
        line = self.serving_overhead_ms + self.serving_overhead_per_request_ms * batch
        if model_idx is None or not self.serving_model_overheads:  # most profiles: no model of its own
            return line
        a = self._arrays
        return line + a["own_overhead_ms"][model_idx] + a["own_overhead_per_request_ms"][model_idx] * batch

    def serving_plan_fields(self) -> ServingPlanFields:
        """What a plan made with this model records of its serving model (nothing for the paper's model)."""
        if self.serving_overhead_ms is None:
            return {}
        out: ServingPlanFields = {"serving_overhead_ms": self.serving_overhead_ms,
                                  "serving_max_utilization": self.serving_max_utilization}
        if self.serving_overhead_per_request_ms:
            out["serving_overhead_per_request_ms"] = self.serving_overhead_per_request_ms
        if self.serving_model_overheads:
            out["serving_model_overheads"] = self.serving_model_overheads
        return out

    def with_serving(self, serving: ServingParams | None) -> PerformanceModel:
        """This model with the serving stack's measurements (None: unknown)."""
        return replace(self, serving=serving)

    def with_serving_overhead(self, overhead_ms: float | None, max_utilization: float | None = None,
                              per_request_ms: float = 0.0, model_overheads: ModelOverheads = ()
                              ) -> PerformanceModel:
        """This model for servers that run one batch at a time, with ``overhead_ms`` per batch (and
        ``per_request_ms`` per request, and each model's own ``model_overheads``) and planned to at
        most ``max_utilization`` of their capacity; overhead and utilization None: the paper's model."""
        if overhead_ms is None and max_utilization is None:
            return replace(self, serving_overhead_ms=None, serving_max_utilization=1.0,
                           serving_overhead_per_request_ms=0.0, serving_model_overheads=())
        o = 0.0 if overhead_ms is None else float(overhead_ms)
        u = 1.0 if max_utilization is None else float(max_utilization)
        if not (math.isfinite(o) and o >= 0):
            raise ProfileError(f"serving overhead must be a number of ms >= 0, got {overhead_ms}")
        if not 0 < u <= 1:
            raise ProfileError(f"max utilization must be in (0, 1], got {max_utilization}")
        if not (math.isfinite(per_request_ms) and per_request_ms >= 0):
            raise ProfileError(f"serving overhead per request must be a number of ms >= 0, got {per_request_ms}")
        return replace(self, serving_overhead_ms=o, serving_max_utilization=u,
                       serving_overhead_per_request_ms=per_request_ms, serving_model_overheads=tuple(model_overheads))

    def predict_padded(
        self,
        model_idx: np.ndarray,
        batch: np.ndarray,
        share_pct: np.ndarray,
        mask: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Predict latency (ms) and throughput (req/s) for many GPUs at once.

        All arrays have shape (n_gpus, max_slots); ``mask`` marks occupied slots. Each row is
        one GPU's co-located set. Empty slots get NaN.
        """
        model_idx = np.asarray(model_idx, dtype=np.intp)
        b = np.asarray(batch, dtype=float)
        r = np.asarray(share_pct, dtype=float)
        if mask is None:
            mask = np.ones(b.shape, dtype=bool)
        b_safe = np.where(mask, b, 1.0)
        r_safe = np.where(mask, r, 100.0)
        k_act, c, p = self.solo_terms(model_idx, b_safe, r_safe)
        c = np.where(mask, c, 0.0)
        p = np.where(mask, p, 0.0)
        n = mask.sum(axis=-1, keepdims=True)
        lat, thr = self.co_located(k_act, c, p, n, b_safe, **self.slot_constants(model_idx, b_safe))
        return np.where(mask, lat, np.nan), np.where(mask, thr, np.nan)

    def predict_gpu(self, slots: list[tuple[str, int, float]]) -> list[tuple[float, float]]:
        """Predict (latency_ms, throughput_rps) for each (model, batch, share_pct) sharing one GPU."""
        if not slots:
            return []
        idx = np.array([[self.model_index(m) for m, _, _ in slots]])
        b = np.array([[s[1] for s in slots]], dtype=float)
        r = np.array([[s[2] for s in slots]], dtype=float)
        lat, thr = self.predict_padded(idx, b, r)
        return [(float(x), float(y)) for x, y in zip(lat[0], thr[0], strict=True)]

    def solo(self, model: str, batch: int, share_pct: float) -> tuple[float, float]:
        """Predicted (latency_ms, throughput_rps) of a model alone on the GPU."""
        return self.predict_gpu([(model, batch, share_pct)])[0]

    # ---- persistence --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": COEFFICIENTS_SCHEMA,
            "name": self.name,
            "gpu": dict(self.gpu),
            "hardware": asdict(self.hardware),
            "models": {n: {**asdict(self.models[n]), "k": list(self.models[n].k)} for n in self.model_names},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "<dict>", name: str | None = None) -> PerformanceModel:
        if d.get("schema") != COEFFICIENTS_SCHEMA:
            raise ProfileError(f"{source}: schema is {d.get('schema')!r}, expected '{COEFFICIENTS_SCHEMA}'")
        try:
            hw_d = d["hardware"]
            missing = [f for f in _HW_FIELDS if f not in hw_d and f not in ("price_per_gpu_hour", "power_floor_w")]
            if missing:
                raise ProfileError(f"{source}: hardware is missing {', '.join(missing)}; re-run 'igniter-opt fit'")
            hw = HardwareCoefficients(**{f: float(hw_d[f]) for f in _HW_FIELDS if f in hw_d})
            models = {}
            for mname, md in d["models"].items():
                missing = [f for f in _MODEL_FIELDS if f not in md]
                if missing:
                    raise ProfileError(
                        f"{source}: model '{mname}' is missing {', '.join(missing)}; re-run 'igniter-opt fit'"
                    )
                k = tuple(float(x) for x in md["k"])
                if len(k) != 5:
                    raise ProfileError(f"{source}: model '{mname}' needs 5 k coefficients, has {len(k)}")
                vals = {f: float(md[f]) for f in _MODEL_FIELDS if f != "k"}
                vals["kernels_per_inference"] = int(vals["kernels_per_inference"])
                models[mname] = ModelCoefficients(k=k, **vals)  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError) as exc:
            raise ProfileError(f"{source}: corrupt coefficients ({exc}); re-run 'igniter-opt fit'") from None
        if not models:
            raise ProfileError(f"{source}: no models in the coefficients; re-run 'igniter-opt fit'")
        bad = [
            n for n, v in {**asdict(hw), **{f"{m}.k": sum(c.k) for m, c in models.items()}}.items()
            if not np.isfinite(v)
        ]
        if bad:
            raise ProfileError(f"{source}: non-finite coefficients ({', '.join(bad)}); re-run 'igniter-opt fit'")
        return cls(name=name or d.get("name", "profile"), hardware=hw, models=models, gpu=dict(d.get("gpu", {})))
