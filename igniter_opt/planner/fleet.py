"""Greedy planning over a fleet of GPU types with prices (issue 15).

The paper's greedy plans one GPU type. Over a fleet, each workload is given a type, and each type's
workloads are planned by the single-type planner (greedy by default) on that type's profile, so
every part is an ordinary plan verified by the kernel under its own performance model. The
assignment is chosen in three steps (docs/fleet.md; `benchmarks/fleet.py` measures them):

1. **Candidates**: every type alone (all workloads on it, where it can serve them all), each
   workload on the type where it is cheapest alone (price x the share its single-type plan needs),
   and, with count limits, that assignment repaired: workloads moved off a type over its limit,
   the least rise in solo cost first.
2. **Keep the best** candidate by (GPUs over a count limit, cost per hour, price-weighted share).
3. **Local search** from every candidate: move one workload to another type, re-plan the two types,
   keep the move when the price-weighted share falls (the GPU count only changes when a GPU
   empties, so single moves are guided by the share); the best assignment met by key wins.
   Repeat until no move helps (or ``MAX_PASSES``).

The search plans parts with greedy and is a heuristic. With ``--planner exact`` the fleet is then
planned as one set-partitioning problem from the search's plan (``planner.exact.fleetplan``: a column
per GPU type and configuration, prices, count limits), and the plan carries a certified lower bound on
the cost of any plan that serves each workload on one type (the larger of that master's and the share
relaxation's, ``fleet_bound``), a gap, and ``optimal`` when the two meet. With another planner (ffd,
gpulet) each chosen type's part is planned again with it and kept where it is no worse.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from igniter_opt.domain import Plan, Workload
from igniter_opt.errors import IgniterOptError, PlanError, ProblemError
from igniter_opt.fleet import FLEET_PLAN_SCHEMA, Fleet, FleetType
from igniter_opt.problems import BudgetChoice, make_problem
from igniter_opt.solver import SolveOptions, SolveStatus, relative_gap

log = logging.getLogger(__name__)

MAX_PASSES = 3
# Share of the time limit the search may take when another planner follows it.
SEARCH_SHARE = 0.25
# A part is planned again by the exact planner only with at least this many seconds of the limit left.
MIN_PART_S = 1.0
# Relative tolerance at which a fleet plan's cost meets its bound (float noise in prices).
COST_TOLERANCE = 1e-9


@dataclass(frozen=True)
class FleetPart:
    """The workloads given to one GPU type, planned on it."""

    gpu_type: FleetType
    plan: Plan


@dataclass(frozen=True)
class FleetBound:
    """A certified lower bound on the cost per hour of any plan in ``scope``, and the GPUs per type
    of the relaxation that attains it (not a plan)."""

    cost_per_hour: float
    gpus_by_type: dict[str, int]
    scope: str


@dataclass(frozen=True)
class FleetPlan:
    """A plan over several GPU types: one single-type plan per type used (and, from the exact
    planner, a certified bound on the cost)."""

    parts: tuple[FleetPart, ...]
    planner: str
    wall_s: float = 0.0
    bound: FleetBound | None = None
    unserved: tuple[str, ...] = ()  # workloads left out because no type can serve them (when asked)
    notes: tuple[str, ...] = ()  # what the planner had to give up (time)

    @property
    def status(self) -> SolveStatus:
        """``optimal`` when the bound meets the cost, ``feasible`` with a bound short of it, else
        ``heuristic`` (no bound)."""
        if self.bound is None:
            return SolveStatus.HEURISTIC
        met = self.bound.cost_per_hour >= self.cost_per_hour * (1 - COST_TOLERANCE)
        return SolveStatus.OPTIMAL if met else SolveStatus.FEASIBLE

    @property
    def gap(self) -> float | None:
        return None if self.bound is None else relative_gap(self.cost_per_hour, self.bound.cost_per_hour)

    @property
    def cost_per_hour(self) -> float:
        return sum(p.plan.num_gpus * p.gpu_type.price_per_gpu_hour for p in self.parts)

    @property
    def num_gpus(self) -> int:
        return sum(p.plan.num_gpus for p in self.parts)

    @property
    def total_share_pct(self) -> float:
        return sum(p.plan.total_share_pct for p in self.parts)

    def gpus_by_type(self) -> dict[str, int]:
        return {p.gpu_type.name: p.plan.num_gpus for p in self.parts}


class PartPlans:
    """Plans one type's workloads when called (memoised): the part's plan, or None when that type cannot
    serve one of them. ``solo_share`` gives a workload's share alone on a type without assembling that plan."""

    def __init__(self, fleet: Fleet, choice: BudgetChoice, planner: str, options: SolveOptions) -> None:
        self.fleet, self.choice, self.planner, self.options = fleet, choice, planner, options
        self._plans: dict[tuple[int, tuple[Workload, ...]], Plan | None] = {}
        self._checked: set[tuple[int, Workload]] = set()  # workloads that passed the problem checks on a type

    def __call__(self, t: int, ws: tuple[Workload, ...]) -> Plan | None:
        from igniter_opt.planner import run_planner

        key = (t, ws)
        if key not in self._plans:
            # the problem checks are per workload: members that passed them on this type need not again
            checked = all((t, w) in self._checked for w in ws)
            try:
                out = run_planner(make_problem(ws, self.fleet.models[t], self.choice), self.planner, self.options,
                                  checked=checked)
                self._plans[key] = None if out.violations else out.plan
            except IgniterOptError:  # a model the type's profile lacks, an SLO it cannot meet, ...
                self._plans[key] = None
            if len(ws) == 1 and self._plans[key] is not None:
                self._checked.add((t, ws[0]))
        return self._plans[key]

    def solo_share(self, t: int, w: Workload) -> float | None:
        """The total share (%) of ``w`` planned alone on type ``t`` (None: the type cannot serve it). For
        the greedy planner its packing's shares, the plan not assembled: at 1000 workloads over two types
        assembling the 2000 plans took half of the 4.2 s the solo plans took."""
        from igniter_opt.checks import check_problem
        from igniter_opt.planner import greedy

        key = (t, (w,))
        if self.planner != "greedy" or key in self._plans:
            plan = self(t, (w,))
            return None if plan is None else plan.total_share_pct
        try:
            problem = make_problem((w,), self.fleet.models[t], self.choice)
            check_problem(problem, strict=True)
        except IgniterOptError:
            self._plans[key] = None
            return None
        packing = greedy.place(problem.perf_model, greedy.initial_demands(problem))
        self._checked.add((t, w))
        unit = problem.perf_model.unit_pct
        return sum(sum(s.share_pct(unit) for s in g.slots) for g in packing.gpus)


