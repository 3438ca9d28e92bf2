"""Raw profile measurements: the project's own format and a reader for the paper's published one.

The project's format (``raw.json``, schema ``igniter-opt/profile-raw/v1``) is documented in the
README. Every record carries its units in its field names. The paper's format is the JSON-lines
file the iGniter authors published (``{"<model or hardware>": {"<key>": value}}`` per line,
merged per key; see ``shared/design/igniter-model.md`` section 2).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from igniter_opt.errors import ProfileError

RAW_SCHEMA = "igniter-opt/profile-raw/v1"

# The paper's 3 x 3 grid: rows are batches, columns are shares.
PAPER_GRID_BATCHES = (1, 16, 32)
PAPER_GRID_SHARES_PCT = (10.0, 50.0, 100.0)
# Where the paper measured the three L2 points used for the L2-demand line.
PAPER_L2_POINTS = ((1, 10.0), (16, 50.0), (32, 100.0))


@dataclass(frozen=True)
class SoloRecord:
    """One model running alone: mean GPU time per batch (no host transfers), power and SM clock."""

    batch: int
    share_pct: float
    latency_ms: float
    power_w: float
    clock_mhz: float


@dataclass(frozen=True)
class L2Record:
    """L2 cache utilisation (% of peak sectors) of one model running alone at (batch, share)."""

    batch: int
    share_pct: float
    l2_pct: float


@dataclass(frozen=True)
class CachePairRecord:
    """The two-copy run that measures cache sensitivity.

    ``solo_active_ms``: active time of one copy alone; ``pair_active_ms`` and ``pair_clock_mhz``:
    the same copy next to a second one; ``solo_l2_pct``: the L2 utilisation of the other copy.
    """

    solo_active_ms: float
    pair_active_ms: float
    pair_clock_mhz: float
    solo_l2_pct: float


@dataclass(frozen=True)
class ConcurrencyRecord:
    """``copies`` identical copies running together: GPU power, SM clock, per-kernel idle time."""

    copies: int
    power_w: float
    clock_mhz: float
    idle_per_kernel_ms: float


@dataclass(frozen=True)
class RawModel:
    """Everything measured for one model on one GPU type."""

    input_bytes: float
    output_bytes: float
    kernels_per_inference: int
    idle_ms: float
    solo: tuple[SoloRecord, ...]
    l2: tuple[L2Record, ...]
    cache_pair: CachePairRecord


@dataclass(frozen=True)
class RawHardware:
    """Everything measured for the GPU type itself."""

    idle_power_w: float
    max_clock_mhz: float
    max_power_w: float
    share_unit_pct: float
    pcie_bandwidth_bytes_per_ms: float
    concurrency: tuple[ConcurrencyRecord, ...]
    price_per_gpu_hour: float = 1.0


@dataclass(frozen=True)
class RawProfile:
    """A GPU type's raw profile: hardware, per-model measurements and where they came from."""

    gpu: dict[str, Any]
    hardware: RawHardware
    models: dict[str, RawModel] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": RAW_SCHEMA,
            "gpu": dict(self.gpu),
            "hardware": asdict(self.hardware),
            "models": {name: asdict(m) for name, m in sorted(self.models.items())},
        }


