"""Everything ``apply`` can be told, declared once; the defaults are what the CLI uses."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from igniter_opt.apply.launcher import LaunchMode
from igniter_opt.apply.loadgen import Arrival
from igniter_opt.errors import ApplyError

DEFAULT_MAX_LAG_MS = 1.0
LOAD_GENERATORS = ("python", "perf_analyzer")  # see docs/executor.md for how they compare


@dataclass(frozen=True)
class ApplyOptions:
    """Options of one ``apply`` run (times in s unless the name says otherwise)."""

    out_dir: Path = Path("apply-out")
    duration_s: float = 60.0
    arrival: str = Arrival.POISSON
    tritonserver: str | None = None
    gpus: str | None = None  # 'gpu0=GPU-<uuid>,gpu1=1'
    base_port: int | None = None
    ready_timeout_s: float = 180.0
    echo_ms: float | None = None  # serve the numpy-free stand-in on CPU instead of the zoo (no GPU, no MPS)
    seed: int = 0
    max_rps_per_process: float = 200.0
    request_timeout_s: float = 10.0
    drain_s: float = 5.0
    max_requests_factor: float = 2.0  # a stream sends at most rate * duration * factor + 10 requests
    launch_mode: LaunchMode = LaunchMode.LOCAL
    torch_threads: int = 1  # CPU threads of torch in each server (0: torch's default, one per core)
    output_device: str = "cpu"  # where the served model hands its outputs to Triton: cpu or gpu
    # A workload's results are valid only when the generator sent its requests on time: p99 of
    # (sent - scheduled) at most this. Later sends are the client's delay, not the server's.
    max_lag_ms: float = DEFAULT_MAX_LAG_MS
    load_generator: str = "python"  # or perf_analyzer (Triton's, C++: cheaper per request; no apply --diff)
    perf_analyzer: str | None = None  # its binary; default: on PATH, else next to this interpreter

    def __post_init__(self) -> None:
        if self.arrival not in Arrival.ALL:
            raise ApplyError(f"--arrival must be one of {', '.join(Arrival.ALL)}, got {self.arrival!r}")
        if not self.duration_s > 0:
            raise ApplyError(f"--duration must be positive, got {self.duration_s:g}")
        if self.echo_ms is not None and self.echo_ms < 0:
            raise ApplyError(f"--echo-ms must be >= 0, got {self.echo_ms:g}")
        if self.output_device not in ("cpu", "gpu"):
            raise ApplyError(f"output_device must be 'cpu' or 'gpu', got {self.output_device!r}")
        if self.torch_threads < 0:
            raise ApplyError(f"torch_threads must be >= 0, got {self.torch_threads}")
        if self.load_generator not in LOAD_GENERATORS:
            raise ApplyError(f"--load-generator must be one of {', '.join(LOAD_GENERATORS)}, "
                             f"got {self.load_generator!r}")
        if not (math.isfinite(self.max_lag_ms) and self.max_lag_ms > 0):
            raise ApplyError(f"--max-lag-ms must be a positive number of ms, got {self.max_lag_ms:g}")

    @property
    def echo(self) -> bool:
        """Serving the CPU stand-in (no GPU, no MPS)."""
        return self.echo_ms is not None
