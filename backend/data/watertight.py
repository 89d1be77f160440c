"""Turn any triangle soup into a closed, outward-oriented surface (the CraftsMan3D / Step1X-3D way).

On a lattice of (R+1)^3 nodes spanning [-bounds, bounds]^3:

1. unsigned distance to the input, exact within a thin band around the surface (every triangle
   visits the nodes of its grown bounding box; nodes farther away only need to know that they are);
2. a node is *outside* when some orthographic depth view (the project's rasteriser, views spread
   on a Fibonacci sphere) sees it in front of the surface **and** the generalized winding number
   there is at most 0.5 (so views that peek through a hole do not hollow the object out). Nodes no
   view sees - interior cavities, inner shells, sealed pockets - count as inside, which fills them;
3. marching cubes on `+udf` outside / `-udf` inside at the level `iso_voxels` node spacings: the
   surface sits that far outside the input, which also turns open sheets into thin closed shells.

Only nodes at least `iso` from the surface need a sign (nearer ones are below the level either
way). Winding numbers are computed on a coarse sub-lattice and interpolated, and evaluated exactly
only where the coarse values disagree about the side of 0.5 (near the surface or a hole).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numba
import numpy as np

from backend.mesh.camera import Camera
from backend.mesh.raster import rasterize_views
from shared.errors import BackendError
from shared.views import fibonacci_views, make_view

from .bvh import TriangleBVH, _triangle_distance2
from .meshes import tidy


@dataclass(frozen=True)
class WatertightOptions:
    resolution: int = 256  # lattice cells per axis (the reference: 256)
    bounds: float = 1.05  # lattice half-extent; the normalised object fills [-1, 1]^3
    views: int = 50  # depth views on a Fibonacci sphere (the reference: 50)
    view_resolution: int = 1024  # depth-map pixels per side (the reference: 1024)
    iso_voxels: float = 1.0  # outward offset of the surface in node spacings (reference: 2.1/256 at 256)
    winding_threshold: float = 0.5
    coarse_stride: int = 4  # winding-number sub-lattice stride (1: exact everywhere)
    device: str = "cpu"  # rasteriser device ("cuda" renders all views in one batch)

    def __post_init__(self):
        if self.resolution < 8 or self.views < 1 or self.view_resolution < 16:
            raise BackendError("invalid_setting", "watertight: resolution >= 8, views >= 1 and view_resolution >= 16")
        if not 0.1 <= self.iso_voxels <= 8.0:
            raise BackendError("invalid_setting", f"watertight: iso_voxels must be in [0.1, 8], got {self.iso_voxels}")
        if self.bounds <= 1.0:
            raise BackendError("invalid_setting", f"watertight: bounds must exceed 1 (the object's box), got {self.bounds}")

    @property
    def spacing(self) -> float:
        return 2.0 * self.bounds / self.resolution

    @property
    def iso(self) -> float:
        return self.iso_voxels * self.spacing


@dataclass
class WatertightResult:
    vertices: np.ndarray  # (V, 3) float64
    faces: np.ndarray  # (F, 3) int64, outward
    stats: dict = field(default_factory=dict)


@numba.njit(cache=True, parallel=True)
def _band_distance(tris, lo, hi, origin, h, n, cap):
    """Exact distance to the nearest triangle for nodes within `cap` of the surface, `cap` elsewhere.
    Parallel over x-planes, so no two threads write one node."""
    out = np.full((n, n, n), cap * cap)
    for i in numba.prange(n):
        node = np.empty(3)
        node[0] = origin + i * h
        for t in range(tris.shape[0]):
            if i < lo[t, 0] or i > hi[t, 0]:
                continue
            for j in range(lo[t, 1], hi[t, 1] + 1):
                node[1] = origin + j * h
                for k in range(lo[t, 2], hi[t, 2] + 1):
                    node[2] = origin + k * h
                    d2 = _triangle_distance2(node, tris[t])
                    if d2 < out[i, j, k]:
                        out[i, j, k] = d2
    return np.sqrt(out)


def band_distance(vertices: np.ndarray, faces: np.ndarray, resolution: int, bounds: float, cap: float) -> np.ndarray:
    """Unsigned distance on the (R+1)^3 lattice, exact below `cap`, `cap` at and beyond it."""
    h = 2.0 * bounds / resolution
    n = resolution + 1
    tris = np.ascontiguousarray(vertices[faces], dtype=np.float64)
    lo = np.clip(np.ceil((tris.min(axis=1) - cap + bounds) / h), 0, n - 1).astype(np.int64)
    hi = np.clip(np.floor((tris.max(axis=1) + cap + bounds) / h), 0, n - 1).astype(np.int64)
    return _band_distance(tris, lo, hi, -bounds, h, n, cap)


def node_points(flat: np.ndarray, n: int, bounds: float, h: float) -> np.ndarray:
    ijk = np.stack(np.unravel_index(flat, (n, n, n)), axis=-1)
    return ijk * h - bounds


def depth_cameras(count: int, bounds: float, resolution: int) -> list[Camera]:
    """Orthographic cameras on a Fibonacci sphere whose frames hold the whole lattice cube."""
    half = bounds * math.sqrt(3.0) * 1.01
    views = [make_view(v.name, v.azimuth_deg, v.elevation_deg, distance=half + 1.0, ortho_half_extent=half)
             for v in fibonacci_views(count)]
    return [Camera.from_view(v, resolution) for v in views]


def _affine(camera: Camera) -> np.ndarray:
    """The orthographic camera's world -> (pixel x, pixel y, depth) map as a 3x4 matrix, read off
    `Camera.project` itself so the pixel convention stays defined in one place."""
    if not camera.orthographic:
        raise ValueError("depth views must be orthographic")
    probe = np.vstack([np.zeros(3), np.eye(3)])
    xy, depth = camera.project(probe)
    image = np.column_stack([xy, depth])
    return np.column_stack([(image[1:] - image[0]).T, image[0]])


@numba.njit(cache=True, parallel=True)
def _visible(flat, n, bounds, h, maps, depths):
    """Per node: some view sees it nearer than the surface at its pixel and the 8 around it."""
    k, height, width = depths.shape
    out = np.zeros(flat.shape[0], dtype=np.bool_)
    for p in numba.prange(flat.shape[0]):
        idx = flat[p]
        x = (idx // (n * n)) * h - bounds
        y = ((idx // n) % n) * h - bounds
        z = (idx % n) * h - bounds
        for v in range(k):
            m = maps[v]
            col = int(math.floor(m[0, 0] * x + m[0, 1] * y + m[0, 2] * z + m[0, 3]))
            row = int(math.floor(m[1, 0] * x + m[1, 1] * y + m[1, 2] * z + m[1, 3]))
            d = m[2, 0] * x + m[2, 1] * y + m[2, 2] * z + m[2, 3]
            front = True
            for r in range(max(row - 1, 0), min(row + 2, height)):
                for c in range(max(col - 1, 0), min(col + 2, width)):
                    if depths[v, r, c] <= d:
                        front = False
            if front:
                out[p] = True
                break
    return out


def visible_nodes(vertices, faces, flat: np.ndarray, options: WatertightOptions) -> np.ndarray:
    """Mask over `flat` (lattice node indices): seen in front of the surface by some depth view.

    A node counts as seen only when it is nearer than the surface at its pixel and at the 8
    pixels around it, so rays grazing a silhouette do not leak into the object."""
    cameras = depth_cameras(options.views, options.bounds, options.view_resolution)
    rasters = rasterize_views(vertices, faces, cameras, device=options.device, barycentrics=False)
    depths = np.stack([r.depth.float().cpu().numpy() for r in rasters])
    maps = np.stack([_affine(c) for c in cameras])
    return _visible(np.ascontiguousarray(flat, dtype=np.int64), options.resolution + 1, options.bounds,
                    options.spacing, maps, depths)


@numba.njit(cache=True, parallel=True)
def _interpolate_coarse(flat, n, coarse, stride, threshold, margin):
    """Trilinear value from the coarse sub-lattice, and whether it cannot be trusted: the cell's
    corners straddle the threshold or the value lies within `margin` of it."""
    nc = coarse.shape[0]
    value = np.empty(flat.shape[0])
    unsure = np.empty(flat.shape[0], dtype=np.bool_)
    for p in numba.prange(flat.shape[0]):
        idx = flat[p]
        ijk = (idx // (n * n), (idx // n) % n, idx % n)
        cell = np.empty(3, np.int64)
        frac = np.empty(3)
        for a in range(3):
            cell[a] = min(ijk[a] // stride, nc - 2)
            frac[a] = (ijk[a] - cell[a] * stride) / stride
        total, lo, hi = 0.0, np.inf, -np.inf
        for dx in range(2):
            for dy in range(2):
                for dz in range(2):
                    c = coarse[cell[0] + dx, cell[1] + dy, cell[2] + dz]
                    w = ((frac[0] if dx else 1.0 - frac[0]) * (frac[1] if dy else 1.0 - frac[1])
                         * (frac[2] if dz else 1.0 - frac[2]))
                    total += w * c
                    lo, hi = min(lo, c), max(hi, c)
        value[p] = total
        unsure[p] = (lo <= threshold <= hi) or abs(total - threshold) < margin
    return value, unsure


def winding_on_nodes(bvh: TriangleBVH, flat: np.ndarray, options: WatertightOptions) -> np.ndarray:
    """Winding numbers at lattice nodes: trilinear from a coarse sub-lattice where its corner values
    agree about the side of the threshold, exact elsewhere."""
    n, h, b = options.resolution + 1, options.spacing, options.bounds
    stride = options.coarse_stride
    if stride <= 1 or options.resolution % stride:
        return bvh.winding_number(node_points(flat, n, b, h))
    nc = options.resolution // stride + 1
    axis = np.arange(nc) * stride * h - b
    coarse = bvh.winding_number(np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3))
    value, unsure = _interpolate_coarse(np.ascontiguousarray(flat, dtype=np.int64), n, coarse.reshape(nc, nc, nc),
                                        stride, options.winding_threshold, 0.25)
    if unsure.any():
        value[unsure] = bvh.winding_number(node_points(flat[unsure], n, b, h))
    return value


def extract(field_values: np.ndarray, level: float, bounds: float, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes on a field that grows outwards; triangles come out facing outwards."""
    from skimage.measure import marching_cubes

    values = field_values.astype(np.float32)
    level = np.float32(level)
    # A node exactly at the level (a flat input on a lattice plane) makes zero-area triangles that
    # break the surface's manifoldness: move such nodes to the outside by one float step.
    values[values == level] = np.nextafter(level, np.float32(np.inf))
    verts, faces, _, _ = marching_cubes(values, level=float(level), spacing=(spacing,) * 3, method="lewiner")
    return verts.astype(np.float64) - bounds, faces.astype(np.int64)


