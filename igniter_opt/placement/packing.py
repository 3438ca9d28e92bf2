"""The data shapes that travel between the planners and the kernel: demands and packings.

A *demand* is a piece of a workload to place: a rate it must serve, with the configuration it
starts from (batch, lower-bound share units, queue delay) and the latency limit of that
configuration. A *packing* says which demands sit on which GPU with what share and batch: one
``GpuPacking`` per GPU, one ``Slot`` per placement. A *frozen* slot is a running server kept
as it is (replanning): its share may be any percentage and it never changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from igniter_opt.domain import Workload


@dataclass(frozen=True)
class Demand:
    """A piece of a workload to place: the rate it serves, its starting batch, lower-bound share
    (whole units of the profile's share unit), the latency limit at that batch and queue delay."""

    workload: Workload
    rate_rps: float
    batch: int
    lower_units: int
    limit_ms: float
    dedicated: bool = False
    queue_delay_ms: float | None = None


class Slot(NamedTuple):
    """One placement of a packing: demand ``demand`` (an index into ``Packing.demands``) with
    ``units`` share units, a batch and a queue delay. ``frozen_share_pct`` set: a running server
    kept as it is, with exactly that share (possibly not a whole number of units).

    A named tuple rather than a dataclass: a packing of 10 000 workloads makes tens of thousands
    of them, and a tuple is several times cheaper to build; it is just as immutable.
    """

    demand: int
    units: int
    batch: int
    queue_delay_ms: float | None = None
    frozen_share_pct: float | None = None

    @property
    def frozen(self) -> bool:
        return self.frozen_share_pct is not None

    def share_pct(self, unit_pct: float) -> float:
        """The share in percent: the frozen one, or the units rounded to 1e-6 % (as plans store it)."""
        if self.frozen_share_pct is not None:
            return self.frozen_share_pct
        return round(self.units * unit_pct, 6)


@dataclass(frozen=True)
class GpuPacking:
    """One GPU of a packing. ``gpu_id``: a running GPU's id (replanning), None for a new GPU."""

    slots: tuple[Slot, ...]
    gpu_id: str | None = None

    @property
    def members(self) -> tuple[int, ...]:
        return tuple(s.demand for s in self.slots)

    @property
    def units(self) -> tuple[int, ...]:
        return tuple(s.units for s in self.slots)


@dataclass(frozen=True)
class Packing:
    """Demands and the GPUs they are packed on (every demand at most once)."""

    demands: tuple[Demand, ...]
    gpus: tuple[GpuPacking, ...]

    @property
    def num_gpus(self) -> int:
        return len(self.gpus)

    def slots(self) -> Iterator[tuple[int, Slot]]:
        """Every (GPU position, slot) in packing order."""
        for g, gpu in enumerate(self.gpus):
            for s in gpu.slots:
                yield g, s


def gpu_of(demands: tuple[Demand, ...] | list[Demand], members: list[int] | tuple[int, ...],
           units: list[int] | tuple[int, ...], gpu_id: str | None = None) -> GpuPacking:
    """A GPU holding ``members`` at their demands' batch and queue delay with ``units`` each."""
    return GpuPacking(
        tuple(Slot(i, int(u), demands[i].batch, demands[i].queue_delay_ms)
              for i, u in zip(members, units, strict=True)),
        gpu_id,
    )
