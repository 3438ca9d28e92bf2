"""The exact planner's model stage: the mixed-integer program over candidate configurations.

Why the interference is linear, exactly
    On GPU g with n_g workloads, total L2 demand C_g and power P_g, configuration k has

        t_gpu = (F / f(P_g)) * Y_k,   Y_k = n_k D(n_g) + idle + a_k (1 + alpha_cache (C_g - c_k)),
        f(P)/F = min(1, 1 + kappa (P - P_max)),  kappa = alpha_f / F < 0.

    F/f is convex in P and multiplies Y; instead of over-estimating the product, divide by it:
    ``t_gpu <= B_k``  <=>  ``Y_k <= B_k * f(P_g)/F``  <=>  ``Y_k <= B_k`` and
    ``Y_k <= B_k (1 + kappa (P_g - P_max))``: two linear inequalities, no approximation. B_k is the
    GPU-time budget of the configuration (``PerformanceModel.gpu_time_budget_ms`` of its serving
    model's latency limit and its rate), so "latency <= limit and throughput >= rate" is exactly
    ``t_gpu <= B_k`` under every serving model (``igniter``, ``full``, ``tail``). The scheduling
    delay D(n) (0 alone, alpha_sch n + beta_sch with company) is bounded by a variable
    ``s_g >= max(0, alpha_sch n_g + beta_sch)``, exact when alpha_sch + beta_sch <= 0 (as on the
    V100, and under the paper's interference form on the H100 and H200). When alpha_sch + beta_sch
    > 0 (the kernel-delay interference form, docs/interference.md) that row would charge a lone
    workload a delay the model does not; a binary ``shared[g]`` (1 with company) then switches the
    row off on a GPU with one member, so the delay is exact there too. Every plan the program
    accepts therefore meets the exact model (re-checked by ``verify_plan`` anyway), up to a safety
    margin that absorbs the solver's tolerances.

The program (``build_model``): binaries x[d, g, k] (demand d on GPU g with configuration k) and
open[g] (and shared[g] where ``needs_shared_binary``); continuous n[g], cache[g], power[g],
sched[g]; the constraint families are the
``add_<name>_constraints`` functions below (their docstrings state the inequalities). Objective:
lexicographic, GPU cost first, then total share (two HiGHS runs, see ``add_objective``).
GPU symmetry is broken by ordering: demands sorted by lower-bound share, demand i may use GPUs
0..i only, and open[g] >= open[g+1]. Replanning adds keep options and a migration cost.
"""

from __future__ import annotations

import importlib
import math
import time
from typing import TYPE_CHECKING, Any

from igniter_opt.errors import SolverUnavailableError
from igniter_opt.planner.exact.configs import busy_power_w
from igniter_opt.planner.exact.data import MipData, slot_allowed

if TYPE_CHECKING:
    from pyomo.environ import ConcreteModel

INSTALL_HINT = "the exact planner needs the HiGHS solver: pip install 'highspy>=1.7' (and pyomo>=6.7)"
# Budgets are tightened by this much (ms, plus a share of the constraint's big-M) so that a
# solution the solver accepts within its feasibility and integrality tolerances (1e-7, 1e-6)
# still meets the exact model.
SAFETY_ABS_MS = 1e-5
SAFETY_REL_BIGM = 2e-6
# The bound's model is loosened instead (a bound must come from a model no tighter than the
# problem): budgets widened by this much (ms, plus a share of the big-M).
LOOSEN_ABS_MS = 1e-6
LOOSEN_REL_BIGM = 1e-7


def budget_shift(big_m: float, loosened: bool) -> float:
    """What a budget row's right-hand side moves by: down by the safety margin (plans that meet
    the exact model), or up by the loosening (a model whose optimum bounds the problem's)."""
    if loosened:
        return LOOSEN_ABS_MS + LOOSEN_REL_BIGM * big_m
    return -SAFETY_ABS_MS - SAFETY_REL_BIGM * big_m
# Conflict-clique rows are dense: at most this many nonzeros in all (the largest clique always).
CLIQUE_MAX_NONZEROS = 40_000


