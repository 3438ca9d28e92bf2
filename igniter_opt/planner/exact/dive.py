"""Price-and-dive: a plan search that fixes the master's columns one at a time and prices between fixings.

From the master LP over the columns so far: kernel pricing (``colgen.heuristic_round``) at the LP's duals,
re-solving after each round that added a column, for at most ``DIVE_PRICING_ROUNDS`` rounds; then

- the LP, rounded up, at least the incumbent's GPUs: no better plan down this path, the dive ends;
- the LP's solution whole: that is a plan (the caller turns it into a packing and verifies it);
- else the fractional column of largest value is fixed at its next whole number (its lower bound raised),
  or, every column whole, the split option of largest value is fixed, and the dive goes on.

The integer master (price-and-branch) only combines the columns that generation priced at the root LP's
duals; a dive prices at the duals of the fixed LPs, so the columns it adds are the ones a plan near the
fixings needs (H100 n = 50 seed 4: where the benchmark's integer masters over generation's columns had found
only greedy's 7 GPUs, a dive after 20 s of generation found a verified 6-GPU plan in 18 s; docs/exact-history.md,
"Probed on 2026-12-05 (later)", and docs/exact.md, "Generation stops where it can raise the bound no more").

A heuristic: it proves nothing, and the bound never comes from it. The fixings are lifted on the way out,
so the master is as before plus the columns priced on the way (each a configuration the kernel accepts).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from igniter_opt.planner.exact.colgen import ROUND_EPS, ColgenSetup, heuristic_round
from igniter_opt.planner.exact.master import Master

# Rounds of kernel pricing at each fixed LP's duals, at most (fewer where a round adds no column). On H100
# n = 50 seed 4, 15 found the 6-GPU plan; 5 ended the dive at an LP of 6.10 after 5 fixings (docs/exact-history.md).
DIVE_PRICING_ROUNDS = 15
# A value within this of a whole number counts as whole.
WHOLE_EPS = 1e-6


@dataclass(frozen=True)
class DiveResult:
    """A whole LP solution the dive ended at (``counts``: GPUs per column index; ``chosen``: workload ->
    split option), or none (``counts`` empty), with why it ended, the fixings made and the columns added."""

    counts: dict[int, int]
    chosen: dict[int, int]
    ended: str
    fixings: int
    added: int
    seconds: float

    @property
    def gpus(self) -> int:
        return sum(self.counts.values())


def dive(setup: ColgenSetup, master: Master, incumbent_gpus: int, deadline: float,
         rounds: int = DIVE_PRICING_ROUNDS) -> DiveResult:
    """One dive (the module docstring) from the master's LP, ending by ``deadline`` (``time.perf_counter()``)
    at the latest; its fixings are lifted before it returns."""
    t0 = time.perf_counter()
    before = len(master.columns)
    fixings = 0

    def result(ended: str, counts: dict[int, int] | None = None, chosen: dict[int, int] | None = None
               ) -> DiveResult:
        return DiveResult(counts or {}, chosen or {}, ended, fixings, len(master.columns) - before,
                          time.perf_counter() - t0)

    try:
        while True:
            lp = master.solve_lp(deadline - time.perf_counter())
            for _ in range(rounds):
                if lp.objective is None or time.perf_counter() >= deadline:
                    break
                added, _ = heuristic_round(setup, master, lp.duals, deadline)
                if not added:
                    break
                lp = master.solve_lp(deadline - time.perf_counter())
            if time.perf_counter() >= deadline:
                return result("the time limit")
            if lp.objective is None:  # (HiGHS's own limit may come a little before the deadline)
                return result("the time limit" if "time limit" in lp.status.lower()
                              else f"the LP ended with '{lp.status}'")
            if math.ceil(lp.objective - ROUND_EPS) >= incumbent_gpus:
                return result(f"its LP reached {lp.objective:.4f} GPUs, no better than the plan")
            z, y = master.lp_solution()
            frac_y = _fraction(y)
            if frac_y.any():
                j = int(np.flatnonzero(frac_y)[np.argmax(y[frac_y])])
                master.raise_lower(master.offset + j, math.ceil(y[j] - WHOLE_EPS))
            else:
                frac_z = _fraction(z)
                if not frac_z.any():
                    counts = {int(j): int(round(v)) for j, v in enumerate(y) if v > 0.5}
                    chosen = {w: o for k, (w, o) in enumerate(master.options) if z[k] > 0.5}
                    return result("a whole LP solution", counts, chosen)
                master.raise_lower(int(np.flatnonzero(frac_z)[np.argmax(z[frac_z])]), 1.0)
            fixings += 1
    finally:
        master.lift_lowers()


def _fraction(values: np.ndarray) -> np.ndarray:
    """Which values are not whole numbers."""
    return np.abs(values - np.rint(values)) > WHOLE_EPS


def dive_text(dives: list[DiveResult]) -> str:
    """The dives' part of the planner's note."""
    if not dives:
        return "no dive"
    each = "; ".join(f"{d.fixings} fixing(s), {d.added} column(s) added, {d.seconds:.1f} s, ended at "
                     + (f"a whole LP solution of {d.gpus} GPU(s)" if d.counts else d.ended) for d in dives)
    return f"{len(dives)} dive(s) ({each})"
