"""Pack addon/, a copy of shared/ and the bundled backend into an installable Blender extension zip.

    python build_addon.py [-o dist/]   ->   dist/<id>-<version>.zip

The zip holds the package at its root (blender_manifest.toml beside __init__.py) with shared/
vendored inside it, so the installed add-on imports `<package>.shared` and nothing from the
repository. `bundle/` carries the backend the add-on installs into its own environment:
`bundle/backend/`, `bundle/shared/` (the backend imports it as top-level `shared`) and
`bundle/requirements.txt`. Blender never imports anything under `bundle/`: the add-on only puts
that folder on the backend process's PYTHONPATH. Training and dataset preparation
(backend/train, backend/data) stay out: generation never uses them and they need blender_render.
Entries are sorted with fixed timestamps, so the same sources give the same zip, and it is
written under a temporary name and renamed.
"""
from __future__ import annotations

import argparse
import os
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
ADDON = ROOT / "addon"
SHARED = ROOT / "shared"
BACKEND = ROOT / "backend"
REQUIREMENTS = ROOT / "requirements.txt"
BUNDLE = "bundle"  # the backend's folder inside the package (see the module docstring)
BACKEND_SKIP = {"__pycache__", "train", "data"}  # not generation code (see the module docstring)
SKIP_DIRS = {"__pycache__", ".pytest_cache", "shared"}  # addon/shared never ships: it is vendored below
SKIP_SUFFIXES = {".pyc", ".pyo"}
FIXED_TIME = (2025, 1, 1, 0, 0, 0)


def _files(folder: Path, skip_dirs: set[str]) -> list[Path]:
    found = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part in skip_dirs or part.startswith(".") for part in relative.parts):
            continue
        if path.is_file() and path.suffix not in SKIP_SUFFIXES:
            found.append(path)
    return found


def manifest() -> dict:
    with open(ADDON / "blender_manifest.toml", "rb") as f:
        data = tomllib.load(f)
    for key in ("id", "version"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise SystemExit(f"error: addon/blender_manifest.toml has no {key!r}")
    return data


def _under(prefix: str, folder: Path, skip_dirs: set[str]) -> list[tuple[str, Path]]:
    return [(prefix + p.relative_to(folder).as_posix(), p) for p in _files(folder, skip_dirs)]


def entries() -> list[tuple[str, Path]]:
    """(name inside the zip, source file): package files, the vendored shared/, then the bundle."""
    items = [(p.relative_to(ADDON).as_posix(), p) for p in _files(ADDON, SKIP_DIRS | {BUNDLE})]
    items += _under("shared/", SHARED, {"__pycache__"})
    items += _under(f"{BUNDLE}/backend/", BACKEND, BACKEND_SKIP)
    items += _under(f"{BUNDLE}/shared/", SHARED, {"__pycache__"})
    items.append((f"{BUNDLE}/requirements.txt", REQUIREMENTS))
    return items


def build(output_dir: Path) -> Path:
    data = manifest()
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / f"{data['id']}-{data['version']}.zip"
    partial = target.with_name(target.name + ".part")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, source in entries():
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, source.read_bytes())
    os.replace(partial, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=str(ROOT / "dist"), help="folder for the zip (default: dist/)")
    args = parser.parse_args(argv)
    path = build(Path(args.output))
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
