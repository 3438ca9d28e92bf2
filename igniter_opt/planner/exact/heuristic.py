"""Heuristic pricing with the placement kernel: grow GPU configurations by dual worth per share.

Each piece type enters a configuration with one of its *entries*: at a batch, its item needing the
fewest units alone (``entry_items``). From several seeds at once, every step tries every candidate piece on
every configuration with the kernel's AllocGPU (``placement.alloc.alloc_rows``: violators get one
more share unit until none violates), and keeps, per configuration, the candidate that adds the
most dual worth per unit of share it costs (raises of the others included). Fast and exact in
what it accepts (the kernel decides), but a heuristic: it proves nothing; ``pricing.price_mip``
does.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields

import numpy as np

from igniter_opt.placement.alloc import ConfigTerms, RowRace, alloc_rows, blank_constants, slot_constants
from igniter_opt.planner.exact.columns import ColSlot, PieceSpace
from igniter_opt.planner.exact.items import Items

# A piece type also enters at every batch whose fewest units alone are within this many units of
# its fewest (a larger batch can need a little more share alone and much less next to others).
ENTRY_SPREAD_UNITS = 3


@dataclass(frozen=True)
class Entries:
    """Per piece type: how it enters a heuristic configuration."""

    piece: np.ndarray
    batch: np.ndarray
    units: np.ndarray
    delay: np.ndarray  # NaN: apply's rule
    cfg: np.ndarray  # ConfigTerms index at ``units``
    const: np.ndarray  # kernel slot constants, (n, len(FIELDS))
    copies: np.ndarray  # most placements of it per configuration

    def joined(self, other: Entries) -> Entries:
        """These entries, then ``other``'s (their indices shifted by ``len(self.piece)``)."""
        return Entries(**{f.name: np.concatenate([getattr(self, f.name), getattr(other, f.name)])
                          for f in fields(self)})


def entry_items(items: Items, spread_units: int = ENTRY_SPREAD_UNITS) -> np.ndarray:
    """Per piece type and batch, its item needing the fewest units alone, for the batches whose
    fewest units are within ``spread_units`` of the piece type's fewest (ordered by piece, units)."""
    tab = items.table
    out = []
    for idx in items.by_piece:
        order = idx[np.lexsort((tab.units[idx], tab.batch[idx]))]
        first = order[np.r_[True, tab.batch[order][1:] != tab.batch[order][:-1]]]  # per batch, fewest units
        best = int(tab.units[first].min())
        keep = first[tab.units[first] <= best + spread_units]
        out.extend(keep[np.lexsort((tab.batch[keep], tab.units[keep]))])
    return np.array(out, np.intp)


def make_entries(space: PieceSpace, items: Items, terms: ConfigTerms, item_idx: np.ndarray | None = None) -> Entries:
    """Each piece type's entries (see ``entry_items``; or the items ``item_idx``) with their kernel constants."""
    perf = space.problem.perf_model
    tab = items.table
    j = entry_items(items) if item_idx is None else np.asarray(item_idx, np.intp)
    piece = tab.piece[j]
    const = slot_constants(perf, tab.model[j], tab.batch[j], tab.limit[j], space.piece_arrays["rate"][piece])
    cfg = np.array([terms.index(int(m), int(b), int(u)) for m, b, u in zip(tab.model[j], tab.batch[j], tab.units[j],
                                                                          strict=True)], np.int64)
    return Entries(piece, tab.batch[j], tab.units[j], tab.delay[j], cfg, const, tab.copies[j].astype(np.int64))


@dataclass
class _States:
    """Configurations being grown, as kernel rows (one per configuration)."""

    cfg: np.ndarray
    units: np.ndarray
    const: np.ndarray
    member: np.ndarray  # entry index per slot, -1: empty
    count: np.ndarray  # slots used per configuration
    done: np.ndarray


def _seed(ent: Entries, terms: ConfigTerms, seeds: np.ndarray, width: int) -> _States:
    """States holding the seeds: ``seeds`` (configurations, members) of entry indices."""
    s, m = seeds.shape
    st = _States(np.full((s, width), terms.empty, np.int64), np.zeros((s, width)), blank_constants((s, width)),
                 np.full((s, width), -1, np.int64), np.full(s, m, np.int64), np.zeros(s, bool))
    st.cfg[:, :m], st.units[:, :m], st.const[:, :m], st.member[:, :m] = ent.cfg[seeds], ent.units[seeds], \
        ent.const[seeds], seeds
    return st


# The most members a configuration is grown to (a seed with more stays as it is).
GROW_WIDTH = 24


def ranked_entries(ent: Entries, duals: np.ndarray) -> np.ndarray:
    """The entries worth anything at ``duals``, by dual worth per unit of share (most first)."""
    worth = duals[ent.piece]
    useful = np.flatnonzero(worth > 1e-12)
    return useful[np.argsort(-(worth[useful] / ent.units[useful]), kind="stable")]