def make_watertight(vertices: np.ndarray, faces: np.ndarray, options: WatertightOptions | None = None) -> WatertightResult:
    """The closed surface `iso` outside the input (vertices already normalised into [-1, 1]^3)."""
    o = options or WatertightOptions()
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    if len(faces) == 0:
        raise BackendError("input_unreadable", "the mesh has no faces")
    if np.abs(vertices).max() > o.bounds:
        raise BackendError("invalid_setting", f"the mesh leaves the lattice [-{o.bounds}, {o.bounds}]^3: normalise it first")
    stats: dict = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        stats[f"seconds_{name}"] = round(now - clock, 3)
        clock = now

    n, h = o.resolution + 1, o.spacing
    udf = band_distance(vertices, faces, o.resolution, o.bounds, o.iso + 2.0 * h)
    lap("distance")
    flat = np.flatnonzero(udf.reshape(-1) >= o.iso)  # nodes whose sign matters
    seen = visible_nodes(vertices, faces, flat, o)
    lap("visibility")
    bvh = TriangleBVH.build(vertices, faces)
    winding = winding_on_nodes(bvh, flat[seen], o)
    lap("winding")
    outside = np.ones(n**3, dtype=bool)
    outside[flat[~seen]] = False
    outside[flat[seen][winding > o.winding_threshold]] = False
    signed = np.where(outside.reshape(udf.shape), udf, -udf)
    cap = o.iso + 2.0 * h
    for axis in range(3):  # the lattice border is open space: the surface closes inside it
        signed.swapaxes(0, axis)[[0, -1]] = cap
    if signed.min() >= o.iso:
        raise BackendError("input_unreadable", "the mesh encloses nothing at this resolution (is it empty or tiny?)")
    v, f = extract(signed, o.iso, o.bounds, h)
    tidied = tidy(v, f, drop_flat=False)  # corners a rounding step apart: weld, drop the collapsed faces
    v, f = tidied.vertices, tidied.faces
    stats["marching_cubes_tidy"] = tidied.stats
    lap("marching_cubes")
    stats.update(resolution=o.resolution, nodes_signed=int(len(flat)), nodes_hidden=int((~seen).sum()),
                 nodes_inside_by_winding=int((winding > o.winding_threshold).sum()))
    return WatertightResult(v, f, stats)
