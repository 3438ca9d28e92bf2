"""The exact planner by set partitioning: column generation for the bound, price-and-branch for the plan.

Within ``options.time_limit_s`` (counted from the caller's start, so preparation and extraction are inside it): the
greedy plan is the start; ``colgen.generate`` raises the certified bound until ``GENERATE_SHARE`` of the limit has
passed (or the bound meets the start); then the master over the generated columns is solved as a MIP from the start
(``Master.solve_integer``) in what is left, less ``EXTRACT_RESERVE_S`` -- unless the LP over those columns, rounded
up, already meets the incumbent (the MIP could not beat it): then generation goes on instead. Generation stops early
once the LP over the columns, rounded up, is at the certified bound, or the LP is solved (``ColgenState.settled``):
the bound can rise no more that way, so the time left goes to the plan (``_plan_search``: integer masters, ejection
searches and price-and-dives, ``dive``, in turn). After an integer master, and where the LP over the columns shows
that they hold no better plan, an ejection search (``eject``) looks for a plan of fewer GPUs from the incumbent's,
outside the columns; its GPUs enter the master as columns. Where GPUs hold few members, each integer master has a
copy on the worker's core under another HiGHS seed (``RIVAL_SEED``): its search is heavy-tailed, and the copy is a
second draw. Where greedy's GPUs hold many members
(``MANY_MEMBERS``: the H100), the first such search runs before generation, from greedy's plan. The plan returned
is the best of those plans and the start, each verified by the kernel (``verify_plan``); the bound is the largest
of the trivial bound, column generation's certified (Farley or LP) bound and the member-class bound, rounded up,
over the split options of ``pieces`` (``pieces.scope_text``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from igniter_opt.domain import Plan, PlanningProblem
from igniter_opt.placement import Packing, assemble_plan, verify_plan
from igniter_opt.placement.serving import serving_model_for
from igniter_opt.planner.exact.claims import Evidence, progress_line
from igniter_opt.planner.exact.colgen import (
    ROUND_EPS,
    ColgenSetup,
    ColgenState,
    certified_gpus,
    class_bound_text,
    collect_proof,
    generate,
    initial_master,
    packing_of,
    prepare_colgen,
    proofs_on_a_second_core,
    start_solution,
    trimmed_gpus,
)
from igniter_opt.planner.exact.dive import DiveResult, dive, dive_text
from igniter_opt.planner.exact.eject import EjectResult, eject_search, eject_text
from igniter_opt.planner.exact.items import PreparationTimedOut, check_deadline
from igniter_opt.planner.exact.lp import WATCHDOG_GRACE_S, master_limit_s
from igniter_opt.planner.exact.master import IntegerSolution, integer_solution
from igniter_opt.planner.exact.pieces import scope_text
from igniter_opt.solver import SolveOptions, SolveOutcome, SolveStatus

log = logging.getLogger(__name__)

# Share of the time limit column generation may use; the integer master gets the rest.
GENERATE_SHARE = 0.6
# Seconds kept at the end for turning the solution into a verified plan.
EXTRACT_RESERVE_S = 0.5
# No new round of generation and integer master with less time than this left.
MIN_ROUND_S = 1.0
# Once generation cannot raise the bound (``_plan_search``): the integer master's share of the time left, then
# a dive's share of what is left after it; no dive is begun with less time than MIN_DIVE_S left.
PLAN_MASTER_SHARE = 0.5
DIVE_SHARE = 0.5
MIN_DIVE_S = 2.0
# After an integer master that left the plan above the bound (or none, the columns holding no better plan): an
# ejection search's share of the time left (``eject``); none is begun with less than MIN_EJECT_S left.
EJECT_SHARE = 0.4
MIN_EJECT_S = 2.0
# All ejection searches of a run together, as a share of its time limit: at V100 n = 50 seed 2, where GPUs hold 2-3
# members, four searches from the same 23-GPU plan found nothing in 40 s and took the time the integer master had
# used to find 22 (commit 752bfa3); on the H100 every search that found a plan did within 23 s of 120.
EJECT_BUDGET_SHARE = 0.2
# Where greedy's GPUs hold this many members or more on average (1.9-2.5 on the V100 at n = 50 and 200, 7.1-10.5 on
# the H100), the integer master over the columns rarely beats greedy and the ejection search is what finds better
# plans: there all searches together get EJECT_BUDGET_SHARE_MANY of the limit, and the first runs before generation,
# from greedy's plan, with all of it (the worker works on the bound meanwhile; the search ends where that bound meets
# its plan). At H100 n = 200 seed 2 it needs 43 s in one search to find 18 GPUs (greedy 19): a run at 120 s gave it
# 22 s after generation, and two searches of 36 and 12 s found nothing.
MANY_MEMBERS = 5.0
EJECT_BUDGET_SHARE_MANY = 0.4
# Where GPUs hold fewer members (the V100), each integer master runs twice at once: here, and a copy on the worker's
# core with HiGHS's random seed RIVAL_SEED (``proofworker.MasterTask``; it preempts the worker's task, which ends with
# what it has). HiGHS's search over a fixed set of columns is heavy-tailed: at V100 n = 200 seed 3, on four integer
# masters whose best is 74 GPUs, seed 0 found 75 in 50 s on all four, seeds 1-3 found 74 on three of them
# (docs/exact.md, "A second integer master on the worker's core"). Where GPUs hold many, HiGHS proves its masters
# optimal in about a second, and the worker's time is the bound's.
RIVAL_SEED = 1
# After the copy's deadline (and HiGHS's grace), it is cancelled and waited for this long at most; the main process
# waits for its answer in polls of RIVAL_POLL_S, applying the worker's other results as they come.
RIVAL_LATE_S = 0.5
RIVAL_POLL_S = 0.1
# No copy for an integer master of a shorter limit (the copy's own is shorter by WATCHDOG_GRACE_S + RIVAL_LATE_S).
RIVAL_MIN_S = 5.0
FORMULATION = "set partitioning (column generation, price-and-branch)"


def _say(options: SolveOptions, text: str) -> None:
    if options.progress is not None:
        options.progress(text)


def _reporter(options: SolveOptions, t0: float, setup: ColgenSetup, incumbent: int) -> Callable[[ColgenState], None]:
    last = [0.0]

    def report(state: ColgenState) -> None:
        now = time.perf_counter()
        if now - last[0] >= 1.0:  # at most a line a second
            last[0] = now
            bound = certified_gpus(setup, state)
            _say(options, progress_line(now - t0, len(state.master.columns), bound, incumbent, state.lp_value))

    return report


def _integer_plan(problem: PlanningProblem, setup: ColgenSetup, state: ColgenState, sol: IntegerSolution
                  ) -> tuple[Plan | None, str]:
    """The integer master's solution as a verified plan, or None with the reason."""
    if not sol.counts:
        return None, f"the integer master ended with '{sol.result.status}' and no solution"
    return _verified_plan(problem, setup, state, sol.counts, sol.chosen, "the integer master")


