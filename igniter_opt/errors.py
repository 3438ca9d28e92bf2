"""Errors the user can fix. Every message names what is wrong and how to fix it, on one line."""


class IgniterOptError(Exception):
    """Base class: the CLI turns these into a one-line error and exit code 1."""


class InputError(IgniterOptError):
    """A workloads file, plan file or option is malformed."""


class ProfileError(IgniterOptError):
    """A profile is missing, corrupt or incomplete."""


class ProblemError(IgniterOptError):
    """The planning problem cannot be solved as posed (for example an SLO no share can meet)."""


class PlanError(IgniterOptError):
    """A plan file is of another schema or inconsistent with the problem."""


class SolverUnavailableError(IgniterOptError):
    """The MIP solver is not installed."""


class GpuUnavailableError(IgniterOptError):
    """No usable NVIDIA GPU, driver, NVML or CUDA-enabled torch where the profiler runs."""


class MpsError(IgniterOptError):
    """The MPS control daemon is already running, failed to start, or failed to stop."""


class MeasurementError(IgniterOptError):
    """A measurement process crashed, hung past its timeout, or returned unusable data."""


class ApplyError(IgniterOptError):
    """Applying a plan failed: a server would not start, a port is taken, a GPU is missing, ..."""
