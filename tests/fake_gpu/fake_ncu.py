"""A stand-in for ncu: skips ncu's own options and runs the program after them."""

import os
import sys

args = sys.argv[1:]
takes_value = {"--mps", "--target-processes", "--profile-from-start", "--clock-control", "--cache-control", "--metrics"}
i = 0
while i < len(args) and args[i].startswith("--"):
    i += 2 if args[i] in takes_value else 1
if os.environ.get("FAKE_NCU_FAIL_MPS") and "--mps" in args:
    print("==ERROR== Invalid option --csv specified for --mps client")
    sys.exit(1)
os.execv(args[i], args[i:])