def _verified_plan(problem: PlanningProblem, setup: ColgenSetup, state: ColgenState, counts: dict[int, int],
                   chosen: dict[int, int], source: str) -> tuple[Plan | None, str]:
    """GPUs per master column (``counts``) with the split options ``chosen`` as a plan the kernel verified,
    or None with the reason."""
    packing = packing_of(setup, state.master.columns, counts, chosen)
    if packing is None:
        return None, f"{source}'s solution did not cover every workload once trimmed (a defect)"
    plan = assemble_plan(problem, packing, "exact", SolveOutcome(SolveStatus.FEASIBLE))
    bad = verify_plan(plan, problem)
    if bad:
        return None, f"{source}'s plan violates the exact model ({bad[0].message}); please report it"
    return plan, ""


def _say_state(options: SolveOptions, t0: float, state: ColgenState, run: _Run) -> None:
    """A progress line for the run so far: columns, bound, plan, master LP."""
    _say(options, progress_line(time.perf_counter() - t0, len(state.master.columns), run.bound,
                                run.inc.plan.num_gpus, state.lp_value))


@dataclass
class _Incumbent:
    """The best verified plan so far and, when it came from the integer master or a dive, its solution there."""

    plan: Plan
    counts: dict[int, int]
    chosen: dict[int, int]
    message: str

    def or_better(self, found: Plan | None, counts: dict[int, int], chosen: dict[int, int]) -> _Incumbent:
        """``found`` (a verified plan, GPUs per column ``counts``, split options ``chosen``) where it has fewer
        GPUs, else this incumbent."""
        if found is not None and found.num_gpus < self.plan.num_gpus:
            return _Incumbent(found, counts, chosen, "")
        return self


