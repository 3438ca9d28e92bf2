"""Algorithm 1 of the paper over open GPUs held as padded arrays, with frozen slots.

Demands go one at a time in the given order. For each, AllocGPU runs on every open GPU with
room for it (at its lower bound) plus the newcomer, all at once (``alloc.cheapest_feasible_row``);
the GPU whose total share grows least wins (first on ties); if none is feasible a new GPU opens
with the newcomer at its lower bound (or, with ``may_open`` off, placing stops). Nothing placed
moves. GPUs whose share is full are never tried again.
"""

from __future__ import annotations

import numpy as np

from igniter_opt.placement.alloc import (
    ConfigTerms,
    blank_constants,
    cap_with_tolerance,
    cheapest_feasible_row,
)
from igniter_opt.placement.packing import Demand, GpuPacking, Slot


class OpenGpus:
    """Open GPUs as padded arrays (rows: GPUs, columns: slots) so AllocGPU runs on many at once.

    ``units`` are share units (floats: a frozen slot's share need not be whole units); ``slots``
    keeps each GPU's ``Slot`` records (demand, batch, queue delay, frozen share) in slot order.
    ``kind`` numbers each GPU's content: GPUs with the same kind hold slots that are the same in
    every number AllocGPU reads (configurations, units, constants, frozen flags), so AllocGPU
    treats them alike (see ``distinct_rows``).
    """

    def __init__(self, terms: ConfigTerms, capacity: int = 64, width: int = 4) -> None:
        self.terms = terms
        self.n = 0
        self.cfg = np.full((capacity, width), terms.empty, np.int64)
        self.units = np.zeros((capacity, width), float)
        self.const = blank_constants((capacity, width))
        self.frozen = np.zeros((capacity, width), bool)
        self.count = np.zeros(capacity, np.int64)
        self.used = np.zeros(capacity, float)
        self.kind = np.zeros(capacity, np.int64)
        self._kinds: dict[bytes, int] = {}
        self.slots: list[list[Slot]] = []
        self.gpu_ids: list[str | None] = []
        self.any_frozen = False

    def grow(self, rows: int, cols: int) -> None:
        r0, c0 = self.cfg.shape
        if rows <= r0 and cols <= c0:
            return
        r1, c1 = max(rows, 2 * r0 if rows > r0 else r0), max(cols, 2 * c0 if cols > c0 else c0)
        cfg = np.full((r1, c1), self.terms.empty, np.int64)
        cfg[:r0, :c0] = self.cfg
        units = np.zeros((r1, c1), float)
        units[:r0, :c0] = self.units
        const = blank_constants((r1, c1))
        const[:r0, :c0] = self.const
        frozen = np.zeros((r1, c1), bool)
        frozen[:r0, :c0] = self.frozen
        self.cfg, self.units, self.const, self.frozen = cfg, units, const, frozen
        for name in ("count", "used", "kind"):
            old = getattr(self, name)
            new = np.zeros(r1, old.dtype)
            new[:r0] = old
            setattr(self, name, new)

    def add(self, g: int, slot: Slot, cfg_row: np.ndarray, units_row: np.ndarray, const: np.ndarray) -> None:
        """Put ``slot`` in the next slot of open GPU ``g``, with the GPU's new configurations and units."""
        c = int(self.count[g])
        self.grow(self.n, c + 1)
        self.cfg[g, : c + 1] = cfg_row[: c + 1]
        self.units[g, : c + 1] = units_row[: c + 1]
        self.const[g, c] = const
        self.frozen[g, c] = slot.frozen
        self.any_frozen |= slot.frozen
        self.count[g] = c + 1
        self.used[g] = float(units_row[: c + 1].sum())
        self.slots[g].append(slot)
        self._set_kind(g)

    def append_slot(self, g: int, slot: Slot, cfg: int, units: float, const: np.ndarray) -> None:
        """Add ``slot`` as it is (configuration ``cfg``, ``units``) to open GPU ``g``; nothing else changes."""
        c = int(self.count[g])
        self.grow(self.n, c + 1)
        cfg_row, units_row = self.cfg[g, : c + 1].copy(), self.units[g, : c + 1].copy()
        cfg_row[c], units_row[c] = cfg, units
        self.add(g, slot, cfg_row, units_row, const)

    def open_gpu(self, slot: Slot, cfg: int, units: float, const: np.ndarray, gpu_id: str | None = None) -> int:
        """A new GPU holding only ``slot``; its row."""
        self.grow(self.n + 1, 1)
        g = self.n
        self.n += 1
        self.slots.append([slot])
        self.gpu_ids.append(gpu_id)
        self.cfg[g, 0], self.units[g, 0], self.const[g, 0] = cfg, units, const
        if slot.frozen_share_pct is not None:  # (rows start unfrozen)
            self.frozen[g, 0] = self.any_frozen = True
        self.count[g], self.used[g] = 1, units
        self._set_kind(g)
        return g

    def _set_kind(self, g: int) -> None:
        """Number GPU ``g``'s content: the bytes of its slots' numbers, so equal kinds are exactly equal."""
        c = int(self.count[g])
        key = b"".join(a[g, :c].tobytes() for a in (self.cfg, self.units, self.const, self.frozen))
        self.kind[g] = self._kinds.setdefault(key, len(self._kinds))

    def distinct_rows(self, rows: np.ndarray) -> np.ndarray:
        """The first of ``rows`` (in order) of each kind. AllocGPU with a newcomer gives GPUs of one
        kind the same outcome and Algorithm 1 takes the first on ties, so only these can be chosen:
        a workload split into equal replicas opens many GPUs that are alike."""
        _, first = np.unique(self.kind[rows], return_index=True)
        if first.size == rows.size:
            return rows
        first.sort()
        return rows[first]

    def packing_gpus(self) -> tuple[GpuPacking, ...]:
        """The open GPUs as packings, with each unfrozen slot's final units."""
        out = []
        units = np.rint(self.units[: self.n]).astype(np.int64).tolist()
        for g in range(self.n):
            row = units[g]
            # (a slot whose units did not change is kept: most are, and _replace is not cheap)
            slots = tuple(s if s.frozen_share_pct is not None or s.units == row[j] else s._replace(units=row[j])
                          for j, s in enumerate(self.slots[g]))
            out.append(GpuPacking(slots, self.gpu_ids[g]))
        return tuple(out)


