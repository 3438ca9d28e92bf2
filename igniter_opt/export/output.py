"""The export's folder: refused when it holds something else, written all at once or not at all."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from igniter_opt.export.errors import ExportError
from igniter_opt.ioutil import atomic_write_text

EXPORT_SCHEMA = "igniter-opt/k8s-export/v1"
RECORD = "export.json"  # every export's record; --force replaces only a folder that holds one


def check_out_dir(out_dir: Path, force: bool) -> None:
    """Refuse a file, a non-empty folder without ``force``, and (even with it) a folder that is no export."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"-o {out_dir}: a file is in the way; choose a folder")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not force:
        raise ExportError(f"-o {out_dir}: the folder exists and is not empty; pass --force to replace an "
                          "earlier export, or choose another folder")
    try:
        ours = json.loads((out_dir / RECORD).read_text(encoding="utf-8")).get("schema") == EXPORT_SCHEMA
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise ExportError(f"-o {out_dir}: the folder holds no earlier export ({RECORD}), so --force will not "
                          "replace it; choose another folder")


def _ordinary_mode(mode: int) -> int:
    """``mode`` less the umask: what an ordinary mkdir or open would give."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def write_tree(out_dir: Path, files: dict[str, str], executable: frozenset[str] = frozenset()) -> None:
    """Write ``files`` ({relative path: text}) as the folder ``out_dir``, replacing what was there.

    Everything goes into a temporary folder next to ``out_dir`` first, which is renamed into place
    at the end; an earlier ``out_dir`` is set aside until then. On any failure the temporary folder
    is removed and the earlier one put back: ``out_dir`` is either complete or as it was.
    """
    out_dir = out_dir.absolute()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    aside: Path | None = None
    try:
        for rel, text in files.items():
            atomic_write_text(tmp / rel, text)
            if rel in executable:
                os.chmod(tmp / rel, _ordinary_mode(0o777))
        for d in [tmp, *(p for p in tmp.rglob("*") if p.is_dir())]:
            os.chmod(d, _ordinary_mode(0o777))  # mkdtemp made it private
        if out_dir.exists():
            aside = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
            os.replace(out_dir, aside / "export")
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if aside is not None and not out_dir.exists():
            os.replace(aside / "export", out_dir)
        raise
    finally:
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