def _improve(problem: PlanningProblem, setup: ColgenSetup, state: ColgenState, run: _Run, limit_s: float,
             options: SolveOptions, notes: list[str]) -> None:
    """One integer master over the columns so far, from the incumbent, and where GPUs hold few members its copy on
    the worker's core (``RIVAL_SEED``); the incumbent replaced by the best verified plan."""
    rival_end = time.perf_counter() + limit_s - WATCHDOG_GRACE_S - RIVAL_LATE_S  # answered by this master's end
    rival = not run.many_members and limit_s >= RIVAL_MIN_S and _send_rival(state, rival_end, options)
    sol = state.master.solve_integer(limit_s, run.inc.counts, run.inc.chosen, options.mip_rel_gap)
    if sol.note:
        notes.append(sol.note)
    _take(problem, setup, state, run, sol, notes, "")
    if not rival:
        return
    other = _rival_solution(setup, state, sol.result.status == "Optimal", rival_end)
    run.rivals.append(other)
    if other is None or other.cost >= run.inc.plan.num_gpus:  # nothing better to verify (a second at n = 200)
        return
    run.rival_won += _take(problem, setup, state, run, other, notes, " (the copy on the worker's core)")


def _take(problem: PlanningProblem, setup: ColgenSetup, state: ColgenState, run: _Run, sol: IntegerSolution,
          notes: list[str], source: str) -> bool:
    """An integer master's solution, verified, as the incumbent where it has fewer GPUs; whether it did. Why it
    gave no plan goes to ``notes``, followed by ``source``."""
    found, why = _integer_plan(problem, setup, state, sol)
    if why:
        notes.append(why + source)
    better = run.inc.or_better(found, sol.counts, sol.chosen)
    took = better is not run.inc
    run.inc = better
    return took


def _rivals_text(run: _Run) -> str:
    """What the integer master's copies on the worker's core did, for the note ("" where none ran)."""
    if not run.rivals:
        return ""
    answered = sum(r is not None for r in run.rivals)
    return (f", {len(run.rivals)} of them with a copy on the second core (HiGHS random seed {RIVAL_SEED}; "
            f"{answered} answered, {run.rival_won} found the better plan)")


def _send_rival(state: ColgenState, deadline: float, options: SolveOptions) -> bool:
    """Hand the worker a copy of the integer master (``RIVAL_SEED``), to end by ``deadline``; whether it took it."""
    worker = state.proofs
    if worker is None or not worker.alive:
        return False
    state.rival = None
    return worker.submit_master(state.master.integer_mip(), RIVAL_SEED, deadline, options.mip_rel_gap)


