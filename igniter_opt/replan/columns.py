"""Replanning over columns: the exact planner's set-partitioning machinery, with running GPUs as anchors.

1. Piece types and columns of the new workloads as the exact planner makes them (``planner.exact.colgen``):
   each workload's split options at its new rate (k equal replicas, from the fewest that can serve it,
   and the greedy split), so a workload may be re-split into more or fewer servers than it runs with;
   column generation from the from-scratch greedy plan for ``GENERATE_SHARE`` of the time limit, which
   also certifies a lower bound on the GPUs any plan over those options needs.
2. Anchored columns (``anchored_columns``), per running GPU g: its running servers that still fit as
   pieces of their workloads at the new rates, at their running batch, share and queue delay (each
   the piece type of the largest rate the kernel accepts beside the ones already kept), alone and then
   filled with more pieces in order of dual worth per share unit while the kernel accepts them
   (``fill``; the kept shares never change). An anchored column runs on g's id, so its kept servers
   are not restarted.
3. The integer master (price and branch), in GPUs of price 1 with C' = C / price:

       min  sum_free y_p + sum_{a anchored} (1 - C' kept_a) y_a   (+ C' x running servers, a constant)

   with the exact master's piece rows and option rows, and sum_{a anchored on g} y_a <= 1 per
   running GPU g. It starts from the from-scratch greedy plan (always feasible there).
4. The greedy replan is the fall-back and the yardstick: the plan returned is the better of the
   two under (cost + C x changes, changes, total share), both verified by the kernel.

The bound is price x the certified GPU bound: changes cost >= 0, so it bounds cost + C x changes
over plans that serve each workload by one of its split options (``pieces.scope_text``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from igniter_opt.domain import Plan
from igniter_opt.placement import Packing, assemble_plan, verify_plan
from igniter_opt.placement.serving import serving_model_for
from igniter_opt.planner.exact import greedy_instead, highs_or_fallback
from igniter_opt.planner.exact.colgen import (
    ColgenSetup,
    ColgenState,
    certified_gpus,
    collect_proof,
    generate,
    initial_master,
    packing_with_sources,
    prepare_colgen,
    proofs_on_a_second_core,
    start_pieces,
)
from igniter_opt.planner.exact.columns import ColSlot, Column, evaluate
from igniter_opt.planner.exact.items import PreparationTimedOut
from igniter_opt.planner.exact.lp import RunResult, f64, int32, master_limit_s
from igniter_opt.planner.exact.master import IntegerSolution, solve_integer_master
from igniter_opt.planner.exact.pieces import scope_text
from igniter_opt.replan import greedy as rgreedy
from igniter_opt.replan.diff import SHARE_TOL_PCT, fresh_gpu_ids
from igniter_opt.replan.exact import TIE_BREAK_FRACTION, share_units
from igniter_opt.replan.problem import ReplanProblem
from igniter_opt.solver import SolveOptions, SolveOutcome, SolveStatus, bound_status, relative_gap

PLANNER_NAME = "columns"
# Share of the time limit column generation may use; the integer master gets what is left.
GENERATE_SHARE = 0.5
# Seconds kept at the end for turning the solution into a verified plan.
EXTRACT_RESERVE_S = 0.3
# Share of the time left after generation that building the anchored columns may take.
ANCHOR_SHARE = 0.5
# Pieces ``fill`` tries per round (the best by dual worth per unit), and rounds at most.
FILL_CANDIDATES = 64
FILL_ROUNDS = 12


@dataclass(frozen=True)
class Anchored:
    """A column that runs on the running GPU ``gpu_id`` and keeps its running servers ``kept_slots``."""

    gpu_id: str
    column: Column
    kept_slots: tuple[ColSlot, ...]

    @property
    def kept(self) -> int:
        return len(self.kept_slots)


def kept_slots(setup: ColgenSetup, rp: ReplanProblem, gpu_index: int) -> list[ColSlot]:
    """The running servers of GPU ``gpu_index`` that still fit at the new rates, as column slots: each
    at its running batch, share and queue delay, as the piece type of its workload of the largest
    rate the kernel accepts beside those kept before it."""
    index = {w.name: i for i, w in enumerate(rp.problem.workloads)}
    unit = rp.perf_model.unit_pct
    slots: list[ColSlot] = []
    for p in rp.current.gpus[gpu_index].placements:
        w = index.get(p.workload)
        units, exact = share_units(p.share_pct, unit)
        if w is None or rp.problem.workloads[w].model != p.model or not exact:
            continue
        types = sorted((t for t, pt in enumerate(setup.pieces) if pt.workload == w),
                       key=lambda t: -setup.pieces[t].rate_rps)
        for t in types:
            if sum(s.piece == t for s in slots) >= setup.pieces[t].count:
                continue
            trial = [*slots, ColSlot(t, p.batch, units, p.queue_delay_ms)]
            if evaluate(setup.space, [trial])[0] is not None:
                slots = trial
                break
    return slots


def fill(setup: ColgenSetup, slots: list[ColSlot], duals: np.ndarray) -> list[ColSlot]:
    """``slots`` with pieces added one at a time, the best accepted by dual worth per unit first (each an
    entry of ``colgen``'s heuristic at its own batch, share and delay); the slots given never change."""
    ent = setup.entries
    worth = duals[ent.piece]
    order = np.argsort(-(worth / ent.units), kind="stable")
    order = order[worth[order] > 1e-12]
    for _ in range(FILL_ROUNDS):
        held = {t: sum(s.piece == t for s in slots) for t in {s.piece for s in slots}}
        cands = [int(e) for e in order if held.get(int(ent.piece[e]), 0) < setup.pieces[int(ent.piece[e])].count]
        cands = cands[:FILL_CANDIDATES]
        trials = [[*slots, ColSlot(int(ent.piece[e]), int(ent.batch[e]), int(ent.units[e]),
                                   None if np.isnan(ent.delay[e]) else float(ent.delay[e]))] for e in cands]
        ok = [i for i, c in enumerate(evaluate(setup.space, trials)) if c is not None]
        if not ok:
            break
        slots = trials[ok[0]]  # candidates come in order of worth per unit
    return slots


def anchored_columns(setup: ColgenSetup, rp: ReplanProblem, duals: np.ndarray, deadline: float = math.inf
                     ) -> list[Anchored]:
    """Per running GPU with a server still fitting: its kept servers, each subset that gives one of them
    up, and each alone, as they are and filled (``fill``); those of the GPUs reached by ``deadline``
    (``time.perf_counter()`` seconds; a GPU not reached keeps only its start column, ``start_columns``)."""
    out: list[Anchored] = []
    for g, gpu in enumerate(rp.current.gpus):
        if time.perf_counter() > deadline:
            break
        kept = kept_slots(setup, rp, g)
        if not kept:
            continue
        # all kept, each kept server given up in turn (room for others), and each kept alone; each filled
        subsets = [kept]
        if len(kept) > 1:
            subsets += [kept[:i] + kept[i + 1:] for i in range(len(kept))] + [[k] for k in kept]
        for keep in subsets:
            for slots in {tuple(keep), tuple(fill(setup, keep, duals))}:
                col = evaluate(setup.space, [list(slots)])[0]
                if col is not None:
                    out.append(Anchored(gpu.gpu_id, col, tuple(keep)))
    return out


@dataclass(frozen=True)
class _Master:
    """The generated columns, then the anchored ones, in one HiGHS model (see the module docstring)."""

    setup: ColgenSetup
    state: ColgenState
    anchored: list[Anchored]
    change_cost: float  # C' = C / price

    @property
    def columns(self) -> list[Column]:
        return [*self.state.master.columns, *(a.column for a in self.anchored)]

    def cost(self, counts: dict[int, int]) -> float:
        free = len(self.state.master.columns)
        return sum(n * (1.0 if j < free else 1.0 - self.change_cost * self.anchored[j - free].kept)
                   for j, n in counts.items())


def build_master(setup: ColgenSetup, state: ColgenState, anchored: list[Anchored], change_cost: float) -> _Master:
    """Add the anchored columns (cost 1 - C' kept, at most 1) and their rows: at most one per running GPU,
    each only with the split option of its kept servers, and no more kept servers of a piece type than
    its option needs (so what the master credits as kept is kept, unless a filled piece of an anchored
    column takes a kept server's place when the plan is trimmed; the plan's objective is recomputed)."""
    master = state.master
    h = master.h
    first = master.offset + len(master.columns)
    for a in anchored:
        idx = [p for p, _ in a.column.coef]
        val = [v for _, v in a.column.coef]
        h.addCols(1, f64([1.0 - change_cost * a.kept]), f64([0.0]), f64([1.0]), len(idx), int32([0]), int32(idx),
                  f64(val))
    inf = h.getInfinity()
    by_gpu: dict[str, list[int]] = {}
    kept_of: dict[int, list[tuple[int, int]]] = {}  # piece type -> (column, kept pieces of it)
    z_of = {wo: k for k, wo in enumerate(master.options)}
    for k, a in enumerate(anchored):
        col = first + k
        by_gpu.setdefault(a.gpu_id, []).append(col)
        for t in {s.piece for s in a.kept_slots}:
            kept_of.setdefault(t, []).append((col, sum(s.piece == t for s in a.kept_slots)))
            pt = setup.pieces[t]  # y_a <= z_{w,o}: it keeps its servers only as the option chosen
            h.addRows(1, f64([-inf]), f64([0.0]), 2, int32([0]), int32([col, z_of[(pt.workload, pt.option)]]),
                      f64([1.0, -1.0]))
    for cols in by_gpu.values():  # at most one column per running GPU
        h.addRows(1, f64([-inf]), f64([1.0]), len(cols), int32([0]), int32(cols), f64([1.0] * len(cols)))
    for t, uses in kept_of.items():  # kept servers of a piece type: no more than the option needs
        h.addRows(1, f64([-inf]), f64([float(setup.pieces[t].count)]), len(uses), int32([0]),
                  int32([c for c, _ in uses]), f64([float(n) for _, n in uses]))
    return _Master(setup, state, anchored, change_cost)


def _plan(rp: ReplanProblem, m: _Master, sol: IntegerSolution) -> Plan | None:
    """The integer master's solution as a verified plan (anchored GPUs keep their ids), or None."""
    free = len(m.state.master.columns)
    found = packing_with_sources(m.setup, m.columns, sol.counts, sol.chosen,
                                 first=frozenset(j for j in sol.counts if j >= free))
    if found is None:
        return None
    packing, sources = found
    fresh = iter(fresh_gpu_ids({g.gpu_id for g in rp.current.gpus}, sum(j < free for j in sources)))
    ids = [next(fresh) if j < free else m.anchored[j - free].gpu_id for j in sources]
    plan = assemble_plan(rp.problem, packing, PLANNER_NAME, SolveOutcome(SolveStatus.FEASIBLE), gpu_ids=ids)
    return None if verify_plan(plan, rp.problem) else plan


def start_columns(setup: ColgenSetup, rp: ReplanProblem, start: Packing) -> tuple[list[Anchored], list[Column]]:
    """The greedy replan's GPUs as columns: anchored on their running GPU (keeping the running servers
    they run unchanged), or free for its new GPUs. A GPU with a server of a share that is not a whole
    number of units (not a plan igniter-opt made) is left out."""
    piece_of, _ = start_pieces(rp.problem, setup.pieces, start)
    unit = rp.perf_model.unit_pct
    running = {g.gpu_id: list(g.placements) for g in rp.current.gpus}
    anchored: list[Anchored] = []
    free: list[Column] = []
    for gpu in start.gpus:
        slots, kept = [], []
        left = list(running.get(gpu.gpu_id or "", []))
        for sl in gpu.slots:
            units, whole = share_units(sl.share_pct(unit), unit)
            if sl.demand not in piece_of or not whole:
                break
            slot = ColSlot(piece_of[sl.demand], sl.batch, units, sl.queue_delay_ms)
            slots.append(slot)
            name = start.demands[sl.demand].workload.name
            same = next((p for p in left if p.workload == name and p.batch == sl.batch
                         and abs(p.share_pct - sl.share_pct(unit)) <= SHARE_TOL_PCT), None)
            if same is not None:
                left.remove(same)
                kept.append(slot)
        else:
            col = evaluate(setup.space, [slots])[0]
            if col is None:
                continue
            if kept:
                anchored.append(Anchored(str(gpu.gpu_id), col, tuple(kept)))
            else:
                free.append(col)
    return anchored, free


def solve(rp: ReplanProblem, options: SolveOptions | None = None) -> Plan:
    """Replan over columns (see the module docstring)."""
    options = options or SolveOptions()
    t0 = options.started()
    deadline = t0 + options.time_limit_s - EXTRACT_RESERVE_S
    missing = highs_or_fallback(options)
    cost_c = options.migration_cost
    result = rgreedy.replan_greedy(rp, cost_c)
    gplan = rgreedy.to_plan(rp, result, PLANNER_NAME, SolveOutcome(SolveStatus.HEURISTIC))
    key = partial(rgreedy.replan_rank, current=rp.current, migration_cost=cost_c)
    if missing is not None:
        return greedy_instead(gplan, PLANNER_NAME, missing, key(gplan)[0], time.perf_counter() - t0)
    if not rp.problem.workloads or verify_plan(gplan, rp.problem):
        why = "no workloads: every placement stopped" if not rp.problem.workloads else \
            "the greedy replan violates the exact model, so column generation has no start"
        return replace(gplan, solver=SolveOutcome(SolveStatus.FEASIBLE if rp.problem.workloads else SolveStatus.OPTIMAL,
                                                  objective=key(gplan)[0], wall_s=time.perf_counter() - t0,
                                                  message=why))
    price = rp.perf_model.hardware.price_per_gpu_hour
    try:
        setup = prepare_colgen(rp.problem, serving_model_for(rp.problem), result.packing, deadline)
    except PreparationTimedOut as out:
        bound = None if out.trivial_gpus is None else price * out.trivial_gpus
        obj = key(gplan)[0]
        return replace(gplan, solver=SolveOutcome(
            bound_status(obj, bound), objective=obj, bound=bound, gap=relative_gap(obj, bound),
            wall_s=time.perf_counter() - t0, solver_name="highs",
            message=f"the greedy replan: the time limit ({options.time_limit_s:g} s) came while preparing column "
                    "generation; a longer limit lets it run"))
    state = ColgenState(initial_master(setup, options.threads))
    until = t0 + GENERATE_SHARE * options.time_limit_s
    with proofs_on_a_second_core(setup, state, options.time_limit_s, options.threads, until):
        generate(setup, state, until, None, options.threads)
        collect_proof(setup, state)  # a round that ended since the last LP
    lp = state.master.solve_lp(max(0.1, deadline - time.perf_counter()))
    kept_start, free_start = start_columns(setup, rp, result.packing)
    # anchored columns get half of the time left; the integer master the rest
    anchor_until = time.perf_counter() + ANCHOR_SHARE * max(0.0, deadline - time.perf_counter())
    anchored = _unique([*kept_start, *anchored_columns(setup, rp, lp.duals, anchor_until)])
    # at cost 0 a change is still priced, low enough that all of them cost less than a GPU: it breaks ties
    n_old = len(rp.current.placements())
    m = build_master(setup, state, anchored, max(cost_c, TIE_BREAK_FRACTION * price / (n_old + 1)) / price)
    start = _start(m, kept_start, free_start)
    master_s = master_limit_s(deadline)
    sol = (solve_integer_master(state.master.h, state.master.options, options.threads, master_s, start,
                                setup.start_choice, options.mip_rel_gap, m.cost)
           if master_s is not None else IntegerSolution(RunResult("not run", None, None, False), {}, {},
                                                        note="no time left for the integer master"))
    found = _plan(rp, m, sol) if sol.counts else None
    plan = found if found is not None and key(found) < key(gplan) else gplan
    obj, changes = rgreedy.migration_objective(plan, rp.current, cost_c)
    bound = price * certified_gpus(setup, state)
    status = bound_status(obj, bound)
    source = ("the integer master over columns" if plan is found
              else "the greedy replan (the master over columns found nothing better)")
    notes = [f"{source}; {changes} of {n_old} running placement(s) changed, objective {plan.cost_per_hour:g}/h + "
             f"{cost_c:g} x {changes}",
             f"{len(state.master.columns)} generated and {len(anchored)} anchored column(s)",
             scope_text(rp.problem) + ", the greedy replan's split among the options (the GPU bound of column "
             "generation x the price; changes cost >= 0)"]
    if sol.note:
        notes.append(sol.note)
    info = SolveOutcome(status, objective=obj, bound=bound, gap=relative_gap(obj, bound),
                        wall_s=time.perf_counter() - t0, message="; ".join(notes), solver_name="highs")
    return replace(plan, planner=PLANNER_NAME, solver=info)


def _start(m: _Master, kept_start: list[Anchored], free_start: list[Column]) -> dict[int, int]:
    """The greedy replan as GPUs per column of the master: its new GPUs' columns (in the master since
    ``initial_columns``) and its running GPUs' anchored ones."""
    master = m.state.master
    start: dict[int, int] = {}
    for col in free_start:
        j = master.keys.get(col.slots)
        if j is not None:
            start[j] = start.get(j, 0) + 1
    first = len(master.columns)  # the anchored columns follow the generated ones
    start.update({first + k: 1 for k, a in enumerate(m.anchored) if a in kept_start})
    return start


def _unique(anchored: list[Anchored]) -> list[Anchored]:
    """Each (running GPU, configuration) once, the first kept."""
    seen: set[tuple[str, tuple[ColSlot, ...]]] = set()
    out = []
    for a in anchored:
        if (a.gpu_id, a.column.slots) not in seen:
            seen.add((a.gpu_id, a.column.slots))
            out.append(a)
    return out
