"""What the exact planner may split a workload into, and so what its bound is a bound of.

A workload is served by one of its *split options*: k equal replicas of rate R / k, for k from the
fewest that can serve it (fewer cannot: no configuration meets the SLO and rate R / k even alone
on a whole GPU) to that plus ``EXTRA_REPLICAS``; and the greedy planner's own split wherever it
is not one of those (under ``igniter``: dedicated replicas at 90 % of a large batch's throughput
and the remainder), so that the greedy plan is always among the plans the bound covers. A *piece
type* is one rate of one option with the number of pieces the option needs of it; the master chooses one option
per workload and covers its pieces.

Why replicas of fixed rates and not any split of the rate: under ``full`` and ``tail`` a piece's
latency limit depends on its rate (batch formation (b - 1) / R, queueing), not monotonically, so
a continuous split is not a capacity cover. Under ``igniter`` it would be (the limit SLO / 2 does
not depend on the rate), but a placement's throughput then depends on its co-runners, and no
linear model of that co-location is both exact and small enough to price with (a linear
over-estimate of the convex throughput curve was measured 13-29 % loose, see docs/exact.md);
fixed rates keep every row of the pricing model exact.

The bound therefore holds over these splits, with shares in whole units of the profile's share
unit and the batches (and, under ``tail``, queue delays) ``configs.batch_range`` and the serving
model offer: under ``igniter`` up to the paper's closed-form batch for the piece's rate (as the
compact model's candidates always were). ``scope_text`` says so in words, for the plan's message
and the docs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from igniter_opt.domain import LatencyBudget, PlanningProblem
from igniter_opt.placement import Demand
from igniter_opt.planner import greedy

# Besides the fewest equal replicas that can serve a workload, the master may also choose up to
# this many more (smaller pieces can pack better).
EXTRA_REPLICAS = 1
# Rates of one option closer than this (relative) are the same piece type.
SAME_RATE_REL = 1e-12


@dataclass(frozen=True)
class PieceType:
    """``count`` pieces of rate ``rate_rps`` of workload ``workload`` (an index into the problem's
    workloads), as split option ``option`` of that workload needs them."""

    workload: int
    option: int
    rate_rps: float
    count: int

    @property
    def requirement(self) -> float:
        return float(self.count)


def split_options(rate_rps: float, fewest: int, greedy_rates: list[float]) -> list[list[tuple[float, int]]]:
    """Each option as (rate, count) pairs: equal replicas from ``fewest``, and ``greedy_rates`` (the
    greedy planner's pieces) when they are not one of those."""
    options = [[(rate_rps / k, k)] for k in range(fewest, fewest + EXTRA_REPLICAS + 1)]
    if greedy_rates:
        grouped: dict[float, int] = {}
        for r in sorted(greedy_rates, reverse=True):
            key = next((g for g in grouped if math.isclose(g, r, rel_tol=SAME_RATE_REL)), r)
            grouped[key] = grouped.get(key, 0) + 1
        mine = sorted(grouped.items(), reverse=True)
        equal = len(mine) == 1 and math.isclose(mine[0][0] * mine[0][1], rate_rps, rel_tol=1e-9)
        if not (equal and fewest <= mine[0][1] <= fewest + EXTRA_REPLICAS):
            options.append(mine)
    return options


def piece_types(problem: PlanningProblem, demands: list[Demand] | tuple[Demand, ...],
                fewest: list[int]) -> tuple[PieceType, ...]:
    """Every piece type of every workload, in workload order. ``demands``: the greedy planner's;
    ``fewest[i]``: the fewest equal replicas that can serve workload i."""
    by_name: dict[str, list[float]] = {w.name: [] for w in problem.workloads}
    for d in demands:
        by_name[d.workload.name].append(d.rate_rps)
    out: list[PieceType] = []
    for i, w in enumerate(problem.workloads):
        for o, option in enumerate(split_options(w.rate_rps, fewest[i], by_name[w.name])):
            out.extend(PieceType(i, o, rate, count) for rate, count in option)
    return tuple(out)


def _batches_text(problem: PlanningProblem) -> str:
    budget = problem.latency_budget
    return {LatencyBudget.IGNITER: "batches up to the paper's batch for the piece's rate",
            LatencyBudget.FULL: f"batches up to {greedy.batch_limit(problem)} that leave time for inference",
            LatencyBudget.TAIL: f"batches up to {greedy.batch_limit(problem)}, queue delays from the serving "
                                "model's candidates"}[budget]


def scope_text(problem: PlanningProblem) -> str:
    """What the set-partitioning bound is a lower bound of, in one sentence."""
    perf = problem.perf_model
    batches = _batches_text(problem)
    return (f"bound over plans serving each workload by k equal replicas, k up to {EXTRA_REPLICAS} more than the "
            f"fewest that can serve it, or as the greedy planner splits it (shares in whole units of "
            f"{perf.unit_pct:g} %, {batches})")


def compact_scope_text(problem: PlanningProblem, split: bool) -> str:
    """What the compact model's bound is a lower bound of (chosen only where greedy splits no
    workload, ``planner.exact.choose_formulation``; ``split``: greedy split some, when forced)."""
    servers = "split as the greedy planner splits it" if split else "by one server"
    return (f"bound over plans serving each workload {servers} (shares in whole units of "
            f"{problem.perf_model.unit_pct:g} %, {_batches_text(problem)})")
