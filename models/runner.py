"""The one runner that both the profiler and the executor use: fp16, one CUDA graph per batch size.

Eager PyTorch is launch-bound at small batches on an H100 (the share would barely matter), so
every batch size a model may run is captured once as a CUDA graph and replayed. Inputs are
copied into the graph's static input tensor, outputs are read from its static outputs.

torch (and transformers, for BERT) is imported inside the functions, so importing
``igniter_opt.zoo`` works on machines without torch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from igniter_opt.zoo import get_spec

from igniter_opt.errors import InputError

_TORCH_DTYPES = {"float16": "float16", "float32": "float32", "int64": "int64"}


def _build_module(name: str) -> tuple[Any, Any]:
    """Build the model with random weights on the current device; return (module, forward fn).

    The forward function maps the static input tensor to a tuple of output tensors.
    """
    import torch

    if name in ("alexnet", "resnet50", "vgg19", "vit_b_16"):
        import torchvision.models as tvm

        module = getattr(tvm, name)(weights=None)

        def forward(x: Any) -> tuple[Any, ...]:
            return (module(x),)

    elif name == "ssd":
        from torchvision.models.detection import ssd300_vgg16

        module = ssd300_vgg16(weights=None, weights_backbone=None)

        def forward(x: Any) -> tuple[Any, ...]:
            # Backbone + head only: post-processing (anchor decoding, NMS) is data dependent.
            feats = module.backbone(x)
            out = module.head(list(feats.values()))
            return (out["bbox_regression"], out["cls_logits"])

    elif name == "bert_base":
        from transformers import BertConfig, BertModel

        module = BertModel(BertConfig(), add_pooling_layer=False)
        mask_cache: dict[tuple[int, ...], Any] = {}

        def forward(ids: Any) -> tuple[Any, ...]:
            mask = mask_cache.get(tuple(ids.shape))
            if mask is None:
                mask = mask_cache[tuple(ids.shape)] = torch.ones_like(ids)
            return (module(input_ids=ids, attention_mask=mask).last_hidden_state,)

    else:  # pragma: no cover - get_spec rejects unknown names first
        raise InputError(f"no builder for model '{name}'")
    return module, forward


@dataclass(frozen=True)
class LoopStats:
    """A closed loop of batches with host transfers (one batch in flight).

    ``latency_ms``: mean of input copy + graph + output copy per batch (iGniter's ``t_inf``);
    ``gpu_fb_ms``: mean of graph + output copy (what bounds a server that overlaps input copies);
    ``loop_rps``: requests completed per second by this sequential loop.
    """

    batch: int
    iterations: int
    window_s: float
    t_start: float
    t_end: float
    latency_ms: float
    gpu_fb_ms: float
    load_ms: float
    loop_rps: float

    @property
    def throughput_rps(self) -> float:
        """Throughput with loading overlapped with execution: ``1000 b / (t_gpu + t_fb)``."""
        return 1000.0 * self.batch / self.gpu_fb_ms


class ModelRunner:
    """Builds one zoo model on the GPU in fp16 and replays one CUDA graph per batch size.

    ``ModelRunner("resnet50", batches=[1, 8]).build()`` then ``infer(x)`` or the timing helpers.
    """

    def __init__(self, name: str, batches: list[int] | tuple[int, ...], *, device: str = "cuda", seed: int = 0):
        self.spec = get_spec(name)
        self.name = name
        bs = sorted({int(b) for b in batches})
        if not bs or bs[0] < 1:
            raise InputError(f"{name}: batch sizes must be positive integers, got {list(batches)}")
        self.batches = tuple(bs)
        self.device = device
        self.seed = seed
        self._module: Any = None
        self._forward: Any = None
        self._graphs: dict[int, Any] = {}
        self._static_in: dict[int, Any] = {}
        self._static_out: dict[int, tuple[Any, ...]] = {}
        self._host_in: dict[int, Any] = {}
        self._host_out: dict[int, tuple[Any, ...]] = {}

    # ---- building --------------------------------------------------------------------------
    def _random_input(self, batch: int, *, device: Any, pin: bool = False) -> Any:
        import torch

        spec = self.spec.inputs[0]
        gen = torch.Generator(device="cpu").manual_seed(self.seed + batch)
        shape = (batch, *spec.shape)
        if spec.dtype == "int64":
            x = torch.randint(0, 30522, shape, generator=gen, dtype=torch.int64)
        else:
            x = torch.randn(shape, generator=gen).to(getattr(torch, spec.dtype))
        if pin:
            return x.pin_memory()
        return x.to(device)

    def build(self, *, warmup_iters: int = 3) -> ModelRunner:
        """Build the model (random weights), convert to fp16 and capture one graph per batch."""
        import torch

        if not torch.cuda.is_available():
            from igniter_opt.errors import GpuUnavailableError

            raise GpuUnavailableError("torch sees no CUDA GPU; run on a machine with an NVIDIA GPU")
        torch.manual_seed(self.seed)
        torch.backends.cudnn.benchmark = False
        with torch.device(self.device):
            module, forward = _build_module(self.name)
        module = module.to(self.device).half().eval()
        self._module, self._forward = module, forward
        for b in self.batches:
            # Inputs are ordinary tensors (created outside inference mode) so that callers may
            # copy into them; the capture itself runs in inference mode.
            static_in = self._random_input(b, device=self.device)
            with torch.inference_mode():
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(warmup_iters):
                        forward(static_in)
                torch.cuda.current_stream().wait_stream(side)
                torch.cuda.synchronize()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    static_out = forward(static_in)
                graph.replay()
                torch.cuda.synchronize()
                self._graphs[b] = graph
                self._static_in[b] = static_in
                self._static_out[b] = tuple(static_out)
            self._host_in[b] = self._random_input(b, device="cpu", pin=True)
            self._host_out[b] = tuple(torch.empty(o.shape, dtype=o.dtype, pin_memory=True) for o in static_out)
        return self

    def _check(self, batch: int) -> None:
        if batch not in self._graphs:
            raise InputError(f"{self.name}: batch {batch} was not captured (captured: {list(self._graphs)})")

    # ---- serving ---------------------------------------------------------------------------
    def graph_batch_for(self, n: int) -> int:
        """The smallest captured batch that holds ``n`` samples."""
        for b in self.batches:
            if b >= n:
                return b
        raise InputError(f"{self.name}: {n} samples exceed the largest captured batch {self.batches[-1]}")

    def infer(self, x: Any, *, to_host: bool = False) -> tuple[Any, ...]:
        """Run one batch: ``x`` (host or GPU tensor, first dim = samples) -> output tensors.

        Same as ``infer_parts([x], to_host=to_host)``.
        """
        return self.infer_parts([x], to_host=to_host)

    def infer_parts(self, parts: list[Any] | tuple[Any, ...], *, to_host: bool = False) -> tuple[Any, ...]:
        """Run one batch made of ``parts`` (host or GPU tensors, first dim = samples), in order.

        Each part is copied straight into its rows of the graph's static input (no concatenation
        on the host), and a batch smaller than a captured size is padded into the next captured
        graph. Outputs hold the batch's rows only and are copies (the graph's static outputs are
        overwritten by the next replay): on the GPU, or with ``to_host`` in host memory (the copy
        then also waits for the batch to finish).
        """
        sizes = [int(p.shape[0]) for p in parts]
        n = sum(sizes)
        b = self.graph_batch_for(n)
        static_in = self._static_in[b]
        for p in parts:
            if tuple(p.shape[1:]) != tuple(static_in.shape[1:]):
                raise InputError(
                    f"{self.name}: input shape {tuple(p.shape)} does not match {tuple(static_in.shape[1:])}"
                )
        import torch

        with torch.inference_mode():
            start = 0
            for p, k in zip(parts, sizes, strict=True):
                static_in[start:start + k].copy_(p, non_blocking=True)
                start += k
            self._graphs[b].replay()
            if to_host:
                return tuple(o[:n].to("cpu") for o in self._static_out[b])
            return tuple(o[:n].clone() for o in self._static_out[b])

    def replay(self, batch: int) -> None:
        """Replay the captured graph of ``batch`` on its static input (no copies, no sync)."""
        self._graphs[batch].replay()

    # ---- timing helpers --------------------------------------------------------------------
    def time_replays(
        self, batch: int, *, min_iters: int = 10, min_time_s: float = 0.3, warmup: int = 3, max_iters: int = 100_000
    ) -> tuple[list[float], float, float]:
        """GPU time of single replays (ms, one at a time); returns (times, wall start, wall end).

        Each replay is timed with CUDA events and synchronised before the next one.
        """
        import torch

        self._check(batch)
        g = self._graphs[batch]
        for _ in range(warmup):
            g.replay()
        torch.cuda.synchronize()
        ev0, ev1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times: list[float] = []
        t0 = time.time()
        while len(times) < max_iters and (len(times) < min_iters or time.time() - t0 < min_time_s):
            ev0.record()
            g.replay()
            ev1.record()
            ev1.synchronize()
            times.append(ev0.elapsed_time(ev1))
        return times, t0, time.time()

    def closed_loop(self, batch: int, *, duration_s: float, warmup: int = 3) -> LoopStats:
        """Run batches back to back for ``duration_s`` with pinned host input/output copies."""
        import torch

        self._check(batch)
        g = self._graphs[batch]
        static_in, static_out = self._static_in[batch], self._static_out[batch]
        host_in, host_out = self._host_in[batch], self._host_out[batch]
        e0, e1, e2 = (torch.cuda.Event(enable_timing=True) for _ in range(3))

        def one() -> tuple[float, float]:
            e0.record()
            static_in.copy_(host_in, non_blocking=True)
            e1.record()
            g.replay()
            for o, h in zip(static_out, host_out, strict=True):
                h.copy_(o, non_blocking=True)
            e2.record()
            e2.synchronize()
            return e0.elapsed_time(e1), e1.elapsed_time(e2)

        for _ in range(warmup):
            one()
        loads, rest = [], []
        t0 = time.time()
        while time.time() - t0 < duration_s or not loads:
            a, b = one()
            loads.append(a)
            rest.append(b)
        t1 = time.time()
        n = len(loads)
        load_ms, gpu_fb_ms = sum(loads) / n, sum(rest) / n
        return LoopStats(
            batch=batch,
            iterations=n,
            window_s=t1 - t0,
            t_start=t0,
            t_end=t1,
            latency_ms=load_ms + gpu_fb_ms,
            gpu_fb_ms=gpu_fb_ms,
            load_ms=load_ms,
            loop_rps=n * batch / (t1 - t0),
        )

    def kernel_trace(self, batch: int, *, replays: int = 5) -> tuple[int, float]:
        """Kernels per inference and inter-kernel idle time per inference (ms), from torch.profiler.

        ``replays`` synchronised replays are traced; kernels are grouped per replay (equal counts),
        and the idle time is the replay's kernel span minus the union of its kernel intervals.
        """
        import torch
        from torch.profiler import ProfilerActivity, profile

        self._check(batch)
        g = self._graphs[batch]
        for _ in range(3):
            g.replay()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(replays):
                g.replay()
                torch.cuda.synchronize()
        intervals = kernel_intervals(prof)
        return split_idle(intervals, replays)


def kernel_intervals(prof: Any) -> list[tuple[float, float]]:
    """(start_us, end_us) of every GPU kernel in a torch.profiler trace, sorted by start."""
    from torch.autograd import DeviceType

    out: list[tuple[float, float]] = []
    for ev in prof.events():
        if ev.device_type != DeviceType.CUDA:
            continue
        name = ev.name
        if name.startswith(("Memcpy", "Memset")) or "[memory]" in name:
            continue
        out.append((float(ev.time_range.start), float(ev.time_range.end)))
    out.sort()
    return out


def split_idle(intervals: list[tuple[float, float]], replays: int) -> tuple[int, float]:
    """Split kernel intervals into ``replays`` equal groups; return (kernels each, mean idle ms)."""
    if not intervals or len(intervals) % replays:
        raise RuntimeError(f"kernel trace has {len(intervals)} kernels, not a multiple of {replays} replays")
    n = len(intervals) // replays
    idles = []
    for r in range(replays):
        group = intervals[r * n : (r + 1) * n]
        busy, cur_s, cur_e = 0.0, group[0][0], group[0][1]
        for s, e in group[1:]:
            if s > cur_e:
                busy += cur_e - cur_s
                cur_s, cur_e = s, e
            else:
                cur_e = max(cur_e, e)
        busy += cur_e - cur_s
        span = max(e for _, e in group) - group[0][0]
        idles.append(max(span - busy, 0.0) / 1000.0)
    return n, sum(idles) / len(idles)
