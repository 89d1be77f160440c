"""Triangle rasteriser: per pixel face id, barycentrics and depth, on a 2-core CPU and on CUDA.

Semantics (both paths, and the brute-force reference in tests/mesh, implement exactly these):
- pixel (i, j) is sampled at its centre (j + 0.5, i + 0.5) in `Camera.project` pixel coordinates;
- a pixel is covered when all three screen-space edge functions have the triangle's sign or are
  zero (edges are inclusive, no top-left rule; a pixel exactly on a shared edge goes to the nearer
  face, then to the lower face index);
- no culling: both windings are drawn, because the baker and the renderer need the nearest
  surface whatever its orientation (the cosine weight rejects back faces later);
- triangles with a vertex nearer than `camera.near` are dropped whole (no clipping; every camera
  the project uses keeps the object well in front), zero-area triangles are dropped, no far plane;
- depth is camera depth (distance along the view axis): linear in screen space for orthographic
  cameras, 1 / depth linear for perspective ones, evaluated as d_a + l_b (d_b - d_a) + l_c (d_c -
  d_a) so that a constant-depth triangle (every UV-space triangle) gets exactly d_a; the nearest
  depth wins, exact ties go to the lower face index;
- barycentrics weight the face's vertices (a, b, c) in 3D, i.e. perspective-correct.

CPU: a numba z-buffer over per-triangle bounding boxes, parallel over bands of rows (each band
scans every face, so no two threads write one pixel), then a second pass that computes
barycentrics only for the winning face of each pixel. CUDA: a vectorised bounding-box scan in
torch (one candidate per (view, face, pixel) pair, in chunks) whose packed int64 key (float32 depth
bits, then face index) is reduced with `scatter_reduce(amin)`; several views go in one batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numba
import numpy as np
import torch

from backend.mesh.camera import Camera

_MIN_AREA = 1e-10  # pixels^2; below this a triangle counts as degenerate
_EMPTY_KEY = torch.iinfo(torch.int64).max


@dataclass
class Raster:
    """One rasterised view. Tensors live on the device the raster was made on."""

    face_id: torch.Tensor  # (H, W) int32, -1 where no face
    bary: torch.Tensor | None  # (H, W, 3) float32, zeros where no face; None when not requested
    depth: torch.Tensor  # (H, W) float32 camera depth, +inf where no face

    @property
    def mask(self) -> torch.Tensor:
        return self.face_id >= 0

    def interpolate(self, attributes: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        """Barycentric blend of per-vertex `attributes` (V, C) -> (H, W, C); zeros where empty."""
        if self.bary is None:
            raise ValueError("this raster was made without barycentrics")
        hit = torch.nonzero(self.face_id.view(-1) >= 0).squeeze(1)
        corners = attributes[faces.long()[self.face_id.view(-1)[hit].long()]]  # (K, 3, C)
        values = (corners * self.bary.view(-1, 3)[hit].unsqueeze(-1)).sum(dim=1)
        out = torch.zeros(self.face_id.numel(), attributes.shape[1], dtype=values.dtype, device=values.device)
        return out.index_copy_(0, hit, values).view(*self.face_id.shape, -1)


@dataclass(frozen=True)
class _Screen:
    """A view reduced to what rasterisation needs: screen-space vertices and their depths."""

    xy: np.ndarray  # (V, 2) float64 pixel coordinates
    depth: np.ndarray  # (V,) float64
    height: int
    width: int
    perspective: bool
    near: float


def _screen(vertices: np.ndarray, camera: Camera) -> _Screen:
    xy, depth = camera.project(vertices)
    return _Screen(xy, depth, camera.height, camera.width, not camera.orthographic, camera.near)


def _as_numpy(array, dtype) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    return np.ascontiguousarray(array, dtype=dtype)


def _check_mesh(vertices: np.ndarray, faces: np.ndarray, dims: int) -> None:
    if vertices.ndim != 2 or vertices.shape[1] != dims:
        raise ValueError(f"vertices must be (V, {dims}), got {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be (F, 3), got {faces.shape}")
    if len(faces) and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise ValueError("faces index outside the vertex array")
    if len(faces) >= 2**31 - 1:
        raise ValueError("too many faces for int32 face ids")


def pick_method(method: str, device: torch.device) -> str:
    """"auto" means torch on CUDA and numba on the CPU; torch on the CPU is the test reference."""
    if method == "auto":
        return "torch" if device.type == "cuda" else "numba"
    if method not in ("torch", "numba"):
        raise ValueError(f"unknown rasteriser method {method!r}")
    if method == "numba" and device.type != "cpu":
        raise ValueError("the numba rasteriser runs on the CPU only")
    return method


def rasterize_views(vertices, faces, cameras: Sequence[Camera], *, device: str | torch.device | None = None,
                    method: str = "auto", barycentrics: bool = True,
                    chunk: int | None = None) -> list[Raster]:
    """Rasterise one mesh into several cameras; CUDA does all views in one batched scan."""
    verts = _as_numpy(vertices, np.float64)
    tris = _as_numpy(faces, np.int64)
    _check_mesh(verts, tris, 3)
    screens = [_screen(verts, cam) for cam in cameras]
    return _rasterize_screens(screens, tris, device, method, barycentrics, chunk)


def rasterize(vertices, faces, camera: Camera, **kwargs) -> Raster:
    return rasterize_views(vertices, faces, [camera], **kwargs)[0]


def rasterize_uv(uv, faces, size: int | tuple[int, int], *, device: str | torch.device | None = None,
                 method: str = "auto", chunk: int | None = None) -> Raster:
    """Rasterise UV charts into a texture of `size` texels: per texel face id and barycentrics.

    Texture convention (as glTF samplers see it after trimesh's V flip on export): row 0 is v = 1,
    texel (r, c) is centred at u = (c + 0.5) / W, v = 1 - (r + 0.5) / H. Depth is 1 everywhere, so
    overlapping charts go to the lower face index.
    """
    height, width = (size, size) if isinstance(size, int) else size
    uvs = _as_numpy(uv, np.float64)
    tris = _as_numpy(faces, np.int64)
    _check_mesh(uvs, tris, 2)
    xy = np.stack([uvs[:, 0] * width, (1.0 - uvs[:, 1]) * height], axis=1)
    screen = _Screen(xy, np.ones(len(uvs)), int(height), int(width), False, 0.0)
    return _rasterize_screens([screen], tris, device, method, True, chunk)[0]


def _rasterize_screens(screens: list[_Screen], faces: np.ndarray, device, method: str, barycentrics: bool,
                       chunk: int | None) -> list[Raster]:
    device = torch.device(device or "cpu")
    method = pick_method(method, device)
    if method == "numba":
        return [_raster_numba(s, faces, barycentrics) for s in screens]
    return _raster_torch(screens, faces, device, barycentrics, chunk)


# ---------------------------------------------------------------- CPU: numba z-buffer

@numba.njit(cache=True)
def _nb_setup(xy, depth, faces, height, width, near):
    """Per face: inclusive pixel bounding box (x0, x1, y0, y1; empty when x0 > x1) and area."""
    n = faces.shape[0]
    box = np.empty((n, 4), np.int64)
    area = np.zeros(n)
    for f in range(n):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        box[f, 0], box[f, 1], box[f, 2], box[f, 3] = 1, 0, 1, 0
        if depth[a] < near or depth[b] < near or depth[c] < near:
            continue
        xa, ya, xb, yb, xc, yc = xy[a, 0], xy[a, 1], xy[b, 0], xy[b, 1], xy[c, 0], xy[c, 1]
        ar = (xb - xa) * (yc - ya) - (yb - ya) * (xc - xa)
        if not abs(ar) > _MIN_AREA:
            continue
        area[f] = ar
        # clamp before converting to int so far-off vertices cannot overflow
        lo_x = min(max(min(xa, xb, xc) - 0.5, -1.0), width + 1.0)
        hi_x = min(max(max(xa, xb, xc) - 0.5, -2.0), width + 1.0)
        lo_y = min(max(min(ya, yb, yc) - 0.5, -1.0), height + 1.0)
        hi_y = min(max(max(ya, yb, yc) - 0.5, -2.0), height + 1.0)
        box[f, 0] = max(int(math.ceil(lo_x)), 0)
        box[f, 1] = min(int(math.floor(hi_x)), width - 1)
        box[f, 2] = max(int(math.ceil(lo_y)), 0)
        box[f, 3] = min(int(math.floor(hi_y)), height - 1)
    return box, area


@numba.njit(cache=True, inline="always")
def _nb_edges(xy, faces, f, px, py):
    a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
    xa, ya, xb, yb, xc, yc = xy[a, 0], xy[a, 1], xy[b, 0], xy[b, 1], xy[c, 0], xy[c, 1]
    e0 = (xc - xb) * (py - yb) - (yc - yb) * (px - xb)
    e1 = (xa - xc) * (py - yc) - (ya - yc) * (px - xc)
    e2 = (xb - xa) * (py - ya) - (yb - ya) * (px - xa)
    return e0, e1, e2


@numba.njit(cache=True, inline="always")
def _nb_narrow(lo, hi, px0, py0, px1, py1, py, sign):
    """Tighten [lo, hi] (continuous x on row y = py) to where the edge P0 -> P1 has `sign`."""
    a = sign * ((px1 - px0) * (py - py0) + (py1 - py0) * px0)
    b = -sign * (py1 - py0)
    if b > 0:
        lo = max(lo, -a / b)
    elif b < 0:
        hi = min(hi, -a / b)
    elif a < 0:
        hi = -1e30
    return lo, hi


@numba.njit(cache=True, parallel=True)
def _nb_zbuffer(xy, depth, faces, box, area, height, width, perspective, zbuf, fbuf):
    """Each thread owns a band of rows and walks every face; per row, the analytic span of the
    triangle (widened by a pixel for safety) bounds the exact per-pixel edge tests."""
    n_faces = faces.shape[0]
    bands = min(height, 64)
    for band in numba.prange(bands):
        r0 = band * height // bands
        r1 = (band + 1) * height // bands - 1
        for f in range(n_faces):
            y0, y1 = max(box[f, 2], r0), min(box[f, 3], r1)
            x0, x1 = box[f, 0], box[f, 1]
            if y0 > y1 or x0 > x1:
                continue
            ar = area[f]
            sign = 1.0 if ar > 0 else -1.0
            a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
            xa, ya, xb, yb, xc, yc = xy[a, 0], xy[a, 1], xy[b, 0], xy[b, 1], xy[c, 0], xy[c, 1]
            da, db, dc = depth[a], depth[b], depth[c]
            for i in range(y0, y1 + 1):
                py = i + 0.5
                lo, hi = _nb_narrow(-1e30, 1e30, xb, yb, xc, yc, py, sign)
                lo, hi = _nb_narrow(lo, hi, xc, yc, xa, ya, py, sign)
                lo, hi = _nb_narrow(lo, hi, xa, ya, xb, yb, py, sign)
                if hi < lo - 2.0:
                    continue
                j0 = max(x0, int(math.ceil(min(max(lo - 0.5, -2.0), width + 2.0))) - 1)
                j1 = min(x1, int(math.floor(min(max(hi - 0.5, -2.0), width + 2.0))) + 1)
                for j in range(j0, j1 + 1):
                    px = j + 0.5
                    e0 = (xc - xb) * (py - yb) - (yc - yb) * (px - xb)
                    e1 = (xa - xc) * (py - yc) - (ya - yc) * (px - xc)
                    e2 = (xb - xa) * (py - ya) - (yb - ya) * (px - xa)
                    if ar > 0:
                        if e0 < 0 or e1 < 0 or e2 < 0:
                            continue
                    elif e0 > 0 or e1 > 0 or e2 > 0:
                        continue
                    l1, l2 = e1 / ar, e2 / ar
                    if perspective:
                        z = 1.0 / (1.0 / da + l1 * (1.0 / db - 1.0 / da) + l2 * (1.0 / dc - 1.0 / da))
                    else:
                        z = da + l1 * (db - da) + l2 * (dc - da)
                    if z < zbuf[i, j]:
                        zbuf[i, j] = z
                        fbuf[i, j] = f


@numba.njit(cache=True, parallel=True)
def _nb_barycentrics(xy, depth, faces, area, perspective, fbuf, out):
    height, width = fbuf.shape
    for i in numba.prange(height):
        for j in range(width):
            f = fbuf[i, j]
            if f < 0:
                continue
            e0, e1, e2 = _nb_edges(xy, faces, f, j + 0.5, i + 0.5)
            ar = area[f]
            l0, l1, l2 = e0 / ar, e1 / ar, e2 / ar
            if perspective:
                l0 /= depth[faces[f, 0]]
                l1 /= depth[faces[f, 1]]
                l2 /= depth[faces[f, 2]]
            s = l0 + l1 + l2
            out[i, j, 0], out[i, j, 1], out[i, j, 2] = l0 / s, l1 / s, l2 / s


def _raster_numba(screen: _Screen, faces: np.ndarray, barycentrics: bool) -> Raster:
    h, w = screen.height, screen.width
    box, area = _nb_setup(screen.xy, screen.depth, faces, h, w, screen.near)
    zbuf = np.full((h, w), np.inf)
    fbuf = np.full((h, w), -1, np.int32)
    _nb_zbuffer(screen.xy, screen.depth, faces, box, area, h, w, screen.perspective, zbuf, fbuf)
    bary = None
    if barycentrics:
        out = np.zeros((h, w, 3), np.float32)
        _nb_barycentrics(screen.xy, screen.depth, faces, area, screen.perspective, fbuf, out)
        bary = torch.from_numpy(out)
    return Raster(torch.from_numpy(fbuf), bary, torch.from_numpy(zbuf.astype(np.float32)))


# ---------------------------------------------------------------- CUDA (and CPU) torch scan

def _edges_t(a, b, c, px, py):
    """Edge functions e0 (weight of a), e1, e2 for points (px, py); a, b, c are (..., 2)."""
    e0 = (c[..., 0] - b[..., 0]) * (py - b[..., 1]) - (c[..., 1] - b[..., 1]) * (px - b[..., 0])
    e1 = (a[..., 0] - c[..., 0]) * (py - c[..., 1]) - (a[..., 1] - c[..., 1]) * (px - c[..., 0])
    e2 = (b[..., 0] - a[..., 0]) * (py - a[..., 1]) - (b[..., 1] - a[..., 1]) * (px - a[..., 0])
    return e0, e1, e2


def _raster_torch(screens: list[_Screen], faces_np: np.ndarray, device: torch.device, barycentrics: bool,
                  chunk: int | None) -> list[Raster]:
    chunk = chunk or (1 << 23 if device.type == "cuda" else 1 << 20)
    n_views, n_faces = len(screens), len(faces_np)
    faces = torch.from_numpy(faces_np).to(device)
    xy = torch.from_numpy(np.stack([s.xy for s in screens])).to(device=device, dtype=torch.float32)  # (N, V, 2)
    depth = torch.from_numpy(np.stack([s.depth for s in screens])).to(device=device, dtype=torch.float32)
    heights = torch.tensor([s.height for s in screens], device=device)
    widths = torch.tensor([s.width for s in screens], device=device)
    persp = torch.tensor([s.perspective for s in screens], device=device)
    near = torch.tensor([s.near for s in screens], device=device, dtype=torch.float32)
    sizes = [s.height * s.width for s in screens]
    starts_of_view = [int(x) for x in np.cumsum([0] + sizes[:-1])]
    offsets = torch.tensor(starts_of_view, device=device)

    # per (view, face) pair
    a, b, c = xy[:, faces[:, 0]], xy[:, faces[:, 1]], xy[:, faces[:, 2]]  # (N, F, 2)
    da, db, dc = depth[:, faces[:, 0]], depth[:, faces[:, 1]], depth[:, faces[:, 2]]
    area = (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0])
    corners = torch.stack([a, b, c], dim=2)  # (N, F, 3, 2)
    lo = corners.amin(dim=2) - 0.5
    hi = corners.amax(dim=2) - 0.5
    limit = torch.stack([widths, heights], dim=1).unsqueeze(1).float()  # (N, 1, 2)
    # clamp before converting to int so far-off vertices cannot overflow
    x0y0 = torch.ceil(torch.minimum(lo.clamp_min(-1.0), limit + 1)).long().clamp_min(0)
    x1y1 = torch.minimum(torch.floor(torch.minimum(hi.clamp_min(-2.0), limit + 1)).long(), limit.long() - 1)
    span = (x1y1 - x0y0 + 1).clamp_min(0)
    valid = (area.abs() > _MIN_AREA) & (torch.stack([da, db, dc], -1).amin(-1) >= near[:, None])
    counts = torch.where(valid, span[..., 0] * span[..., 1], 0).reshape(-1)
    view_of = torch.arange(n_views, device=device).repeat_interleave(n_faces)
    face_of = torch.arange(n_faces, device=device).repeat(n_views)
    # one float row per pair: a, b, c (xy), depths, area, perspective, box origin, box width
    rows = torch.cat([corners.reshape(n_views, n_faces, 6), torch.stack([da, db, dc, area], -1),
                      persp[:, None, None].expand(n_views, n_faces, 1).float()], dim=-1).reshape(-1, 11)
    origin, box_w = x0y0.reshape(-1, 2), span[..., 0].reshape(-1)

    pairs = torch.nonzero(counts > 0).squeeze(1)
    keys = torch.full((sum(sizes),), _EMPTY_KEY, dtype=torch.int64, device=device)
    if len(pairs):
        cnt = counts[pairs]
        ends = cnt.cumsum(0)
        starts = ends - cnt
        total = int(ends[-1])
        cuts = torch.searchsorted(starts, torch.arange(0, total, chunk, device=device)).tolist() + [len(pairs)]
        for lo_i, hi_i in zip(cuts[:-1], cuts[1:]):
            if hi_i <= lo_i:
                continue
            sel = pairs[lo_i:hi_i]
            n = int(ends[hi_i - 1] - starts[lo_i])
            local_pair = torch.repeat_interleave(torch.arange(hi_i - lo_i, device=device), cnt[lo_i:hi_i],
                                                 output_size=n)
            k = torch.arange(n, device=device) - (starts[lo_i:hi_i] - starts[lo_i])[local_pair]
            pid = sel[local_pair]
            bw = box_w[pid]
            px = origin[pid, 0] + k % bw
            py = origin[pid, 1] + k // bw
            r = rows[pid]
            e0, e1, e2 = _edges_t(r[:, 0:2], r[:, 2:4], r[:, 4:6], px.float() + 0.5, py.float() + 0.5)
            ar = r[:, 9]
            pos = ar > 0
            inside = torch.where(pos, (e0 >= 0) & (e1 >= 0) & (e2 >= 0), (e0 <= 0) & (e1 <= 0) & (e2 <= 0))
            l1, l2 = e1 / ar, e2 / ar
            da, db, dc = r[:, 6], r[:, 7], r[:, 8]
            z_lin = da + l1 * (db - da) + l2 * (dc - da)
            z_persp = 1.0 / (1.0 / da + l1 * (1.0 / db - 1.0 / da) + l2 * (1.0 / dc - 1.0 / da))
            z = torch.where(r[:, 10] > 0, z_persp, z_lin)
            view = view_of[pid]
            flat = offsets[view] + py * widths[view] + px
            key = (z.view(torch.int32).long() << 32) | face_of[pid]
            keys.scatter_reduce_(0, flat[inside], key[inside], reduce="amin", include_self=True)

    rasters = []
    for v, (s, off) in enumerate(zip(screens, starts_of_view)):
        key = keys[off:off + sizes[v]].view(s.height, s.width)
        empty = key == _EMPTY_KEY
        fid = torch.where(empty, -1, key & 0xFFFFFFFF).to(torch.int32)
        z = (key >> 32).to(torch.int32).view(torch.float32)
        z = torch.where(empty, torch.tensor(float("inf"), device=device), z)
        bary = _bary_torch(xy[v], depth[v], faces, fid, s.perspective) if barycentrics else None
        rasters.append(Raster(fid, bary, z))
    return rasters


def _bary_torch(xy: torch.Tensor, depth: torch.Tensor, faces: torch.Tensor, fid: torch.Tensor,
                perspective: bool) -> torch.Tensor:
    h, w = fid.shape
    out = torch.zeros(h, w, 3, device=fid.device)
    hit = torch.nonzero(fid >= 0)
    tri = faces[fid[hit[:, 0], hit[:, 1]].long()]
    a, b, c = xy[tri[:, 0]], xy[tri[:, 1]], xy[tri[:, 2]]
    px, py = hit[:, 1].float() + 0.5, hit[:, 0].float() + 0.5
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    lam = torch.stack(_edges_t(a, b, c, px, py), dim=1) / area[:, None]
    if perspective:
        lam = lam / depth[tri]
    out[hit[:, 0], hit[:, 1]] = lam / lam.sum(dim=1, keepdim=True)
    return out
