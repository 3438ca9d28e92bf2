"""GPU plumbing shared by the profiler and the executor: the MPS control daemon and NVML."""
