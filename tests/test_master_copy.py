"""The integer master as arrays (``master.MasterMip``), what the proof worker runs a copy of: the copy is the same
MIP, so HiGHS finds the same optimum in it, and its solution maps back onto the same columns and split options."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

pytest.importorskip("highspy", reason="the exact planner needs highspy")

from igniter_opt.planner.exact import colgen
from igniter_opt.planner.exact.master import integer_solution


def test_the_copy_of_the_integer_master_has_the_masters_optimum_and_solution_layout(pricing_mix) -> None:
    """Over greedy's columns and every brute-forced configuration of a pricing mix: the copy, pickled as the worker
    gets it and solved with another seed, proves the same number of GPUs as the master itself; its solution covers
    every piece type's count with the split options it chose, read back through the master's own layout."""
    setup, columns = pricing_mix
    master = colgen.initial_master(setup, 1)
    master.add(columns)
    own = master.solve_integer(30.0, None, None, 0.0)
    assert own.result.status == "Optimal"
    mip = pickle.loads(pickle.dumps(master.integer_mip()))
    assert mip.cost.size == master.offset + len(master.columns)
    res, x, contradicted = mip.solve(1, 30.0, 0.0, seed=7)
    copy = integer_solution(master.options, res, x, contradicted)
    assert res.status == "Optimal" and not contradicted
    assert copy.cost == own.cost == round(res.objective)
    assert set(copy.chosen) == {w for w, _ in master.options}  # one split option per workload
    held = np.zeros(len(setup.pieces))
    for j, n in copy.counts.items():
        for t, a in master.columns[j].coef:
            held[t] += n * a
    need = np.array([p.count if copy.chosen[p.workload] == p.option else 0 for p in setup.pieces])
    assert np.all(held >= need - 1e-9)