def _positive(value: Any, where: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ProfileError(f"{where}: expected a number, got {value!r}; fix or re-measure the profile") from None
    if not math.isfinite(x) or x <= 0:
        raise ProfileError(f"{where}: expected a positive number, got {value!r}; fix or re-measure the profile")
    return x


def _nonneg(value: Any, where: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ProfileError(f"{where}: expected a number, got {value!r}; fix or re-measure the profile") from None
    if not math.isfinite(x) or x < 0:
        raise ProfileError(f"{where}: expected a number >= 0, got {value!r}; fix or re-measure the profile")
    return x


def _require(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise ProfileError(
            f"{where}: missing key '{key}'; the profile is incomplete, re-run the profiler or fix the file"
        )
    return d[key]


def _num(d: dict[str, Any], key: str, where: str, *, allow_zero: bool = False) -> float:
    check = _nonneg if allow_zero else _positive
    return check(_require(d, key, where), f"{where}.{key}")


def raw_from_dict(d: dict[str, Any], source: str = "<dict>") -> RawProfile:
    """Parse the project's raw format, validating every field."""
    if d.get("schema") != RAW_SCHEMA:
        raise ProfileError(f"{source}: schema is {d.get('schema')!r}, expected '{RAW_SCHEMA}'")
    hw = _require(d, "hardware", source)
    where = f"{source}: hardware"
    concurrency = tuple(
        ConcurrencyRecord(
            copies=int(_num(c, "copies", f"{where}.concurrency[{i}]")),
            power_w=_num(c, "power_w", f"{where}.concurrency[{i}]"),
            clock_mhz=_num(c, "clock_mhz", f"{where}.concurrency[{i}]"),
            idle_per_kernel_ms=_num(c, "idle_per_kernel_ms", f"{where}.concurrency[{i}]", allow_zero=True),
        )
        for i, c in enumerate(_require(hw, "concurrency", where))
    )
    hardware = RawHardware(
        idle_power_w=_num(hw, "idle_power_w", where),
        max_clock_mhz=_num(hw, "max_clock_mhz", where),
        max_power_w=_num(hw, "max_power_w", where),
        share_unit_pct=_num(hw, "share_unit_pct", where),
        pcie_bandwidth_bytes_per_ms=_num(hw, "pcie_bandwidth_bytes_per_ms", where),
        concurrency=concurrency,
        price_per_gpu_hour=_positive(hw.get("price_per_gpu_hour", 1.0), f"{where}.price_per_gpu_hour"),
    )
    models: dict[str, RawModel] = {}
    for name, m in _require(d, "models", source).items():
        w = f"{source}: models.{name}"
        solo = tuple(
            SoloRecord(
                batch=int(_num(r, "batch", f"{w}.solo[{i}]")),
                share_pct=_num(r, "share_pct", f"{w}.solo[{i}]"),
                latency_ms=_num(r, "latency_ms", f"{w}.solo[{i}]"),
                power_w=_num(r, "power_w", f"{w}.solo[{i}]"),
                clock_mhz=_num(r, "clock_mhz", f"{w}.solo[{i}]"),
            )
            for i, r in enumerate(_require(m, "solo", w))
        )
        l2 = tuple(
            L2Record(
                batch=int(_num(r, "batch", f"{w}.l2[{i}]")),
                share_pct=_num(r, "share_pct", f"{w}.l2[{i}]"),
                l2_pct=_num(r, "l2_pct", f"{w}.l2[{i}]", allow_zero=True),
            )
            for i, r in enumerate(_require(m, "l2", w))
        )
        cp = _require(m, "cache_pair", w)
        models[name] = RawModel(
            input_bytes=_num(m, "input_bytes", w),
            output_bytes=_num(m, "output_bytes", w),
            kernels_per_inference=int(_num(m, "kernels_per_inference", w)),
            idle_ms=_num(m, "idle_ms", w, allow_zero=True),
            solo=solo,
            l2=l2,
            cache_pair=CachePairRecord(
                solo_active_ms=_num(cp, "solo_active_ms", f"{w}.cache_pair"),
                pair_active_ms=_num(cp, "pair_active_ms", f"{w}.cache_pair"),
                pair_clock_mhz=_num(cp, "pair_clock_mhz", f"{w}.cache_pair"),
                solo_l2_pct=_num(cp, "solo_l2_pct", f"{w}.cache_pair"),
            ),
        )
    if not models:
        raise ProfileError(f"{source}: the profile has no models; profile at least one model")
    return RawProfile(gpu=dict(d.get("gpu", {})), hardware=hardware, models=models)


def _merge_jsonl(path: Path) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ProfileError(f"{path}:{lineno}: not valid JSON ({exc.msg}); the file is corrupt") from None
            if not isinstance(obj, dict):
                raise ProfileError(f"{path}:{lineno}: expected an object {{name: {{key: value}}}}")
            for key, val in obj.items():
                if not isinstance(val, dict):
                    raise ProfileError(f"{path}:{lineno}: expected {{'{key}': {{key: value}}}}")
                merged.setdefault(key, {}).update(val)
    return merged


def raw_from_paper_jsonl(path: str | Path) -> RawProfile:
    """Read the iGniter authors' published JSON-lines profile into the project's raw format."""
    path = Path(path)
    merged = _merge_jsonl(path)
    src = str(path)
    hw = merged.get("hardware")
    if hw is None:
        raise ProfileError(f"{src}: no 'hardware' entries; this is not an iGniter profile")
    where = f"{src}: hardware"
    powers = _require(hw, "power", where)
    freqs = _require(hw, "frequency", where)
    idles = _require(hw, "idletime", where)
    if not (len(powers) == len(freqs) == len(idles)) or len(powers) < 2:
        raise ProfileError(f"{where}: 'power', 'frequency' and 'idletime' must list the same number (>= 2) of copies")
    hardware = RawHardware(
        idle_power_w=_num(hw, "idlepower", where),
        max_clock_mhz=_num(hw, "maxGPUfrequency", where),
        max_power_w=_num(hw, "maxGPUpower", where),
        share_unit_pct=_num(hw, "unit", where),
        pcie_bandwidth_bytes_per_ms=_num(hw, "bandwidth", where),
        concurrency=tuple(
            ConcurrencyRecord(
                copies=i + 1,
                power_w=_positive(p, f"{where}.power[{i}]"),
                clock_mhz=_positive(f, f"{where}.frequency[{i}]"),
                idle_per_kernel_ms=_nonneg(t, f"{where}.idletime[{i}]"),
            )
            for i, (p, f, t) in enumerate(zip(powers, freqs, idles, strict=True))
        ),
    )
    models: dict[str, RawModel] = {}
    for name, m in merged.items():
        if name == "hardware":
            continue
        w = f"{src}: {name}"
        grids = {}
        for key in ("gpulatency", "power", "frequency"):
            grid = _require(m, key, w)
            if len(grid) != 3 or any(len(row) != 3 for row in grid):
                raise ProfileError(f"{w}.{key}: expected a 3x3 grid (batches 1,16,32 x shares 10,50,100)")
            grids[key] = grid
        solo = tuple(
            SoloRecord(
                batch=b,
                share_pct=r,
                latency_ms=_positive(grids["gpulatency"][i][j], f"{w}.gpulatency[{i}][{j}]"),
                power_w=_positive(grids["power"][i][j], f"{w}.power[{i}][{j}]"),
                clock_mhz=_positive(grids["frequency"][i][j], f"{w}.frequency[{i}][{j}]"),
            )
            for i, b in enumerate(PAPER_GRID_BATCHES)
            for j, r in enumerate(PAPER_GRID_SHARES_PCT)
        )
        l2s = _require(m, "l2caches", w)
        if len(l2s) != len(PAPER_L2_POINTS):
            raise ProfileError(f"{w}.l2caches: expected 3 values at (1,10), (16,50), (32,100)")
        l2 = tuple(
            L2Record(batch=b, share_pct=r, l2_pct=_nonneg(v, f"{w}.l2caches[{i}]"))
            for i, ((b, r), v) in enumerate(zip(PAPER_L2_POINTS, l2s, strict=True))
        )
        models[name] = RawModel(
            input_bytes=_num(m, "inputdata", w),
            output_bytes=_num(m, "outputdata", w),
            kernels_per_inference=int(_num(m, "kernel", w)),
            idle_ms=_num(m, "idletime_1", w, allow_zero=True),
            solo=solo,
            l2=l2,
            cache_pair=CachePairRecord(
                solo_active_ms=_num(m, "activetime_1", w),
                pair_active_ms=_num(m, "activetime_2", w),
                pair_clock_mhz=_num(m, "frequency_2", w),
                solo_l2_pct=_num(m, "l2cache", w),
            ),
        )
    if not models:
        raise ProfileError(f"{src}: no models in the profile")
    gpu = {"name": "Tesla V100-SXM2-16GB", "source": "iGniter authors' published profile (p3.2xlarge)"}
    return RawProfile(gpu=gpu, hardware=hardware, models=models)


def load_raw(path: str | Path) -> RawProfile:
    """Load a raw profile in either format: the project's JSON or the paper's JSON lines."""
    path = Path(path)
    if path.is_dir():
        path = path / "raw.json"
    if not path.exists():
        raise ProfileError(f"{path}: no such file; pass a raw profile (raw.json or the paper's .jsonl)")
    text = path.read_text(encoding="utf-8")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        obj = None
    if isinstance(obj, dict) and "schema" in obj:
        return raw_from_dict(obj, str(path))
    if isinstance(obj, dict) and len(obj) == 1 or obj is None:
        return raw_from_paper_jsonl(path)
    raise ProfileError(f"{path}: neither the project's raw format ('{RAW_SCHEMA}') nor the paper's JSON lines")
