"""Ejection chains: a plan with one GPU fewer, searched for from a plan in hand.

The columns the master holds are what its integer search can combine; on the H100, where a GPU runs
7-10 workloads, the columns generated in a benchmark's time hold no plan better than greedy's (at
n = 200 seed 0 the integer master over 64 s of columns is proven to have none below 23 GPUs). This
search works on the plan itself, as local search does for bin packing: take the GPU of fewest share
units away, and put its pieces back on the others one at a time. A piece goes where the kernel's
AllocGPU (``placement.alloc.alloc_rows``) fits it at the least growth in share; where it fits
nowhere, it takes the place of one member of some GPU (the member of fewest units alone, with some
noise, and not a piece type that has just come in: a short tabu list), and that member is the next
to place. Each piece may enter at any batch its items offer, and each GPU's shares are found anew,
from the members' current shares or from their least, whichever fits in fewer units. When no piece
is left the plan has one GPU fewer, and the search goes on to the next; where a try ends with pieces it could
not place, and they fit on one GPU lighter than the plan's lightest, the search goes on from that plan (the
slack gathered on one GPU, the next to empty). It proves nothing and is a
heuristic in what it finds; what it returns is judged by the kernel (``columns.evaluate``) like any
column, and the planner verifies the plan again.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from igniter_opt.placement.alloc import ConfigTerms, alloc_rows, blank_constants, slot_constants
from igniter_opt.planner.exact.columns import ColSlot, Column, PieceSpace, column_key, evaluate
from igniter_opt.planner.exact.heuristic import Entries, entry_items, make_entries
from igniter_opt.planner.exact.items import Items

# The piece placed next is the one of most units alone with this probability, else one at random.
LARGEST_FIRST = 0.7
# A piece type placed by taking a member's place cannot itself be taken out for this many moves.
TABU_MOVES = 5
# Noise, in share units, added to a member's units alone when choosing which one makes room.
EJECT_NOISE_UNITS = 3.0
# Moves without a GPU emptied after which the search starts again, from its best plan or from the plan the try
# left where that gathered the slack on one GPU, emptying the next GPU in order of units (and gives up once every
# GPU of the plan it goes on from was tried).
MOVES_PER_TRY = 2000
# How often (in moves) a search asks ``raised_floor`` for a higher floor.
FLOOR_POLL_MOVES = 100
# Candidates for a member's place judged by AllocGPU at once, in order of score (most find a fit in the first).
EJECT_CHUNK = 48


@dataclass(frozen=True)
class EjectResult:
    """What the search found: ``gpus``, each GPU of the best plan as the column the kernel judged it (fewer GPUs
    than it was given), or None where it found none; how many GPUs it emptied, its moves and seconds, the seconds
    in when it found its best, and how many of its tries gathered the slack instead."""

    gpus: list[Column] | None
    emptied: int
    moves: int
    seconds: float
    found_s: float | None = None
    regathered: int = 0  # tries that failed but left the plan's lightest GPU lighter, taken as the plan to go on from


class _Search:
    """The plan as arrays: per GPU (row) its members (entry indices, -1 empty) and their current share units."""

    def __init__(self, space: PieceSpace, terms: ConfigTerms, ent: Entries, member: np.ndarray, units: np.ndarray,
                 rng: random.Random) -> None:
        self.space, self.terms, self.ent, self.rng = space, terms, ent, rng
        self.cap = space.cap_units
        self.member, self.units = self._packed(member, units)
        self.by_type = {int(t): np.flatnonzero(ent.piece == t) for t in np.unique(ent.piece)}
        # per piece type, its entry of fewest units alone and those units
        self.fewest_entry = np.zeros(int(ent.piece.max(initial=0)) + 1, np.int64)
        for t, e in self.by_type.items():
            self.fewest_entry[t] = e[np.argmin(ent.units[e])]
        self.least = ent.units[self.fewest_entry]
        self.noise = np.random.default_rng(rng.randrange(2**32))
        # the entries' tables with an empty slot's values appended, at index ``blank``: ``_tables`` gathers rows
        # with no per-slot choice (choosing took a fifth of the search's time at H100 n = 1000)
        self.blank = ent.units.size
        self.slot_units = np.append(ent.units.astype(float), 0.0)
        self.slot_cfg = np.append(ent.cfg, terms.empty)
        self.slot_const = np.concatenate([ent.const, blank_constants((1, 1))[0]])

    @staticmethod
    def _packed(member: np.ndarray, units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Members moved to the front of each row, with one empty slot at least at the end."""
        order = np.argsort(member < 0, axis=1, kind="stable")
        member, units = np.take_along_axis(member, order, 1), np.take_along_axis(units, order, 1)
        width = int((member >= 0).sum(axis=1).max(initial=0)) + 2
        out_m, out_u = np.full((member.shape[0], width), -1, np.int64), np.zeros((member.shape[0], width))
        w = min(width, member.shape[1])
        out_m[:, :w], out_u[:, :w] = member[:, :w], np.where(member[:, :w] >= 0, units[:, :w], 0.0)
        return out_m, out_u

    def without(self, g: int) -> _Search:
        """A search over this plan less GPU ``g`` (the entries' tables shared, not built again)."""
        keep = np.arange(self.member.shape[0]) != g
        out = copy.copy(self)
        out.member, out.units = self._packed(self.member[keep], self.units[keep])
        return out

    def opened(self, types: list[int]) -> _Search | None:
        """This plan with one GPU more that holds piece types ``types`` (each at its entry of fewest units
        alone, shares by AllocGPU from there), or None where they do not fit on one GPU."""
        ent = self.ent
        entries = self.fewest_entry[np.asarray(types, np.int64)]
        kinds, counts = np.unique(entries, return_counts=True)
        if (counts > ent.copies[kinds]).any():
            return None
        width = max(self.member.shape[1], entries.size + 1)
        mem = np.full((1, width), -1, np.int64)
        mem[0, : entries.size] = entries
        live, least, cfg, const = self._tables(mem)
        ok, _, units = alloc_rows(self.terms, self.cap, cfg, least, const)
        if not ok[0]:
            return None
        member = np.full((self.member.shape[0] + 1, width), -1, np.int64)
        share = np.zeros(member.shape)
        member[:-1, : self.member.shape[1]], share[:-1, : self.member.shape[1]] = self.member, self.units
        member[-1], share[-1] = mem[0], np.where(live[0], units[0], 0.0)
        out = copy.copy(self)
        out.member, out.units = self._packed(member, share)
        return out

    def _tables(self, mem: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """For rows of entries ``mem`` (-1: empty): which slots are live, their fewest units alone, their
        ``ConfigTerms`` index at those units, and their kernel constants (AllocGPU's input)."""
        live = mem >= 0
        idx = np.where(live, mem, self.blank)
        return live, self.slot_units[idx], self.slot_cfg[idx], self.slot_const[idx]

    def _best(self, gpus: np.ndarray, drop: np.ndarray, entries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """AllocGPU on GPU ``gpus[r]`` with its member at position ``drop[r]`` (-1: none) replaced by, or else
        joined by, entry ``entries[r]``, from the members' current shares and from their least: per row
        whether either fits and the final units of the one of fewer units."""
        ent, terms = self.ent, self.terms
        r = gpus.size
        mem, cur = self.member[gpus].copy(), self.units[gpus].copy()
        pos = np.where(drop >= 0, drop, (mem >= 0).sum(axis=1))
        rows = np.arange(r)
        mem[rows, pos], cur[rows, pos] = entries, ent.units[entries]
        # members are at the front of each row: the empty columns all rows share are left out of AllocGPU
        # (the same sums: the model adds a row's slots left to right; 7 % more moves at H100 n = 200)
        full = mem.shape[1]
        w = int((mem >= 0).sum(axis=1).max(initial=1))
        mem, cur = mem[:, :w], cur[:, :w]
        live, least, cfg0, const = self._tables(mem)
        cur = np.where(live, np.maximum(cur, least), 0.0)
        cfg = np.concatenate([cfg0 + (cur - least).astype(np.int64), cfg0])
        ok, _, units = alloc_rows(terms, self.cap, cfg, np.concatenate([cur, least]), np.concatenate([const, const]))
        tot = np.where(ok, units.sum(axis=1), np.inf)
        second = tot[r:] < tot[:r]
        out = np.zeros((r, full))
        out[:, :w] = np.where(second[:, None], units[r:], units[:r])
        return ok[:r] | ok[r:], out

    def _candidates(self, t: int, eject: bool, tabu: dict[int, int], move: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(GPU, position replaced or -1, entry) of piece type ``t`` on every GPU with room, within its
        copies per GPU; with ``eject``, in place of each member that is not tabu."""
        ent, mem = self.ent, self.member
        live = mem >= 0
        piece = np.where(live, ent.piece[np.maximum(mem, 0)], -1)
        same = (piece == t).sum(axis=1)
        used = self.used()
        mine = self.by_type[t]
        if eject:
            banned = np.array([p for p, until in tabu.items() if until >= move], np.int64)
            g, pos = np.nonzero(live & ~np.isin(piece, banned))
            held = same[g] - (piece[g, pos] == t)
            room = used[g] - self.units[g, pos]
        else:
            g = np.arange(mem.shape[0])
            pos = np.full(g.size, -1)
            held, room = same, used
        fit = (held[:, None] < ent.copies[mine][None, :]) & (room[:, None] + ent.units[mine][None, :] <= self.cap)
        i, k = np.nonzero(fit)
        return g[i], pos[i], mine[k]

    def _apply(self, g: int, pos: int, e: int, units: np.ndarray) -> int | None:
        """GPU ``g`` with entry ``e`` in (at ``pos``, else added) and its new shares; the piece type taken out."""
        out = None
        if pos < 0:
            pos = int((self.member[g] >= 0).sum())
        else:
            out = int(self.ent.piece[self.member[g, pos]])
        self.member[g, pos] = e
        self.units[g] = np.where(self.member[g] >= 0, np.round(units[: self.member.shape[1]]), 0.0)
        if (self.member[:, -1] >= 0).any():  # keep an empty slot at the end
            self.member, self.units = self._packed(self.member, self.units)
        return out

    def place(self, t: int, tabu: dict[int, int], move: int) -> list[int]:
        """Piece type ``t`` onto a GPU: where it fits at least growth, else in a member's place; the piece
        types left to place after it (``[t]`` and a random member when it fits nowhere even so)."""
        used = self.used()
        g, d, e = self._candidates(t, False, tabu, move)
        if g.size:
            fits, units = self._best(g, d, e)
            ok = np.flatnonzero(fits)
            if ok.size:
                i = int(ok[np.argmin(units[ok].sum(axis=1) - used[g[ok]])])
                self._apply(int(g[i]), -1, int(e[i]), units[i])
                return []
        g, d, e = self._candidates(t, True, tabu, move)
        taken = self.ent.piece[self.member[g, d]]
        score = self.least[taken] + EJECT_NOISE_UNITS * self.noise.random(g.size)
        order = np.argsort(score, kind="stable")
        # The member of least score whose place fits: AllocGPU on the candidates a chunk at a time, in order of
        # score, so that the first chunk with a fit ends it (the same choice as judging every candidate); each
        # chunk twice the last, as where few places fit (H100 n = 1000) small chunks cost a call each
        lo, size = 0, EJECT_CHUNK
        while lo < order.size:
            idx = order[lo: lo + size]
            lo, size = lo + size, 2 * size
            fits, units = self._best(g[idx], d[idx], e[idx])
            ok = np.flatnonzero(fits)
            if ok.size:
                i, k = int(idx[ok[0]]), int(ok[0])
                tabu[t] = move + TABU_MOVES
                out = self._apply(int(g[i]), int(d[i]), int(e[i]), units[k])
                return [] if out is None else [out]
        # nowhere, not even in a member's place: shake the plan (a random member out)
        g0, pos = self._random_member()
        taken_e = int(self.member[g0, pos])
        self.member[g0, pos], self.units[g0, pos] = -1, 0.0
        self.member, self.units = self._packed(self.member, self.units)
        return [t, int(self.ent.piece[taken_e])]

    def _random_member(self) -> tuple[int, int]:
        g, pos = np.nonzero(self.member >= 0)
        i = self.rng.randrange(g.size)
        return int(g[i]), int(pos[i])

    def used(self) -> np.ndarray:
        """Share units per GPU."""
        return self.units.sum(axis=1)

    def slots(self) -> list[list[ColSlot]]:
        ent = self.ent
        out = []
        for mem, units in zip(self.member, self.units, strict=True):
            out.append([ColSlot(int(ent.piece[e]), int(ent.batch[e]), int(u),
                                None if np.isnan(ent.delay[e]) else float(ent.delay[e]))
                        for e, u in zip(mem, units, strict=True) if e >= 0])
        return out


def search_entries(space: PieceSpace, items: Items, terms: ConfigTerms, slots: list[list[ColSlot]]) -> tuple[
        Entries, list[list[int]]]:
    """Each piece type's entries at every batch its items offer (at the batch's fewest units alone), and
    those of the given slots where theirs is not one of them; and each slot's entry index."""
    ent = make_entries(space, items, terms, entry_items(items, spread_units=space.cap_units))
    index = {(int(p), int(b), None if np.isnan(d) else float(d)): i
             for i, (p, b, d) in enumerate(zip(ent.piece, ent.batch, ent.delay, strict=True))}
    missing = sorted({(s.piece, s.batch, s.delay) for g in slots for s in g} - index.keys(),
                     key=lambda k: (k[0], k[1], -1.0 if k[2] is None else k[2]))
    if missing:
        fewest: dict[tuple[int, int, float | None], int] = {}
        for s in (s for g in slots for s in g):
            key = (s.piece, s.batch, s.delay)
            fewest[key] = min(fewest.get(key, s.units), s.units)
        ent = ent.joined(_slot_entries(space, items, terms, missing, fewest))
        index.update({k: len(index) + i for i, k in enumerate(missing)})
    return ent, [[index[(s.piece, s.batch, s.delay)] for s in g] for g in slots]


def _slot_entries(space: PieceSpace, items: Items, terms: ConfigTerms, keys: list[tuple[int, int, float | None]],
                  units_of: dict[tuple[int, int, float | None], int]) -> Entries:
    """Entries for (piece type, batch, delay) triples no item offers, at the fewest units a slot of theirs has."""
    perf = space.problem.perf_model
    pa = space.piece_arrays
    piece = np.array([k[0] for k in keys], np.intp)
    batch = np.array([k[1] for k in keys], np.int64)
    delay = np.array([np.nan if k[2] is None else k[2] for k in keys])
    units = np.array([units_of[k] for k in keys], float)
    limit = space.rule.limit_ms(pa["slo"][piece], pa["rate"][piece], batch, delay)
    const = slot_constants(perf, pa["model"][piece], batch, limit, pa["rate"][piece])
    cfg = np.array([terms.index(int(pa["model"][p]), int(b), int(u)) for p, b, u in zip(piece, batch, units,
                                                                                        strict=True)], np.int64)
    copies = np.array([int(items.table.copies[items.by_piece[p]].max()) if items.by_piece[p].size else 1
                       for p in piece], np.int64)
    return Entries(piece, batch, units, delay, cfg, const, copies)


def search_of(space: PieceSpace, items: Items, terms: ConfigTerms, gpus: list[list[ColSlot]],
              rng: random.Random) -> _Search:
    """The search's arrays of a plan (each GPU's slots)."""
    ent, member = search_entries(space, items, terms, gpus)
    width = max(len(m) for m in member)
    return _Search(space, terms, ent, np.array([m + [-1] * (width - len(m)) for m in member], np.int64),
                   np.array([[s.units for s in g] + [0] * (width - len(g)) for g in gpus], float), rng)


def eject_search(space: PieceSpace, items: Items, terms: ConfigTerms, gpus: list[list[ColSlot]], floor: int,
                 deadline: float, seed: int = 0, raised_floor: Callable[[], int] | None = None) -> EjectResult:
    """Plans with fewer GPUs than ``gpus`` (each GPU's slots, every one a fitting configuration), one GPU
    fewer at a time, until ``floor`` GPUs (a lower bound: no plan has fewer; ``raised_floor``, where given, is
    asked for a higher one at each GPU it tries to empty and every ``FLOOR_POLL_MOVES`` moves) or ``deadline``
    (``time.perf_counter()`` seconds). The best found, each GPU the column ``columns.evaluate`` made of it, or
    None; seeded, so a run is repeatable up to where the deadline (or a raised floor) cuts it.

    A try that cannot empty its GPU within ``MOVES_PER_TRY`` moves still leaves the plan changed, with the
    pieces it could not place left over; where those fit on one GPU of fewer share units than the plan's
    lightest, that plan (as many GPUs, the slack gathered on one) is the one the search goes on from."""
    t0 = time.perf_counter()
    gpus = [list(g) for g in gpus if g]
    if len(gpus) <= max(floor, 1):
        return EjectResult(None, 0, 0, time.perf_counter() - t0)
    rng = random.Random(seed)
    current = search_of(space, items, terms, gpus, rng)
    ent = current.ent
    best: list[Column] | None = None
    emptied = moves = regathered = 0
    found_s = None
    tried: set[tuple] = set()
    while time.perf_counter() < deadline:
        if raised_floor is not None:
            floor = max(floor, raised_floor())
        if len(current.member) <= max(floor, 1):
            break
        now = current.slots()
        used = current.used()
        order = sorted(range(len(now)), key=lambda g: (used[g], g))
        fresh = [g for g in order if column_key(now[g]) not in tried]
        if not fresh:
            break
        g_out = fresh[0]
        tried.add(column_key(now[g_out]))
        trial = current.without(g_out)
        pool = [int(ent.piece[e]) for e in current.member[g_out] if e >= 0]
        tabu: dict[int, int] = {}
        for _ in range(MOVES_PER_TRY):
            if not pool or time.perf_counter() >= deadline:
                break
            moves += 1
            if raised_floor is not None and moves % FLOOR_POLL_MOVES == 0:
                floor = max(floor, raised_floor())
                if len(trial.member) < floor:  # the plan in hand is at a floor raised meanwhile
                    break
            pool.sort(key=lambda t: -trial.least[t])
            t = pool.pop(0) if rng.random() < LARGEST_FIRST else pool.pop(rng.randrange(len(pool)))
            pool.extend(trial.place(t, tabu, moves))
        if len(trial.member) < floor:
            break
        if pool:
            # Same GPUs, but the slack gathered on one of them: a step on, where its share units fall below
            # the plan's lightest GPU (so the search cannot cycle)
            lighter = trial.opened(pool)
            if lighter is not None and lighter.used().min() < current.used().min():
                current, tried = lighter, set()
                regathered += 1
            continue
        judged = evaluate(space, trial.slots())
        found = [c for c in judged if c is not None]
        if len(found) < len(judged):
            continue  # AllocGPU and the kernel's one test agree by construction; never trusted blindly
        best, current, tried = found, trial, set()
        emptied += 1
        found_s = time.perf_counter() - t0
    return EjectResult(best, emptied, moves, time.perf_counter() - t0, found_s, regathered)


def eject_text(runs: list[EjectResult]) -> str:
    """What the ejection searches did, for the plan's note."""
    if not runs:
        return "no ejection search"
    found = sum(1 for r in runs if r.gpus is not None)
    return (f"{len(runs)} ejection search(es) in {math.fsum(r.seconds for r in runs):.1f} s "
            f"({sum(r.moves for r in runs)} moves, {sum(r.emptied for r in runs)} GPU(s) emptied, "
            f"{sum(r.regathered for r in runs)} time(s) the slack gathered on one GPU, {found} found a better plan)")
