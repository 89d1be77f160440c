"""Mesh clean-up shared by both engines: weld, drop degenerate faces, drop small floating parts.

Marching cubes and imported meshes arrive with duplicated vertices, zero-area slivers and specks
of noise around the main surface; every later step (decimation, UV unwrap, baking) is faster and
more robust without them.
"""
from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph


def weld(vertices: np.ndarray, faces: np.ndarray, tolerance: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Merge vertices closer than `tolerance` times the bounding-box diagonal."""
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    if len(vertices) == 0:
        return vertices.astype(np.float32), faces.reshape(0, 3)
    diag = float(np.linalg.norm(vertices.max(0) - vertices.min(0))) or 1.0
    cells = np.round((vertices - vertices.min(0)) / (diag * tolerance)).astype(np.int64)
    _, first, inverse = np.unique(_pack(cells), return_index=True, return_inverse=True)
    return vertices[first].astype(np.float32), inverse.reshape(-1)[faces]


def _pack(rows: np.ndarray) -> np.ndarray:
    """Rows of 3 non-negative ints as one sortable key each: 1D np.unique is far faster than
    np.unique(axis=0). Falls back to a void view when a value needs more than 21 bits."""
    if rows.max(initial=0) < (1 << 21):
        return (rows[:, 0] << 42) | (rows[:, 1] << 21) | rows[:, 2]
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    return rows.view(np.dtype((np.void, rows.dtype.itemsize * 3))).ravel()


def face_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area of each face, in float64 (zero-area slivers must come out as zero)."""
    v = np.asarray(vertices, dtype=np.float64)
    cross = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    return 0.5 * np.sqrt(np.einsum("ij,ij->i", cross, cross))


def nondegenerate(vertices: np.ndarray, faces: np.ndarray, min_area: float = 1e-14,
                  areas: np.ndarray | None = None) -> np.ndarray:
    """Indices of the faces that have three distinct vertices, an area over `min_area` and no
    duplicate before them. `areas` (of `faces`), when the caller has them, are not computed again."""
    distinct = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    areas = face_areas(vertices, faces) if areas is None else areas
    index = np.flatnonzero(distinct & (areas > min_area))
    _, keep = np.unique(_pack(np.sort(faces[index], axis=1)), return_index=True)
    return index[np.sort(keep)]


def face_components(faces: np.ndarray, vertex_count: int) -> np.ndarray:
    """Label of the vertex-connected component of each face."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    graph = sparse.coo_matrix((np.ones(len(edges), np.int8), (edges[:, 0], edges[:, 1])),
                              shape=(vertex_count, vertex_count))
    _, vertex_labels = csgraph.connected_components(graph, directed=False)
    return vertex_labels[faces[:, 0]]


def large_parts(vertices: np.ndarray, faces: np.ndarray, min_fraction: float = 0.01,
                areas: np.ndarray | None = None) -> np.ndarray:
    """Indices of the faces in components holding at least `min_fraction` of the total area."""
    if len(faces) == 0:
        return np.arange(0)
    labels = face_components(faces, len(vertices))
    part_area = np.bincount(labels, weights=face_areas(vertices, faces) if areas is None else areas)
    keep = part_area >= min_fraction * part_area.sum()
    keep[np.argmax(part_area)] = True
    return np.flatnonzero(keep[labels])


def compact(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove unreferenced vertices and renumber faces."""
    used, inverse = np.unique(faces.reshape(-1), return_inverse=True)
    return vertices[used], inverse.reshape(-1, 3).astype(np.int64)


def clean(vertices: np.ndarray, faces: np.ndarray, min_part_fraction: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Weld, drop degenerate and duplicate faces, drop floaters, remove unused vertices."""
    v, f = weld(vertices, faces)
    areas = face_areas(v, f)
    kept = nondegenerate(v, f, areas=areas)
    f, areas = f[kept], areas[kept]
    if min_part_fraction > 0:
        f = f[large_parts(v, f, min_part_fraction, areas=areas)]
    if len(f) == 0:
        return v[:0], f.reshape(0, 3)
    return compact(v, f)
