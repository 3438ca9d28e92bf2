"""HiGHS behaviours the exact planner works around, on models saved from real runs (``tests/data``)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("highspy", reason="the pricing MIP needs highspy")

from igniter_opt.planner.exact.lp import WATCHDOG_GRACE_S  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
LIMIT_S = 3.85  # the limit the pricing MIP had when it hung

_SOLVE = """
import json, sys, time
from igniter_opt.planner.exact.lp import new_highs, run
from igniter_opt.planner.exact.pricing import set_pricing_options
h = new_highs(1)
h.readModel(sys.argv[1])
set_pricing_options(h)
t0 = time.perf_counter()
res = run(h, float(sys.argv[2]), mip=True)
print(json.dumps({"status": res.status, "bound": res.bound, "s": time.perf_counter() - t0}))
"""


def test_the_pricing_mip_keeps_its_limit_on_a_model_where_sub_mip_presolve_hung(tmp_path: Path) -> None:
    """A pricing MIP saved from a fleet count vector's LP (``benchmarks/fleet.py`` random5 under ``igniter`` over
    ``h100:1.0,h200:1.25`` at 60 s; the H200's 594 items). With HiGHS 1.16's defaults it ran more than 60 s at a
    3.85 s limit, inside nested RENS sub-MIPs' presolve, deaf to the limit and to ``cancelSolve``; with the
    pricing MIP's options (``pricing.set_pricing_options``: its sub-MIP heuristics off) it is solved within the
    limit (about 1 s here). It runs in a subprocess, so that a hang fails the test instead of stalling the suite."""
    model = tmp_path / "pricing.mps"
    model.write_bytes(gzip.decompress((DATA / "pricing_mip_sub_mip_hang.mps.gz").read_bytes()))
    args = [sys.executable, "-c", _SOLVE, str(model), str(LIMIT_S)]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the pricing MIP ran past 60 s at a {LIMIT_S} s limit (HiGHS's sub-MIP presolve hang is back)")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["s"] <= LIMIT_S + WATCHDOG_GRACE_S + 1.0, out
    assert out["bound"] is not None and out["bound"] > 0, out
