"""Profile directories: ``raw.json`` (measurements) and ``coefficients.json`` (fitted model).

``--profile NAME`` resolves to ``profiles/NAME/`` (in the current directory, in
``$IGNITER_OPT_PROFILES``, or shipped with the source tree); ``--profile PATH`` takes any
profile directory, or a raw profile file in either format, which is then fitted in memory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from igniter_opt.domain import ServingParams
from igniter_opt.errors import ProfileError
from igniter_opt.ioutil import atomic_write_json
from igniter_opt.perfmodel.model import PerformanceModel

if TYPE_CHECKING:
    from igniter_opt.perfmodel.raw import RawProfile

RAW_FILE = "raw.json"
COEFFICIENTS_FILE = "coefficients.json"
SERVING_FILE = "serving.json"
SERVING_SCHEMA = "igniter-opt/serving/v1"
SHIPPED_PROFILES_DIR = Path(__file__).resolve().parents[2] / "profiles"
# Co-location interference forms (docs/interference.md); a profile that records none is "igniter".
INTERFERENCE_FORMS = ("igniter", "kernel-delay")


def profile_search_dirs() -> list[Path]:
    """Where a bare profile name is looked up, in order, each folder once: ./profiles,
    $IGNITER_OPT_PROFILES, the shipped profiles."""
    dirs = [Path.cwd() / "profiles"]
    env = os.environ.get("IGNITER_OPT_PROFILES")
    if env:
        dirs.append(Path(env))
    dirs.append(SHIPPED_PROFILES_DIR)
    unique: list[Path] = []
    for d in dirs:
        if all(d.resolve() != u.resolve() for u in unique):
            unique.append(d)
    return unique


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


def _read_json(path: Path, fix: str) -> dict[str, Any]:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ProfileError(f"{path}: not valid JSON ({exc.msg}); {fix}") from None
    if not isinstance(d, dict):
        raise ProfileError(f"{path}: expected a JSON object; {fix}")
    return d


def read_serving(path: Path) -> ServingParams:
    """A profile's serving measurements (``serving.json``)."""
    fix = "re-measure it with 'igniter-opt profile --serving' or remove the file"
    d = _read_json(path, fix)
    if d.get("schema") != SERVING_SCHEMA:
        raise ProfileError(f"{path}: schema is {d.get('schema')!r}, expected '{SERVING_SCHEMA}'; {fix}")
    missing = [k for k in ("overhead_ms", "client_ms", "service_cv") if k not in d]
    if missing:
        raise ProfileError(f"{path}: missing field(s) {', '.join(missing)}; {fix}")
    try:
        return ServingParams.from_dict(d)
    except ValueError as exc:
        raise ProfileError(f"{path}: {exc}; {fix}") from None


def write_serving(serving: ServingParams, out_dir: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> Path:
    """Write a profile's ``serving.json`` atomically."""
    return atomic_write_json(Path(out_dir) / SERVING_FILE,
                             {"schema": SERVING_SCHEMA, **serving.to_dict(), **(extra or {})})


def load_profile(spec: str | os.PathLike[str]) -> PerformanceModel:
    """Load a fitted performance model from a profile name, directory or raw file, with the
    profile's serving measurements where it has them (``serving.json``)."""
    path = resolve_profile(spec)
    model = _load_model(path)
    if path.is_dir() and (path / SERVING_FILE).is_file():
        model = model.with_serving(read_serving(path / SERVING_FILE))
    return model


def _load_model(path: Path) -> PerformanceModel:
    if path.is_dir():
        coef = path / COEFFICIENTS_FILE
        if coef.exists():
            d = _read_json(coef, "re-run 'igniter-opt fit'")
            model = PerformanceModel.from_dict(d, source=str(coef), name=path.name)
            check_interference(model, str(coef))
            return model
        if (path / RAW_FILE).exists():
            return _fit_raw(path / RAW_FILE, path.name)
        raise ProfileError(f"{path}: neither {COEFFICIENTS_FILE} nor {RAW_FILE} is there; not a profile folder")
    return _fit_raw(path, path.stem.replace("igniter_", "").replace("_profile", ""))


def interference_form(model: PerformanceModel) -> str:
    """The interference form a fitted model predicts with (``igniter`` where none is recorded)."""
    return str(model.gpu.get("fit", {}).get("interference_form", "igniter"))


def check_interference(model: PerformanceModel, source: str) -> None:
    """Refuse coefficients whose recorded interference form is unknown, or whose kernel-delay
    block disagrees with the coefficients it was applied to (``beta_sch`` = idle-gap intercept +
    delta_co, ``alpha_cache`` = kappa alpha', with the model's own kappa where it has one), so that a
    profile predicts with the form it names."""
    fix = "re-run 'igniter-opt fit'"
    form = interference_form(model)
    if form not in INTERFERENCE_FORMS:
        raise ProfileError(
            f"{source}: unknown interference form '{form}' (expected one of {', '.join(INTERFERENCE_FORMS)}); {fix}"
        )
    if form == "igniter":
        return
    block = model.gpu["fit"].get("interference")
    try:
        delta, kappa = float(block["co_kernel_delay_ms"]), float(block["cache_scale"])
        idle = float(block["idle_beta_sch"])
        alpha = {m: float(block["alpha_cache"][m]) for m in model.models}
        own = {str(m): float(v) for m, v in block.get("model_cache_scale", {}).items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise ProfileError(
            f"{source}: the '{form}' interference form's coefficients are incomplete ({exc}); {fix}"
        ) from None

    def close(a: float, b: float) -> bool:
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))

    bad = [] if close(model.hardware.beta_sch, idle + delta) else ["beta_sch"]
    bad += [f"{m}.alpha_cache" for m, c in model.models.items()
            if not close(c.alpha_cache, own.get(m, kappa) * alpha[m])]
    if bad:
        raise ProfileError(
            f"{source}: {', '.join(bad)} disagree with the recorded '{form}' interference form; {fix}"
        )


def _fit_raw(raw_path: Path, name: str) -> PerformanceModel:
    """Fit a raw profile (scikit-learn is imported only here: loading fitted coefficients stays light)."""
    from igniter_opt.perfmodel.fit import fit_profile
    from igniter_opt.perfmodel.raw import load_raw

    return fit_profile(load_raw(raw_path), name=name)


def write_profile(raw: RawProfile, model: PerformanceModel, out_dir: str | os.PathLike[str]) -> Path:
    """Write ``raw.json`` and ``coefficients.json`` into ``out_dir`` (each atomically)."""
    out = Path(out_dir)
    atomic_write_json(out / RAW_FILE, raw.to_dict())
    atomic_write_json(out / COEFFICIENTS_FILE, model.to_dict())
    return out