def _over_limit(t: FleetType, p: Plan) -> int:
    """GPUs of the part beyond its type's count limit."""
    return 0 if t.max_count is None else max(0, p.num_gpus - t.max_count)


def _key(fleet: Fleet, plans: list[Plan | None]) -> tuple[float, float, float]:
    """(GPUs over count limits, cost per hour, price-weighted share); inf when a part cannot be planned."""
    over = cost = share = 0.0
    for t, p in zip(fleet.types, plans, strict=True):
        if p is None:
            return (math.inf, math.inf, math.inf)
        over += _over_limit(t, p)
        cost += p.num_gpus * t.price_per_gpu_hour
        share += p.total_share_pct * t.price_per_gpu_hour
    return (over, round(cost, 9), round(share, 6))


def _guide(key: tuple[float, float, float]) -> tuple[float, float, float]:
    """What the local search lowers: (over the limits, price-weighted share, cost). The share moves
    with every workload moved, where the whole-GPU cost changes only when a GPU empties, so the
    search can walk towards a cheaper packing through moves that do not pay off one by one."""
    return (key[0], key[2], key[1])


class _Assignment:
    """Which type serves each workload, with every type's plan of its workloads."""

    def __init__(self, fleet: Fleet, ws: tuple[Workload, ...], plan_part: PartPlans, types: list[int]) -> None:
        self.fleet, self.ws, self.plan_part, self.types = fleet, ws, plan_part, list(types)
        self.plans = [self._plan(t) for t in range(len(fleet.types))]
        self.key = _key(fleet, self.plans)

    def members(self, t: int, types: list[int] | None = None) -> tuple[Workload, ...]:
        """The workloads given to type t (under ``types``, default this assignment's)."""
        return tuple(w for w, u in zip(self.ws, self.types if types is None else types, strict=True) if u == t)

    def _plan(self, t: int, types: list[int] | None = None) -> Plan | None:
        members = self.members(t, types)
        return self.plan_part(t, members) if members else _EMPTY

    def over(self) -> list[int]:
        """The types whose part is over their count limit."""
        return [t for t, p in enumerate(self.plans) if p is not None and _over_limit(self.fleet.types[t], p)]

    def try_move(self, j: int, t: int) -> bool:
        """Move workload j to type t if that lowers the guide."""
        old = self.types[j]
        types = self.types.copy()
        types[j] = t
        plans = self.plans.copy()
        plans[old], plans[t] = self._plan(old, types), self._plan(t, types)
        key = _key(self.fleet, plans)
        if _guide(key) < _guide(self.key):
            self.types, self.plans, self.key = types, plans, key
            return True
        return False


