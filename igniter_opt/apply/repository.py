"""Triton model repositories: one per placement, with ``config.pbtxt`` and a Python-backend ``model.py``.

The served ``model.py`` runs the model zoo's runner (``igniter_opt.zoo.ModelRunner``, imported
inside ``initialize`` so that the repository can be written where the zoo or torch is absent)
with inputs and outputs passed through DLPack: no numpy in the data path. ``--echo-ms`` serves a
numpy-free stand-in instead, which returns its input after sleeping a few ms per batch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from igniter_opt.apply.models import TRITON_DTYPES, ServedModel, Tensor
from igniter_opt.domain import LatencyBudget, Placement
from igniter_opt.ioutil import atomic_write_text
from igniter_opt.placement.serving import default_queue_delay_ms


def batch_formation_budget_ms(p: Placement, budget: LatencyBudget, margin: float = 0.0) -> float:
    """How long the first request of a batch may wait for the others: the placement's own queue
    delay, else the kernel's rule for the plan's budget (``placement.default_queue_delay_ms``)."""
    if p.queue_delay_ms is not None:
        return p.queue_delay_ms if p.batch > 1 else 0.0
    lat = p.predicted.latency_ms if p.predicted is not None else None
    return default_queue_delay_ms(p.slo_ms, p.rate_rps, p.batch, budget, margin, lat)


class QueueDelaySource:
    PLAN = "plan"  # the placement's queue_delay_ms, chosen by the planner
    BUDGET = "budget"  # the plan has none: batch_formation_budget_ms of the plan's latency budget


def queue_delay_us(p: Placement, budget: LatencyBudget, margin: float = 0.0) -> tuple[int, str]:
    """The dynamic batcher's ``max_queue_delay_microseconds`` of a placement, and where it came from.

    The plan's ``queue_delay_ms`` when it has one (floor of 1000 x ms; a hair of tolerance so that
    a delay such as 2.3 ms, 2299.9999... in binary, gives 2300 µs); else the budget rule.
    """
    if p.queue_delay_ms is not None:
        return math.floor(1000.0 * p.queue_delay_ms + 1e-6), QueueDelaySource.PLAN
    return math.floor(1000.0 * batch_formation_budget_ms(p, budget, margin)), QueueDelaySource.BUDGET


@dataclass(frozen=True)
class ModelConfig:
    """What ``config.pbtxt`` says about one served model."""

    model: ServedModel
    max_batch_size: int
    max_queue_delay_us: int
    instance_kind: str = "KIND_GPU"  # KIND_CPU for the echo stand-in
    parameters: tuple[tuple[str, str], ...] = ()
    # not in config.pbtxt: where max_queue_delay_us came from, for the dry run and deployment.json
    queue_delay_source: str = QueueDelaySource.BUDGET

    def render(self) -> str:
        def tensors(ts: tuple[Tensor, ...]) -> str:
            items = [
                f'  {{ name: "{t.name}" data_type: {TRITON_DTYPES[t.dtype]} dims: [ {", ".join(map(str, t.shape))} ] }}'  # noqa: E501 - one config line
                for t in ts
            ]
            return "[\n" + ",\n".join(items) + "\n]"

        lines = [
            f'name: "{self.model.name}"',
            'backend: "python"',
            f"max_batch_size: {self.max_batch_size}",
            f"input {tensors(self.model.inputs)}",
            f"output {tensors(self.model.outputs)}",
            "dynamic_batching {",
            f"  preferred_batch_size: [ {self.max_batch_size} ]",
            f"  max_queue_delay_microseconds: {self.max_queue_delay_us}",
            "}",
            f"instance_group [ {{ kind: {self.instance_kind} count: 1 }} ]",
        ]
        for k, v in self.parameters:
            lines.append(f'parameters: {{ key: "{k}" value: {{ string_value: {json.dumps(v)} }} }}')
        return "\n".join(lines) + "\n"


# What every generated model.py starts with. SITE_DIRS are added with site.addsitedir so that the
# stub (an embedded interpreter that does not know this virtual environment) finds igniter_opt and torch.
_STUB_PRELUDE = '''
import gc
import json
import site
import time

SITE_DIRS = {site_dirs!r}
for _d in SITE_DIRS:
    site.addsitedir(_d)

import triton_python_backend_utils as pb_utils  # noqa: E402


class ExecTrace:
    """One CSV line per execution, where the config names a file (parameter exec_trace)."""

    def __init__(self, params):
        path = params.get("exec_trace", "")
        self.fh = open(path, "w", buffering=1 << 16) if path else None
        if self.fh is not None:
            self.fh.write("wall_s,requests,samples,input_ms,run_ms,respond_ms\\n")

    def add(self, requests, samples, t0, t1, t2):
        """t0..t2: perf_counter at the start, after the inputs, after the run; now: responses built."""
        if self.fh is not None:
            t3 = time.perf_counter()
            self.fh.write(f"{{time.time():.6f}},{{requests}},{{samples}},{{1e3 * (t1 - t0):.4f}},"
                          f"{{1e3 * (t2 - t1):.4f}},{{1e3 * (t3 - t2):.4f}}\\n")

    def close(self):
        if self.fh is not None:
            self.fh.close()
'''

# The served model of the zoo. Each execution appends one line to the execution trace (when the
# config names one): wall time, requests, samples, and the ms spent taking the inputs, running the
# batch (until its outputs are ready) and building the responses; ``igniter-opt apply`` reads it
# back to split the server's time into Python-backend overhead and model time.
ZOO_MODEL_PY = (
    '''\
"""Generated by igniter-opt apply: serves zoo model {model!r} at batch {batch} (Python backend)."""
'''
    + _STUB_PRELUDE
    + """

