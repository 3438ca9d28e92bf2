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
    ``kind`` numbers GPUs that AllocGPU treats alike (see ``distinct_rows``): GPUs opened with
    one slot that is the same in every number AllocGPU reads (configuration, units, constants,
    frozen or not) and room to spare share a kind while nothing joins them; every other GPU has a
    kind of its own.
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
        self._kinds: dict[tuple[int, float, bool, bytes], int] = {}  # one-slot GPUs' kinds (>= 0)
        self._members: list[list[int]] = []  # the GPUs of each of those kinds, in GPU order
        self._own_kinds = 0  # the other GPUs' kinds: -1, -2, ...
        # True: a GPU of a kind with an earlier GPU (the first of a kind stands for all of it)
        self.repeat = np.zeros(capacity, bool)
        self._repeats = 0
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
        for name in ("count", "used", "kind", "repeat"):
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
        self._leave_kind(g)

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
        if units >= self.terms.n_units - 1 - 1e-9:  # full: never a candidate again
            self._own_kinds += 1
            self.kind[g] = -self._own_kinds
            return g
        # the constants' exact bits: equal keys are equal in every number
        k = self._kinds.setdefault((int(cfg), float(units), bool(self.frozen[g, 0]), self.const[g, 0].tobytes()),
                                   len(self._kinds))
        if k == len(self._members):
            self._members.append([])
        self.kind[g] = k
        self.repeat[g] = bool(self._members[k])
        self._repeats += bool(self._members[k])
        self._members[k].append(g)
        return g

    def open_gpu_with(self, slots: list[Slot], cfgs: list[int], units: list[float], consts: list[np.ndarray],
                      gpu_id: str | None = None) -> int:
        """A new GPU holding ``slots`` as they are (their configurations, units and constants), its row:
        ``open_gpu`` with the first and ``append_slot`` with each other one, in one step."""
        g = self.open_gpu(slots[0], cfgs[0], units[0], consts[0], gpu_id)
        m = len(slots)
        if m == 1:
            return g
        self.grow(self.n, m)
        self.cfg[g, :m], self.units[g, :m], self.const[g, :m] = cfgs, units, consts
        self.frozen[g, :m] = [s.frozen for s in slots]
        self.any_frozen |= any(s.frozen for s in slots)
        self.count[g] = m
        self.used[g] = float(self.units[g, :m].sum())
        self.slots[g].extend(slots[1:])
        self._leave_kind(g)
        return g

    def _leave_kind(self, g: int) -> None:
        """GPU ``g`` changed: it gets a kind of its own (the next GPU of its old kind stands for it)."""
        k = int(self.kind[g])
        if k >= 0:
            members = self._members[k]
            members.remove(g)
            if self.repeat[g]:
                self.repeat[g] = False
                self._repeats -= 1
            elif members:  # it stood for its kind: the next one does now
                self.repeat[members[0]] = False
                self._repeats -= 1
        self._own_kinds += 1
        self.kind[g] = -self._own_kinds

    def distinct_rows(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` (in GPU order, as Algorithm 1 tries them) without the GPUs that repeat an earlier
        one's kind. AllocGPU with a newcomer gives GPUs of one kind the same outcome, and Algorithm 1
        takes the first on ties, so a repeat can never be chosen. GPUs of one kind have the same
        free share, so they are candidates together, their first among them. A workload split into
        equal replicas opens many GPUs that are alike."""
        if not self._repeats or rows.size < 2:
            return rows
        return rows[~self.repeat[rows]]

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