# The plan of a type given no workloads: no GPUs.
_EMPTY = Plan(profile="", planner="", latency_budget="", gpus=())


def solo_costs(fleet: Fleet, ws: tuple[Workload, ...], plan_part: PartPlans) -> list[list[float]]:
    """Per workload and type: price x the share the workload's single-type plan needs (inf: cannot)."""
    out = []
    for w in ws:
        row = []
        for t, ft in enumerate(fleet.types):
            share = plan_part.solo_share(t, w)
            row.append(math.inf if share is None else ft.price_per_gpu_hour * share / 100.0)
        out.append(row)
    return out


def _repaired(fleet: Fleet, ws: tuple[Workload, ...], plan_part: PartPlans, costs: list[list[float]],
              types: list[int]) -> _Assignment:
    """``types`` with workloads moved off every type over its count limit, cheapest move first (the
    least rise in solo cost), until no type is over its limit or nothing can move."""
    a = _Assignment(fleet, ws, plan_part, types)
    for _ in range(len(ws) * len(fleet.types)):
        over = a.over()
        if not over:
            break
        moves = [(costs[j][u] - costs[j][t], j, u) for t in over for j in range(len(ws)) if a.types[j] == t
                 for u in range(len(fleet.types)) if u != t and math.isfinite(costs[j][u])]
        if not moves:
            break
        _, j, u = min(moves)
        types = a.types.copy()
        types[j] = u
        a = _Assignment(fleet, ws, plan_part, types)
    return a


def _searched(a: _Assignment, costs: list[list[float]], deadline: float = math.inf) -> tuple[_Assignment, bool]:
    """Local search from ``a`` (a copy): single moves that lower its guide, up to ``MAX_PASSES`` passes
    or until ``deadline`` (``time.perf_counter``); the assignment of least key met on the way, and whether
    the deadline stopped it."""
    cur = _Assignment(a.fleet, a.ws, a.plan_part, a.types)  # parts come from the memoised planner
    best = (cur.key, list(cur.types), list(cur.plans))
    out_of_time = False
    for _ in range(MAX_PASSES):
        moved = False
        for j in sorted(range(len(cur.ws)), key=lambda j: -min(costs[j])):
            if time.perf_counter() > deadline:
                out_of_time = True
                break
            for t in range(len(cur.fleet.types)):
                if t != cur.types[j] and math.isfinite(costs[j][t]) and cur.try_move(j, t):
                    moved = True
                    if cur.key < best[0]:
                        best = (cur.key, list(cur.types), list(cur.plans))
        if not moved or out_of_time:
            break
    cur.key, cur.types, cur.plans = best
    return cur, out_of_time


