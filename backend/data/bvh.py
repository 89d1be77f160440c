"""A triangle bounding-volume hierarchy with two queries: winding number and distance to the surface.

Data preparation asks both questions of millions of points (grid nodes when making a mesh
watertight, SDF samples afterwards), so both run in numba over a shared tree:

* generalized winding number (Barill et al. 2018, "Fast winding numbers for soups and clouds"):
  exact solid angles (Van Oosterom & Strackee) of the triangles near the query, and one dipole
  term `A . (p - q) / |p - q|^3` per distant cluster (A = area-weighted normal sum, p = its
  area-weighted centroid) when the query is farther than `beta` cluster radii. The result is 1
  inside a closed outward-oriented surface, 0 outside, and degrades gracefully for holes;
* unsigned distance: exact point-triangle distances, branch-and-bound on the node boxes, with an
  optional cap that prunes everything farther (grid nodes only need distances in a thin band).

The tree splits triangles at the median centroid along the longest axis down to `LEAF` triangles.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

LEAF = 8
FLAT = 1e-8  # a triangle whose smallest height is below this fraction of its longest edge is measured by its edges
_STACK = 256
_CHUNK = 1024  # query points per parallel work item (one traversal stack each)


@dataclass(frozen=True)
class TriangleBVH:
    triangles: np.ndarray  # (F, 3, 3) float64, in tree order
    order: np.ndarray  # (F,) int64: input face index of each tree-order triangle
    left: np.ndarray  # (N,) int64 child indices, -1 at leaves
    right: np.ndarray
    start: np.ndarray  # (N,) int64 range of tree-order triangles under the node
    end: np.ndarray
    box_min: np.ndarray  # (N, 3) float64
    box_max: np.ndarray
    area_vector: np.ndarray  # (N, 3) sum of area * unit normal
    centre: np.ndarray  # (N, 3) area-weighted centroid
    radius: np.ndarray  # (N,) bounding-sphere radius about `centre`

    @classmethod
    def build(cls, vertices: np.ndarray, faces: np.ndarray) -> "TriangleBVH":
        vertices = np.ascontiguousarray(vertices, dtype=np.float64)
        faces = np.ascontiguousarray(faces, dtype=np.int64)
        if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
            raise ValueError(f"expected vertices (V, 3) and faces (F, 3), got {vertices.shape} and {faces.shape}")
        if len(faces) == 0:
            raise ValueError("the mesh has no faces")
        if faces.min() < 0 or faces.max() >= len(vertices):
            raise ValueError("faces index outside the vertex array")
        tris = vertices[faces]
        order, left, right, start, end, count = _build(tris.mean(axis=1))
        tris = np.ascontiguousarray(tris[order])
        n = count
        left, right, start, end = left[:n].copy(), right[:n].copy(), start[:n].copy(), end[:n].copy()
        stats = _node_stats(tris, left, right, start, end)
        return cls(tris, order, left, right, start, end, *stats)

    def _tree(self) -> tuple:
        return (self.triangles, self.left, self.right, self.start, self.end, self.box_min, self.box_max,
                self.area_vector, self.centre, self.radius)

    def winding_number(self, points: np.ndarray, beta: float = 2.0) -> np.ndarray:
        """Generalized winding number at points (P, 3) -> (P,) float64."""
        pts = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)
        return _winding(pts, float(beta), *self._tree())

    def distance(self, points: np.ndarray, cap: float = math.inf) -> np.ndarray:
        """Unsigned distance from points (P, 3) to the surface -> (P,) float64; values at or
        beyond `cap` are returned as `cap` (their exact value is not computed)."""
        pts = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)
        return _distance(pts, float(cap), *self._tree())


@numba.njit(cache=True)
def _build(centroids):
    f = centroids.shape[0]
    capacity = 2 * ((f + LEAF - 1) // LEAF) * 2 + 1
    left = np.full(capacity, -1, np.int64)
    right = np.full(capacity, -1, np.int64)
    start = np.zeros(capacity, np.int64)
    end = np.zeros(capacity, np.int64)
    order = np.arange(f)
    stack = np.empty(_STACK, np.int64)
    start[0], end[0] = 0, f
    stack[0] = 0
    count, top = 1, 1
    while top > 0:
        top -= 1
        node = stack[top]
        s, e = start[node], end[node]
        if e - s <= LEAF:
            continue
        lo = centroids[order[s]].copy()
        hi = lo.copy()
        for i in range(s + 1, e):
            c = centroids[order[i]]
            for k in range(3):
                lo[k] = min(lo[k], c[k])
                hi[k] = max(hi[k], c[k])
        axis = np.argmax(hi - lo)
        keys = np.empty(e - s)
        for i in range(s, e):
            keys[i - s] = centroids[order[i], axis]
        order[s:e] = order[s:e][np.argsort(keys, kind="mergesort")]
        mid = (s + e) // 2
        left[node], right[node] = count, count + 1
        start[count], end[count] = s, mid
        start[count + 1], end[count + 1] = mid, e
        stack[top], stack[top + 1] = count, count + 1
        top += 2
        count += 2
    return order, left, right, start, end, count


@numba.njit(cache=True)
def _node_stats(tris, left, right, start, end):
    n = left.shape[0]
    box_min = np.empty((n, 3))
    box_max = np.empty((n, 3))
    avec = np.zeros((n, 3))
    area = np.zeros(n)
    centre = np.zeros((n, 3))
    radius = np.zeros(n)
    for node in range(n - 1, -1, -1):  # children always come after their parent
        if left[node] < 0:
            box_min[node] = tris[start[node], 0]
            box_max[node] = tris[start[node], 0]
            for t in range(start[node], end[node]):
                a, b, c = tris[t, 0], tris[t, 1], tris[t, 2]
                cr = np.cross(b - a, c - a)
                ar = 0.5 * math.sqrt(cr[0] ** 2 + cr[1] ** 2 + cr[2] ** 2)
                avec[node] += 0.5 * cr
                area[node] += ar
                centre[node] += ar * (a + b + c) / 3.0
                for v in range(3):
                    for k in range(3):
                        box_min[node, k] = min(box_min[node, k], tris[t, v, k])
                        box_max[node, k] = max(box_max[node, k], tris[t, v, k])
            if area[node] > 0.0:
                centre[node] /= area[node]
            else:
                centre[node] = 0.5 * (box_min[node] + box_max[node])
            r = 0.0
            for t in range(start[node], end[node]):
                for v in range(3):
                    d = tris[t, v] - centre[node]
                    r = max(r, math.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2))
            radius[node] = r
        else:
            l, rr = left[node], right[node]
            area[node] = area[l] + area[rr]
            avec[node] = avec[l] + avec[rr]
            if area[node] > 0.0:
                centre[node] = (area[l] * centre[l] + area[rr] * centre[rr]) / area[node]
            else:
                centre[node] = 0.5 * (centre[l] + centre[rr])
            r = 0.0
            for child in (l, rr):
                d = centre[child] - centre[node]
                r = max(r, math.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2) + radius[child])
            radius[node] = r
            for k in range(3):
                box_min[node, k] = min(box_min[l, k], box_min[rr, k])
                box_max[node, k] = max(box_max[l, k], box_max[rr, k])
    return box_min, box_max, avec, centre, radius


@numba.njit(cache=True, inline="always")
def _solid_angle(tri, q):
    a0, a1, a2 = tri[0, 0] - q[0], tri[0, 1] - q[1], tri[0, 2] - q[2]
    b0, b1, b2 = tri[1, 0] - q[0], tri[1, 1] - q[1], tri[1, 2] - q[2]
    c0, c1, c2 = tri[2, 0] - q[0], tri[2, 1] - q[1], tri[2, 2] - q[2]
    la = math.sqrt(a0 * a0 + a1 * a1 + a2 * a2)
    lb = math.sqrt(b0 * b0 + b1 * b1 + b2 * b2)
    lc = math.sqrt(c0 * c0 + c1 * c1 + c2 * c2)
    det = a0 * (b1 * c2 - b2 * c1) - a1 * (b0 * c2 - b2 * c0) + a2 * (b0 * c1 - b1 * c0)
    den = (la * lb * lc + (a0 * b0 + a1 * b1 + a2 * b2) * lc + (a0 * c0 + a1 * c1 + a2 * c2) * lb
           + (b0 * c0 + b1 * c1 + b2 * c2) * la)
    return 2.0 * math.atan2(det, den)


@numba.njit(cache=True, parallel=True)
def _winding(points, beta, tris, left, right, start, end, box_min, box_max, avec, centre, radius):
    p = points.shape[0]
    out = np.empty(p)
    chunks = (p + _CHUNK - 1) // _CHUNK
    for c in numba.prange(chunks):
        stack = np.empty(_STACK, np.int64)
        for i in range(c * _CHUNK, min(p, (c + 1) * _CHUNK)):
            q = points[i]
            total = 0.0
            stack[0] = 0
            top = 1
            while top > 0:
                top -= 1
                node = stack[top]
                d0, d1, d2 = centre[node, 0] - q[0], centre[node, 1] - q[1], centre[node, 2] - q[2]
                dist = math.sqrt(d0 * d0 + d1 * d1 + d2 * d2)
                if dist > beta * radius[node]:
                    total += (avec[node, 0] * d0 + avec[node, 1] * d1 + avec[node, 2] * d2) / (dist * dist * dist)
                elif left[node] < 0:
                    for t in range(start[node], end[node]):
                        total += _solid_angle(tris[t], q)
                else:
                    stack[top] = left[node]
                    stack[top + 1] = right[node]
                    top += 2
            out[i] = total / (4.0 * math.pi)
    return out


@numba.njit(cache=True, inline="always")
def _box_distance2(q, lo, hi):
    s = 0.0
    for k in range(3):
        if q[k] < lo[k]:
            s += (lo[k] - q[k]) ** 2
        elif q[k] > hi[k]:
            s += (q[k] - hi[k]) ** 2
    return s


@numba.njit(cache=True, inline="always")
def _dot(x0, x1, x2, y0, y1, y2):
    return x0 * y0 + x1 * y1 + x2 * y2


@numba.njit(cache=True, inline="always")
def _segment_distance2(px, py, pz, ex, ey, ez):
    """Squared distance from p (relative to the segment's start) to the segment start + t e,
    t in [0, 1]; a zero-length segment is its start point."""
    e2 = _dot(ex, ey, ez, ex, ey, ez)
    t = 0.0
    if e2 > 0.0:
        t = min(max(_dot(px, py, pz, ex, ey, ez) / e2, 0.0), 1.0)
    rx, ry, rz = px - t * ex, py - t * ey, pz - t * ez
    return _dot(rx, ry, rz, rx, ry, rz)


@numba.njit(cache=True)
def _triangle_distance2(q, tri):
    """Squared distance from q to a triangle, in scalars: temporaries in this innermost loop would
    cost a heap allocation each.

    Ericson's closest-feature regions (vertices, edges, face) pick the feature; edges are measured
    as clamped segments and the face as the distance to the plane, so no division can meet a zero.
    A triangle flatter than `FLAT` (smallest height over longest edge), zero-length edges and
    coincident corners included, is measured as its three edges: its face is no farther from any
    point than they are by more than that height, while its plane is not known to that precision."""
    ax, ay, az = tri[0, 0], tri[0, 1], tri[0, 2]
    abx, aby, abz = tri[1, 0] - ax, tri[1, 1] - ay, tri[1, 2] - az
    acx, acy, acz = tri[2, 0] - ax, tri[2, 1] - ay, tri[2, 2] - az
    bcx, bcy, bcz = tri[2, 0] - tri[1, 0], tri[2, 1] - tri[1, 1], tri[2, 2] - tri[1, 2]
    apx, apy, apz = q[0] - ax, q[1] - ay, q[2] - az
    bpx, bpy, bpz = q[0] - tri[1, 0], q[1] - tri[1, 1], q[2] - tri[1, 2]
    nx, ny, nz = aby * acz - abz * acy, abz * acx - abx * acz, abx * acy - aby * acx
    n2 = _dot(nx, ny, nz, nx, ny, nz)
    longest2 = max(_dot(abx, aby, abz, abx, aby, abz), _dot(acx, acy, acz, acx, acy, acz),
                   _dot(bcx, bcy, bcz, bcx, bcy, bcz))
    if not n2 > FLAT * FLAT * longest2 * longest2:  # (2 area / longest)^2 <= (FLAT longest)^2
        return min(_segment_distance2(apx, apy, apz, abx, aby, abz), _segment_distance2(apx, apy, apz, acx, acy, acz),
                   _segment_distance2(bpx, bpy, bpz, bcx, bcy, bcz))
    d1, d2 = _dot(abx, aby, abz, apx, apy, apz), _dot(acx, acy, acz, apx, apy, apz)
    if d1 <= 0.0 and d2 <= 0.0:
        return _dot(apx, apy, apz, apx, apy, apz)
    d3, d4 = _dot(abx, aby, abz, bpx, bpy, bpz), _dot(acx, acy, acz, bpx, bpy, bpz)
    if d3 >= 0.0 and d4 <= d3:
        return _dot(bpx, bpy, bpz, bpx, bpy, bpz)
    vc = d1 * d4 - d3 * d2
    if vc <= 0.0 and d1 >= 0.0 and d3 <= 0.0:
        return _segment_distance2(apx, apy, apz, abx, aby, abz)
    cpx, cpy, cpz = q[0] - tri[2, 0], q[1] - tri[2, 1], q[2] - tri[2, 2]
    d5, d6 = _dot(abx, aby, abz, cpx, cpy, cpz), _dot(acx, acy, acz, cpx, cpy, cpz)
    if d6 >= 0.0 and d5 <= d6:
        return _dot(cpx, cpy, cpz, cpx, cpy, cpz)
    vb = d5 * d2 - d1 * d6
    if vb <= 0.0 and d2 >= 0.0 and d6 <= 0.0:
        return _segment_distance2(apx, apy, apz, acx, acy, acz)
    va = d3 * d6 - d5 * d4
    if va <= 0.0 and (d4 - d3) >= 0.0 and (d5 - d6) >= 0.0:
        return _segment_distance2(bpx, bpy, bpz, bcx, bcy, bcz)
    h = _dot(apx, apy, apz, nx, ny, nz)
    return h * h / n2


@numba.njit(cache=True, parallel=True)
def _distance(points, cap, tris, left, right, start, end, box_min, box_max, avec, centre, radius):
    p = points.shape[0]
    out = np.empty(p)
    chunks = (p + _CHUNK - 1) // _CHUNK
    cap2 = cap * cap
    for c in numba.prange(chunks):
        stack = np.empty(_STACK, np.int64)
        for i in range(c * _CHUNK, min(p, (c + 1) * _CHUNK)):
            q = points[i]
            best = cap2
            stack[0] = 0
            top = 1
            while top > 0:
                top -= 1
                node = stack[top]
                if _box_distance2(q, box_min[node], box_max[node]) >= best:
                    continue
                if left[node] < 0:
                    for t in range(start[node], end[node]):
                        best = min(best, _triangle_distance2(q, tris[t]))
                else:
                    l, r = left[node], right[node]
                    dl = _box_distance2(q, box_min[l], box_max[l])
                    dr = _box_distance2(q, box_min[r], box_max[r])
                    if dl < dr:  # the nearer child is popped first
                        l, r = r, l
                    stack[top] = l
                    stack[top + 1] = r
                    top += 2
            out[i] = math.sqrt(best)
    return out
