"""Point samples for shape-VAE and DiT training (step1x3d-reference.md §5.2).

* `surface`: area-uniform points on the watertight surface with their face normals;
* `sharp_surface`: points on sharp edges (dihedral angle above a threshold) - the edges' own
  vertices for up to half of the budget, the rest spread evenly along the edges in proportion to
  their length (remainder at random positions), normals the mean of the two faces' normals;
* `near_surface_points`: surface points moved by N(0, 0.001^2) and N(0, 0.01^2) noise, with SDF;
* `volume_rand_points`: uniform in the bounds cube, with SDF.
The SDF is positive inside (as pysdf, the reference's labeller): the distance to the watertight
surface, signed by its winding number.
"""
from __future__ import annotations

import numpy as np

from backend.mesh.clean import weld
from backend.mesh.uv import smooth_vertex_normals

from .bvh import TriangleBVH


def face_normals_and_areas(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tri = vertices[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(cross, axis=1)
    return cross / np.maximum(length, 1e-300)[:, None], 0.5 * length


def sample_surface(vertices: np.ndarray, faces: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """(count, 6) float32: xyz + unit face normal, uniform over the area."""
    normals, areas = face_normals_and_areas(vertices, faces)
    if not areas.sum() > 0:
        raise ValueError("the surface has zero area")
    face = rng.choice(len(faces), size=count, p=areas / areas.sum())
    r1, r2 = rng.random(count), rng.random(count)
    s = np.sqrt(r1)
    tri = vertices[faces[face]]
    points = (1 - s)[:, None] * tri[:, 0] + (s * (1 - r2))[:, None] * tri[:, 1] + (s * r2)[:, None] * tri[:, 2]
    return np.concatenate([points, normals[face]], axis=1).astype(np.float32)


def sharp_edges(vertices: np.ndarray, faces: np.ndarray, angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Edges shared by exactly two faces whose normals differ by more than `angle_deg`:
    vertex pairs (E, 2) and the mean of the two unit face normals (E, 3, not normalised)."""
    normals, areas = face_normals_and_areas(vertices, faces)
    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    owner = np.repeat(np.arange(len(faces)), 3)
    unique, inverse, counts = np.unique(edges, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    manifold = np.flatnonzero(counts == 2)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    f0, f1 = owner[order[starts[manifold]]], owner[order[starts[manifold] + 1]]
    valid = (areas[f0] > 0) & (areas[f1] > 0)
    cosine = np.clip((normals[f0] * normals[f1]).sum(1), -1.0, 1.0)
    sharp = valid & (cosine < np.cos(np.radians(angle_deg)))
    return unique[manifold[sharp]], 0.5 * (normals[f0[sharp]] + normals[f1[sharp]])


def sample_sharp(vertices: np.ndarray, faces: np.ndarray, count: int, angle_deg: float,
                 rng: np.random.Generator) -> np.ndarray | None:
    """(count, 6) float32 sharp-edge samples, or None when the mesh has no sharp edge.
    The mesh is welded first so that seams of the file format do not hide its adjacency."""
    v, f = (t.numpy() for t in weld(vertices, faces))
    v = v.astype(np.float64)
    edges, edge_normals = sharp_edges(v, f, angle_deg)
    if len(edges) == 0:
        return None
    corner_ids = np.unique(edges)
    n_corner = min(len(corner_ids), count // 2)
    corners = rng.choice(corner_ids, size=n_corner, replace=False)
    vertex_normals = smooth_vertex_normals(v, f).astype(np.float64)
    parts = [np.concatenate([v[corners], vertex_normals[corners]], axis=1)]

    rest = count - n_corner
    a, b = v[edges[:, 0]], v[edges[:, 1]]
    length = np.linalg.norm(b - a, axis=1)
    share = np.floor(rest * length / length.sum()).astype(np.int64)
    edge_index = np.repeat(np.arange(len(edges)), share)
    within = np.arange(len(edge_index)) - np.repeat(np.cumsum(share) - share, share)
    t = (within + 0.5) / np.repeat(share, share)
    extra = rest - len(edge_index)
    edge_index = np.concatenate([edge_index, rng.choice(len(edges), size=extra, p=length / length.sum())])
    t = np.concatenate([t, rng.random(extra)])
    points = a[edge_index] + t[:, None] * (b - a)[edge_index]
    n = edge_normals[edge_index]
    n = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-300)
    parts.append(np.concatenate([points, n], axis=1))
    out = np.concatenate(parts)
    return out[rng.permutation(len(out))].astype(np.float32)


def signed_distance(bvh: TriangleBVH, points: np.ndarray) -> np.ndarray:
    """Distance to a closed surface, positive inside (winding number above 1/2)."""
    inside = bvh.winding_number(points) > 0.5
    return np.where(inside, 1.0, -1.0) * bvh.distance(points)


def near_surface_points(bvh: TriangleBVH, vertices: np.ndarray, faces: np.ndarray, count: int,
                        rng: np.random.Generator, sigmas=(0.001, 0.01)) -> np.ndarray:
    """(count * len(sigmas), 4) float32: surface points plus Gaussian noise, and their SDF."""
    base = sample_surface(vertices, faces, count, rng)[:, :3].astype(np.float64)
    points = np.concatenate([base + rng.normal(0.0, s, base.shape) for s in sigmas])
    return np.column_stack([points, signed_distance(bvh, points)]).astype(np.float32)


def volume_points(bvh: TriangleBVH, count: int, bounds: float, rng: np.random.Generator) -> np.ndarray:
    """(count, 4) float32: uniform points in [-bounds, bounds]^3 and their SDF."""
    points = rng.uniform(-bounds, bounds, (count, 3))
    return np.column_stack([points, signed_distance(bvh, points)]).astype(np.float32)
