"""A fleet of GPU types with prices: what `--fleet` describes (issue 15).

``TYPE:PRICE[:MAX_COUNT],...`` or a CSV file with the header ``type,price_per_hour[,max_count]``.
TYPE is a profile name or path (the profile measured that GPU type), PRICE the price of one GPU of
the type per hour (> 0), MAX_COUNT the most GPUs of the type the plan may use (optional).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from igniter_opt.errors import InputError, ProfileError
from igniter_opt.perfmodel import PerformanceModel, load_profile

FLEET_PLAN_SCHEMA = "igniter-opt/fleet-plan/v1"


@dataclass(frozen=True)
class FleetType:
    """One GPU type of a fleet: its profile, its price per GPU-hour and an optional count limit."""

    name: str
    price_per_gpu_hour: float
    max_count: int | None = None


@dataclass(frozen=True)
class Fleet:
    """GPU types a plan may mix, with their performance models (one profile per type)."""

    types: tuple[FleetType, ...]
    models: tuple[PerformanceModel, ...]

    def type_names(self) -> list[str]:
        return [t.name for t in self.types]


def _price(text: str, where: str) -> float:
    try:
        price = float(text)
    except ValueError:
        raise InputError(f"{where}: price {text!r} is not a number; give the price of one GPU per hour, "
                         "e.g. h100:2.5") from None
    if not (math.isfinite(price) and price > 0):
        raise InputError(f"{where}: price must be a number > 0, got {text}")
    return price


def _count(text: str, where: str) -> int | None:
    if text == "":
        return None
    try:
        n = int(text)
    except ValueError:
        raise InputError(f"{where}: max count {text!r} is not a whole number") from None
    if n < 1:
        raise InputError(f"{where}: max count must be >= 1 (leave it out for no limit), got {n}")
    return n


def _entries(spec: str) -> list[tuple[str, str, str, str]]:
    """(where, type, price, max count) of each entry of a spec string or fleet CSV."""
    path = Path(spec)
    if spec.endswith(".csv") or path.is_file():
        from igniter_opt.planio import read_csv_rows

        rows = read_csv_rows(path, ("type", "price_per_hour"), "fleet")
        if not rows:
            raise InputError(f"{path}: no GPU types; add rows type,price_per_hour[,max_count]")
        return [(f"{path}: row {i}", r["type"], r["price_per_hour"], r.get("max_count", "")) for i, r in rows]
    out = []
    for k, item in enumerate(s.strip() for s in spec.split(",")):
        parts = item.split(":")
        where = f"--fleet entry {k + 1} ({item!r})"
        if not item or len(parts) not in (2, 3) or not parts[0]:
            raise InputError(f"{where}: expected TYPE:PRICE[:MAX_COUNT], e.g. h100:2.5:8,h200:3.4")
        out.append((where, parts[0], parts[1], parts[2] if len(parts) == 3 else ""))
    return out


def parse_fleet(spec: str) -> Fleet:
    """The fleet a ``--fleet`` value describes, with every type's profile loaded; a one-line error otherwise."""
    types: list[FleetType] = []
    models: list[PerformanceModel] = []
    for where, name, price, count in _entries(spec):
        if name in (t.name for t in types):
            raise InputError(f"{where}: GPU type '{name}' is listed twice; give each type once")
        same = [t.name for t in types if Path(t.name).name == Path(name).name]
        if same:
            raise InputError(f"{where}: GPU types '{same[0]}' and '{name}' have the same name, and a fleet plan "
                             "names its parts by type; give each profile folder its own name")
        try:
            model = load_profile(name)
        except (InputError, ProfileError) as exc:
            raise InputError(f"{where}: unknown GPU type: {exc}") from None
        types.append(FleetType(name, _price(price, where), _count(count, where)))
        models.append(model)
    return Fleet(tuple(types), tuple(models))


__all__ = ["FLEET_PLAN_SCHEMA", "Fleet", "FleetType", "parse_fleet"]
