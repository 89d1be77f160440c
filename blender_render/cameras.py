"""The views one object is rendered from, and the camera maths that checks and loaders need.

Every camera comes from `shared.views` (the canonical 6, Fibonacci or seeded random free views), so
training renders and the backend's conditioning renders share one contract. This module adds what
a dataset needs on top: Blender camera settings, OpenCV matrices in the Blender (Z-up) world frame
that the position maps are written in, and projection / unprojection of pixels. bpy-free.

Pixel convention (shared/views.py): row 0 is the top; pixel (i, j) has its centre at continuous
pixel coordinates (u, v) = (j + 0.5, i + 0.5); OpenCV camera: +Z forward, +Y down, +X right.
For orthographic views K holds pixels per metre and u = fx * x + cx (no division by depth).
Depth is the distance along the viewing axis (what Cycles' Z pass stores for both projections).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

from shared.views import CANONICAL_VIEWS, FAR, NEAR, View, fibonacci_views, make_view

from .options import RenderOptions

SENSOR_MM = 36.0  # perspective cameras: vertical sensor fit, square sensor


@dataclass(frozen=True)
class CameraSpec:
    """One rendered view: a shared View plus its place in the output and the image size."""

    index: int
    kind: str  # canonical | random | fibonacci
    view: View
    width: int
    height: int

    @property
    def name(self) -> str:
        return self.view.name

    @property
    def orthographic(self) -> bool:
        return self.view.ortho_half_extent is not None

    @property
    def fov_deg(self) -> float | None:
        return None if self.orthographic else (self.view.fov_deg or 40.0)

    def c2w_blender(self) -> np.ndarray:
        """Blender world (Z-up) from a Blender camera (looks down -Z, +Y up): the camera's matrix_world."""
        return np.array(self.view.c2w_blender(), dtype=np.float64)

    def c2w_opencv(self) -> np.ndarray:
        """Blender world from an OpenCV camera (+Z forward, +Y down)."""
        return self.c2w_blender() @ np.diag([1.0, -1.0, -1.0, 1.0])

    def w2c_opencv(self) -> np.ndarray:
        c2w = self.c2w_opencv()
        out = np.eye(4)
        out[:3, :3] = c2w[:3, :3].T
        out[:3, 3] = -c2w[:3, :3].T @ c2w[:3, 3]
        return out

    def intrinsics(self) -> np.ndarray:
        return np.array(self.view.intrinsics(self.width, self.height), dtype=np.float64)

    def blender_camera(self) -> dict:
        """Settings of the bpy camera data-block that reproduce this view."""
        if self.orthographic:
            return {"type": "ORTHO", "ortho_scale": 2.0 * self.view.ortho_half_extent, "sensor_fit": "AUTO",
                    "clip_start": NEAR, "clip_end": FAR}
        lens = 0.5 * SENSOR_MM / math.tan(math.radians(self.fov_deg) / 2.0)
        return {"type": "PERSP", "lens": lens, "sensor_fit": "VERTICAL", "sensor_width": SENSOR_MM,
                "sensor_height": SENSOR_MM, "clip_start": NEAR, "clip_end": FAR}

    def depth_range(self, radius: float) -> tuple[float, float]:
        """Camera depths a scene inside a sphere of `radius` about the origin can have."""
        d = self.view.distance
        return max(d - radius, NEAR), d + radius

    def to_meta(self) -> dict:
        cam = self.blender_camera()
        return {
            "index": self.index,
            "name": self.name,
            "kind": self.kind,
            "projection": "ortho" if self.orthographic else "persp",
            "azimuth_deg": self.view.azimuth_deg,
            "elevation_deg": self.view.elevation_deg,
            "distance": self.view.distance,
            "ortho_half_extent": self.view.ortho_half_extent,
            "ortho_scale": cam.get("ortho_scale"),
            "fov_deg": self.fov_deg,
            "focal_length_mm": cam.get("lens"),
            "sensor_mm": None if self.orthographic else SENSOR_MM,
            "width": self.width,
            "height": self.height,
            "intrinsics": self.intrinsics().tolist(),
            "c2w_blender": self.c2w_blender().tolist(),
            "c2w_opencv": self.c2w_opencv().tolist(),
            "w2c_opencv": self.w2c_opencv().tolist(),
            "c2w_gltf": self.view.c2w_gl(),
            "projection_gl": self.view.projection_gl(),
            "weight": self.view.weight,
        }


