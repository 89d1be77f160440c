"""Writing trained components where the inference loaders look for them (geometry and SDXL folders).

A geometry checkpoint is a complete Step1X-3D geometry folder (model_index.json, scheduler/,
one folder per component): the trained components are written with `save_release` (config.json +
diffusion_pytorch_model.safetensors, the release's keys), every other file is hard-linked from
the base folder (copied when the file system cannot link), so a checkpoint costs only the
trained weights on disk and `GeometryPipeline.from_pretrained(folder, subfolder="")` reads it.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from torch import nn


def link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    real = src.resolve()  # hub snapshots are symlinks into the blob store
    try:
        os.link(real, dst)
    except OSError:
        shutil.copy2(real, dst)


def assemble_folder(base: Path, out: Path, writers: dict[str, Callable[[Path], None]]) -> Path:
    """A copy of the model folder `base` (hard links) in which each sub-folder named in `writers`
    is written by its writer instead."""
    base, out = Path(base), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for src in base.rglob("*"):
        rel = src.relative_to(base)
        if src.is_dir() or rel.parts[0] in writers:
            continue
        link_or_copy(src, out / rel)
    for name, write in writers.items():
        write(out / name)
    return out


def write_geometry_folder(base: Path, out: Path, trained: dict[str, nn.Module]) -> Path:
    """`base` with the components named in `trained` (e.g. "transformer", "vae") replaced."""
    return assemble_folder(base, out, {name: module.save_release for name, module in trained.items()})
