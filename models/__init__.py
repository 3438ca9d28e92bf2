"""The model zoo (package ``igniter_opt.zoo``): what the profiler measures and the executor serves."""