def _cheapest(row: list[float]) -> int:
    """The type where a workload costs least alone (ties: the first listed)."""
    return min(range(len(row)), key=lambda t: (row[t], t))


def unservable_error(fleet: Fleet, ws: tuple[Workload, ...], costs: list[list[float]]) -> ProblemError:
    names = [w.name for w, row in zip(ws, costs, strict=True) if all(math.isinf(c) for c in row)]
    return ProblemError(f"workload(s) {', '.join(names)} can go nowhere: no GPU type of the fleet "
                        f"({', '.join(fleet.type_names())}) profiles their model or meets their SLO at their rate "
                        "even on GPUs of their own; remove them, add a type that can serve them, or plan the rest "
                        "with --skip-unservable")


def _count_error(fleet: Fleet, best: _Assignment) -> ProblemError:
    needs = [f"{p.num_gpus} GPUs of {fleet.types[t].name} (limit {fleet.types[t].max_count})"
             for t in best.over() if (p := best.plans[t]) is not None]
    return ProblemError(f"the fleet's count limits leave no plan that the fleet greedy found: its best needs "
                        f"{', '.join(needs)}; raise those limits or add a type")


FLEET_SCOPE = ("bound over plans serving each workload on one GPU type where the greedy planner can serve it alone, "
               "split there as the exact planner's bound allows (k equal replicas, k up to one more than the fewest "
               "that can serve it, or as the greedy planner splits it; shares in whole units of the type's share "
               "unit), within the count limits")
# Seconds the bound's small MIP may take (it has one integer per type; it ends in milliseconds).
BOUND_MIP_LIMIT_S = 10.0
# Workloads per step of ``least_gpus`` (its deadline is checked between steps).
LEAST_CHUNK = 50


def least_gpus(ws: tuple[Workload, ...], fleet: Fleet, choice: BudgetChoice, servable: list[list[bool]],
               deadline: float = math.inf) -> tuple[list[list[float]], int]:
    """Per workload and type: the least GPUs of the type it needs, its least share units alone
    (``colgen.workload_least_units``) over the units of one GPU; inf where the type cannot serve it. Computed
    ``LEAST_CHUNK`` workloads at a time (each workload's value is its own); past ``deadline`` the cells left
    are 0, which any need is at least (a bound over them holds, weaker). Returns the table and how many
    cells were left at 0 that way."""
    from igniter_opt.placement.serving import serving_model_for
    from igniter_opt.planner.exact.colgen import workload_least_units

    need = [[math.inf] * len(fleet.types) for _ in ws]
    left = 0
    for t, perf in enumerate(fleet.models):
        mine = [j for j in range(len(ws)) if servable[j][t]]
        for i in range(0, len(mine), LEAST_CHUNK):
            chunk = mine[i: i + LEAST_CHUNK]
            if time.perf_counter() >= deadline:
                for j in chunk:
                    need[j][t] = 0.0
                left += len(chunk)
                continue
            problem = make_problem(tuple(ws[j] for j in chunk), perf, choice)
            units = workload_least_units(problem, serving_model_for(problem))
            for j, u in zip(chunk, units, strict=True):
                need[j][t] = u / problem.perf_model.max_units
    return need, left