def grow(space: PieceSpace, ent: Entries, terms: ConfigTerms, duals: np.ndarray, n_seeds: int = 32,
         n_candidates: int = 256, width: int = GROW_WIDTH, deadline: float = math.inf) -> list[list[ColSlot]]:
    """Configurations grown from the ``n_seeds`` entries of highest dual worth per unit (see ``extend``)."""
    ranked = ranked_entries(ent, duals)
    if ranked.size == 0:
        return []
    worth = duals[ent.piece]
    by_worth = ranked[np.argsort(-worth[ranked], kind="stable")]
    seeds = np.unique(np.concatenate([ranked[:n_seeds], by_worth[: n_seeds // 2]]))
    return extend(space, ent, terms, duals, seeds[:, None], ranked[:n_candidates], width, deadline)


def extend(space: PieceSpace, ent: Entries, terms: ConfigTerms, duals: np.ndarray, seeds: np.ndarray,
           candidates: np.ndarray, width: int = GROW_WIDTH, deadline: float = math.inf) -> list[list[ColSlot]]:
    """Each seed (a row of ``seeds``: entry indices that fit together) grown one candidate entry at a
    time, the one adding most dual worth per unit of share it costs, while one fits, up to ``width``
    members (a seed of more is kept as it is: box pricing's can be wider); as grown by ``deadline``
    (``time.perf_counter()`` seconds) if it comes first (every step's configurations fit)."""
    if seeds.size == 0:
        return []
    worth = duals[ent.piece]
    st = _seed(ent, terms, seeds, max(width, seeds.shape[1]))
    cap = space.cap_units
    while not st.done.all() and time.perf_counter() < deadline:
        live = np.flatnonzero(~st.done & (st.count < width))
        if live.size == 0:
            break
        _step(st, live, ent, terms, worth, candidates, cap)
    return [_slots(ent, st, r) for r in range(seeds.shape[0])]


def _step(st: _States, live: np.ndarray, ent: Entries, terms: ConfigTerms, worth: np.ndarray, cands: np.ndarray,
          cap: int) -> None:
    """Add to each live configuration its best candidate, or mark it done."""
    members = st.member[live]
    n_types = int(ent.piece.max(initial=0)) + 1
    # (live, cands): members of the candidate's piece type the configuration holds, by one count per type
    row = np.repeat(np.arange(live.size), members.shape[1])
    mine = members.ravel() >= 0
    held_of_type = np.bincount(row[mine] * n_types + ent.piece[members.ravel()[mine]],
                               minlength=live.size * n_types).reshape(live.size, n_types)
    held = held_of_type[:, ent.piece[cands]]
    pair_s, pair_c = np.nonzero(held < ent.copies[cands][None, :])
    rows_s, rows_e = live[pair_s], cands[pair_c]
    if rows_s.size == 0:
        st.done[live] = True
        return
    used = st.units[rows_s].sum(axis=1)
    room = used + ent.units[rows_e] <= cap
    rows_s, rows_e, used = rows_s[room], rows_e[room], used[room]
    w = int(st.count[rows_s].max()) + 1 if rows_s.size else 1
    cfg, units, const = st.cfg[rows_s, :w].copy(), st.units[rows_s, :w].copy(), st.const[rows_s, :w].copy()
    pos = st.count[rows_s]
    ar = np.arange(rows_s.size)
    cfg[ar, pos], units[ar, pos], const[ar, pos] = ent.cfg[rows_e], ent.units[rows_e], ent.const[rows_e]
    # each live configuration takes its best candidate only: the others are given up once they cannot be it
    race = RowRace(rows_s, worth[rows_e], used)
    ok, cfg_f, units_f = (alloc_rows(terms, cap, cfg, units, const, race=race) if rows_s.size
                          else (np.zeros(0, bool),) * 3)
    score = np.where(ok, worth[rows_e] / np.maximum(units_f.sum(axis=1) - used, 1e-9) if rows_s.size else 0, -1.0)
    for s in live:
        mine = np.flatnonzero(rows_s == s)
        if mine.size == 0 or score[mine].max() <= 0:
            st.done[s] = True
            continue
        r = mine[np.argmax(score[mine])]
        c = st.count[s]
        st.cfg[s, :w], st.units[s, :w] = cfg_f[r], units_f[r]
        st.const[s, c], st.member[s, c] = ent.const[rows_e[r]], rows_e[r]
        st.count[s] += 1


def _slots(ent: Entries, st: _States, r: int) -> list[ColSlot]:
    out = []
    for j in range(int(st.count[r])):
        e = int(st.member[r, j])
        d = float(ent.delay[e])
        units = int(round(st.units[r, j]))
        out.append(ColSlot(int(ent.piece[e]), int(ent.batch[e]), units, None if np.isnan(d) else d))
    return out