def solver_module(name: str) -> Any:
    """Import a module the exact planner needs (highspy, a part of Pyomo), or raise SolverUnavailableError."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise SolverUnavailableError(f"{INSTALL_HINT} ({exc})") from None


def _pyomo() -> Any:
    return solver_module("pyomo.environ")


def add_variables(m: ConcreteModel, data: MipData) -> None:
    """open[g] in {0,1}; x[d,g,k] in {0,1} where ``slot_allowed`` (g <= position of d, or g a running
    GPU when replanning); n, cache, power, sched >= 0; kept[j] in [0, count_j] per keep option."""
    pyo = _pyomo()
    G = data.num_gpus
    m.GPUS = pyo.Set(initialize=range(G), ordered=True)
    m.DEMANDS = pyo.Set(initialize=range(len(data.demands)), ordered=True)
    m.ASSIGN = pyo.Set(
        dimen=3, ordered=True,
        initialize=[(d, g, k) for d, md in enumerate(data.demands) for g in range(G)
                    if slot_allowed(data, d, g) for k in range(len(md.configs))],
    )
    m.PAIRS = pyo.Set(dimen=2, ordered=True,
                      initialize=[(d, g) for d in range(len(data.demands)) for g in range(G)
                                  if slot_allowed(data, d, g)])
    m.open = pyo.Var(m.GPUS, domain=pyo.Binary)
    m.x = pyo.Var(m.ASSIGN, domain=pyo.Binary)
    m.n = pyo.Var(m.GPUS, domain=pyo.NonNegativeReals, bounds=(0, data.bounds.max_members))
    m.cache = pyo.Var(m.GPUS, domain=pyo.Reals)
    m.power = pyo.Var(m.GPUS, domain=pyo.Reals)
    m.sched = pyo.Var(m.GPUS, domain=pyo.NonNegativeReals, bounds=(0, max(data.bounds.max_sched_ms, 0.0)))
    if needs_shared_binary(data):
        m.shared = pyo.Var(m.GPUS, domain=pyo.Binary)
    if data.keeps:
        m.KEEPS = pyo.Set(initialize=range(len(data.keeps)), ordered=True)
        m.kept = pyo.Var(m.KEEPS, domain=pyo.NonNegativeReals, bounds=lambda m, j: (0, data.keeps[j][2]))


def add_one_gpu_per_demand_constraints(m: ConcreteModel, data: MipData) -> None:
    """sum_{g,k} x[d,g,k] = 1 for every demand d (each demand on one GPU, one configuration)."""
    pyo = _pyomo()
    if not len(m.DEMANDS):
        return
    by_d: dict[int, list] = {d: [] for d in m.DEMANDS}
    for d, g, k in m.ASSIGN:
        by_d[d].append(m.x[d, g, k])
    m.one_gpu_per_demand = pyo.Constraint(m.DEMANDS, rule=lambda m, d: sum(by_d[d]) == 1)


def _by_gpu(m: ConcreteModel) -> dict[int, list[tuple[int, int]]]:
    out: dict[int, list[tuple[int, int]]] = {g: [] for g in m.GPUS}
    for d, g, k in m.ASSIGN:
        out[g].append((d, k))
    return out


def add_gpu_share_capacity_constraints(m: ConcreteModel, data: MipData) -> None:
    """sum_{d,k} u_k x[d,g,k] <= (100 % / unit) * open[g] for every GPU slot g."""
    pyo = _pyomo()
    if not len(m.GPUS):
        return
    members = _by_gpu(m)
    m.gpu_share_capacity = pyo.Constraint(m.GPUS, rule=lambda m, g: sum(
        data.demands[d].configs[k].units * m.x[d, g, k] for d, k in members[g]) <= data.cap_units * m.open[g])


def add_demand_needs_open_gpu_constraints(m: ConcreteModel, data: MipData) -> None:
    """sum_k x[d,g,k] <= open[g] for every (demand, GPU) pair (tightens the LP relaxation)."""
    pyo = _pyomo()
    if not len(m.PAIRS):
        return
    ks = {d: range(len(md.configs)) for d, md in enumerate(data.demands)}
    m.demand_needs_open_gpu = pyo.Constraint(
        m.PAIRS, rule=lambda m, d, g: sum(m.x[d, g, k] for k in ks[d]) <= m.open[g])


def add_gpu_load_constraints(m: ConcreteModel, data: MipData) -> None:
    """n[g] = sum x[d,g,k];  cache[g] = sum c_k x[d,g,k];  power[g] = p_idle + p_floor + sum p_k x[d,g,k].

    p_floor is the profile's shared power floor (0 under the paper's power form): the model pays it
    once on a busy GPU, and every row that reads power[g] only binds on a GPU with a member.
    """
    pyo = _pyomo()
    if not len(m.GPUS):
        return
    members = _by_gpu(m)
    p_idle = busy_power_w(data.problem.perf_model.hardware)
    cfg = data.demands
    m.gpu_members = pyo.Constraint(m.GPUS, rule=lambda m, g: m.n[g] == sum(m.x[d, g, k] for d, k in members[g]))
    m.gpu_cache = pyo.Constraint(m.GPUS, rule=lambda m, g: m.cache[g] == sum(
        cfg[d].configs[k].cache * m.x[d, g, k] for d, k in members[g]))
    m.gpu_power = pyo.Constraint(m.GPUS, rule=lambda m, g: m.power[g] == p_idle + sum(
        cfg[d].configs[k].power_w * m.x[d, g, k] for d, k in members[g]))


def needs_shared_binary(data: MipData) -> bool:
    """True when the plain row would charge a lone workload a delay: alpha_sch + beta_sch > 0 (and
    some GPU can have company)."""
    hw = data.problem.perf_model.hardware
    return data.bounds.max_members >= 2 and hw.alpha_sch + hw.beta_sch > 0.0


def sched_big_m(data: MipData) -> float:
    """What the row's right-hand side can reach with fewer than two members (n = 0 or 1), so that
    ``big_m (1 - shared)`` cancels it there: max(0, beta_sch, alpha_sch + beta_sch)."""
    hw = data.problem.perf_model.hardware
    return max(0.0, hw.beta_sch, hw.alpha_sch + hw.beta_sch)


def add_sched_delay_constraints(m: ConcreteModel, data: MipData) -> None:
    """sched[g] >= alpha_sch n[g] + beta_sch (and sched[g] >= 0): D(n) = max(0, alpha_sch n + beta_sch).

    Where ``needs_shared_binary``: n[g] - 1 <= (max_members - 1) shared[g] (company forces
    shared[g] = 1) and sched[g] >= alpha_sch n[g] + beta_sch - big_m (1 - shared[g]); alone the
    solver may set shared[g] = 0 and sched[g] = 0, the model's delay for a lone workload.
    """
    pyo = _pyomo()
    if not len(m.GPUS):
        return
    hw = data.problem.perf_model.hardware
    if data.bounds.max_members < 2:
        return
    if not needs_shared_binary(data):
        m.sched_delay = pyo.Constraint(m.GPUS, rule=lambda m, g: m.sched[g] >= hw.alpha_sch * m.n[g] + hw.beta_sch)
        return
    big_m, most = sched_big_m(data), data.bounds.max_members
    m.shared_with_company = pyo.Constraint(m.GPUS, rule=lambda m, g: m.n[g] - 1 <= (most - 1) * m.shared[g])
    m.sched_delay = pyo.Constraint(m.GPUS, rule=lambda m, g: m.sched[g] >= hw.alpha_sch * m.n[g] + hw.beta_sch
                                   - big_m * (1 - m.shared[g]))


def _gpu_time_terms(data: MipData, d: int, k: int) -> tuple[float, float, float]:
    """(constant, coefficient of sched, coefficient of cache) of Y_k = n_k s + idle + a_k (1 + ac (C - c_k))."""
    md = data.demands[d]
    c = md.configs[k]
    const = md.idle_ms + c.active_ms * (1.0 - md.alpha_cache * c.cache)
    return const, md.kernels, c.active_ms * md.alpha_cache


def _y_max(data: MipData, d: int, k: int) -> float:
    const, a_s, a_c = _gpu_time_terms(data, d, k)
    return const + a_s * data.bounds.max_sched_ms + a_c * max(data.bounds.max_cache, data.demands[d].configs[k].cache)


def _off_m(big_m: float, shift: float) -> float:
    """The big-M of a budget row whose right-hand side moved by ``shift``: a row tightened by the safety
    margin must still hold with its configuration off in the most crowded reachable environment (with
    M alone it was violated there by the margin, so the model rejected what the exact model accepts)."""
    return big_m - min(0.0, shift)


def add_gpu_time_budget_constraints(m: ConcreteModel, data: MipData) -> None:
    """Full clock: n_k sched[g] + idle + a_k (1 + alpha_cache (cache[g] - c_k)) <= B_k + M (1 - x[d,g,k]).

    M = Y_k at the reachable maxima of sched and cache, minus B_k (the tightest the bounds allow).
    """
    pyo = _pyomo()
    if not len(m.ASSIGN):
        return

    def rule(m, d, g, k):
        const, a_s, a_c = _gpu_time_terms(data, d, k)
        b = data.demands[d].configs[k].budget_ms
        big_m = max(0.0, _y_max(data, d, k) - b)
        if big_m <= 0.0:
            return pyo.Constraint.Skip  # feasible in every reachable environment
        shift = budget_shift(big_m, getattr(m, "loosened", False))
        return a_s * m.sched[g] + a_c * m.cache[g] + const <= b + shift + _off_m(big_m, shift) * (1 - m.x[d, g, k])

    m.gpu_time_budget = pyo.Constraint(m.ASSIGN, rule=rule)


def add_gpu_time_budget_throttled_constraints(m: ConcreteModel, data: MipData) -> None:
    """Clock drop: Y_k <= B_k (1 + kappa (power[g] - P_max)) + M' (1 - x[d,g,k]), kappa = alpha_f / F < 0.

    With the full-clock family this is exactly Y_k <= B_k f(P)/F, i.e. t_gpu <= B_k. Skipped when
    no GPU can reach P_max.
    """
    pyo = _pyomo()
    hw = data.problem.perf_model.hardware
    if not len(m.ASSIGN) or data.bounds.max_power_w <= hw.max_power_w:
        return
    kappa = hw.alpha_f / hw.max_clock_mhz

    def rule(m, d, g, k):
        const, a_s, a_c = _gpu_time_terms(data, d, k)
        b = data.demands[d].configs[k].budget_ms
        rhs_min = b * (1.0 + kappa * (data.bounds.max_power_w - hw.max_power_w))
        big_m = max(0.0, _y_max(data, d, k) - rhs_min)
        if big_m <= 0.0:
            return pyo.Constraint.Skip
        shift = budget_shift(big_m, getattr(m, "loosened", False))
        return (a_s * m.sched[g] + a_c * m.cache[g] + const - b * kappa * (m.power[g] - hw.max_power_w)
                <= b + shift + _off_m(big_m, shift) * (1 - m.x[d, g, k]))

    m.gpu_time_budget_throttled = pyo.Constraint(m.ASSIGN, rule=rule)


def _tolerance_terms(data: MipData, d: int, throttled: bool, loosened: bool = False
                     ) -> tuple[float, float, list[float], float] | None:
    """Per demand: (sigma, pi, theta_k, big) of the aggregated tolerance cut, or None if not needed."""
    hw = data.problem.perf_model.hardware
    kappa = hw.alpha_f / hw.max_clock_mhz
    md = data.demands[d]
    sig, pis, thetas = [], [], []
    for k, c in enumerate(md.configs):
        const, a_s, a_c = _gpu_time_terms(data, d, k)
        if a_c <= 0:
            return None
        b = c.budget_ms
        if throttled:
            big_m = max(0.0, _y_max(data, d, k) - b * (1.0 + kappa * (data.bounds.max_power_w - hw.max_power_w)))
            rhs = b + budget_shift(big_m, loosened) - const
            # a_s s + a_c C - b kappa (P - P_idle) <= rhs + b kappa (P_idle - P_max), divided by a_c
            pis.append(-b * kappa / a_c)
            thetas.append((rhs + b * kappa * (hw.idle_power_w - hw.max_power_w)) / a_c)
        else:
            big_m = max(0.0, _y_max(data, d, k) - b)
            rhs = b + budget_shift(big_m, loosened) - const
            pis.append(0.0)
            thetas.append(rhs / a_c)
        sig.append(a_s / a_c)
    sigma, pi = min(sig), min(pis)
    big = data.bounds.max_cache + sigma * data.bounds.max_sched_ms + pi * (data.bounds.max_power_w - hw.idle_power_w)
    thetas = [min(t, big) for t in thetas]
    if all(t >= big for t in thetas):
        return None
    return sigma, pi, thetas, big


def add_interference_tolerance_constraints(m: ConcreteModel, data: MipData) -> None:
    """Aggregated cut per (d, g), implied by the gpu_time_budget families, stronger in the LP:

    cache[g] + sigma_d sched[g] + pi_d (power[g] - p_idle) <= sum_k theta_k x[d,g,k] + big_d (1 - sum_k x[d,g,k]),
    where theta_k is the largest cache[g] configuration k tolerates (divide its budget row by
    a_k alpha_cache), sigma_d and pi_d are the smallest coefficients over k, and big_d bounds the
    left side. Two rows per pair: full clock (pi = 0) and throttled.
    """
    pyo = _pyomo()
    if not len(m.PAIRS):
        return
    hw = data.problem.perf_model.hardware
    loosened = getattr(m, "loosened", False)
    terms = {(d, t): _tolerance_terms(data, d, t, loosened) for d in m.DEMANDS for t in (False, True)
             if not t or data.bounds.max_power_w > hw.max_power_w}
    m.CLOCKS = pyo.Set(initialize=[0, 1] if data.bounds.max_power_w > hw.max_power_w else [0])

    def rule(m, d, g, t):
        tt = terms.get((d, bool(t)))
        if tt is None:
            return pyo.Constraint.Skip
        sigma, pi, thetas, big = tt
        return (m.cache[g] + sigma * m.sched[g] + pi * (m.power[g] - hw.idle_power_w)
                <= sum(th * m.x[d, g, k] for k, th in enumerate(thetas))
                + big * (1 - sum(m.x[d, g, k] for k in range(len(thetas)))))

    m.interference_tolerance = pyo.Constraint(m.PAIRS, m.CLOCKS, rule=rule)


def add_conflict_clique_constraints(m: ConcreteModel, data: MipData) -> None:
    """sum_{d in C} sum_k x[d,g,k] <= open[g] for every conflict clique C and GPU g.

    A clique is a set of demands no two of which fit on one GPU together (``pair_conflicts``);
    implied by the other rows, but it lifts the LP bound to at least |C| GPUs. Added only when the
    largest clique beats the share bound ceil(sum min share / 100 %): otherwise the rows do not
    move the root bound and (measured on the paper's mix) slow HiGHS's search down.
    """
    pyo = _pyomo()
    share_bound = math.ceil(sum(d.min_units for d in data.demands) / data.cap_units - 1e-9)
    if not data.cliques or not len(m.GPUS) or data.max_clique <= share_bound:
        return
    K = {d: range(len(md.configs)) for d, md in enumerate(data.demands)}
    # largest cliques first, while their rows stay small (dense rows make HiGHS's presolve slow)
    keep: list[int] = []
    used = 0
    for c, clique in enumerate(data.cliques):
        nz = sum(len(K[d]) * min(d + 1, data.num_gpus) for d in clique)
        if keep and used + nz > CLIQUE_MAX_NONZEROS:
            break
        keep.append(c)
        used += nz
    m.CLIQUES = pyo.Set(initialize=keep, ordered=True)

    def rule(m, c, g):
        members = [d for d in data.cliques[c] if slot_allowed(data, d, g)]
        if len(members) < 2:
            return pyo.Constraint.Skip  # one demand: demand_needs_open_gpu already says it
        return sum(m.x[d, g, k] for d in members for k in K[d]) <= m.open[g]

    m.conflict_clique = pyo.Constraint(m.CLIQUES, m.GPUS, rule=rule)


def add_gpu_open_order_constraints(m: ConcreteModel, data: MipData) -> None:
    """open[g] >= open[g+1] for interchangeable (new) slots g, g+1 (symmetry breaking; with 'demand
    i on new slots 0..i' in the index set). Running GPUs (replanning) are not interchangeable."""
    pyo = _pyomo()
    if data.num_gpus - data.fixed_slots < 2:
        return
    m.GPU_PAIRS = pyo.Set(initialize=range(data.fixed_slots, data.num_gpus - 1), ordered=True)
    m.gpu_open_order = pyo.Constraint(m.GPU_PAIRS, rule=lambda m, g: m.open[g] >= m.open[g + 1])


def add_keep_placement_constraints(m: ConcreteModel, data: MipData) -> None:
    """kept[j] <= sum_{(d,k) in K_j} x[d, g_j, k] for every keep option j (replanning only).

    K_j: the demands of the running placement's workload, each with the configuration equal to the
    placement's batch and share; g_j: its GPU's slot. kept[j] <= count_j is its bound, and the
    objective pays the migration cost on count_j - kept[j]: a running placement counts as kept
    only when a demand of its workload sits on the same GPU with the same share and batch.
    """
    pyo = _pyomo()
    if not data.keeps:
        return

    def rule(m, j):
        g, cands, _ = data.keeps[j]
        terms = [m.x[d, g, k] for d, k in cands if (d, g, k) in m.x]
        if not terms:
            return m.kept[j] <= 0
        return m.kept[j] <= sum(terms)

    m.keep_placement = pyo.Constraint(m.KEEPS, rule=rule)


def add_objective(m: ConcreteModel, data: MipData) -> None:
    """Lexicographic: first min gpu_cost = price * sum_g open[g]; then, with the GPUs fixed,
    min total_share = sum_{d,g,k} share_k x[d,g,k] (``m.total_share``, deactivated until phase 2).

    Replanning adds C * (running placements - sum_j kept[j]) to the first objective and
    (100 G + 1) * (running placements - sum_j kept[j]) to the second (fewest changes, then share).
    Solving the two in turn is the exact lexicographic optimum. A single weighted objective
    (cost + eps * share) is equivalent but much slower to prove: a node whose LP bound exceeds
    G - 1 GPUs can be pruned by the GPU-count objective, not by the weighted one.
    """
    pyo = _pyomo()
    unit = data.problem.perf_model.unit_pct
    cost = data.price * sum(m.open[g] for g in m.GPUS)
    if data.migration_cost and data.old_placements:
        # replanning: + C * (running placements not kept)
        kept = sum(m.kept[j] for j in m.KEEPS) if data.keeps else 0.0
        cost = cost + data.migration_cost * (data.old_placements - kept)
    m.gpu_cost = pyo.Objective(expr=cost, sense=pyo.minimize)
    share = unit * sum(data.demands[d].configs[k].units * m.x[d, g, k] for d, g, k in m.ASSIGN)
    if data.old_placements:
        # replanning: fewest changed placements first (one outweighs any share: the total share
        # stays below 100 % per slot), then the least share
        kept = sum(m.kept[j] for j in m.KEEPS) if data.keeps else 0.0
        share = share + (100.0 * data.num_gpus + 1.0) * (data.old_placements - kept)
    m.total_share = pyo.Objective(expr=share, sense=pyo.minimize)
    m.total_share.deactivate()


def build_model(data: MipData, *, loosened: bool = False) -> ConcreteModel:
    """The Pyomo model (not solved). ``m.data`` holds the instance data; ``m.build_s`` its build time.

    ``loosened``: budgets widened (``budget_shift``) instead of tightened, so that the solver's
    bound is a bound of the problem; its plans then still go through ``verify_plan``, which
    rejects one that only the widening let in.
    """
    pyo = _pyomo()
    t0 = time.perf_counter()
    m = pyo.ConcreteModel(name="igniter_exact")
    m.loosened = loosened
    add_variables(m, data)
    add_one_gpu_per_demand_constraints(m, data)
    add_gpu_share_capacity_constraints(m, data)
    add_demand_needs_open_gpu_constraints(m, data)
    add_gpu_load_constraints(m, data)
    add_sched_delay_constraints(m, data)
    add_gpu_time_budget_constraints(m, data)
    add_gpu_time_budget_throttled_constraints(m, data)
    add_interference_tolerance_constraints(m, data)
    add_conflict_clique_constraints(m, data)
    add_gpu_open_order_constraints(m, data)
    add_keep_placement_constraints(m, data)
    add_objective(m, data)
    m.data = data
    m.build_s = time.perf_counter() - t0
    return m


def set_warm_start(m: ConcreteModel, data: MipData) -> None:
    """Give every variable the greedy plan's value (the MIP start)."""
    hw = data.problem.perf_model.hardware
    for idx in m.x:
        m.x[idx].set_value(0)
    used: dict[int, list[tuple[int, int]]] = {}
    for d, (g, k) in data.warm.items():
        m.x[d, g, k].set_value(1)
        used.setdefault(g, []).append((d, k))
    for g in m.GPUS:
        mem = used.get(g, [])
        m.open[g].set_value(1 if mem else 0)
        n = len(mem)
        m.n[g].set_value(n)
        m.cache[g].set_value(sum(data.demands[d].configs[k].cache for d, k in mem))
        m.power[g].set_value(busy_power_w(hw) + sum(data.demands[d].configs[k].power_w for d, k in mem))
        m.sched[g].set_value(max(0.0, hw.alpha_sch * n + hw.beta_sch) if data.bounds.max_members >= 2 else 0.0)
        if hasattr(m, "shared"):  # alone: no delay (the binary switches the row off)
            m.shared[g].set_value(1 if n >= 2 else 0)
            if n < 2:
                m.sched[g].set_value(0.0)
    for j, (g, cands, count) in enumerate(data.keeps):
        m.kept[j].set_value(min(count, sum(1 for d, k in cands if data.warm.get(d) == (g, k))))
