"""A stand-in for nvidia-cuda-mps-control: ``-d`` creates the control pipe, ``quit`` removes it."""

import os
import sys
from pathlib import Path

pipe = Path(os.environ["CUDA_MPS_PIPE_DIRECTORY"])
if os.environ.get("FAKE_MPS_FAIL"):
    print("An instance of this daemon is already running", file=sys.stderr)
    sys.exit(1)
if sys.argv[1:] == ["-d"]:
    (pipe / "control").write_text("")
    sys.exit(0)
for line in sys.stdin:
    if line.strip() == "quit":
        (pipe / "control").unlink(missing_ok=True)
        log = os.environ.get("FAKE_MPS_LOG")
        if log:
            with open(log, "a") as fh:
                fh.write("quit\n")
