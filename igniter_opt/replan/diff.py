"""What changes between two plans, placement by placement (JSON schema ``igniter-opt/diff/v1``).

A placement is one server: (part of) a workload on one GPU with an MPS share and a batch. Its
identity is the workload's name and the GPU's id (and, for a workload with several placements on
one GPU, its slot: the placement's index in that GPU's list). Comparing an old plan with a new
one, every placement gets one kind:

- ``kept``: same workload and model on the same GPU id with the same share and batch. The running
  server stays as it is; only the rate it is sent may change (the new plan was verified at the new
  rate, so the server still meets its SLO there).
- ``resized``: same GPU, another share or batch. An MPS share cannot change for a running process
  (and the batch is in the server's config), so the server restarts in place.
- ``moved``: the workload leaves one GPU and gets a placement on another. Stop there, start here.
- ``started`` / ``stopped``: a placement with no counterpart in the other plan (a workload that
  appeared or disappeared, or a split workload that needs more or fewer replicas).

A workload whose model changed is a different service: its old placements stop and its new ones
start. GPUs are matched by id: ``opened`` (only in the new plan), ``released`` (only in the old),
``kept`` (in both). ``restarts`` counts the running servers that must be restarted (resized +
moved); ``changed`` counts every placement that is not kept.

``relabel_gpus`` renames a plan's GPUs to match an old plan as closely as possible: a planner that
knows nothing of the running GPUs (a re-solve from scratch) names them gpu0, gpu1, ... and would
otherwise look as if it moved everything.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from igniter_opt.domain import GpuAssignment, Placement, Plan
from igniter_opt.errors import PlanError
from igniter_opt.ioutil import atomic_write_json
from igniter_opt.planio import read_json_file

DIFF_SCHEMA = "igniter-opt/diff/v1"
# Two shares within this many percentage points are the same share (float noise in plan files).
SHARE_TOL_PCT = 1e-6


class ChangeKind(StrEnum):
    KEPT = "kept"
    RESIZED = "resized"
    MOVED = "moved"
    STARTED = "started"
    STOPPED = "stopped"

    @property
    def restarts(self) -> bool:
        """True when a running server must be restarted (stopped and started again)."""
        return self in (ChangeKind.RESIZED, ChangeKind.MOVED)


KIND_ORDER = tuple(ChangeKind)


@dataclass(frozen=True)
class PlacementChange:
    """One placement's fate: its old and new GPU, slot, share (%), batch and rate (req/s).

    ``old_*`` are None for a started placement, ``new_*`` None for a stopped one. ``old_slot`` /
    ``new_slot`` are the placement's index in its GPU's list in the old / new plan.
    """

    kind: ChangeKind
    workload: str
    model: str
    slo_ms: float | None = None
    old_gpu: str | None = None
    old_slot: int | None = None
    old_share_pct: float | None = None
    old_batch: int | None = None
    old_rate_rps: float | None = None
    new_gpu: str | None = None
    new_slot: int | None = None
    new_share_pct: float | None = None
    new_batch: int | None = None
    new_rate_rps: float | None = None

    @property
    def restarts(self) -> bool:
        return self.kind.restarts


@dataclass(frozen=True)
class PlanDiff:
    """Every placement change from ``old`` to ``new`` and the GPUs opened, released and kept."""

    profile: str
    changes: tuple[PlacementChange, ...]
    gpus_opened: tuple[str, ...] = ()
    gpus_released: tuple[str, ...] = ()
    gpus_kept: tuple[str, ...] = ()
    old_gpus: int = 0
    new_gpus: int = 0
    old_cost_per_hour: float = 0.0
    new_cost_per_hour: float = 0.0

    def count(self, kind: ChangeKind | str) -> int:
        kind = ChangeKind(kind)
        return sum(1 for c in self.changes if c.kind is kind)

    @property
    def counts(self) -> dict[str, int]:
        """Placements per change kind, every kind present (zeros included), in ``ChangeKind`` order."""
        return {str(k): self.count(k) for k in KIND_ORDER}

    @property
    def restarts(self) -> int:
        """Running servers that must restart: resized + moved."""
        return sum(1 for c in self.changes if c.restarts)

    @property
    def changed(self) -> int:
        """Placements that are not kept (resized, moved, started, stopped)."""
        return sum(1 for c in self.changes if c.kind is not ChangeKind.KEPT)

    @property
    def old_not_kept(self) -> int:
        """Placements of the old plan that do not survive unchanged (what a migration cost is paid on)."""
        return sum(1 for c in self.changes if c.old_gpu is not None and c.kind is not ChangeKind.KEPT)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": DIFF_SCHEMA,
            "profile": self.profile,
            "summary": {
                **self.counts,
                "restarts": self.restarts,
                "gpus_opened": len(self.gpus_opened),
                "gpus_released": len(self.gpus_released),
                "old_gpus": self.old_gpus,
                "new_gpus": self.new_gpus,
                "old_cost_per_hour": _clean(self.old_cost_per_hour),
                "new_cost_per_hour": _clean(self.new_cost_per_hour),
            },
            "gpus": {"opened": list(self.gpus_opened), "released": list(self.gpus_released),
                     "kept": list(self.gpus_kept)},
            "placements": [
                {k: (str(v) if isinstance(v, ChangeKind) else _clean(v) if isinstance(v, float) else v)
                 for k, v in asdict(c).items()}
                for c in self.changes
            ],
        }

    @classmethod
    def from_dict(cls, d: Any, source: str = "<diff>") -> PlanDiff:
        if not isinstance(d, dict) or d.get("schema") != DIFF_SCHEMA:
            got = d.get("schema") if isinstance(d, dict) else type(d).__name__
            raise PlanError(f"{source}: schema is {got!r}, expected '{DIFF_SCHEMA}'; is this an igniter-opt diff?")
        names = {f.name for f in fields(PlacementChange)}
        try:
            changes = []
            for i, c in enumerate(d["placements"]):
                unknown = set(c) - names
                if unknown:
                    raise PlanError(f"{source}: placements[{i}]: unknown field(s) {', '.join(sorted(unknown))}")
                changes.append(PlacementChange(**{**c, "kind": ChangeKind(c["kind"])}))
            s = d.get("summary", {})
            g = d["gpus"]
            return cls(
                profile=str(d.get("profile", "")),
                changes=tuple(changes),
                gpus_opened=tuple(g.get("opened", ())),
                gpus_released=tuple(g.get("released", ())),
                gpus_kept=tuple(g.get("kept", ())),
                old_gpus=int(s.get("old_gpus", 0)),
                new_gpus=int(s.get("new_gpus", 0)),
                old_cost_per_hour=float(s.get("old_cost_per_hour", 0.0)),
                new_cost_per_hour=float(s.get("new_cost_per_hour", 0.0)),
            )
        except PlanError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanError(f"{source}: malformed diff ({type(exc).__name__}: {exc})") from None


def _clean(x: float | None) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return round(float(x), 6)


def _same_config(a: Placement, b: Placement) -> bool:
    return a.batch == b.batch and abs(a.share_pct - b.share_pct) <= SHARE_TOL_PCT


@dataclass(frozen=True)
class _Where:
    gpu: str
    gpu_pos: int
    slot: int
    p: Placement


def _by_workload(plan: Plan) -> dict[str, list[_Where]]:
    out: dict[str, list[_Where]] = {}
    for gi, g in enumerate(plan.gpus):
        for si, p in enumerate(g.placements):
            out.setdefault(p.workload, []).append(_Where(g.gpu_id, gi, si, p))
    return out


def _change(kind: ChangeKind, old: _Where | None, new: _Where | None) -> PlacementChange:
    ref = new.p if new is not None else old.p  # type: ignore[union-attr]
    slo = ref.slo_ms if math.isfinite(ref.slo_ms) else None
    return PlacementChange(
        kind=kind, workload=ref.workload, model=ref.model, slo_ms=slo,
        old_gpu=old.gpu if old else None, old_slot=old.slot if old else None,
        old_share_pct=old.p.share_pct if old else None, old_batch=old.p.batch if old else None,
        old_rate_rps=_finite(old.p.rate_rps) if old else None,
        new_gpu=new.gpu if new else None, new_slot=new.slot if new else None,
        new_share_pct=new.p.share_pct if new else None, new_batch=new.p.batch if new else None,
        new_rate_rps=_finite(new.p.rate_rps) if new else None,
    )


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _pair(olds: list[_Where], news: list[_Where], match: Any) -> list[tuple[_Where, _Where]]:
    """Pair members of ``olds`` and ``news`` for which ``match(o, n)`` holds, in order; remove them."""
    pairs = []
    for o in list(olds):
        for n in news:
            if match(o, n):
                pairs.append((o, n))
                olds.remove(o)
                news.remove(n)
                break
    return pairs


def diff_plans(old: Plan, new: Plan) -> PlanDiff:
    """Classify every placement of ``old`` and ``new`` (see the module docstring)."""
    old_w, new_w = _by_workload(old), _by_workload(new)
    changes: list[PlacementChange] = []
    for name in sorted(set(old_w) | set(new_w)):
        olds, news = list(old_w.get(name, [])), list(new_w.get(name, []))
        if olds and news and olds[0].p.model != news[0].p.model:
            changes += [_change(ChangeKind.STOPPED, o, None) for o in olds]
            changes += [_change(ChangeKind.STARTED, None, n) for n in news]
            continue
        for o, n in _pair(olds, news, lambda o, n: o.gpu == n.gpu and _same_config(o.p, n.p)):
            changes.append(_change(ChangeKind.KEPT, o, n))
        for o, n in _pair(olds, news, lambda o, n: o.gpu == n.gpu):
            changes.append(_change(ChangeKind.RESIZED, o, n))
        moved = _pair(olds, news, lambda o, n: _same_config(o.p, n.p))
        moved += _pair(olds, news, lambda o, n: True)
        changes += [_change(ChangeKind.MOVED, o, n) for o, n in moved]
        changes += [_change(ChangeKind.STOPPED, o, None) for o in olds]
        changes += [_change(ChangeKind.STARTED, None, n) for n in news]
    new_pos = {g.gpu_id: i for i, g in enumerate(new.gpus)}
    old_pos = {g.gpu_id: i for i, g in enumerate(old.gpus)}

    def key(c: PlacementChange) -> tuple[int, int, int, str]:
        # new plan order first (GPU, slot), then what was stopped in old plan order
        if c.new_gpu is not None:
            return (0, new_pos[c.new_gpu], c.new_slot or 0, c.workload)
        return (1, old_pos[c.old_gpu or ""], c.old_slot or 0, c.workload)

    old_ids = [g.gpu_id for g in old.gpus]
    new_ids = [g.gpu_id for g in new.gpus]
    return PlanDiff(
        profile=new.profile or old.profile,
        changes=tuple(sorted(changes, key=key)),
        gpus_opened=tuple(i for i in new_ids if i not in old_pos),
        gpus_released=tuple(i for i in old_ids if i not in new_pos),
        gpus_kept=tuple(i for i in new_ids if i in old_pos),
        old_gpus=len(old_ids),
        new_gpus=len(new_ids),
        old_cost_per_hour=old.cost_per_hour,
        new_cost_per_hour=new.cost_per_hour,
    )


def fresh_gpu_ids(taken: set[str] | list[str], n: int) -> list[str]:
    """``n`` ids of the form gpuK, K = 0, 1, ..., skipping every id in ``taken``."""
    taken = set(taken)
    out: list[str] = []
    k = 0
    while len(out) < n:
        cand = f"gpu{k}"
        if cand not in taken:
            out.append(cand)
        k += 1
    return out


def relabel_gpus(new: Plan, old: Plan) -> Plan:
    """``new`` with its GPUs renamed after ``old``'s so that as many placements as possible are kept.

    An assignment problem (scipy's ``linear_sum_assignment``) over old x new GPUs, maximising
    placements kept unchanged first and placements of the same workload (resized rather than
    moved) second. Every new GPU paired with an old one takes its id (the same machine stays
    rented); the others get fresh ids. The plan is otherwise unchanged.
    """
    if not new.gpus:
        return new
    n_old, n_new = len(old.gpus), len(new.gpus)
    ids: list[str | None] = [None] * n_new
    if n_old:
        weight = np.zeros((n_old, n_new))
        for i, go in enumerate(old.gpus):
            for j, gn in enumerate(new.gpus):
                same = sum(1 for a in go.placements for b in gn.placements
                           if a.workload == b.workload and a.model == b.model)
                kept = _count_kept(go, gn)
                weight[i, j] = 1000.0 * kept + same
        from scipy.optimize import linear_sum_assignment  # heavy; only a diff needs it

        rows, cols = linear_sum_assignment(weight, maximize=True)
        for i, j in zip(rows, cols, strict=True):
            ids[j] = old.gpus[i].gpu_id
    fresh = iter(fresh_gpu_ids({g.gpu_id for g in old.gpus}, sum(1 for x in ids if x is None)))
    gpus = tuple(
        GpuAssignment(gpu_id if gpu_id is not None else next(fresh), g.gpu_type, g.placements)
        for gpu_id, g in zip(ids, new.gpus, strict=True)
    )
    return replace(new, gpus=gpus)


def _count_kept(a: GpuAssignment, b: GpuAssignment) -> int:
    left = list(b.placements)
    n = 0
    for p in a.placements:
        for q in left:
            if p.workload == q.workload and p.model == q.model and _same_config(p, q):
                left.remove(q)
                n += 1
                break
    return n


def write_diff(diff: PlanDiff, path: str | os.PathLike[str]) -> Path:
    return atomic_write_json(path, diff.to_dict())


def read_diff(path: str | os.PathLike[str]) -> PlanDiff:
    return PlanDiff.from_dict(read_json_file(path, "diff"), str(path))
