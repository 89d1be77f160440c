"""Where an imported asset goes: pure maths on vertex positions and 4x4 matrices (numpy only).

Generated assets stand on the ground at the 3D cursor: centred on the cursor in X and Y, lowest
vertex at the cursor's height. A texture-only result replaces a source mesh, so it is fitted into
the source's own bounds (the backend may have re-centred and re-scaled it) and then takes the
source's transform.
"""
from __future__ import annotations

import numpy as np


def world_bounds(local_points: np.ndarray, matrix_world) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned bounds (min, max) of Nx3 local points under a 4x4 world matrix."""
    points = np.asarray(local_points, dtype=np.float64).reshape(-1, 3)
    if len(points) == 0:
        raise ValueError("the object has no vertices")
    m = np.asarray(matrix_world, dtype=np.float64).reshape(4, 4)
    world = points @ m[:3, :3].T + m[:3, 3]
    return world.min(axis=0), world.max(axis=0)


def standing_offset(lo, hi, cursor) -> np.ndarray:
    """Translation that centres bounds on the cursor in X/Y and puts their bottom at its height."""
    lo, hi, cursor = (np.asarray(v, dtype=np.float64) for v in (lo, hi, cursor))
    target = np.array([cursor[0], cursor[1], cursor[2]])
    current = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]])
    return target - current


def fit_matrix(result_lo, result_hi, source_lo, source_hi) -> np.ndarray:
    """4x4 uniform scale + translation mapping the result's bounds onto the source's (same centre,
    same largest extent); identity when they already agree."""
    rlo, rhi, slo, shi = (np.asarray(v, dtype=np.float64) for v in (result_lo, result_hi, source_lo, source_hi))
    r_extent, s_extent = float((rhi - rlo).max()), float((shi - slo).max())
    scale = s_extent / r_extent if r_extent > 0 and s_extent > 0 else 1.0
    m = np.eye(4)
    m[:3, :3] *= scale
    m[:3, 3] = (slo + shi) / 2 - scale * (rlo + rhi) / 2
    return m