class TritonPythonModel:
    def initialize(self, args):
        import torch  # imported lazily: the repository is written where torch may be absent

        cfg = json.loads(args["model_config"])
        params = {{k: v["string_value"] for k, v in cfg.get("parameters", {{}}).items()}}
        threads = int(params.get("torch_threads", "1"))
        if threads > 0:
            # One server per placement shares the host's cores with the others and the load
            # generator: torch's default (a thread per core, spinning) starves them all.
            torch.set_num_threads(threads)
        from igniter_opt.zoo import ModelRunner

        batches = [int(b) for b in params["graph_batches"].split(",")]
        self.to_host = params.get("output_device", "cpu") == "cpu"
        self.output_names = [o["name"] for o in cfg["output"]]
        self.input_name = cfg["input"][0]["name"]
        self.runner = ModelRunner(cfg["name"], batches).build()
        self.trace = ExecTrace(params)
        # The model's objects live as long as the server: keep them out of every later collection,
        # so that a collection between batches is short.
        gc.collect()
        gc.freeze()

    def execute(self, requests):
        import torch

        t0 = time.perf_counter()
        xs = [torch.from_dlpack(pb_utils.get_input_tensor_by_name(r, self.input_name).to_dlpack())
              for r in requests]
        t1 = time.perf_counter()
        outs = self.runner.infer_parts(xs, to_host=self.to_host)
        if not self.to_host:
            # Hand over finished tensors: Triton copies them on a stream of its own.
            torch.cuda.current_stream().synchronize()
        t2 = time.perf_counter()
        responses = []
        start = 0
        for x in xs:
            n = int(x.shape[0])
            tensors = [pb_utils.Tensor.from_dlpack(name, o[start:start + n].contiguous())
                       for name, o in zip(self.output_names, outs)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += n
        self.trace.add(len(requests), start, t0, t1, t2)
        return responses

    def finalize(self):
        self.trace.close()
        self.runner = None
"""
)

# The numpy-free stand-in: each response's output is its request's input tensor, handed over
# through DLPack; the batch sleeps ``sleep_ms`` first (a stand-in for inference time).
ECHO_MODEL_PY = (
    '''\
"""Generated by igniter-opt apply --echo-ms: a stand-in for {model!r} that returns its input."""
'''
    + _STUB_PRELUDE
    + """

class TritonPythonModel:
    def initialize(self, args):
        cfg = json.loads(args["model_config"])
        params = {{k: v["string_value"] for k, v in cfg.get("parameters", {{}}).items()}}
        self.sleep_s = float(params.get("sleep_ms", "0")) / 1000.0
        self.input_name = cfg["input"][0]["name"]
        self.output_name = cfg["output"][0]["name"]
        self.trace = ExecTrace(params)

    def execute(self, requests):
        t0 = time.perf_counter()
        xs = [pb_utils.get_input_tensor_by_name(r, self.input_name) for r in requests]
        t1 = time.perf_counter()
        if self.sleep_s > 0:
            time.sleep(self.sleep_s)
        t2 = time.perf_counter()
        responses = [
            pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor.from_dlpack(self.output_name, x)])
            for x in xs
        ]
        self.trace.add(len(requests), sum(int(x.shape()[0]) for x in xs), t0, t1, t2)
        return responses

    def finalize(self):
        self.trace.close()
"""
)


def model_config_for(
    placement: Placement,
    model: ServedModel,
    budget: LatencyBudget,
    margin: float = 0.0,
    *,
    echo_ms: float | None = None,
    exec_trace: Path | None = None,
    torch_threads: int = 1,
    output_device: str = "cpu",
) -> ModelConfig:
    """The config of the server of one placement (echo stand-in on CPU when ``echo_ms`` is given).

    The queue delay is the placement's own (``queue_delay_ms``) where the plan chose one, else the
    latency budget's rule (:func:`queue_delay_us`). ``exec_trace``: file the model appends one line
    per execution to; ``torch_threads``: CPU threads of torch in the server (0: torch's default);
    ``output_device``: where outputs are handed to Triton ('cpu': copied to host memory in the
    model, 'gpu': handed over on the GPU).
    """
    if output_device not in ("cpu", "gpu"):
        raise ValueError(f"output_device must be 'cpu' or 'gpu', got {output_device!r}")
    delay_us, source = queue_delay_us(placement, budget, margin)
    trace = (("exec_trace", str(exec_trace)),) if exec_trace is not None else ()
    if echo_ms is not None:
        return ModelConfig(
            model, placement.batch, delay_us, "KIND_CPU", (("sleep_ms", f"{echo_ms:g}"), *trace), source
        )
    return ModelConfig(model, placement.batch, delay_us, "KIND_GPU",
                       (("graph_batches", str(placement.batch)), ("torch_threads", str(torch_threads)),
                        ("output_device", output_device), *trace), source)


def model_py_for(config: ModelConfig, *, echo: bool, site_dirs: list[str]) -> str:
    if echo:
        return ECHO_MODEL_PY.format(model=config.model.name, site_dirs=site_dirs)
    return ZOO_MODEL_PY.format(model=config.model.name, batch=config.max_batch_size, site_dirs=site_dirs)


def write_repository(root: Path, config: ModelConfig, model_py: str) -> Path:
    """Write ``root/<model>/config.pbtxt`` and ``root/<model>/1/model.py`` atomically; returns ``root``."""
    d = root / config.model.name
    atomic_write_text(d / "config.pbtxt", config.render())
    atomic_write_text(d / "1" / "model.py", model_py)
    return root