def _rival_solution(setup: ColgenSetup, state: ColgenState, proven: bool, deadline: float) -> IntegerSolution | None:
    """The worker's copy's solution: at once where this process's master was ``proven`` optimal over the columns (the
    copy is cancelled: it cannot do better), else waited for until ``deadline`` (its own, which its HiGHS run may
    overrun by ``WATCHDOG_GRACE_S``), then cancelled and waited for ``RIVAL_LATE_S`` more; None where it had no
    solution or did not answer (a late answer is dropped). The worker's results on the way (the preempted task's)
    are applied as they come."""
    worker = state.proofs
    assert worker is not None
    cancelled_at = None
    while state.rival is None and worker.alive and worker.running_master:
        now = time.perf_counter()
        if cancelled_at is None and (proven or now >= deadline + WATCHDOG_GRACE_S):
            worker.cancel_master()
            cancelled_at = now
        if cancelled_at is not None and now >= cancelled_at + RIVAL_LATE_S:
            break
        collect_proof(setup, state, RIVAL_POLL_S)
    done, state.rival = state.rival, None
    if done is None:
        return None
    return integer_solution(state.master.options, done.result, done.x, done.contradicted)


def _dive(problem: PlanningProblem, setup: ColgenSetup, state: ColgenState, run: _Run, deadline: float,
          notes: list[str]) -> None:
    """A price-and-dive (``dive``) for a plan better than the incumbent, until ``deadline``; the incumbent
    replaced where it found a better verified plan."""
    res = dive(setup, state.master, run.inc.plan.num_gpus, deadline)
    run.dives.append(res)
    if not res.counts:
        return
    found, why = _verified_plan(problem, setup, state, res.counts, res.chosen, "the dive")
    if why:
        notes.append(why)
    run.inc = run.inc.or_better(found, res.counts, res.chosen)


def _eject(problem: PlanningProblem, setup: ColgenSetup, state: ColgenState, run: _Run, options: SolveOptions,
           t0: float, deadline: float, notes: list[str], share: float = EJECT_SHARE) -> None:
    """An ejection search (``eject``) from the incumbent's GPUs where the plan is above the bound, within ``share``
    of the time left and what is left of the run's budget for them (``_Run.eject_budget_s``; none with less than
    ``MIN_EJECT_S``), ending early where the bound (the worker's, collected as it goes) meets its plan; the GPUs of
    a plan it finds enter the master as columns, and that plan, verified, replaces the incumbent."""
    spent = math.fsum(r.seconds for r in run.ejections)
    limit = min(share * (deadline - time.perf_counter()), run.eject_budget_s - spent)
    if limit < MIN_EJECT_S or run.bound >= run.inc.plan.num_gpus:
        return
    got = trimmed_gpus(setup, state.master.columns, run.inc.counts, run.inc.chosen)
    if got is None:
        return

    def raised_floor() -> int:
        _collect_bound(setup, state, run)
        return run.bound

    res = eject_search(setup.space, setup.items, setup.terms, got[0], run.bound, time.perf_counter() + limit,
                       seed=len(run.ejections), raised_floor=raised_floor)
    run.ejections.append(res)
    if res.gpus is not None:
        counts: dict[int, int] = {}
        for j in state.master.add(res.gpus):
            counts[j] = counts.get(j, 0) + 1
        found, why = _verified_plan(problem, setup, state, counts, run.inc.chosen, "the ejection search")
        if why:
            notes.append(why)
        run.inc = run.inc.or_better(found, counts, run.inc.chosen)
    _collect_bound(setup, state, run)
    _say_state(options, t0, state, run)


def _members_per_gpu(setup: ColgenSetup) -> float:
    """Members per GPU of greedy's plan, on average."""
    gpus = sum(k for _, k in setup.start_columns)
    return sum(len(c.slots) * k for c, k in setup.start_columns) / max(gpus, 1)


@dataclass
class _Run:
    """The incumbent, the certified bound in GPUs, whether greedy's GPUs hold many members (``MANY_MEMBERS``),
    how many integer masters ran, the dives and the ejection searches."""

    inc: _Incumbent
    bound: int
    many_members: bool
    eject_budget_s: float  # seconds all ejection searches may take: a share of the limit, larger with many members
    masters: int = 0
    skipped: int = 0  # integer masters not run: the restricted LP showed they could not beat the incumbent
    regenerated: int = 0  # generations past the settled LP after a plan search's turn that found nothing
    dives: list[DiveResult] = field(default_factory=list)
    ejections: list[EjectResult] = field(default_factory=list)
    rivals: list[IntegerSolution | None] = field(default_factory=list)  # the copies' solutions (None: no answer)
    rival_won: int = 0  # copies whose plan beat this process's master's and the incumbent


