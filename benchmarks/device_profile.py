"""Run the profiler on the lent GPU with a named plan (what the device calls run).

``python benchmarks/device_profile.py --plan smoke|full -o OUT [--deadline-s 520]``

The ``smoke`` plan is a subset of ``full`` (same measurement keys), so its checkpoint is reused
by the full run. ``--deadline-s`` stops cleanly (MPS quit, processes killed, checkpoint kept)
before the device call's limit.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path

from igniter_opt.zoo import MODEL_NAMES

from igniter_opt.errors import IgniterOptError
from igniter_opt.profiling.cli import profile_gpu
from igniter_opt.profiling.cuda import CudaBackend
from igniter_opt.profiling.plan import ProfilePlan

PLANS = {
    "smoke": dict(batches=(1, 8, 32), shares_pct=(10.0, 50.0, 100.0), max_copies=3,
                  share_unit_candidates=(10.0, 10.5, 11.0, 11.5, 12.0)),
    "full": dict(),
}


def _alarm(*_: object) -> None:
    raise SystemExit(124)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--plan", choices=sorted(PLANS), default="full")
    ap.add_argument("--models", default=",".join(MODEL_NAMES))
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--deadline-s", type=int, default=0)
    ap.add_argument("--no-fit", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, _alarm)
    if args.deadline_s:
        signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(args.deadline_s)
    plan = ProfilePlan(models=tuple(args.models.split(",")), **PLANS[args.plan])
    out = Path(args.out)
    t0 = time.time()
    try:
        backend = CudaBackend(0, log_dir=out / "logs")
        profile_gpu(plan, backend, out, fit=not args.no_fit, progress=True)
    except IgniterOptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        print(f"wall {time.time() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
