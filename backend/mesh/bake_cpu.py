"""numba kernels for the baker's per-texel and per-pixel passes on the CPU.

The torch formulation in bake.py is the reference and the CUDA path; on two CPU cores its
gathers over millions of texels cost about a second per 2048^2 view, while these fused loops do
the same work in tens of milliseconds. Formulas and order of tests are kept identical, and
tests/mesh compares the two paths.
"""
from __future__ import annotations

import math

import cv2
import numba
import numpy as np

from backend.mesh.camera import Camera


@numba.njit(cache=True)
def _texel_surface(face_id, bary, faces, vertices, normals, rows, cols):
    m = rows.shape[0]
    pos = np.empty((m, 3), np.float32)
    nrm = np.empty((m, 3), np.float32)
    for k in range(m):
        f = face_id[rows[k], cols[k]]
        b = bary[rows[k], cols[k]]
        n0 = n1 = n2 = 0.0
        for d in range(3):
            p = 0.0
            n = 0.0
            for c in range(3):
                v = faces[f, c]
                p += b[c] * vertices[v, d]
                n += b[c] * normals[v, d]
            pos[k, d] = p
            if d == 0:
                n0 = n
            elif d == 1:
                n1 = n
            else:
                n2 = n
        length = max(math.sqrt(n0 * n0 + n1 * n1 + n2 * n2), 1e-12)  # as F.normalize's eps
        nrm[k, 0], nrm[k, 1], nrm[k, 2] = n0 / length, n1 / length, n2 / length
    return pos, nrm


def texel_surface(face_id: np.ndarray, bary: np.ndarray, faces: np.ndarray, vertices: np.ndarray,
                  normals: np.ndarray):
    rows, cols = np.nonzero(face_id >= 0)
    pos, nrm = _texel_surface(face_id, bary, faces.astype(np.int64), vertices.astype(np.float32),
                              normals.astype(np.float32), rows, cols)
    return np.stack([rows, cols], axis=1), pos, nrm


@numba.njit(cache=True, parallel=True)
def _depth_edges(depth, threshold_scale, orthographic, pixel_const):
    """Pixels with a neighbour (4-connected, both covered) more than the slope threshold away."""
    h, w = depth.shape
    edge = np.zeros((h, w), np.bool_)
    for i in numba.prange(h):
        for j in range(w):
            z = depth[i, j]
            if not np.isfinite(z):
                continue
            limit = threshold_scale * (pixel_const if orthographic else z * pixel_const)
            jump = 0.0
            if i > 0 and np.isfinite(depth[i - 1, j]):
                jump = max(jump, abs(z - depth[i - 1, j]))
            if i < h - 1 and np.isfinite(depth[i + 1, j]):
                jump = max(jump, abs(z - depth[i + 1, j]))
            if j > 0 and np.isfinite(depth[i, j - 1]):
                jump = max(jump, abs(z - depth[i, j - 1]))
            if j < w - 1 and np.isfinite(depth[i, j + 1]):
                jump = max(jump, abs(z - depth[i, j + 1]))
            edge[i, j] = jump > limit
    return edge


def _pixel_const(cam: Camera) -> float:
    """Camera.pixel_size is const (orthographic) or depth * const (perspective): the const."""
    return float(cam.pixel_size(1.0))


def reliable_pixels(depth: np.ndarray, cam: Camera, edge_px: int, slope: float) -> np.ndarray:
    seen = np.isfinite(depth)
    edge = _depth_edges(depth, np.float32(slope), cam.orthographic, _pixel_const(cam))
    bad = (edge | ~seen).astype(np.uint8)
    if edge_px > 0:
        bad = cv2.dilate(bad, np.ones((2 * edge_px + 1, 2 * edge_px + 1), np.uint8))
    return seen & (bad == 0)


@numba.njit(cache=True, parallel=True)
def _view_weights(pos, nrm, w2c, fx, fy, width, height, orthographic, near, eye, back, pixel_const,
                  cos_min, cos_power, depth, reliable):
    m = pos.shape[0]
    weight = np.zeros(m, np.float32)
    xy = np.zeros((m, 2), np.float32)
    for k in numba.prange(m):
        px, py, pz = pos[k, 0], pos[k, 1], pos[k, 2]
        cx = w2c[0, 0] * px + w2c[0, 1] * py + w2c[0, 2] * pz + w2c[0, 3]
        cy = w2c[1, 0] * px + w2c[1, 1] * py + w2c[1, 2] * pz + w2c[1, 3]
        z = -(w2c[2, 0] * px + w2c[2, 1] * py + w2c[2, 2] * pz + w2c[2, 3])
        if orthographic:
            x = fx * cx + 0.5 * width
            y = 0.5 * height - fy * cy
            dx, dy, dz = back[0], back[1], back[2]
            pixel = pixel_const
        else:
            safe = z if abs(z) > 1e-12 else 1e-12
            x = fx * cx / safe + 0.5 * width
            y = 0.5 * height - fy * cy / safe
            dx, dy, dz = eye[0] - px, eye[1] - py, eye[2] - pz
            length = max(math.sqrt(dx * dx + dy * dy + dz * dz), 1e-12)
            dx, dy, dz = dx / length, dy / length, dz / length
            pixel = z * pixel_const
        xy[k, 0], xy[k, 1] = x, y
        cos = nrm[k, 0] * dx + nrm[k, 1] * dy + nrm[k, 2] * dz
        col, row = math.floor(x), math.floor(y)
        if not (col >= 0 and col < width and row >= 0 and row < height and z >= near and cos >= cos_min):
            continue
        c = min(max(cos, cos_min), 1.0)
        tolerance = pixel * (1.0 + math.sqrt(1.0 - c * c) / c)
        if z <= depth[row, col] + tolerance and reliable[row, col]:
            weight[k] = max(cos, 0.0) ** cos_power
    return weight, xy


def view_weights(pos: np.ndarray, nrm: np.ndarray, cam: Camera, depth: np.ndarray, reliable: np.ndarray,
                 cos_min: float, cos_power: float) -> tuple[np.ndarray, np.ndarray]:
    fx, fy = cam.focal
    return _view_weights(pos, nrm, cam.w2c, fx, fy, cam.width, cam.height, cam.orthographic, cam.near,
                         cam.eye, cam.backward, _pixel_const(cam), cos_min, float(cos_power), depth, reliable)


@numba.njit(cache=True, parallel=True)
def accumulate(image, xy, weight, acc, acc_w):
    """acc += w * bilinear(image, xy) and acc_w += w where w > 0 (sample_bilinear's clamping)."""
    h, w, channels = image.shape
    for k in numba.prange(weight.shape[0]):
        wk = weight[k]
        if wk <= 0:
            continue
        fx = min(max(xy[k, 0] - 0.5, 0.0), w - 1.0)
        fy = min(max(xy[k, 1] - 0.5, 0.0), h - 1.0)
        x0 = min(int(math.floor(fx)), max(w - 2, 0))
        y0 = min(int(math.floor(fy)), max(h - 2, 0))
        x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
        tx, ty = fx - x0, fy - y0
        for c in range(channels):
            top = image[y0, x0, c] * (1 - tx) + image[y0, x1, c] * tx
            bottom = image[y1, x0, c] * (1 - tx) + image[y1, x1, c] * tx
            acc[k, c] += wk * (top * (1 - ty) + bottom * ty)
        acc_w[k] += wk
