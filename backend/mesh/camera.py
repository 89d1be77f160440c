"""A pinhole or orthographic camera in numpy float64, built from a `shared.views.View`.

The rasteriser, the renderer and the baker all go through `Camera.project`, so the pixel-centre
rule of shared/views.py (row 0 at the top, pixel (i, j) centred at (j + 0.5, i + 0.5) in
continuous pixel coordinates) lives in exactly one place.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from shared.views import FAR, NEAR, View


@dataclass(frozen=True)
class Camera:
    """World-to-camera transform (OpenGL camera: looks down -Z, +Y up) plus intrinsics.

    Orthographic when `ortho_half_extent` is set (the half-extent applies to both image axes, as
    in `View.intrinsics`), otherwise perspective with vertical field of view `fov_deg` and square
    pixels. Depth is the distance along the viewing axis (-z in camera space), positive in front.
    """

    w2c: np.ndarray  # (4, 4) float64
    width: int
    height: int
    ortho_half_extent: float | None = None
    fov_deg: float | None = None
    near: float = NEAR
    far: float = FAR

    def __post_init__(self):
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"camera resolution must be positive, got {self.width}x{self.height}")
        if self.ortho_half_extent is None and not (self.fov_deg and 0.0 < self.fov_deg < 180.0):
            raise ValueError("a perspective camera needs 0 < fov_deg < 180")
        w2c = np.asarray(self.w2c, dtype=np.float64)
        if w2c.shape != (4, 4):
            raise ValueError(f"w2c must be 4x4, got {w2c.shape}")
        object.__setattr__(self, "w2c", w2c)

    @classmethod
    def from_view(cls, view: View, width: int, height: int | None = None) -> "Camera":
        return cls(np.array(view.w2c_gl(), dtype=np.float64), int(width), int(height or width),
                   view.ortho_half_extent, None if view.ortho_half_extent is not None else (view.fov_deg or 40.0))

    @property
    def orthographic(self) -> bool:
        return self.ortho_half_extent is not None

    @property
    def focal(self) -> tuple[float, float]:
        """(fx, fy): pixels per metre (orthographic) or per unit of x/depth (perspective)."""
        if self.orthographic:
            return self.width / (2.0 * self.ortho_half_extent), self.height / (2.0 * self.ortho_half_extent)
        fy = self.height / (2.0 * np.tan(np.radians(self.fov_deg) / 2.0))
        return fy, fy

    @property
    def c2w(self) -> np.ndarray:
        r, t = self.w2c[:3, :3], self.w2c[:3, 3]
        out = np.eye(4)
        out[:3, :3] = r.T
        out[:3, 3] = -r.T @ t
        return out

    @property
    def eye(self) -> np.ndarray:
        return self.c2w[:3, 3]

    @property
    def backward(self) -> np.ndarray:
        """World direction from the scene towards an orthographic camera (its +Z axis)."""
        return self.w2c[2, :3].copy()

    def to_camera(self, points):
        """World points (numpy or torch, (..., 3)) into camera space, in the input's array type."""
        if isinstance(points, torch.Tensor):
            m = torch.as_tensor(self.w2c, dtype=points.dtype, device=points.device)
        else:
            points, m = np.asarray(points, dtype=np.float64), self.w2c
        return points @ m[:3, :3].T + m[:3, 3]

    def project(self, points):
        """World points (N, 3) -> (continuous pixel xy (N, 2), depth (N,)), numpy or torch.

        x grows to the right, y downwards, pixel (i, j) is centred at (j + 0.5, i + 0.5).
        Perspective points at depth <= 0 get meaningless xy; callers check depth against `near`.
        """
        pc = self.to_camera(points)
        lib = torch if isinstance(pc, torch.Tensor) else np
        depth = -pc[:, 2]
        fx, fy = self.focal
        if self.orthographic:
            u, v = pc[:, 0], pc[:, 1]
        else:
            safe = lib.where(lib.abs(depth) > 1e-12, depth, lib.full_like(depth, 1e-12))
            u, v = pc[:, 0] / safe, pc[:, 1] / safe
        xy = lib.stack([fx * u + 0.5 * self.width, 0.5 * self.height - fy * v], 1)
        return xy, depth

    def pixel_size(self, depth):
        """World length one pixel spans at `depth` (the larger of its two sides)."""
        if self.orthographic:
            return depth * 0 + 2.0 * self.ortho_half_extent / min(self.width, self.height)
        return depth * (1.0 / self.focal[1])

    def directions_to_camera(self, points):
        """Unit world vectors from each point towards the camera (what a cosine weight needs)."""
        if isinstance(points, torch.Tensor):
            if self.orthographic:
                return torch.as_tensor(self.backward, dtype=points.dtype, device=points.device).expand_as(points)
            d = torch.as_tensor(self.eye, dtype=points.dtype, device=points.device) - points
            return torch.nn.functional.normalize(d, dim=-1)
        if self.orthographic:
            return np.broadcast_to(self.backward, np.shape(points)).copy()
        d = self.eye - np.asarray(points, dtype=np.float64)
        return d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-300)