def _collect_bound(setup: ColgenSetup, state: ColgenState, run: _Run, wait_s: float = 0.0) -> None:
    """A round that ended on the other core meanwhile (waited for at most ``wait_s``) applied, and the run's
    bound brought up to the certified bound."""
    collect_proof(setup, state, wait_s)
    run.bound = certified_gpus(setup, state)


def _master_cannot_improve(state: ColgenState, incumbent_gpus: int, left_s: float) -> bool:
    """Whether the integer master over the columns so far cannot beat the incumbent: its optimum is at
    least its LP's, rounded up (the LP is re-solved: columns may have entered after its last solve; its value
    is the master LP's the note reports)."""
    lp = state.master.solve_lp(max(0.1, left_s))
    if lp.objective is not None:
        state.lp_value = lp.objective
    return lp.objective is not None and math.ceil(lp.objective - ROUND_EPS) >= incumbent_gpus


def _rounds(problem: PlanningProblem, setup: ColgenSetup, state: ColgenState, run: _Run, options: SolveOptions,
            t0: float, deadline: float, notes: list[str]) -> None:
    """Column generation and the integer master in turn until the bound meets the incumbent, the LP
    is solved (the columns will not change) or time runs out."""
    skipped = False  # the last integer master was skipped: generate to the deadline or until it could help
    while True:
        if deadline - time.perf_counter() < MIN_ROUND_S + state.step_max_s:  # no time for a round's first step
            return
        inc = run.inc.plan.num_gpus
        report = _reporter(options, t0, setup, inc)
        left = deadline - time.perf_counter()
        if skipped:  # to the deadline, less what a HiGHS run in it may overrun (as the integer master's limit)
            generate(setup, state, deadline - WATCHDOG_GRACE_S, inc, options.threads, report, lp_below=inc,
                     until_settled=True)
        else:
            generate(setup, state, time.perf_counter() + GENERATE_SHARE * left, inc, options.threads, report,
                     until_settled=True)
        _collect_bound(setup, state, run)
        left = deadline - time.perf_counter()
        if run.bound >= inc or left < MIN_ROUND_S:
            return
        if state.settled or state.converged:  # more generation cannot raise the bound: the time left is the plan's
            _plan_search(problem, setup, state, run, options, t0, deadline, notes)
            return
        ran_on, skipped = skipped, _master_cannot_improve(state, inc, left)
        if skipped:
            if ran_on:  # generation has run to the deadline and the master still could not help
                return
            _eject(problem, setup, state, run, options, t0, deadline, notes)  # no plan in the columns: look outside
            if run.bound >= run.inc.plan.num_gpus:
                return
            run.skipped += 1
            continue
        # the time left is read after the check above, which re-solved the LP (1.8 s at 1000 workloads)
        master_s = master_limit_s(deadline)
        if deadline - time.perf_counter() < MIN_ROUND_S or master_s is None:
            return
        _improve(problem, setup, state, run, master_s, options, notes)
        run.masters += 1
        _collect_bound(setup, state, run)
        _eject(problem, setup, state, run, options, t0, deadline, notes)
        if run.bound >= run.inc.plan.num_gpus or deadline - time.perf_counter() < MIN_ROUND_S:
            return


