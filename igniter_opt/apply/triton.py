"""Finding ``tritonserver``, preparing what it needs, and rendering its command line.

The server binary is ``--tritonserver``, else ``tritonserver`` on PATH, else the one inside the
installed ``nvidia-pytriton`` wheel. The wheel's Python backend needs a backend folder with
``libtriton_python.so`` and the ``triton_python_backend_stub`` built for the running Python
version next to it, and ``LD_LIBRARY_PATH`` holding the wheel's bundled libraries and the
interpreter's libpython folder. :func:`prepare_backend_dir` and :func:`server_environment` do
that; nothing has to be set by hand.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import sysconfig
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from igniter_opt.errors import ApplyError

PYTRITON_WHEEL = "nvidia-pytriton==0.7.0"


@dataclass(frozen=True)
class TritonInstall:
    """Where the server binary and its Python backend live.

    ``python_backend`` is the folder with ``libtriton_python.so``; ``stubs`` the folder of
    per-Python-version stub folders (``3.11/triton_python_backend_stub``), when known;
    ``lib_dirs`` extra folders the binary needs on ``LD_LIBRARY_PATH``.
    """

    binary: Path
    python_backend: Path | None
    stubs: Path | None
    lib_dirs: tuple[Path, ...] = ()
    source: str = "path"  # option, path or wheel

    def stub_for(self, version: str) -> Path | None:
        """The stub for Python ``version`` ('3.11'): in the stubs folder or in the backend folder."""
        for d in (self.stubs / version if self.stubs else None, self.python_backend):
            if d is not None and (d / "triton_python_backend_stub").is_file():
                return d / "triton_python_backend_stub"
        return None


def _pytriton_root() -> Path | None:
    """The installed ``pytriton`` package folder, found without importing it (it has many deps)."""
    try:
        spec = importlib.util.find_spec("pytriton")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _install_around(binary: Path, source: str) -> TritonInstall:
    """Guess the backend and stub folders of a server binary from the usual layouts."""
    root = binary.resolve().parent.parent  # .../tritonserver/bin/tritonserver -> .../tritonserver
    backend = next(
        (p for p in (root / "backends" / "python",) if (p / "libtriton_python.so").is_file()), None
    )
    stubs = root / "python_backend_stubs"
    libs = root.parent.parent / "nvidia_pytriton.libs"  # <site>/pytriton/tritonserver -> <site>
    return TritonInstall(
        binary=binary,
        python_backend=backend,
        stubs=stubs if stubs.is_dir() else None,
        lib_dirs=(libs,) if libs.is_dir() else (),
        source=source,
    )


def find_tritonserver(explicit: str | os.PathLike[str] | None = None) -> TritonInstall:
    """``explicit``, else ``tritonserver`` on PATH, else the ``nvidia-pytriton`` wheel's; or a clear error."""
    if explicit is not None:
        p = Path(explicit)
        if not p.is_file() or not os.access(p, os.X_OK):
            raise ApplyError(f"--tritonserver {p}: no such executable file")
        return _install_around(p, "option")
    on_path = shutil.which("tritonserver")
    if on_path:
        return _install_around(Path(on_path), "path")
    root = _pytriton_root()
    if root is not None:
        binary = root / "tritonserver" / "bin" / "tritonserver"
        if binary.is_file():
            return _install_around(binary, "wheel")
    raise ApplyError(
        "tritonserver not found: pass --tritonserver PATH, put it on PATH, or "
        f"pip install --no-deps {PYTRITON_WHEEL} (the server inside that wheel is used)"
    )


def python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def libpython_dir() -> Path | None:
    """The folder holding this interpreter's shared libpython (the stub links against it)."""
    for var in ("LIBDIR", "LIBPL"):
        d = sysconfig.get_config_var(var)
        name = sysconfig.get_config_var("INSTSONAME") or sysconfig.get_config_var("LDLIBRARY")
        if d and name and (Path(d) / name).exists():
            return Path(d)
    return None


def prepare_backend_dir(install: TritonInstall, dest: Path, version: str | None = None) -> Path:
    """A ``--backend-directory`` with ``python/libtriton_python.so`` and the stub for ``version``.

    Files are copied (not linked): the python backend looks for its stub next to its own file.
    """
    version = version or python_version()
    if install.python_backend is None:
        raise ApplyError(
            f"{install.binary}: no python backend (backends/python/libtriton_python.so) next to this server; "
            f"use the server of {PYTRITON_WHEEL}"
        )
    stub = install.stub_for(version)
    if stub is None:
        raise ApplyError(
            f"{install.binary}: no triton_python_backend_stub for Python {version}; run igniter-opt with a "
            "Python the server ships a stub for (the nvidia-pytriton wheel has 3.8 to 3.13)"
        )
    target = dest / "python"
    target.mkdir(parents=True, exist_ok=True)
    for f in install.python_backend.iterdir():
        if f.is_file() and f.name != "triton_python_backend_stub":
            shutil.copy2(f, target / f.name)
    shutil.copy2(stub, target / "triton_python_backend_stub")
    return dest


def server_environment(install: TritonInstall, base: Mapping[str, str]) -> dict[str, str]:
    """The server's environment: ``base`` with the wheel's libraries and libpython on ``LD_LIBRARY_PATH``."""
    env = dict(base)
    extra = [str(d) for d in install.lib_dirs]
    lp = libpython_dir()
    if lp is not None:
        extra.append(str(lp))
    old = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(dict.fromkeys(extra + old))
    return env


# ---- command line ------------------------------------------------------------------------------
@dataclass
class TritonServerConfig:
    """The server's flags. Only whitelisted flags can be set; ``to_argv`` renders them in a fixed order."""

    ALLOWED = (
        "model-repository",
        "backend-directory",
        "http-address",
        "http-port",
        "grpc-address",
        "grpc-port",
        "metrics-address",
        "metrics-port",
        "allow-metrics",
        "allow-gpu-metrics",
        "strict-readiness",
        "exit-timeout-secs",
        "log-verbose",
        "log-info",
        "pinned-memory-pool-byte-size",
        "cuda-memory-pool-byte-size",
        "model-control-mode",
        "backend-config",
    )
    flags: dict[str, str] = field(default_factory=dict)

    def __setitem__(self, key: str, value: object) -> None:
        if key not in self.ALLOWED:
            raise ApplyError(
                f"tritonserver flag --{key} is not supported here; allowed: {', '.join(self.ALLOWED)}"
            )
        self.flags[key] = str(value).lower() if isinstance(value, bool) else str(value)

    def __getitem__(self, key: str) -> str:
        return self.flags[key]

    def update(self, values: Mapping[str, object]) -> TritonServerConfig:
        for k, v in values.items():
            self[k] = v
        return self

    def to_argv(self, binary: str | os.PathLike[str]) -> list[str]:
        order = {k: i for i, k in enumerate(self.ALLOWED)}
        return [str(binary)] + [
            f"--{k}={v}" for k, v in sorted(self.flags.items(), key=lambda kv: order[kv[0]])
        ]
