"""Loading a source asset as one triangle mesh in the glTF frame, and the reference's normalisation.

The up-axis rule mirrors Blender's importers (what `blender_render` sees): glTF, OBJ and FBX are
+Y up; PLY and STL carry no convention and Blender reads them as +Z up. With `up="auto"` the
prepared samples and the renders of the same file therefore show the object the same way up.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.errors import BackendError

Z_UP_FORMATS = (".ply", ".stl")


def source_up(path: Path, up: str) -> str:
    if up not in ("auto", "y", "z"):
        raise BackendError("invalid_setting", f"up must be auto, y or z; got {up!r}")
    if up != "auto":
        return up
    return "z" if Path(path).suffix.lower() in Z_UP_FORMATS else "y"


def load_mesh(path: str | Path, up: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """All geometry of the file (scene transforms applied) as float64 vertices and int64 faces,
    +Y up (glTF frame)."""
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise BackendError("input_not_found", f"{path} does not exist")
    try:
        mesh = trimesh.load(str(path), force="mesh", process=False)
    except Exception as exc:  # trimesh raises many types for bad files
        raise BackendError("input_unreadable", f"{path.name}: cannot read a mesh: {exc}") from None
    vertices = np.asarray(getattr(mesh, "vertices", np.zeros((0, 3))), dtype=np.float64)
    faces = np.asarray(getattr(mesh, "faces", np.zeros((0, 3))), dtype=np.int64)
    if len(faces) == 0 or not np.isfinite(vertices).all():
        raise BackendError("input_unreadable", f"{path.name}: no triangles (or non-finite vertices)")
    if source_up(path, up) == "z":  # (x, y, z)_gltf = (x, z, -y)_zup
        vertices = np.column_stack([vertices[:, 0], vertices[:, 2], -vertices[:, 1]])
    return vertices, faces


@dataclass(frozen=True)
class Normalisation:
    """normalised = (source - centre) * scale: the reference's vertex-mean centre, max |coord| = 1."""

    centre: tuple[float, float, float]
    scale: float

    def apply(self, vertices: np.ndarray) -> np.ndarray:
        return (np.asarray(vertices, dtype=np.float64) - np.asarray(self.centre)) * self.scale

    def to_dict(self) -> dict:
        return {"centre": list(self.centre), "scale": self.scale, "formula": "(source - centre) * scale"}


def normalisation(vertices: np.ndarray, faces: np.ndarray) -> Normalisation:
    used = vertices[np.unique(faces)]
    centre = used.mean(axis=0)
    extent = float(np.abs(used - centre).max())
    if not extent > 0.0:
        raise BackendError("input_unreadable", "the mesh has zero size")
    return Normalisation(tuple(float(c) for c in centre), 1.0 / extent)


@dataclass(frozen=True)
class Tidied:
    vertices: np.ndarray  # (V, 3) float64, every vertex used
    faces: np.ndarray  # (F, 3) int64
    stats: dict  # what was merged or dropped


def tidy(vertices: np.ndarray, faces: np.ndarray, drop_flat: bool = True) -> Tidied:
    """Merge vertices at identical positions, drop faces that then repeat a corner and, with
    `drop_flat`, faces of exactly zero area (collinear corners); drop unused vertices.

    Scanned and modelled meshes carry all of these (format seams, slivers, stray lines), and so
    does marching cubes (corners a rounding step apart). Nothing else moves: a collapsed face of a
    closed surface is an edge collapse, and a flat face adds nothing to its winding number or its
    distance field. `drop_flat=False` keeps flat faces whose three corners differ, because removing
    them would open slits in a surface that must stay closed."""
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    unique, inverse = np.unique(vertices, axis=0, return_inverse=True)
    f = inverse.reshape(-1)[faces]
    repeated = (f[:, 0] == f[:, 1]) | (f[:, 1] == f[:, 2]) | (f[:, 0] == f[:, 2])
    flat = np.zeros(len(f), dtype=bool)
    if drop_flat:
        t = unique[f]
        flat = ~repeated & ~np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]).any(axis=1)
    f = f[~(repeated | flat)]
    used, f_new = np.unique(f, return_inverse=True)
    stats = {"merged_vertices": int(len(vertices) - len(unique)), "collapsed_faces": int(repeated.sum()),
             "flat_faces": int(flat.sum())}
    return Tidied(unique[used], f_new.reshape(-1, 3).astype(np.int64), stats)