def fleet_bound(ws: tuple[Workload, ...], fleet: Fleet, choice: BudgetChoice, servable: list[list[bool]],
                threads: int = 1, at_least: float = 0.0, need: list[list[float]] | None = None,
                deadline: float = math.inf, notes: list[str] | None = None) -> FleetBound:
    """A certified lower bound on the cost per hour of any plan in ``FLEET_SCOPE``.

    With u_{w,t} the least share units workload w needs on type t in any of its split options (each
    piece alone on a GPU: ``colgen.workload_least_units``, what one type's trivial bound sums) and U_t
    the units in a GPU of type t, every plan in scope has integer GPU counts G_t with

        min  sum_t price_t G_t   s.t.  sum_t x_{w,t} = 1,   sum_w u_{w,t} x_{w,t} <= U_t G_t,
                                       sum_t price_t G_t >= at_least,
                                       G_t <= max_count_t,  x_{w,t} in [0, 1] (0 where t cannot serve w),

    a relaxation (x fractional, shares added as if alone; ``need``: u_{w,t} / U_t when known, inf where t
    cannot serve w; ``at_least``: another certified bound over the
    same plans, the fleet master's, which the integer G_t then round up to a cost whole GPUs can have).
    HiGHS solves it with G_t integer; the bound is the largest of its LP value, the MIP's dual bound and
    ``at_least``, all lower bounds of the relaxation. Without ``need``, ``least_gpus`` computes it until
    ``deadline`` (``notes`` then says how much was left at 0).
    """
    from igniter_opt.planner.exact.lp import f64, highspy_module, int32, new_highs, run

    n, n_t = len(ws), len(fleet.types)
    if need is None:
        need, left = least_gpus(ws, fleet, choice, servable, deadline)
        if left and notes is not None:
            notes.append(f"the time limit came while the share relaxation's least shares were computed: {left} of "
                         f"{sum(map(sum, servable))} (workload, type) pairs counted at 0 (its bound holds, weaker)")
    h = new_highs(threads)
    inf = h.getInfinity()
    h.addRows(n + n_t, f64([1.0] * n + [-inf] * n_t), f64([1.0] * n + [0.0] * n_t), 0, int32([0] * (n + n_t)),
              int32([]), f64([]))
    cells = [(j, t) for j in range(n) for t in range(n_t) if math.isfinite(need[j][t])]
    h.addCols(len(cells), f64([0.0] * len(cells)), f64([0.0] * len(cells)), f64([1.0] * len(cells)), 2 * len(cells),
              int32(np.arange(0, 2 * len(cells), 2)), int32([r for j, t in cells for r in (j, n + t)]),
              f64([v for j, t in cells for v in (1.0, need[j][t])]))
    prices = [ft.price_per_gpu_hour for ft in fleet.types]
    h.addCols(n_t, f64(prices), f64([0.0] * n_t), f64([inf if ft.max_count is None else ft.max_count
                                                        for ft in fleet.types]),
              n_t, int32(np.arange(n_t)), int32([n + t for t in range(n_t)]), f64([-1.0] * n_t))
    if at_least > 0:  # sum_t price_t G_t >= at_least (lowered by float noise only)
        h.addRows(1, f64([at_least * (1 - COST_TOLERANCE)]), f64([inf]), n_t,
                  int32([0]), int32(np.arange(len(cells), len(cells) + n_t)), f64(prices))
    lp = run(h, BOUND_MIP_LIMIT_S, mip=False)
    if lp.status == "Infeasible":
        raise ProblemError(f"the fleet's count limits cannot carry the workloads even with each workload's least "
                           f"share alone ({', '.join(f'{ft.name} at most {ft.max_count}' for ft in fleet.types)}); "
                           "raise the limits or add a type")
    kinteger = highspy_module().HighsVarType.kInteger
    h.changeColsIntegrality(n_t, int32(np.arange(len(cells), len(cells) + n_t)), [kinteger] * n_t)
    mip = run(h, BOUND_MIP_LIMIT_S, mip=True)
    lp_value = lp.objective if lp.status == "Optimal" else None  # an unfinished simplex value bounds nothing
    bound = max(x for x in (lp_value, mip.bound, at_least, 0.0) if x is not None)
    counts = (np.rint(np.asarray(h.getSolution().col_value, float)[len(cells):]).astype(int)
              if mip.objective is not None else np.zeros(n_t, int))
    return FleetBound(bound, {ft.name: int(c) for ft, c in zip(fleet.types, counts, strict=True)}, FLEET_SCOPE)