def build_views(options: RenderOptions) -> list[CameraSpec]:
    """The canonical views (unless turned off), then the extra views; deterministic in the seed."""
    views: list[tuple[str, View]] = [("canonical", v) for v in CANONICAL_VIEWS] if options.canonical else []
    n = options.extra_views
    persp = options.extra_projection == "persp"
    distance = options.camera_distance(persp)
    half = None if persp else options.ortho_half_extent
    fov = options.fov_deg if persp else None
    if n and options.extra_mode == "fibonacci":
        for v in fibonacci_views(n, orthographic=not persp, distance=distance, fov_deg=options.fov_deg):
            views.append(("fibonacci", make_view(v.name, v.azimuth_deg, v.elevation_deg, distance=distance,
                                                 ortho_half_extent=half, fov_deg=fov)))
    elif n:
        # Uniform on the sphere band: the sine of the elevation is uniform. stdlib random so the
        # same seed gives the same cameras under Blender's Python and any numpy.
        rng = random.Random(options.seed)
        lo, hi = (math.sin(math.radians(e)) for e in options.elevation_range)
        for i in range(n):
            az = rng.uniform(0.0, 360.0)
            el = math.degrees(math.asin(max(-1.0, min(1.0, rng.uniform(lo, hi)))))
            views.append(("random", make_view(f"random_{i:03d}", az, el, distance=distance,
                                              ortho_half_extent=half, fov_deg=fov)))
    r = options.resolution
    return [CameraSpec(i, kind, v, r, r) for i, (kind, v) in enumerate(views)]


def project(points: np.ndarray, cam: CameraSpec) -> tuple[np.ndarray, np.ndarray]:
    """Blender-world points (N, 3) -> (pixel coordinates (N, 2) as (u, v), depth (N,))."""
    w2c = cam.w2c_opencv()
    pc = np.asarray(points, dtype=np.float64) @ w2c[:3, :3].T + w2c[:3, 3]
    k = cam.intrinsics()
    depth = pc[:, 2]
    if cam.orthographic:
        x, y = pc[:, 0], pc[:, 1]
    else:
        safe = np.where(np.abs(depth) > 1e-12, depth, 1e-12)
        x, y = pc[:, 0] / safe, pc[:, 1] / safe
    return np.stack([k[0, 0] * x + k[0, 2], k[1, 1] * y + k[1, 2]], axis=1), depth


def unproject_pixels(rows: np.ndarray, cols: np.ndarray, depth: np.ndarray, cam: CameraSpec) -> np.ndarray:
    """The Blender-world points at camera depth `depth` through the centres of pixels (rows, cols)."""
    k = cam.intrinsics()
    z = np.asarray(depth, dtype=np.float64)
    x, y = (np.asarray(cols) + 0.5 - k[0, 2]) / k[0, 0], (np.asarray(rows) + 0.5 - k[1, 2]) / k[1, 1]
    if not cam.orthographic:
        x, y = x * z, y * z
    c2w = cam.c2w_opencv()
    return np.stack([x, y, z], axis=-1) @ c2w[:3, :3].T + c2w[:3, 3]


def unproject(depth: np.ndarray, cam: CameraSpec) -> np.ndarray:
    """A camera-depth image (H, W) -> the Blender-world point seen through each pixel centre."""
    h, w = depth.shape
    rows, cols = np.mgrid[0:h, 0:w]
    return unproject_pixels(rows, cols, depth, cam)
