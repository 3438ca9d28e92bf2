"""The iGniter performance model: raw profiles, fitting and prediction.

Fitting (scikit-learn, scipy) is imported on first use only, so that planning from a fitted
profile starts fast.
"""

from __future__ import annotations

from typing import Any

from igniter_opt.perfmodel.model import HardwareCoefficients, ModelCoefficients, PerformanceModel
from igniter_opt.perfmodel.store import load_profile, resolve_profile, write_profile

_LAZY = {
    "ActiveTimeModel": "igniter_opt.perfmodel.fit",
    "fit_hardware": "igniter_opt.perfmodel.fit",
    "fit_model": "igniter_opt.perfmodel.fit",
    "fit_profile": "igniter_opt.perfmodel.fit",
    "RawProfile": "igniter_opt.perfmodel.raw",
    "load_raw": "igniter_opt.perfmodel.raw",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'igniter_opt.perfmodel' has no attribute {name!r}")


__all__ = [
    "ActiveTimeModel",
    "HardwareCoefficients",
    "ModelCoefficients",
    "PerformanceModel",
    "RawProfile",
    "fit_hardware",
    "fit_model",
    "fit_profile",
    "load_profile",
    "load_raw",
    "resolve_profile",
    "write_profile",
]
