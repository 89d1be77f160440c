"""Fit an imported object into the unit cube, and record how (bpy-free).

The texture model's conditioning maps encode positions as world + 0.5, so objects are centred on
their bounding box and scaled so the largest side is 1 (the reference's training renders do the
same, step1x3d-reference.md §5.1). The record lets a loader map renders back to the source file.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Normalization:
    """world = scale * (imported + offset), in Blender's Z-up frame after the importer ran."""

    mode: str  # unit_cube | none
    scale: float
    offset: tuple[float, float, float]
    source_min: tuple[float, float, float]  # bounding box as imported
    source_max: tuple[float, float, float]

    def matrix(self) -> np.ndarray:
        m = np.eye(4) * self.scale
        m[3, 3] = 1.0
        m[:3, 3] = self.scale * np.asarray(self.offset)
        return m

    def apply(self, points: np.ndarray) -> np.ndarray:
        return self.scale * (np.asarray(points, dtype=np.float64) + np.asarray(self.offset))

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The normalised bounding box."""
        return self.apply(np.array([self.source_min]))[0], self.apply(np.array([self.source_max]))[0]

    @property
    def radius(self) -> float:
        """Radius about the origin of a sphere holding the normalised bounding box."""
        lo, hi = self.bounds
        return float(np.linalg.norm(np.maximum(np.abs(lo), np.abs(hi))))

    def to_meta(self) -> dict:
        return {"mode": self.mode, "scale": self.scale, "offset": list(self.offset),
                "matrix": self.matrix().tolist(), "source_bbox_min": list(self.source_min),
                "source_bbox_max": list(self.source_max), "frame": "blender_z_up",
                "formula": "world = scale * (imported + offset)"}


def fit(bbox_min, bbox_max, mode: str) -> Normalization:
    """Centre the box on the origin with its largest side 1 (`unit_cube`), or keep it (`none`)."""
    lo = np.asarray(bbox_min, dtype=np.float64)
    hi = np.asarray(bbox_max, dtype=np.float64)
    if lo.shape != (3,) or hi.shape != (3,) or not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise ValueError(f"bounding box must be two finite 3-vectors, got {bbox_min}, {bbox_max}")
    if np.any(hi < lo):
        raise ValueError(f"bounding box min {lo} exceeds max {hi}")
    extent = float(np.max(hi - lo))
    if mode == "none":
        scale, offset = 1.0, np.zeros(3)
    elif mode == "unit_cube":
        if extent <= 0.0:
            raise ValueError("the object has zero size")
        scale, offset = 1.0 / extent, -(lo + hi) / 2.0
    else:
        raise ValueError(f"unknown normalisation mode {mode!r}")
    return Normalization(mode, scale, tuple(float(x) for x in offset), tuple(float(x) for x in lo),
                         tuple(float(x) for x in hi))
