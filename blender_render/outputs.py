"""An object's output folder appears complete or not at all (bpy-free).

Everything is written into a hidden staging folder beside the final one and renamed into place
when the last file (meta.json) is written, so a killed render or batch never leaves a half-written
object under its final name, and "the folder exists" is the whole resume test.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

from shared.errors import BackendError
from shared.render_format import META_NAME

_STAGING_MARK = ".tmp-"
_OLD_MARK = ".old-"


def is_complete(out_dir: Path) -> bool:
    return (Path(out_dir) / META_NAME).is_file()


def failed_dir(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + ".failed")


def make_staging(out_dir: Path) -> Path:
    """A fresh hidden folder on the same file system as `out_dir` (so the final rename is atomic)."""
    out_dir = Path(out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = out_dir.parent / f".{out_dir.name}{_STAGING_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
    except OSError as exc:
        raise BackendError("output_unwritable", f"cannot create a folder beside {out_dir}: {exc}") from None
    return staging


def commit(staging: Path, out_dir: Path, overwrite: bool) -> bool:
    """Rename `staging` to `out_dir`. Returns False (and drops `staging`) when a complete output
    appeared there meanwhile and `overwrite` is off: someone else finished the same object."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not overwrite and is_complete(out_dir):
            shutil.rmtree(staging, ignore_errors=True)
            return False
        old = out_dir.parent / f".{out_dir.name}{_OLD_MARK}{uuid.uuid4().hex[:8]}"
        os.rename(out_dir, old)
        os.rename(staging, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(staging, out_dir)
    return True


def discard(staging: Path, out_dir: Path, keep: bool) -> None:
    """Drop a failed object's staging folder, or keep it as OUT.failed/ for inspection."""
    if not keep:
        shutil.rmtree(staging, ignore_errors=True)
        return
    target = failed_dir(out_dir)
    if target.exists():
        shutil.rmtree(target)
    os.rename(staging, target)


def clean_stale(root: Path) -> list[Path]:
    """Remove staging and replaced folders that a killed run left directly under `root`."""
    removed = []
    root = Path(root)
    if not root.is_dir():
        return removed
    for p in root.iterdir():
        if p.name.startswith(".") and (_STAGING_MARK in p.name or _OLD_MARK in p.name) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def drop_staging(out_dir: Path, pid: int) -> None:
    """Remove the staging folders a killed worker (`pid`) left beside `out_dir`."""
    out_dir = Path(out_dir)
    for p in out_dir.parent.glob(f".{out_dir.name}{_STAGING_MARK}{pid}-*"):
        shutil.rmtree(p, ignore_errors=True)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_json(path: Path, data) -> None:
    """Strict JSON (NaN is an error), written to a temporary name and renamed."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")
    os.replace(tmp, path)
