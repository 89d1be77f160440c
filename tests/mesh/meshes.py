"""Small meshes the mesh tests build on the fly."""
from __future__ import annotations

import numpy as np
import trimesh

from backend.mesh.uv import UVMesh, smooth_vertex_normals, unwrap


def unit(vertices: np.ndarray) -> np.ndarray:
    """Centre on the bounding box and scale the largest extent to 1 (the exported frame)."""
    lo, hi = vertices.min(0), vertices.max(0)
    return (vertices - (lo + hi) / 2) / (hi - lo).max()


def load_unit(path) -> tuple[np.ndarray, np.ndarray]:
    mesh = trimesh.load(path, force="mesh")
    return unit(np.asarray(mesh.vertices)), np.asarray(mesh.faces)


def sphere(radius: float = 0.45, count: int = 32) -> tuple[np.ndarray, np.ndarray]:
    s = trimesh.creation.uv_sphere(radius=radius, count=[count, count])
    return np.asarray(s.vertices), np.asarray(s.faces)


def quad_mesh(quads: list[np.ndarray]) -> UVMesh:
    """Quads (4 corners each, counter-clockwise seen from their front) side by side in UV space."""
    n = len(quads)
    verts = np.concatenate(quads).astype(np.float32)
    faces = np.concatenate([np.array([[0, 1, 2], [0, 2, 3]]) + 4 * k for k in range(n)]).astype(np.int32)
    uv = []
    for k in range(n):
        u0, u1 = (k + 0.02) / n, (k + 0.98) / n
        uv += [[u0, 0.02], [u1, 0.02], [u1, 0.98], [u0, 0.98]]
    normals = smooth_vertex_normals(verts, faces.astype(np.int64))
    return UVMesh(verts, faces, np.array(uv, np.float32), np.arange(len(verts)), normals)


def quad(center, half_w, half_h, axis_u, axis_v) -> np.ndarray:
    c, u, v = np.asarray(center, float), np.asarray(axis_u, float), np.asarray(axis_v, float)
    return np.array([c - half_w * u - half_h * v, c + half_w * u - half_h * v,
                     c + half_w * u + half_h * v, c - half_w * u + half_h * v])


def unwrap_sphere(texture_size: int, radius: float = 0.45, count: int = 24) -> UVMesh:
    v, f = sphere(radius, count)
    return unwrap(v, f, texture_size)