def _replanned_parts(fleet: Fleet, choice: BudgetChoice, planner: str, options: SolveOptions, best: _Assignment,
                     t0: float) -> list[FleetPart]:
    """The search's parts, each planned again by ``planner`` (not greedy) in its share of the time left
    and kept where it is no worse (the parts as they are for greedy)."""
    chosen = [(t, ft, p) for t, (ft, p) in enumerate(zip(fleet.types, best.plans, strict=True))
              if p is not None and p.num_gpus]
    deadline = t0 + options.time_limit_s
    parts = []
    for i, (t, ft, p) in enumerate(chosen):
        share = (deadline - time.perf_counter()) / (len(chosen) - i)  # the time left, shared among the parts
        if planner != "greedy" and share >= MIN_PART_S:
            other = PartPlans(fleet, choice, planner, options.within(share))(t, best.members(t))
            if other is not None and (other.num_gpus, other.total_share_pct) <= (p.num_gpus, p.total_share_pct):
                p = other
        parts.append(FleetPart(ft, replace(p, price_per_gpu_hour=ft.price_per_gpu_hour)))
    return parts


def _exact_parts(ws: tuple[Workload, ...], fleet: Fleet, choice: BudgetChoice, options: SolveOptions,
                 best: _Assignment, servable: list[list[bool]], t0: float
                ) -> tuple[list[FleetPart], FleetBound | None, list[str]]:
    """The fleet master's parts (``planner.exact.fleetplan``; the search's where it found nothing cheaper)
    and the larger of its certified bound and the share relaxation's (``fleet_bound``, which also rounds
    the master's bound up to a cost whole GPUs can have). Both are bounds over ``FLEET_SCOPE``."""
    from igniter_opt.planner.exact.fleetplan import FleetTypeSpec, solve_exact_fleet

    plans: list[Plan | None] = list(best.plans)
    notes: list[str] = []
    found, need = 0.0, None
    try:
        res = solve_exact_fleet(ws, [FleetTypeSpec(t.price_per_gpu_hour, t.max_count) for t in fleet.types],
                                lambda t, mine: make_problem(mine, fleet.models[t], choice), servable,
                                [[j for j in range(len(ws)) if best.types[j] == t] for t in range(len(fleet.types))],
                                best.key[1], options, t0)
        found, need = res.bound_per_hour, res.need
        notes += [res.message, *res.notes]
        if res.plans is not None:
            plans = list(res.plans)
    except IgniterOptError as exc:  # the search's plan stands, with the share bound where it can be had
        log.warning("fleet master: %s", exc)
        notes.append(f"no fleet master: {exc}")
    bound = None
    try:
        bound = fleet_bound(ws, fleet, choice, servable, options.threads, at_least=found, need=need,
                            deadline=t0 + options.time_limit_s, notes=notes)
    except IgniterOptError as exc:  # the plan stands without a bound, and says why
        log.warning("fleet bound: %s", exc)
        notes.append(f"no certified bound: {exc}")
    parts = [FleetPart(ft, replace(p, price_per_gpu_hour=ft.price_per_gpu_hour))
             for ft, p in zip(fleet.types, plans, strict=True) if p is not None and p.num_gpus]
    return parts, bound, notes


