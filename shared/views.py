"""The camera contract: the 6 canonical orthographic views and camera-matrix conventions.

Everything here is in the glTF frame the backend exports (+Y up, the object's front faces +Z,
metres) unless a name says otherwise. The backend's conditioning renderer and `blender_render`
both build their cameras from this table, so training renders and inference renders agree.

The views reproduce the reference conditioning cameras (step1x3d-reference.md §4.3: Z-up frame,
elevation 0 / azimuth -90, 0, 90, 180, and the poles at ±89.99° with azimuth 90) with the poles
snapped exactly onto the axis. Resulting image orientation:

======  ==========  ========  ==========
view    camera at   image up  image right
======  ==========  ========  ==========
front   +Z          +Y        +X
right   +X          +Y        -Z
back    -Z          +Y        -X
left    -X          +Y        +Z
top     +Y          +Z        -X
bottom  -Y          -Z        -X
======  ==========  ========  ==========

Matrix conventions (4x4, row-major nested lists, column vectors: p_world = c2w @ p_camera):
- *OpenGL / glTF camera*: looks down its -Z, +Y up, +X right.
- *OpenCV camera*: looks down its +Z, +Y down, +X right; c2w_cv = c2w_gl @ diag(1, -1, -1, 1).
- *Blender*: world Z-up with (x, y, z)_blender = (x, -z, y)_gltf; camera objects use the OpenGL
  camera axes, so c2w_blender = GLTF_TO_BLENDER @ c2w_gl.
Image convention: row 0 is the top of the image; pixel (row i, column j) has its centre at
x = ((j + 0.5) / W * 2 - 1) * half_extent, y = (1 - (i + 0.5) / H * 2) * half_extent in camera space.

The reference's conditioning maps encode *Z-up* world coordinates (position + 0.5 and
normal * 0.5 + 0.5 after GLTF_TO_BLENDER); `gltf_to_blender` is the one place that rotation lives.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

Matrix = list[list[float]]
Vec3 = tuple[float, float, float]

CAMERA_DISTANCE = 1.8
ORTHO_HALF_EXTENT = 0.55
NEAR = 0.1
FAR = 100.0

GLTF_TO_BLENDER: Matrix = [
    [1.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, -1.0, 0.0],
    [0.0, 1.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 1.0],
]
BLENDER_TO_GLTF: Matrix = [
    [1.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 1.0, 0.0],
    [0.0, -1.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 1.0],
]
_GL_TO_CV: Matrix = [[1.0, 0, 0, 0], [0, -1.0, 0, 0], [0, 0, -1.0, 0], [0, 0, 0, 1.0]]


@dataclass(frozen=True)
class View:
    """One camera. Azimuth turns from +Z (front) towards +X; elevation lifts towards +Y."""

    name: str
    azimuth_deg: float
    elevation_deg: float
    up: Vec3
    weight: float  # the reference baker's per-view weight (§4.9)
    distance: float = CAMERA_DISTANCE
    ortho_half_extent: float | None = ORTHO_HALF_EXTENT  # None: perspective
    fov_deg: float | None = None  # vertical field of view, perspective only

    @property
    def direction(self) -> Vec3:
        """Unit vector from the origin towards the camera."""
        a, e = math.radians(self.azimuth_deg), math.radians(self.elevation_deg)
        return _clean((math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a)))

    @property
    def eye(self) -> Vec3:
        d = self.direction
        return (d[0] * self.distance, d[1] * self.distance, d[2] * self.distance)

    def c2w_gl(self) -> Matrix:
        return look_at(self.eye, (0.0, 0.0, 0.0), self.up)

    def w2c_gl(self) -> Matrix:
        return rigid_inverse(self.c2w_gl())

    def c2w_cv(self) -> Matrix:
        return matmul(self.c2w_gl(), _GL_TO_CV)

    def c2w_blender(self) -> Matrix:
        return matmul(GLTF_TO_BLENDER, self.c2w_gl())

    def projection_gl(self) -> Matrix:
        """OpenGL clip-space projection (NDC y up); orthographic or perspective."""
        if self.ortho_half_extent is not None:
            return orthographic_projection(self.ortho_half_extent)
        return perspective_projection(self.fov_deg or 40.0)

    def intrinsics(self, width: int, height: int) -> Matrix:
        """3x3 OpenCV intrinsics. For orthographic views fx, fy are pixels per metre and the
        projection is u = fx * x_cv + cx (no division by depth)."""
        if self.ortho_half_extent is not None:
            fx = width / (2.0 * self.ortho_half_extent)
            fy = height / (2.0 * self.ortho_half_extent)
        else:
            fy = height / (2.0 * math.tan(math.radians(self.fov_deg or 40.0) / 2.0))
            fx = fy
        return [[fx, 0.0, width / 2.0], [0.0, fy, height / 2.0], [0.0, 0.0, 1.0]]


def _axis_up(elevation: float) -> Vec3:
    if elevation >= 89.999:
        return (0.0, 0.0, 1.0)
    if elevation <= -89.999:
        return (0.0, 0.0, -1.0)
    return (0.0, 1.0, 0.0)


CANONICAL_VIEWS: tuple[View, ...] = (
    View("front", 0.0, 0.0, (0.0, 1.0, 0.0), 1.0),
    View("right", 90.0, 0.0, (0.0, 1.0, 0.0), 0.1),
    View("back", 180.0, 0.0, (0.0, 1.0, 0.0), 0.5),
    View("left", 270.0, 0.0, (0.0, 1.0, 0.0), 0.1),
    View("top", 0.0, 90.0, (0.0, 0.0, 1.0), 0.05),
    View("bottom", 0.0, -90.0, (0.0, 0.0, -1.0), 0.05),
)
VIEW_NAMES = tuple(v.name for v in CANONICAL_VIEWS)


def make_view(name: str, azimuth_deg: float, elevation_deg: float, *, distance: float = CAMERA_DISTANCE,
              ortho_half_extent: float | None = ORTHO_HALF_EXTENT, fov_deg: float | None = None,
              weight: float = 1.0) -> View:
    """A free view (random or spread on a sphere) with the canonical up rule (+Y, poles: ±Z)."""
    return View(name, azimuth_deg, elevation_deg, _axis_up(elevation_deg), weight, distance,
                ortho_half_extent, fov_deg)


def fibonacci_views(count: int, *, orthographic: bool = True, distance: float = CAMERA_DISTANCE,
                    fov_deg: float = 40.0) -> list[View]:
    """`count` views spread evenly on the sphere (Fibonacci lattice), deterministic."""
    golden = math.pi * (3.0 - math.sqrt(5.0))
    views = []
    for i in range(count):
        y = 1.0 - 2.0 * (i + 0.5) / count
        az = math.degrees((i * golden) % (2 * math.pi))
        el = math.degrees(math.asin(max(-1.0, min(1.0, y))))
        views.append(make_view(f"sphere_{i:03d}", az, el, distance=distance,
                               ortho_half_extent=ORTHO_HALF_EXTENT if orthographic else None,
                               fov_deg=None if orthographic else fov_deg))
    return views


# ---- small stdlib linear algebra (Blender's Python and the backend both import this) ----

def _clean(v: Vec3) -> Vec3:
    return tuple(0.0 if abs(c) < 1e-12 else c for c in v)  # type: ignore[return-value]


def _sub(a: Vec3, b: Vec3) -> Vec3:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2])


def _cross(a: Vec3, b: Vec3) -> Vec3:
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _normalize(v: Vec3) -> Vec3:
    n = math.sqrt(v[0] ** 2 + v[1] ** 2 + v[2] ** 2)
    if n == 0.0:
        raise ValueError("zero-length vector")
    return (v[0] / n, v[1] / n, v[2] / n)


def look_at(eye: Vec3, target: Vec3, up: Vec3) -> Matrix:
    """OpenGL camera-to-world: the camera at `eye` looks at `target`, image up close to `up`."""
    forward = _normalize(_sub(target, eye))
    right = _normalize(_cross(forward, up))
    true_up = _cross(right, forward)
    back = (-forward[0], -forward[1], -forward[2])
    cols = (right, true_up, back, eye)
    m = [[float(cols[c][r]) for c in range(4)] for r in range(3)]
    m.append([0.0, 0.0, 0.0, 1.0])
    return [[0.0 if abs(x) < 1e-12 else x for x in row] for row in m]


def matmul(a: Matrix, b: Matrix) -> Matrix:
    return [[sum(a[i][k] * b[k][j] for k in range(len(b))) for j in range(len(b[0]))] for i in range(len(a))]


def rigid_inverse(m: Matrix) -> Matrix:
    """Inverse of a rotation + translation 4x4."""
    r_t = [[m[j][i] for j in range(3)] for i in range(3)]
    t = [m[i][3] for i in range(3)]
    ti = [-sum(r_t[i][k] * t[k] for k in range(3)) for i in range(3)]
    return [r_t[0] + [ti[0]], r_t[1] + [ti[1]], r_t[2] + [ti[2]], [0.0, 0.0, 0.0, 1.0]]


def orthographic_projection(half_extent: float, near: float = NEAR, far: float = FAR) -> Matrix:
    return [
        [1.0 / half_extent, 0.0, 0.0, 0.0],
        [0.0, 1.0 / half_extent, 0.0, 0.0],
        [0.0, 0.0, -2.0 / (far - near), -(far + near) / (far - near)],
        [0.0, 0.0, 0.0, 1.0],
    ]


def perspective_projection(fov_deg: float, aspect: float = 1.0, near: float = NEAR, far: float = FAR) -> Matrix:
    f = 1.0 / math.tan(math.radians(fov_deg) / 2.0)
    return [
        [f / aspect, 0.0, 0.0, 0.0],
        [0.0, f, 0.0, 0.0],
        [0.0, 0.0, -(far + near) / (far - near), -2.0 * far * near / (far - near)],
        [0.0, 0.0, -1.0, 0.0],
    ]


def gltf_to_blender(p: Vec3) -> Vec3:
    """A point or direction from the glTF frame (+Y up) to Blender's (+Z up)."""
    return (p[0], -p[2], p[1])


def blender_to_gltf(p: Vec3) -> Vec3:
    return (p[0], p[2], -p[1])
