"""The iGniter performance model: raw profiles, fitting and prediction."""

from igniter_opt.perfmodel.fit import ActiveTimeModel, fit_hardware, fit_model, fit_profile
from igniter_opt.perfmodel.model import HardwareCoefficients, ModelCoefficients, PerformanceModel
from igniter_opt.perfmodel.raw import RawProfile, load_raw
from igniter_opt.perfmodel.store import load_profile, resolve_profile, write_profile

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