def solve_fleet(ws: tuple[Workload, ...], fleet: Fleet, choice: BudgetChoice, planner: str = "greedy",
                options: SolveOptions | None = None, search: bool = True, skip_unservable: bool = False) -> FleetPlan:
    """Plan ``ws`` over the fleet's types at the least cost the steps above find (a verified plan per type).

    A workload no type can serve is an error that names it; with ``skip_unservable`` it is left out
    (``FleetPlan.unserved``) and the rest planned."""
    t0 = time.perf_counter()
    options = options or SolveOptions()
    plan_part = PartPlans(fleet, choice, "greedy", options)  # the search re-plans parts many times
    costs = solo_costs(fleet, ws, plan_part)
    nowhere = {j for j, row in enumerate(costs) if all(math.isinf(c) for c in row)}
    if nowhere and not skip_unservable:
        raise unservable_error(fleet, ws, costs)
    unserved = tuple(ws[j].name for j in sorted(nowhere))
    if nowhere:
        ws = tuple(w for j, w in enumerate(ws) if j not in nowhere)
        costs = [row for j, row in enumerate(costs) if j not in nowhere]
        if not ws:
            raise ProblemError(f"no workload can be served by the fleet ({', '.join(fleet.type_names())}): "
                               f"{', '.join(unserved)} can go nowhere")
    n_types = len(fleet.types)
    candidates = [[t] * len(ws) for t in range(n_types) if all(math.isfinite(row[t]) for row in costs)]
    candidates.append([_cheapest(row) for row in costs])
    starts = [_Assignment(fleet, ws, plan_part, c) for c in candidates]
    if any(t.max_count is not None for t in fleet.types):
        starts.append(_repaired(fleet, ws, plan_part, costs, candidates[-1]))
    best = min(starts, key=lambda a: a.key)
    searched_out = False  # the search stopped at its deadline
    if search:
        # --time-limit bounds the whole run: the search stops at it, or at a share of it when another planner
        # follows (at 1000 workloads one pass of moves re-plans parts of hundreds of workloads 2000 times)
        until = t0 + (SEARCH_SHARE if planner != "greedy" else 1.0) * options.time_limit_s
        found = [_searched(a, costs, until) for a in starts]
        best = min([best, *(f for f, _ in found)], key=lambda a: a.key)
        searched_out = any(cut for _, cut in found)
    if math.isinf(best.key[0]):
        raise ProblemError("the fleet greedy found no plan: a type could not carry the workloads given to it")
    if best.key[0] > 0:
        raise _count_error(fleet, best)
    servable = [[math.isfinite(c) for c in row] for row in costs]
    if planner == "exact":
        parts, bound, notes = _exact_parts(ws, fleet, choice, options, best, servable, t0)
    else:
        parts, notes, bound = _replanned_parts(fleet, choice, planner, options, best, t0), [], None
        if searched_out and planner == "greedy":
            notes.append(f"the local search stopped at the time limit ({options.time_limit_s:g} s): the plan is the "
                         "best assignment it had met; a longer --time-limit lets it go on")
    fp = FleetPlan(tuple(parts), planner, time.perf_counter() - t0, bound, unserved, tuple(notes))
    if bound is not None and bound.cost_per_hour > fp.cost_per_hour * (1 + COST_TOLERANCE):
        log.error("DEFECT: fleet bound %.6g above a verified fleet plan of %.6g per hour", bound.cost_per_hour,
                  fp.cost_per_hour)
        fp = replace(fp, bound=None)  # never a false bound
    return fp


def compare_fleet(ws: tuple[Workload, ...], fleet: Fleet, choice: BudgetChoice, planners: list[str],
                  options: SolveOptions) -> list[dict[str, Any]]:
    """One row per planner's fleet plan, then one per type alone (the first planner): GPUs by type, cost,
    share, wall time; a row whose planning failed (a type that cannot serve every workload, a count
    limit) carries the reason instead."""
    runs = [(f"fleet {p}", fleet, p) for p in planners]
    if len(fleet.types) > 1:
        runs += [(f"{t.name} alone", replace(fleet, types=(t,), models=(m,)), planners[0])
                 for t, m in zip(fleet.types, fleet.models, strict=True)]
    rows: list[dict[str, Any]] = []
    for label, f, p in runs:
        row: dict[str, Any] = dict.fromkeys(("gpus_by_type", "gpus", "cost_per_hour", "status", "bound_per_hour",
                                             "gap_pct", "total_share_pct", "wall_s"))
        try:
            fp = solve_fleet(ws, f, choice, p, options)
        except IgniterOptError as exc:
            rows.append({"plan": label, **row, "gpus_by_type": "", "message": str(exc)})
            continue
        rows.append({"plan": label, "gpus_by_type": " ".join(f"{t}:{n}" for t, n in fp.gpus_by_type().items()),
                     "gpus": fp.num_gpus, "cost_per_hour": round(fp.cost_per_hour, 6), "status": str(fp.status),
                     "bound_per_hour": None if fp.bound is None else round(fp.bound.cost_per_hour, 6),
                     "gap_pct": None if fp.gap is None else round(100 * fp.gap, 4),
                     "total_share_pct": round(fp.total_share_pct, 4), "wall_s": round(fp.wall_s, 3), "message": ""})
    return rows


