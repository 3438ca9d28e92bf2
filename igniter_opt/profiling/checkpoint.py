"""Checkpoints: one JSON line per finished measurement, so that a cut-off run resumes.

The first line identifies the GPU (``{"key": "_gpu", "value": {...}}``); a checkpoint of another
card is refused rather than mixed in. A torn last line (a run killed mid-write) is ignored.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from igniter_opt.errors import ProfileError

log = logging.getLogger(__name__)

GPU_KEY = "_gpu"
CHECKPOINT_FILE = "checkpoint.jsonl"


class Checkpoint:
    """An append-only JSON-lines store of measurements keyed by measurement key."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.records: dict[str, dict[str, Any]] = {}
        self.elapsed: dict[str, float] = {}
        self.gpu: dict[str, Any] | None = None
        self.times: list[float] = []
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                key = obj["key"]
                value = obj["value"]
            except (json.JSONDecodeError, KeyError, TypeError):
                if i == len(lines):
                    log.warning("%s: ignoring a torn last line (the run was cut off mid-write)", self.path)
                    continue
                raise ProfileError(f"{self.path}:{i}: corrupt checkpoint line; delete the line or the file") from None
            if key == GPU_KEY:
                self.gpu = value
            else:
                self.records[key] = value
                self.elapsed[key] = float(obj.get("elapsed_s", 0.0))
                if "t" in obj:
                    self.times.append(float(obj["t"]))

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def _append(self, obj: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(obj, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def bind_gpu(self, gpu: dict[str, Any]) -> None:
        """Record the GPU on first use; refuse a checkpoint written on another GPU model."""
        if self.gpu is None:
            self.gpu = {k: gpu.get(k) for k in ("name", "uuid", "driver") if k in gpu}
            self._append({"key": GPU_KEY, "value": self.gpu})
            return
        if self.gpu.get("name") != gpu.get("name"):
            raise ProfileError(
                f"{self.path} was measured on '{self.gpu.get('name')}', this GPU is '{gpu.get('name')}'; "
                "a profile must not mix cards: use another output folder"
            )

    def put(self, key: str, value: dict[str, Any], elapsed_s: float = 0.0) -> None:
        now = time.time()
        self._append({"key": key, "value": value, "elapsed_s": round(float(elapsed_s), 4), "t": round(now, 3)})
        self.times.append(now)
        self.records[key] = value
        self.elapsed[key] = float(elapsed_s)
