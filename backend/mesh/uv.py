"""UV unwrapping with xatlas, once per asset.

xatlas' default chart options spend 10-17 s on a 40k-face mesh on two cores because charts grow
unbounded and the cost function is re-evaluated over huge regions. Capping a chart's area and
boundary keeps charts small and the run near 2 s, at the price of more seams; the baker and the
inpainter handle seams, so the trade is worth it (benchmarks/uv.py measures both).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xatlas


@dataclass
class UVMesh:
    """A mesh split along UV seams, with the map back to the welded input.

    vertices/faces/uv describe the split mesh that gets exported; `vmapping[i]` is the input
    vertex that split vertex i came from, so per-vertex data of the welded mesh (normals, colours)
    is carried over with `data[vmapping]` and stays continuous across seams.
    """

    vertices: np.ndarray  # (V, 3) float32
    faces: np.ndarray  # (F, 3) int32
    uv: np.ndarray  # (V, 2) float32 in [0, 1], v up (OBJ/trimesh convention)
    vmapping: np.ndarray  # (V,) int64 into the welded mesh
    normals: np.ndarray  # (V, 3) float32, smooth normals of the welded mesh


def chart_options(surface_area: float, fast: bool = True) -> xatlas.ChartOptions:
    options = xatlas.ChartOptions()
    if fast:
        options.max_chart_area = 0.01 * surface_area
        options.max_iterations = 1
    return options


def pack_options(texture_size: int) -> xatlas.PackOptions:
    """Padding scaled to the texture; the atlas resolution is left to xatlas (packing into a fixed
    2048 grid doubles the run time and the UVs are normalised to [0, 1] either way)."""
    options = xatlas.PackOptions()
    options.padding = max(2, texture_size // 512)
    options.bilinear = True
    return options


def smooth_vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals (face cross products summed per vertex), unit length."""
    v = vertices.astype(np.float64)
    tri = v[faces]
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # length = 2 * area
    normals = np.zeros_like(v)
    for k in range(3):
        np.add.at(normals, faces[:, k], face_n)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    fallback = np.array([0.0, 1.0, 0.0])
    normals = np.where(length > 1e-20, normals / np.maximum(length, 1e-300), fallback)
    return normals.astype(np.float32)


def unwrap(vertices: np.ndarray, faces: np.ndarray, texture_size: int = 2048, fast: bool = True) -> UVMesh:
    """Parametrise a welded mesh; returns the seam-split mesh with UVs and carried normals."""
    vertices = np.ascontiguousarray(vertices, dtype=np.float32)
    faces = np.ascontiguousarray(faces, dtype=np.uint32)
    if len(faces) == 0:
        raise ValueError("cannot unwrap a mesh without faces")
    tri = vertices[faces].astype(np.float64)
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum()
    atlas = xatlas.Atlas()
    atlas.add_mesh(vertices, faces)
    atlas.generate(chart_options(area, fast), pack_options(texture_size))
    vmapping, new_faces, uv = atlas[0]
    normals = smooth_vertex_normals(vertices, faces.astype(np.int64))
    return UVMesh(
        vertices=vertices[vmapping],
        faces=new_faces.astype(np.int32),
        uv=uv.astype(np.float32),
        vmapping=vmapping.astype(np.int64),
        normals=normals[vmapping],
    )