def part_path(path: Path, type_name: str) -> Path:
    """Where the part of a fleet plan for one type goes: PLAN.<type>.json beside PLAN.json."""
    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in Path(type_name).name) or "type"
    return path.with_name(f"{path.stem}.{slug}{path.suffix or '.json'}")


def fleet_plan_to_dict(fp: FleetPlan, path: Path) -> dict[str, Any]:
    return {
        "schema": FLEET_PLAN_SCHEMA, "planner": f"fleet-{fp.planner}",
        "types": [{"type": p.gpu_type.name, "price_per_hour": p.gpu_type.price_per_gpu_hour,
                   "max_count": p.gpu_type.max_count, "gpus": p.plan.num_gpus,
                   "plan": part_path(path, p.gpu_type.name).name} for p in fp.parts],
        "cost": {"gpus": fp.num_gpus, "per_hour": round(fp.cost_per_hour, 6), "gpus_by_type": fp.gpus_by_type()},
        "unserved": list(fp.unserved),
        "solver": {"status": str(fp.status),
                   **({} if fp.bound is None else {
                       "bound_per_hour": round(fp.bound.cost_per_hour, 6), "gap": round(fp.gap or 0.0, 6),
                       "scope": fp.bound.scope, "relaxation_gpus_by_type": fp.bound.gpus_by_type})},
        "wall_s": round(fp.wall_s, 6),
    }


def write_fleet_plan(fp: FleetPlan, path: Path) -> list[Path]:
    """Each type's part as an ordinary plan (PLAN.<type>.json), then the fleet's summary at ``path``
    (written last, so that a summary never names a part that is missing)."""
    from igniter_opt.ioutil import atomic_write_json
    from igniter_opt.planio import write_plan

    out = [write_plan(p.plan, part_path(path, p.gpu_type.name)) for p in fp.parts]
    return [*out, atomic_write_json(path, fleet_plan_to_dict(fp, path))]


def read_fleet_plan(path: Path) -> tuple[str, dict[str, Plan]]:
    """A fleet plan's summary: its fleet as a ``--fleet`` spec (types, prices, count limits) and, per type,
    the part running on it (read from the part files beside the summary). One-line PlanErrors."""
    import json

    from igniter_opt.planio import read_plan

    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise PlanError(f"{path}: cannot read the fleet plan ({exc})") from None
    if not isinstance(d, dict) or d.get("schema") != FLEET_PLAN_SCHEMA or not isinstance(d.get("types"), list):
        raise PlanError(f"{path}: not a fleet plan (schema {FLEET_PLAN_SCHEMA}); give the summary 'solve --fleet -o' "
                        "wrote")
    specs, running = [], {}
    for t in d["types"]:
        try:
            name, price, limit, part = str(t["type"]), float(t["price_per_hour"]), t.get("max_count"), str(t["plan"])
        except (KeyError, TypeError, ValueError):
            raise PlanError(f"{path}: a type entry lacks type, price_per_hour or plan: {t!r}") from None
        specs.append(f"{name}:{price!r}" + ("" if limit is None else f":{int(limit)}"))
        file = Path(path).parent / part
        if not file.is_file():
            raise PlanError(f"{path}: the part of {name}, {part}, is not beside it; keep the parts the summary names "
                            "next to it")
        running[name] = read_plan(file)
    return ",".join(specs), running


__all__ = ["FLEET_SCOPE", "FleetBound", "FleetPart", "FleetPlan", "compare_fleet", "fleet_bound", "fleet_plan_to_dict",
           "least_gpus", "part_path", "read_fleet_plan", "solve_fleet", "write_fleet_plan"]