class _Spare:
    """The open GPUs with room, in GPU order, and how many have each number of free units.

    The counts answer "does any GPU have room for u units?" in O(1): demands come largest first,
    so most of the big ones fit nowhere, and filtering thousands of GPUs to find that out was the
    planner's main cost at 10 000 workloads.
    """

    def __init__(self, table: OpenGpus, cap: int, limit: float) -> None:
        self.table, self.cap, self.limit = table, cap, limit
        rows = np.flatnonzero(table.used[: table.n] < cap - 1e-9)
        # The rows live at the front of a buffer that doubles when full: opening tens of thousands
        # of GPUs one at a time must not copy the list each time.
        self._buffer = np.zeros(max(64, 2 * rows.size), np.int64)
        self._buffer[: rows.size] = rows
        self._size = rows.size
        self.free_count = np.zeros(cap + 2, np.int64)
        for g in rows:
            self.free_count[self._bucket(int(g))] += 1

    @property
    def rows(self) -> np.ndarray:
        return self._buffer[: self._size]

    def _bucket(self, g: int) -> int:
        return int(min(self.cap + 1, max(0.0, np.floor(self.limit - self.table.used[g]))))

    def candidates(self, units: int) -> np.ndarray:
        rows = self.rows
        if not self.free_count[units:].any():
            return rows[:0].copy()
        return rows[self.table.used[rows] + units <= self.limit]

    def before_change(self, g: int) -> None:
        self.free_count[self._bucket(g)] -= 1

    def after_change(self, g: int) -> None:
        if self.table.used[g] >= self.cap - 1e-9:
            rows = self.rows
            keep = rows[rows != g]
            self._buffer[: keep.size] = keep
            self._size = keep.size
        else:
            self.free_count[self._bucket(g)] += 1

    def opened(self, g: int) -> None:
        if self.table.used[g] < self.cap - 1e-9:
            if self._size == self._buffer.size:
                self._buffer = np.concatenate([self._buffer, np.zeros_like(self._buffer)])
            self._buffer[self._size] = g
            self._size += 1
            self.free_count[self._bucket(g)] += 1


def place_demands(table: OpenGpus, demands: list[Demand] | tuple[Demand, ...], order: list[int],
                  slot_const: np.ndarray, cfg_of: np.ndarray, cap: int, *, may_open: bool = True) -> bool:
    """Algorithm 1 for the demands ``order`` onto ``table`` (changed in place).

    ``slot_const[i]`` and ``cfg_of[i]`` are demand i's slot constants and configuration index at
    its lower bound. Returns False, with ``table`` partly changed, when ``may_open`` is off and a
    demand fits on no open GPU.
    """
    # GPUs with room, in GPU order: only they can take anyone (full GPUs are never tried again).
    spare = _Spare(table, cap, cap_with_tolerance(table.terms, cap))
    for i in order:
        d = demands[i]
        const = slot_const[i]
        slot = Slot(i, d.lower_units, d.batch, d.queue_delay_ms)
        cand = table.distinct_rows(spare.candidates(d.lower_units))
        if cand.size:
            counts = table.count[cand]
            width = int(counts.max()) + 1
            table.grow(table.n, width)
            rows = np.arange(cand.size)
            cfg = table.cfg[cand, :width]
            units = table.units[cand, :width]
            const_rows = table.const[cand, :width]
            frozen = table.frozen[cand, :width] if table.any_frozen else None
            cfg[rows, counts], units[rows, counts], const_rows[rows, counts] = cfg_of[i], d.lower_units, const
            best = cheapest_feasible_row(table.terms, cap, cfg, units, const_rows, (counts + 1)[:, None],
                                         table.used[cand], frozen)
            if best is not None:
                j, cfg_row, units_row = best
                g = int(cand[j])
                spare.before_change(g)
                table.add(g, slot, cfg_row, units_row, const)
                spare.after_change(g)
                continue
        if not may_open:
            return False
        spare.opened(table.open_gpu(slot, int(cfg_of[i]), float(d.lower_units), const))
    return True
