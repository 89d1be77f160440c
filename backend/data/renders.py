"""Read one `blender_render` object folder back as float arrays (the reading side of
shared/render_format.py; needs OpenCV, not Blender).

For training loaders and tests: decodes the stored encodings of meta.json into Blender-world
positions, unit normals, camera depth, a boolean mask and RGBA colour in [0, 1], and rebuilds
each view's camera from the recorded matrices.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.render_format import (BACKGROUND, DEPTH_BACKGROUND, DEPTH_STEPS, META_NAME, NORMAL_SCALE, NORMAL_SHIFT,
                                  POSITION_SCALE, POSITION_SHIFT, UNIT16_MAX)

os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")  # read before OpenCV's first EXR decode


def _read(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise OSError(f"cannot read {path}")
    if image.ndim == 3:  # OpenCV orders channels BGR(A)
        image = image[..., [2, 1, 0, 3][: image.shape[2]]]
    return image


def _unit(codes: np.ndarray) -> np.ndarray:
    return codes.astype(np.float64) / float(np.iinfo(codes.dtype).max)


def dequantize16(codes: np.ndarray) -> np.ndarray:
    return np.asarray(codes, dtype=np.float64) / float(UNIT16_MAX)


def unit_to_position(unit: np.ndarray) -> np.ndarray:
    return (np.asarray(unit, dtype=np.float64) - POSITION_SHIFT) / POSITION_SCALE


def unit_to_normal(unit: np.ndarray) -> np.ndarray:
    return (np.asarray(unit, dtype=np.float64) - NORMAL_SHIFT) / NORMAL_SCALE


def uint16_to_depth(codes: np.ndarray, near: float, far: float) -> tuple[np.ndarray, np.ndarray]:
    """-> (depth with +inf on the background, mask)."""
    codes = np.asarray(codes)
    mask = codes != DEPTH_BACKGROUND
    depth = near + codes.astype(np.float64) / DEPTH_STEPS * (far - near)
    return np.where(mask, depth, np.inf), mask


@dataclass
class View:
    meta: dict  # this view's meta.json record (cameras, files, checks)
    mask: np.ndarray | None = None  # (H, W) bool
    normal: np.ndarray | None = None  # (H, W, 3) float64, Blender world, zeros off the mask
    position: np.ndarray | None = None  # (H, W, 3) float64, Blender world, zeros off the mask
    depth: np.ndarray | None = None  # (H, W) float64 camera depth, +inf off the mask
    color: np.ndarray | None = None  # (H, W, 4) float64 RGBA in [0, 1], straight alpha
    albedo: np.ndarray | None = None
    mr: np.ndarray | None = None
    # (H, W, 6) stored position then normal units, grey 0.5 off the mask: the texture model's
    # control image as rendered (PNG reads only)
    control: np.ndarray | None = None

    @property
    def c2w_opencv(self) -> np.ndarray:
        return np.array(self.meta["c2w_opencv"], dtype=np.float64)

    @property
    def intrinsics(self) -> np.ndarray:
        return np.array(self.meta["intrinsics"], dtype=np.float64)

    @property
    def orthographic(self) -> bool:
        return self.meta["projection"] == "ortho"


def load_meta(obj_dir: Path) -> dict:
    return json.loads((Path(obj_dir) / META_NAME).read_text())


def load_view(obj_dir: Path, index: int, meta: dict | None = None, exr: bool = False) -> View:
    """View `index` of a rendered object; `exr=True` reads the float EXRs instead of the PNGs."""
    obj_dir = Path(obj_dir)
    meta = meta or load_meta(obj_dir)
    record = meta["views"][index]
    files = record["files"]
    view = View(record)
    if "mask" in files:
        view.mask = _read(obj_dir / files["mask"]) > 127
    if exr:
        for name in ("normal", "position"):
            if f"{name}_exr" in files:
                setattr(view, name, _read(obj_dir / files[f"{name}_exr"]).astype(np.float64)[..., :3])
        if "depth_exr" in files:
            d = _read(obj_dir / files["depth_exr"]).astype(np.float64)
            d = d[..., 0] if d.ndim == 3 else d
            view.depth = np.where(d < 1e9, d, np.inf)
    else:
        units = {name: dequantize16(_read(obj_dir / files[name])) for name in ("position", "normal") if name in files}
        if "normal" in units:
            view.normal = unit_to_normal(units["normal"])
        if "position" in units:
            view.position = unit_to_position(units["position"])
        if "depth" in files:
            view.depth, depth_mask = uint16_to_depth(_read(obj_dir / files["depth"]), *record["depth_png_range"])
            if view.mask is None:
                view.mask = depth_mask
        if len(units) == 2:
            view.control = np.concatenate([units["position"], units["normal"]], axis=-1)
            if view.mask is not None:
                view.control = np.where(view.mask[..., None], view.control, BACKGROUND)
    if view.mask is not None:
        for name in ("normal", "position"):
            value = getattr(view, name)
            if value is not None:
                setattr(view, name, np.where(view.mask[..., None], value, 0.0))
    for name in ("color", "albedo", "mr"):
        if name in files:
            setattr(view, name, _unit(_read(obj_dir / files[name])))
    return view

