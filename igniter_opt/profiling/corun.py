"""Co-location runs of different models: a seeded design, running mixes, and the resumable runs file.

The kernel-delay interference form (docs/interference.md) fits its cache scale kappa on measured
co-locations of *different* models. The profiler measures them after the solo plan
(``igniter-opt profile --interference-form kernel-delay``): each profiled model is the first
workload of ``runs_per_model`` mixes with one or two co-runners drawn from the other profiled
models (pairs and triples), at batches of the solo grid and shares in steps of 5 % from 10 %
summing to at most 100 %. Every workload of a mix is measured (closed loops with host copies, as
``benchmarks/accuracy.py`` measures its held-out mixes, which now run through ``run_mixes`` too).

Runs go to ``co_runs.jsonl`` in the profile folder, one JSON line per mix in the record format
of ``benchmarks/accuracy.py run`` (which ``perfmodel.interference.load_co_runs`` reads). The file
is rewritten atomically after each mix, so a cut-off run leaves every finished mix and no torn
line, and the same command resumes with the mixes still missing.

Issue 16 allows profiling to grow by at most 3 GPU-minutes per model. The design's cost is
estimated per model before anything runs (``CoRunDesign.estimate_s_per_model``: each mix's time
split among the models in it, as ``profiler.profiling_cost_s`` splits process start-up) and a
design over the budget is refused.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from igniter_opt.errors import ProfileError
from igniter_opt.ioutil import atomic_write_text
from igniter_opt.profiling.backend import CoWorkload, GpuBackend, Phase, PhaseResult

log = logging.getLogger(__name__)

CO_RUNS_FILE = "co_runs.jsonl"
DEFAULT_SEED = 16
DEFAULT_RUNS_PER_MODEL = 6
# Wall time of one mix with 2 s phases, process start included (the next mix's processes start
# while one runs): 8.9 s on the H100 (48 mixes, 428 s), 5.6 s on the H200 (40 mixes, 222 s),
# benchmarks/results/accuracy_{h100,h200_train}_runs.jsonl. The larger one, so the estimate holds.
RUN_ESTIMATE_S = 9.0
# Issue 16: profiling may grow by at most 3 GPU-minutes per model.
GROWTH_BUDGET_S_PER_MODEL = 180.0


@dataclass(frozen=True)
class MixSlot:
    """One workload of a mix: a model at a batch size and a share of the SMs (%)."""

    model: str
    batch: int
    share_pct: float


@dataclass(frozen=True)
class Mix:
    """Workloads run together on one GPU, one MPS client each; ``index`` numbers it in its design."""

    index: int
    slots: tuple[MixSlot, ...]

    def workloads(self) -> list[CoWorkload]:
        return [CoWorkload(s.model, s.share_pct, (s.batch,)) for s in self.slots]

    def models(self) -> set[str]:
        return {s.model for s in self.slots}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Mix:
        """From ``{"mix": i, "workloads": [{"model", "batch", "share_pct"}, ...]}`` (accuracy.py's draws)."""
        return cls(int(d["mix"]), tuple(MixSlot(str(w["model"]), int(w["batch"]), float(w["share_pct"]))
                                        for w in d["workloads"]))


def _draw_shares(rng: random.Random, size: int) -> list[float]:
    """``size`` shares (multiples of 5 %, >= 10 %, at most 1.5 fair shares each) summing to <= 100 %."""
    hi = min(70, int(150 / size))
    while True:
        shares = [rng.randrange(10, hi + 1, 5) for _ in range(size)]
        if sum(shares) <= 100:
            return [float(s) for s in shares]


@dataclass(frozen=True)
class CoRunDesign:
    """Which co-location runs the profiler measures for the kernel-delay form's cache scale.

    Each model leads ``runs_per_model`` mixes; mix sizes cycle through ``sizes`` (2: a pair,
    3: a triple), capped at the number of models; co-runners are distinct other models.
    """

    models: tuple[str, ...]
    batches: tuple[int, ...]
    runs_per_model: int = DEFAULT_RUNS_PER_MODEL
    sizes: tuple[int, ...] = (2, 3)
    seed: int = DEFAULT_SEED
    phase_s: float = 2.0
    run_estimate_s: float = RUN_ESTIMATE_S

    def __post_init__(self) -> None:
        if len(set(self.models)) < 2:
            raise ProfileError(
                f"co-location runs need at least 2 different profiled models, got {len(set(self.models))} "
                f"({', '.join(self.models) or 'none'}); profile more models, give --co-runs FILE, or "
                "--co-runs-per-model 0 (kappa = 1, pair runs only)"
            )
        if self.runs_per_model < 1:
            raise ProfileError(f"--co-runs-per-model must be >= 1, got {self.runs_per_model}")
        if not self.sizes or min(self.sizes) < 2:
            raise ProfileError(f"co-location mixes need at least 2 workloads, got sizes {list(self.sizes)}")
        if not self.batches or min(self.batches) < 1:
            raise ProfileError(f"co-location batches must be positive integers, got {list(self.batches)}")
        if not (self.phase_s > 0 and self.run_estimate_s > 0):
            raise ProfileError("co-location phase and run time estimates must be > 0 s")

    def mixes(self) -> tuple[Mix, ...]:
        """The design's mixes, the same for the same fields (seeded)."""
        rng = random.Random(self.seed)
        out: list[Mix] = []
        for model in self.models:
            others = [m for m in self.models if m != model]
            for r in range(self.runs_per_model):
                size = min(self.sizes[r % len(self.sizes)], len(others) + 1)
                company = rng.sample(others, size - 1)
                shares = _draw_shares(rng, size)
                slots = tuple(MixSlot(m, rng.choice(self.batches), s)
                              for m, s in zip([model, *company], shares, strict=True))
                out.append(Mix(len(out), slots))
        return tuple(out)

    def estimate_s_per_model(self) -> dict[str, float]:
        """Estimated GPU time (s) per model: each mix's time split among the models in it."""
        return split_cost_s([(mix, self.run_estimate_s) for mix in self.mixes()], self.models)

    def check_budget(self, budget_s_per_model: float = GROWTH_BUDGET_S_PER_MODEL) -> None:
        """Refuse a design estimated to cost any model more than ``budget_s_per_model``."""
        worst, cost = max(self.estimate_s_per_model().items(), key=lambda kv: kv[1])
        if cost > budget_s_per_model:
            raise ProfileError(
                f"the co-location runs would cost about {cost:.0f} s of GPU time for '{worst}', over the "
                f"{budget_s_per_model:.0f} s per model allowed; lower --co-runs-per-model"
            )

    def describe(self) -> dict[str, Any]:
        """What raw.json records about the design."""
        return {"seed": self.seed, "runs_per_model": self.runs_per_model, "sizes": list(self.sizes),
                "batches": list(self.batches), "phase_s": self.phase_s, "runs": len(self.mixes())}


def split_cost_s(timed: Sequence[tuple[Mix, float]], models: Sequence[str]) -> dict[str, float]:
    """Per model, the sum over mixes of the mix's time divided by the number of models in it."""
    cost = dict.fromkeys(models, 0.0)
    for mix, seconds in timed:
        members = mix.models()
        for m in members & set(cost):
            cost[m] += seconds / len(members)
    return cost


# ---- running mixes ---------------------------------------------------------------------------
def co_run_record(mix: Mix, result: PhaseResult, gpu: dict[str, Any], wall_s: float) -> dict[str, Any]:
    """One mix as a JSON-able record (``benchmarks/accuracy.py run``'s format)."""
    return {
        "mix": mix.index, "gpu": gpu.get("name"), "gpu_uuid": gpu.get("uuid"), "driver": gpu.get("driver"),
        "power_w": result.power_w, "clock_mhz": result.clock_mhz, "overlap_s": result.extra.get("overlap_s"),
        "wall_s": wall_s,
        "workloads": [
            {"model": s.model, "batch": s.batch, "share_pct": s.share_pct, "measured_ms": r.latency_ms,
             "measured_rps": r.throughput_rps, "loop_rps": r.loop_rps, "iterations": r.iterations}
            for s, r in zip(mix.slots, result.workloads, strict=True)
        ],
    }


def run_mixes(backend: GpuBackend, mixes: Sequence[Mix], *, phase_s: float, gpu: dict[str, Any],
              on_record: Callable[[dict[str, Any]], None]) -> None:
    """Run each mix (one ``loop`` phase of ``phase_s``) and hand its record to ``on_record`` at once.

    The next mix's processes are started while one runs (``GpuBackend.prepare``), so they import
    torch meanwhile.
    """
    if not mixes:
        return
    nxt = backend.prepare(mixes[0].workloads())
    for i, mix in enumerate(mixes):
        cur, t0 = nxt, time.time()
        nxt = backend.prepare(mixes[i + 1].workloads()) if i + 1 < len(mixes) else None
        res = backend.co_run(mix.workloads(), [Phase("loop", phase_s)], prepared=cur)[0]
        on_record(co_run_record(mix, res, gpu, time.time() - t0))


# ---- the profile's runs file -----------------------------------------------------------------
def read_co_run_records(path: Path, design: CoRunDesign, gpu_name: str | None) -> dict[int, dict[str, Any]]:
    """The mixes of ``design`` already measured in ``path`` (none if it does not exist), by index.

    Refuses a file of another design or GPU rather than mixing it in.
    """
    if not path.exists():
        return {}
    expected = {m.index: m for m in design.mixes()}
    done: dict[int, dict[str, Any]] = {}
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            mix = Mix.from_dict(rec)
            _check_measured(rec)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ProfileError(f"{path}: line {no}: not a co-location record ({type(exc).__name__}: {exc}); "
                               "delete the file to measure the runs again") from None
        if expected.get(mix.index) != mix:
            raise ProfileError(f"{path}: line {no}: mix {mix.index} is not one of this profile's co-location "
                               f"design (seed {design.seed}); delete the file or use another output folder")
        if gpu_name and rec.get("gpu") != gpu_name:
            raise ProfileError(f"{path}: line {no}: measured on '{rec.get('gpu')}', this GPU is '{gpu_name}'; "
                               "a profile must not mix cards: use another output folder")
        done[mix.index] = rec
    return done


def _check_measured(rec: dict[str, Any]) -> None:
    for w in rec["workloads"]:
        ms = float(w["measured_ms"])
        if not (math.isfinite(ms) and ms > 0):
            raise ValueError(f"measured_ms {ms} is not a positive number")


def measure_co_runs(design: CoRunDesign, backend: GpuBackend, path: Path, gpu: dict[str, Any]) -> list[dict[str, Any]]:
    """Measure every mix of ``design`` not yet in ``path``; every record of the design, in mix order.

    ``path`` is rewritten atomically after each mix: a cut-off run keeps every finished mix.
    """
    done = read_co_run_records(path, design, gpu.get("name"))
    todo = [m for m in design.mixes() if m.index not in done]
    log.info("co-location runs: %d already measured, %d to go", len(done), len(todo))

    def keep(rec: dict[str, Any]) -> None:
        done[int(rec["mix"])] = rec
        text = "".join(json.dumps(done[i], sort_keys=True) + "\n" for i in sorted(done))
        atomic_write_text(path, text)
        log.info("co-location run %d: %.1f s", rec["mix"], rec["wall_s"])

    run_mixes(backend, todo, phase_s=design.phase_s, gpu=gpu, on_record=keep)
    return [done[i] for i in sorted(done)]


def measured_cost_s(design: CoRunDesign, records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """GPU time (s) the measured mixes took per model, split among the models of each mix."""
    return split_cost_s([(Mix.from_dict(r), float(r.get("wall_s", 0.0))) for r in records], design.models)
