import math
import random

import numpy as np
import pytest

from shared import views


def _m(x):
    return np.array(x, dtype=np.float64)


def test_canonical_table():
    assert views.VIEW_NAMES == ("front", "right", "back", "left", "top", "bottom")
    expected = {  # camera position direction, image up, image right (glTF frame)
        "front": ((0, 0, 1), (0, 1, 0), (1, 0, 0)),
        "right": ((1, 0, 0), (0, 1, 0), (0, 0, -1)),
        "back": ((0, 0, -1), (0, 1, 0), (-1, 0, 0)),
        "left": ((-1, 0, 0), (0, 1, 0), (0, 0, 1)),
        "top": ((0, 1, 0), (0, 0, 1), (-1, 0, 0)),
        "bottom": ((0, -1, 0), (0, 0, -1), (-1, 0, 0)),
    }
    for v in views.CANONICAL_VIEWS:
        c2w = _m(v.c2w_gl())
        pos, up, right = expected[v.name]
        np.testing.assert_allclose(c2w[:3, 3], np.array(pos) * views.CAMERA_DISTANCE, atol=1e-12)
        np.testing.assert_allclose(c2w[:3, 1], up, atol=1e-12)
        np.testing.assert_allclose(c2w[:3, 0], right, atol=1e-12)
        np.testing.assert_allclose(c2w[:3, :3] @ c2w[:3, :3].T, np.eye(3), atol=1e-12)
        assert np.linalg.det(c2w[:3, :3]) == pytest.approx(1.0)


def test_reference_conditioning_cameras_match():
    """The reference builds its cameras in a Z-up frame from (elevation, azimuth) with world up +Z
    (step1x3d-reference.md §4.3). Rebuild them here and compare, poles within the 0.01° tilt."""
    ref = [(0, -90), (0, 0), (0, 90), (0, 180), (89.99, 90), (-89.99, 90)]
    for view, (el, az) in zip(views.CANONICAL_VIEWS, ref):
        e, a = math.radians(el), math.radians(az)
        eye = np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)]) * 1.8
        fwd = -eye / np.linalg.norm(eye)
        right = np.cross(fwd, [0, 0, 1.0]); right /= np.linalg.norm(right)
        up = np.cross(right, fwd)
        ours = _m(views.matmul(views.GLTF_TO_BLENDER, view.c2w_gl()))  # into the same Z-up frame
        np.testing.assert_allclose(ours[:3, 3], eye, atol=1e-3)
        np.testing.assert_allclose(ours[:3, 0], right, atol=1e-3)
        np.testing.assert_allclose(ours[:3, 1], up, atol=1e-3)


def test_conventions_agree_on_random_points():
    rng = random.Random(4)
    for v in list(views.CANONICAL_VIEWS) + views.fibonacci_views(7):
        gl, cv, bl = _m(v.c2w_gl()), _m(v.c2w_cv()), _m(v.c2w_blender())
        w2c = _m(v.w2c_gl())
        np.testing.assert_allclose(w2c @ gl, np.eye(4), atol=1e-12)
        for _ in range(5):
            p = np.array([rng.uniform(-.5, .5) for _ in range(3)] + [1.0])
            p_gl = np.linalg.inv(gl) @ p
            p_cv = np.linalg.inv(cv) @ p
            np.testing.assert_allclose(p_cv[:3], p_gl[:3] * [1, -1, -1], atol=1e-12)
            p_bl = _m(views.GLTF_TO_BLENDER) @ p
            np.testing.assert_allclose(np.linalg.inv(bl) @ p_bl, p_gl, atol=1e-12)
            np.testing.assert_allclose(views.blender_to_gltf(views.gltf_to_blender(tuple(p[:3]))), p[:3])
            assert p_gl[2] < 0  # in front of the camera


def test_orthographic_intrinsics_match_projection():
    v = views.CANONICAL_VIEWS[0]
    k = _m(v.intrinsics(768, 768))
    proj = _m(v.projection_gl())
    p_cam = np.array([0.2, -0.31, -1.7, 1.0])  # OpenGL camera space
    ndc = proj @ p_cam
    col = (ndc[0] + 1) / 2 * 768
    row = (1 - ndc[1]) / 2 * 768
    uv = k @ np.array([p_cam[0], -p_cam[1], 1.0])  # OpenCV: y down, no perspective divide
    np.testing.assert_allclose([uv[0], uv[1]], [col, row], atol=1e-9)
