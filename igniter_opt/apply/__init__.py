"""The executor: apply a plan to Triton Inference Servers under MPS, drive load, measure SLO attainment.

The names below are loaded lazily: the load generator's worker processes import
``igniter_opt.apply.loadgen`` and must not pay for pandas and matplotlib.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ApplyOptions", "ApplyResult", "Deployment", "apply_plan", "build_deployment", "render_dry_run",
           "render_result"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from igniter_opt.apply import executor

        return getattr(executor, name)
    raise AttributeError(f"module 'igniter_opt.apply' has no attribute {name!r}")