def _plan_search(problem: PlanningProblem, setup: ColgenSetup, state: ColgenState, run: _Run, options: SolveOptions,
                 t0: float, deadline: float, notes: list[str]) -> None:
    """Once generation can no longer raise the bound (``ColgenState.settled``, or the LP solved), the time left goes to
    the plan: an integer master over the columns within ``PLAN_MASTER_SHARE`` of it, then, where the plan is
    still above the bound, an ejection search (``_eject``) within ``EJECT_SHARE`` of what is left and a dive
    (``dive``: it prices near the fixings it makes) within ``DIVE_SHARE`` of what is left then, in turn until the
    plan meets the bound or the time runs out; a turn that changed nothing (no better plan, no column added) is
    followed by generation past the settled LP (``_more_columns``), and the search ends where that adds no
    column either."""
    while run.bound < run.inc.plan.num_gpus:
        gpus = run.inc.plan.num_gpus
        left = deadline - time.perf_counter()
        master_s = master_limit_s(time.perf_counter() + PLAN_MASTER_SHARE * left)
        if left < MIN_ROUND_S or master_s is None:
            return
        if not _master_cannot_improve(state, gpus, left):
            _improve(problem, setup, state, run, master_s, options, notes)
            run.masters += 1
        else:
            run.skipped += 1
        _collect_bound(setup, state, run)
        _say_state(options, t0, state, run)
        _eject(problem, setup, state, run, options, t0, deadline, notes)
        left = deadline - time.perf_counter()
        if run.bound >= run.inc.plan.num_gpus or left < MIN_DIVE_S:
            return
        _dive(problem, setup, state, run, time.perf_counter() + DIVE_SHARE * left, notes)
        _say_state(options, t0, state, run)
        if (run.dives[-1].added == 0 and run.inc.plan.num_gpus == gpus  # the next turn would repeat this one
                and not _more_columns(setup, state, run, options, t0, deadline)):
            return


def _more_columns(setup: ColgenSetup, state: ColgenState, run: _Run, options: SolveOptions, t0: float,
                  deadline: float) -> bool:
    """Generation on past the settled LP, within ``GENERATE_SHARE`` of the time left: it cannot raise the bound,
    but its columns may hold a plan the ones so far do not (at V100 n = 50 seed 2 a member-class bound that came
    early settled generation on columns whose best plan was a GPU above the bound). Whether it added any."""
    left = deadline - time.perf_counter()
    if left < MIN_ROUND_S + state.step_max_s or state.converged:
        return False
    before = len(state.master.columns)
    inc = run.inc.plan.num_gpus
    generate(setup, state, time.perf_counter() + GENERATE_SHARE * left, inc, options.threads,
             _reporter(options, t0, setup, inc))
    _collect_bound(setup, state, run)
    run.regenerated += 1
    return len(state.master.columns) > before


def _last_proof(setup: ColgenSetup, state: ColgenState, run: _Run, deadline: float) -> None:
    """The worker's proof round still running when the rounds ended: its result (and the member-class bound's
    interim ones before it), waited for until ``deadline`` at most (its rounds end by then), while the bound is
    still below the plan."""
    while (state.proofs is not None and state.proofs.busy and state.proofs.alive
           and run.bound < run.inc.plan.num_gpus):
        left = deadline - time.perf_counter()
        _collect_bound(setup, state, run, max(0.0, left))
        if left <= 0:
            return


def _unprepared(problem: PlanningProblem, options: SolveOptions, t0: float, start_plan: Plan,
                trivial_gpus: int | None) -> tuple[Plan, Evidence]:
    """Greedy's plan and its evidence when the time limit came before column generation could start:
    the trivial bound when it was known by then, else one GPU (any plan has one)."""
    bound = trivial_gpus if trivial_gpus is not None else min(1, start_plan.num_gpus)
    elapsed = time.perf_counter() - t0
    _say(options, progress_line(elapsed, 0, bound, start_plan.num_gpus, None))
    known = ("the bound is the trivial bound" if trivial_gpus is not None
             else "the bound is one GPU only (the trivial bound was not computed by then)")
    note = (f"the time limit ({options.time_limit_s:g} s) came while preparing column generation ({elapsed:.1f} s "
            f"in): {known}; a longer limit lets column generation run")
    return start_plan, Evidence(bound, trivial_gpus, scope_text(problem), "returned the greedy plan", FORMULATION,
                                [note], "column generation", columns=0, solve_s=elapsed)


