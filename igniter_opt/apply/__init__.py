"""The executor: apply a plan to Triton Inference Servers under MPS, drive load, measure SLO attainment.

Modules by stage: ``options`` (what a run can be told), ``deploy`` (a plan worked out for this
machine; starts nothing), ``run`` (files, MPS, servers, load, cleanup), ``report`` (statistics,
files and plot from stored records), ``transition`` (a plan change under load); and the parts
they use: ``repository``, ``triton``, ``launcher``, ``loadgen``, ``serverstats``, ``models``,
``ports``, ``gpus``.

The names below are loaded lazily: the load generator's worker processes import
``igniter_opt.apply.loadgen`` and must not pay for pandas and matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "ApplyOptions": "options",
    "ApplyResult": "run",
    "Deployment": "deploy",
    "apply_plan": "run",
    "build_deployment": "deploy",
    "render_dry_run": "deploy",
    "render_result": "run",
}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"igniter_opt.apply.{_HOME[name]}"), name)
    raise AttributeError(f"module 'igniter_opt.apply' has no attribute {name!r}")
