"""Dual stabilisation of column generation's first rounds: a box step on the duals (du Merle,
Villeneuve, Desrosiers and Hansen, "Stabilized column generation", Discrete Mathematics 194, 1999).

Why: the master starts from the greedy plan, whose LP is highly degenerate. Its vertex duals put
a GPU's worth on a few piece types and nothing on the rest, so the kernel heuristic prices columns
worth 5-20 GPUs that barely move the LP: on the H100 at 50 workloads the LP stayed at greedy's
7 GPUs for the first 22 s, and at 200 workloads at 23 for the first 93 s (docs/exact.md).

What: while stabilising, piece type t's dual is capped at alpha * (its least share alone, as a
fraction of a GPU), at most 1 (``Master.cap_duals``): the duals then price a column by the share its
members need alone, so the heuristic packs GPUs densely. A column is worth at most alpha there (its
members' least shares sum to at most a GPU), so alpha starts above 1, at ``ALPHA_START``; it grows by
``ALPHA_GROWTH`` whenever a round of kernel pricing adds nothing at the capped duals, and at least every
``GROW_EVERY`` rounds; once every cap reaches a GPU (each piece alone on a GPU already caps its dual
there) or alpha reaches ``ALPHA_MAX``, the caps are lifted for good. While the caps bind (the capped LP
uses an artificial column), only the kernel heuristic prices and the LP's value is not the master's.
Caps that do not bind leave an optimal solution of the restricted master, so its value and duals
(optimal duals of the master that also meet the caps) serve as uncapped ones: exact pricing, and
the LP declared solved when nothing is worth more than a GPU there. The integer master runs with the
caps lifted (``generate`` lifts them when it returns and sets them again on its next call). By default
it runs above ``colgen.MIP_MAX_ITEMS`` items only (``ColgenState.stabilize``). Any duals
>= 0 give a certified bound (Farley), capped ones included, so the bound stays valid throughout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ALPHA_START = 1.5
ALPHA_GROWTH = 1.5
GROW_EVERY = 3
ALPHA_MAX = 50.0


@dataclass
class DualCaps:
    """The box step's state: each piece type's least share alone (fraction of a GPU) and alpha."""

    least: np.ndarray
    alpha: float = ALPHA_START
    rounds: int = 0  # rounds of kernel pricing since alpha last grew
    done: bool = False

    def caps(self) -> np.ndarray:
        return np.minimum(self.alpha * self.least, 1.0)

    def after_round(self, added: int) -> bool:
        """After a round of kernel pricing that added ``added`` columns: whether the caps changed (alpha
        grew; ``done`` when they are to be lifted)."""
        self.rounds += 1
        if added and self.rounds < GROW_EVERY:
            return False
        self.rounds = 0
        self.alpha *= ALPHA_GROWTH
        self.done = self.alpha >= ALPHA_MAX or self.alpha * float(np.min(self.least, initial=1.0)) >= 1.0
        return True