def solve_by_columns(problem: PlanningProblem, options: SolveOptions, t0: float, start: Packing,
                     start_plan: Plan) -> tuple[Plan, Evidence, SolveStatus | None]:
    """The best verified plan found, its evidence (see the module docstring), and ``error`` when the
    solver failed on the way (the best plan so far comes back, with the reason)."""
    deadline = t0 + options.time_limit_s - EXTRACT_RESERVE_S
    try:
        setup = prepare_colgen(problem, serving_model_for(problem), start, deadline)
        state = ColgenState(initial_master(setup, options.threads))
        check_deadline(deadline, setup.trivial_gpus)
    except PreparationTimedOut as out:
        return (*_unprepared(problem, options, t0, start_plan, out.trivial_gpus), None)
    many = _members_per_gpu(setup) >= MANY_MEMBERS
    run = _Run(_Incumbent(start_plan, start_solution(setup, state.master), setup.start_choice, ""), setup.trivial_gpus,
               many, (EJECT_BUDGET_SHARE_MANY if many else EJECT_BUDGET_SHARE) * options.time_limit_s)
    notes: list[str] = []
    failed = None
    try:
        with proofs_on_a_second_core(setup, state, options.time_limit_s, options.threads, deadline, classes=True):
            if run.many_members:  # greedy's plan searched first (see MANY_MEMBERS)
                _eject(problem, setup, state, run, options, t0, deadline, notes, share=1.0)
            _rounds(problem, setup, state, run, options, t0, deadline, notes)
            _last_proof(setup, state, run, deadline)
    except Exception as exc:  # noqa: BLE001 - solver trouble returns the best plan so far, with the reason
        log.error("column generation failed: %s: %s", type(exc).__name__, exc)
        notes.append(f"column generation failed ({type(exc).__name__}: {exc}); returned the best plan found so far")
        run.bound = certified_gpus(setup, state)
        failed = SolveStatus.ERROR
    plan, bound = run.inc.plan, run.bound
    _say_state(options, t0, state, run)
    saved = start_plan.num_gpus - plan.num_gpus
    message = (f"{saved} GPU(s) fewer than greedy ({start_plan.num_gpus})" if saved > 0 else
               "returned the greedy plan: " + ("the bound proves it optimal" if bound >= plan.num_gpus
                                               else "the integer master" + (" and the dives" if run.dives else "")
                                               + " found nothing better"))
    lp = "" if state.lp_value is None else f"master LP {state.lp_value:.4f} GPUs over the generated columns, "
    ended = ("LP solved" if state.converged else "generation stopped: the bound meets the plan"
             if bound >= plan.num_gpus else "LP not solved to the end")
    second = " on a second core" if state.proofs is not None else ""
    parts = [f"{lp}{ended}", f"{state.pricing_rounds} exact pricing round(s)",
             f"{state.point_rounds} point pricing round(s)", f"{state.relaxed_calls} relaxed pricing bound(s)",
             f"{state.proof_rounds} proof round(s) in {state.proof_s:.1f} s{second} "
             f"({state.proof_won} raised the bound)"]
    if state.proofs is not None:
        parts.append(f"{state.worker_pricing_rounds} box pricing round(s) on that core "
                     f"in {state.worker_pricing_s:.1f} s")
    parts.append(class_bound_text(state))
    skipped = f" ({run.skipped} skipped: the LP over the columns, rounded up, met the plan)" if run.skipped else ""
    parts.append(f"{run.masters} integer master run(s){skipped}" + _rivals_text(run))
    parts.append(dive_text(run.dives))
    parts.append(eject_text(run.ejections))
    if run.regenerated:
        parts.append(f"generation went on past the settled LP {run.regenerated} time(s), a turn having found nothing")
    notes.append(", ".join(parts))
    said = list(dict.fromkeys([*state.notes, *notes]))  # each note once: rounds can repeat one
    ev = Evidence(bound, setup.trivial_gpus, scope_text(problem), message, FORMULATION, said,
                  "column generation", columns=len(state.master.columns), solve_s=time.perf_counter() - t0)
    return plan, ev, failed
