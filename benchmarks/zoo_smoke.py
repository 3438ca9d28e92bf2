"""Device smoke test of the model zoo: build every model, capture graphs, check outputs, trace kernels.

Run on a GPU machine (no MPS needed): ``python benchmarks/zoo_smoke.py [--batches 1,8]``.
Prints one JSON line per model.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--models", default="all")
    args = ap.parse_args()
    import torch
    from igniter_opt.zoo import get_spec, parse_models
    from igniter_opt.zoo.runner import ModelRunner

    batches = [int(b) for b in args.batches.split(",")]
    for name in parse_models(args.models):
        spec = get_spec(name)
        t0 = time.time()
        row: dict = {"model": name}
        try:
            r = ModelRunner(name, batches).build()
            row["build_s"] = round(time.time() - t0, 2)
            b = batches[-1]
            x = r._random_input(b, device="cpu")
            outs = r.infer(x)
            torch.cuda.synchronize()
            row["out_shapes"] = [list(o.shape) for o in outs]
            want = [[b, *t.shape] for t in spec.outputs]
            row["shapes_ok"] = row["out_shapes"] == want
            row["finite"] = all(bool(torch.isfinite(o.float()).all()) for o in outs)
            times, _, _ = r.time_replays(b, min_iters=20, min_time_s=0.2)
            row[f"replay_ms_b{b}"] = round(sorted(times)[len(times) // 2], 3)
            k, idle = r.kernel_trace(1)
            row["kernels_b1"] = k
            row["idle_ms_b1"] = round(idle, 4)
            st = r.closed_loop(b, duration_s=0.3)
            row["loop_latency_ms"] = round(st.latency_ms, 3)
            row["load_ms"] = round(st.load_ms, 3)
        except Exception as exc:  # report and go on with the next model
            row["error"] = f"{type(exc).__name__}: {exc}"[:500]
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
