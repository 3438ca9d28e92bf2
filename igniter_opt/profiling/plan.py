"""iGniter's measurement plan (design note section 2), on a finer grid, and its measurement keys.

Per model: the solo grid (batches x shares), a kernel trace (kernels per inference and the
solo inter-kernel idle time) at ``trace_point``, L2 utilisation at ``l2_points`` and the
two-copy run at ``pair_point`` (which must be one of the L2 points: its L2 value is the
``l2cache`` of the cache-sensitivity formula). Per GPU: idle power, PCIe bandwidth, the share
unit, and 1..``max_copies`` concurrent copies of ``concurrency_model`` at ``concurrency_point``
(power, clock) followed by a traced phase at batch ``concurrency_idle_batch`` (per-kernel idle).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from igniter_opt.errors import InputError
from igniter_opt.zoo import get_spec

DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32)
DEFAULT_SHARES_PCT = (10.0, 20.0, 30.0, 50.0, 70.0, 100.0)


def _s(x: float) -> str:
    return f"{float(x):g}"


def solo_key(model: str, batch: int, share: float) -> str:
    return f"solo/{model}/{batch}/{_s(share)}"


def trace_key(model: str, batch: int, share: float) -> str:
    return f"trace/{model}/{batch}/{_s(share)}"


def l2_key(model: str, batch: int, share: float) -> str:
    return f"l2/{model}/{batch}/{_s(share)}"


def pair_key(model: str, batch: int, share: float) -> str:
    return f"pair/{model}/{batch}/{_s(share)}"


def conc_key(copies: int) -> str:
    return f"conc/{copies}"


HW_INFO, HW_IDLE_POWER, HW_PCIE, HW_SHARE_UNIT = "hw/info", "hw/idle_power", "hw/pcie", "hw/share_unit"


@dataclass(frozen=True)
class ProfilePlan:
    """What to measure. All fields have the paper-compatible defaults for an H100-class GPU."""

    models: tuple[str, ...]
    batches: tuple[int, ...] = DEFAULT_BATCHES
    shares_pct: tuple[float, ...] = DEFAULT_SHARES_PCT
    l2_points: tuple[tuple[int, float], ...] = ((1, 10.0), (8, 50.0), (32, 100.0))
    pair_point: tuple[int, float] = (8, 50.0)
    trace_point: tuple[int, float] = (1, 100.0)
    concurrency_model: str = "vgg19"
    concurrency_point: tuple[int, float] = (32, 20.0)
    concurrency_idle_batch: int = 1
    max_copies: int = 5
    share_unit_candidates: tuple[float, ...] = field(default=tuple(10.0 + 0.25 * i for i in range(9)))
    solo_min_time_s: float = 0.4
    solo_min_iters: int = 10
    co_phase_s: float = 2.0

    def __post_init__(self) -> None:
        if not self.models:
            raise InputError("the plan has no models; pass --models")
        for m in (*self.models, self.concurrency_model):
            get_spec(m)
        if len(self.models) != len(set(self.models)):
            raise InputError("a model is listed twice in --models")
        if not self.batches or min(self.batches) < 1:
            raise InputError(f"batches must be positive integers, got {list(self.batches)}")
        if not self.shares_pct or not all(0 < s <= 100 for s in self.shares_pct):
            raise InputError(f"shares must be in (0, 100] %, got {list(self.shares_pct)}")
        if len(self.batches) * len(self.shares_pct) < 5:
            raise InputError("the solo grid needs at least 5 (batch, share) points to fit k1..k5")
        grid = {(b, float(s)) for b in self.batches for s in self.shares_pct}
        for b, s in (*self.l2_points, self.pair_point):
            if (b, float(s)) not in grid:
                raise InputError(f"L2/pair point (batch {b}, share {s:g}) is not on the solo grid")
        if (self.pair_point[0], float(self.pair_point[1])) not in {(b, float(s)) for b, s in self.l2_points}:
            raise InputError("the cache-pair point must be one of the L2 points")
        if len(self.l2_points) < 2:
            raise InputError("at least 2 L2 points are needed to fit the L2 line")
        if self.pair_point[1] * 2 > 100:
            raise InputError("two copies at the pair share must fit on the GPU (share <= 50 %)")
        if self.concurrency_point[1] * self.max_copies > 100:
            raise InputError(
                f"{self.max_copies} copies at {self.concurrency_point[1]:g} % exceed 100 %; lower max_copies"
            )
        if self.max_copies < 3:
            raise InputError("at least 3 concurrency levels are needed for the scheduling-delay fit")

    # ---- keys --------------------------------------------------------------------------------
    def hardware_keys(self) -> list[str]:
        return [HW_INFO, HW_IDLE_POWER, HW_PCIE, HW_SHARE_UNIT, *(conc_key(n) for n in range(1, self.max_copies + 1))]

    def model_keys(self, model: str) -> list[str]:
        keys = [solo_key(model, b, s) for s in self.shares_pct for b in self.batches]
        keys.append(trace_key(model, *self.trace_point))
        keys += [l2_key(model, b, s) for b, s in self.l2_points]
        keys.append(pair_key(model, *self.pair_point))
        return keys

    def all_keys(self) -> list[str]:
        keys = self.hardware_keys()
        for m in self.models:
            keys += self.model_keys(m)
        return keys
