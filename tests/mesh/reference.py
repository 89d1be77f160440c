"""Brute-force float64 rasteriser: every pixel against every face, written for clarity not speed.

It follows the semantics in backend/mesh/raster.py's docstring and additionally returns, per
pixel, which answers a float32 implementation may legitimately give: a face within `eps` of the
pixel (in barycentric units) whose depth is within `eps_z` of the nearest clearly covering face,
or nothing when no face clearly covers the pixel.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.mesh.camera import Camera


@dataclass
class Reference:
    face_id: np.ndarray  # (H, W) int64, -1 empty
    bary: np.ndarray  # (H, W, 3)
    depth: np.ndarray  # (H, W), inf empty
    acceptable: np.ndarray  # (H, W, F) bool: faces a float32 rasteriser may pick
    may_be_empty: np.ndarray  # (H, W) bool


def screen_reference(xy, depth, faces, height, width, perspective, near, eps=1e-4, eps_z=1e-4) -> Reference:
    jj, ii = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    px, py = jj[..., None], ii[..., None]  # (H, W, 1)
    a, b, c = xy[faces[:, 0]], xy[faces[:, 1]], xy[faces[:, 2]]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    e0 = (c[:, 0] - b[:, 0]) * (py - b[:, 1]) - (c[:, 1] - b[:, 1]) * (px - b[:, 0])
    e1 = (a[:, 0] - c[:, 0]) * (py - c[:, 1]) - (a[:, 1] - c[:, 1]) * (px - c[:, 0])
    e2 = (b[:, 0] - a[:, 0]) * (py - a[:, 1]) - (b[:, 1] - a[:, 1]) * (px - a[:, 0])
    usable = (np.abs(area) > 1e-10) & (depth[faces].min(axis=1) >= near)
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = np.stack([e0, e1, e2], -1) / area[:, None]  # (H, W, F, 3)
        d = depth[faces]  # (F, 3)
        t = 1.0 / d if perspective else d
        z = t[:, 0] + lam[..., 1] * (t[:, 1] - t[:, 0]) + lam[..., 2] * (t[:, 2] - t[:, 0])
        z = 1.0 / z if perspective else z
    sign = np.sign(area)
    inside = (e0 * sign >= 0) & (e1 * sign >= 0) & (e2 * sign >= 0) & usable
    zi = np.where(inside, z, np.inf)
    face = np.where(np.isfinite(zi.min(-1)), zi.argmin(-1), -1)  # argmin: lowest index among ties
    hit = face >= 0
    fsafe = np.maximum(face, 0)
    lam_hit = np.take_along_axis(lam, fsafe[..., None, None], axis=2)[:, :, 0]
    if perspective:
        lam_hit = lam_hit / d[fsafe]
        lam_hit = lam_hit / lam_hit.sum(-1, keepdims=True)
    bary = np.where(hit[..., None], lam_hit, 0.0)
    depth_out = np.where(hit, zi.min(-1), np.inf)

    lam_min = lam.min(-1)
    strict = usable & (lam_min > eps)
    loose = usable & (lam_min >= -eps)
    z_star = np.where(strict, z, np.inf).min(-1)
    acceptable = loose & (z <= z_star[..., None] + eps_z * np.maximum(1.0, np.abs(z_star[..., None])))
    acceptable |= (np.arange(len(faces)) == face[..., None]) & hit[..., None]
    return Reference(face, bary, depth_out, acceptable, ~strict.any(-1))


def reference_raster(vertices, faces, camera: Camera, **kw) -> Reference:
    xy, depth = camera.project(np.asarray(vertices, np.float64))
    return screen_reference(xy, depth, np.asarray(faces), camera.height, camera.width,
                            not camera.orthographic, camera.near, **kw)
