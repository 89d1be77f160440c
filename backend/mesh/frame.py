"""The output frame contract (ARCHITECTURE.md): centred on the bounding box, largest extent 1."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class UnitFit:
    """new = (old - centre) * factor."""

    centre: np.ndarray  # (3,)
    factor: float

    def apply(self, points: np.ndarray) -> np.ndarray:
        return ((np.asarray(points, np.float64) - self.centre) * self.factor).astype(np.float32)


def fit_unit_box(vertices: np.ndarray, extent: float = 1.0) -> UnitFit:
    v = np.asarray(vertices, np.float64)
    lo, hi = v.min(0), v.max(0)
    size = float((hi - lo).max())
    if size <= 0:
        raise ValueError("cannot normalise a mesh with zero extent")
    return UnitFit(centre=(lo + hi) / 2.0, factor=extent / size)
