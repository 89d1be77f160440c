"""Shared test helpers: run bpy code in subprocesses (pymeshlab imported before bpy breaks bpy),
load meshes in Blender's frame, and an exact point-to-mesh distance."""
from __future__ import annotations

import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree

from shared.views import gltf_to_blender

ROOT = Path(__file__).resolve().parents[2]
needs_bpy = pytest.mark.skipif(find_spec("bpy") is None, reason="the bpy module is not installed")


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), e.get("PYTHONPATH")) if p)
    return e


def run(args: list[str], timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """Run `python ARGS` from the repository root with the test interpreter (which has bpy)."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env(), capture_output=True, text=True,
                          timeout=timeout, **kw)


def load_blender_frame(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and faces as Blender's importer places them: glTF and OBJ are +Y up and get
    rotated to +Z up, PLY and STL are taken as they are."""
    ext = path.suffix.lower()
    loaded = trimesh.load(str(path), process=False)
    mesh = loaded.to_mesh() if isinstance(loaded, trimesh.Scene) else loaded
    v = np.asarray(mesh.vertices, dtype=np.float64)
    if ext in (".glb", ".gltf", ".obj"):
        v = np.array([gltf_to_blender(tuple(p)) for p in v])
    return v, np.asarray(mesh.faces, dtype=np.int64)


def distance_to_mesh(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Exact distance from each point to the nearest triangle whose (slightly grown) prism holds it:
    the distance to the triangle's plane when the point projects inside the triangle. Points near
    no triangle get +inf."""
    tri = vertices[faces]
    centroid = tri.mean(1)
    reach = np.linalg.norm(tri - centroid[:, None], axis=-1).max()
    e0, e1 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    normal = np.cross(e0, e1)
    area2 = np.linalg.norm(normal, axis=1)
    keep = area2 > 1e-14
    best = np.full(len(points), np.inf)
    candidates = cKDTree(centroid).query_ball_point(points, reach * 1.001)
    for i, cand in enumerate(candidates):
        cand = np.array([c for c in cand if keep[c]], dtype=np.int64)
        if not len(cand):
            continue
        n = normal[cand] / area2[cand, None]
        d = points[i] - tri[cand, 0]
        dist = np.abs((d * n).sum(1))
        # barycentrics of the point's projection onto each plane
        a, b = e0[cand], e1[cand]
        aa, ab, bb = (a * a).sum(1), (a * b).sum(1), (b * b).sum(1)
        da, db = (d * a).sum(1), (d * b).sum(1)
        den = aa * bb - ab * ab
        s, t = (bb * da - ab * db) / den, (aa * db - ab * da) / den
        tol = 1e-4
        inside = (s >= -tol) & (t >= -tol) & (s + t <= 1 + tol)
        if inside.any():
            best[i] = dist[inside].min()
    return best


def icosphere_ply(path: Path, centre=(0.3, -0.2, 0.1), radius=0.7, subdivisions=4) -> Path:
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    mesh.apply_translation(centre)
    mesh.export(str(path))
    return path
