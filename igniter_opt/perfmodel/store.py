"""Profile directories: ``raw.json`` (measurements) and ``coefficients.json`` (fitted model).

``--profile NAME`` resolves to ``profiles/NAME/`` (in the current directory, in
``$IGNITER_OPT_PROFILES``, or shipped with the source tree); ``--profile PATH`` takes any
profile directory, or a raw profile file in either format, which is then fitted in memory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from igniter_opt.errors import ProfileError
from igniter_opt.ioutil import atomic_write_json
from igniter_opt.perfmodel.fit import fit_profile
from igniter_opt.perfmodel.model import PerformanceModel
from igniter_opt.perfmodel.raw import RawProfile, load_raw

RAW_FILE = "raw.json"
COEFFICIENTS_FILE = "coefficients.json"
SHIPPED_PROFILES_DIR = Path(__file__).resolve().parents[2] / "profiles"


def profile_search_dirs() -> list[Path]:
    dirs = [Path.cwd() / "profiles"]
    env = os.environ.get("IGNITER_OPT_PROFILES")
    if env:
        dirs.append(Path(env))
    dirs.append(SHIPPED_PROFILES_DIR)
    return dirs


def resolve_profile(spec: str | os.PathLike[str]) -> Path:
    """Turn a profile name or path into an existing path, or say where it was looked for."""
    p = Path(spec)
    if p.exists():
        return p
    if p.name == str(spec):  # a bare name
        for d in profile_search_dirs():
            if (d / p.name).is_dir():
                return d / p.name
    looked = ", ".join(str(d) for d in profile_search_dirs())
    raise ProfileError(
        f"profile '{spec}' not found (looked for a path, and for a folder of that name in {looked}); "
        "pass --profile PATH or run 'igniter-opt fit RAW -o profiles/NAME'"
    )


def load_profile(spec: str | os.PathLike[str]) -> PerformanceModel:
    """Load a fitted performance model from a profile name, directory or raw file."""
    path = resolve_profile(spec)
    if path.is_dir():
        coef = path / COEFFICIENTS_FILE
        if coef.exists():
            try:
                d = json.loads(coef.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ProfileError(f"{coef}: not valid JSON ({exc.msg}); re-run 'igniter-opt fit'") from None
            if not isinstance(d, dict):
                raise ProfileError(f"{coef}: expected a JSON object; re-run 'igniter-opt fit'")
            return PerformanceModel.from_dict(d, source=str(coef), name=path.name)
        if (path / RAW_FILE).exists():
            return fit_profile(load_raw(path / RAW_FILE), name=path.name)
        raise ProfileError(f"{path}: neither {COEFFICIENTS_FILE} nor {RAW_FILE} is there; not a profile folder")
    name = path.stem.replace("igniter_", "").replace("_profile", "")
    return fit_profile(load_raw(path), name=name)


def write_profile(raw: RawProfile, model: PerformanceModel, out_dir: str | os.PathLike[str]) -> Path:
    """Write ``raw.json`` and ``coefficients.json`` into ``out_dir`` (each atomically)."""
    out = Path(out_dir)
    atomic_write_json(out / RAW_FILE, raw.to_dict())
    atomic_write_json(out / COEFFICIENTS_FILE, model.to_dict())
    return out
