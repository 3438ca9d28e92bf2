"""Profiling a GPU: the measurement plan, backends (real CUDA under MPS, simulated), checkpoints."""
