import numpy as np
import pytest
import torch

from backend.mesh.camera import Camera
from shared.views import CANONICAL_VIEWS, make_view


def _pixel_ray_point(view, cam, i, j, depth):
    """A camera-space point on pixel (i, j)'s centre ray, by shared/views.py's stated rule."""
    if cam.orthographic:
        h = view.ortho_half_extent
        x = ((j + 0.5) / cam.width * 2 - 1) * h
        y = (1 - (i + 0.5) / cam.height * 2) * h
    else:
        fx, fy = cam.focal
        x = (j + 0.5 - cam.width / 2) / fx * depth
        y = (cam.height / 2 - (i + 0.5)) / fy * depth
    c2w = np.array(view.c2w_gl())
    return (c2w @ np.array([x, y, -depth, 1.0]))[:3]


@pytest.mark.parametrize("orthographic", [True, False])
def test_pixel_centre_rule(orthographic):
    rng = np.random.default_rng(1)
    view = make_view("v", 37.0, -21.0, ortho_half_extent=0.55 if orthographic else None, fov_deg=35.0)
    cam = Camera.from_view(view, 96, 64)
    ij = np.stack([rng.integers(0, 64, 20), rng.integers(0, 96, 20)], axis=1)
    depths = rng.uniform(0.5, 3.0, 20)
    pts = np.array([_pixel_ray_point(view, cam, i, j, d) for (i, j), d in zip(ij, depths)])
    xy, z = cam.project(pts)
    np.testing.assert_allclose(xy, ij[:, ::-1] + 0.5, atol=1e-9)
    np.testing.assert_allclose(z, depths, atol=1e-9)
    xy_t, z_t = cam.project(torch.from_numpy(pts))
    np.testing.assert_allclose(xy_t.numpy(), xy, atol=1e-12)
    np.testing.assert_allclose(z_t.numpy(), z, atol=1e-12)


def test_matches_opencv_intrinsics():
    view = make_view("p", 120.0, 10.0, ortho_half_extent=None, fov_deg=50.0)
    cam = Camera.from_view(view, 80, 60)
    k = np.array(view.intrinsics(80, 60))
    w2c_cv = np.linalg.inv(np.array(view.c2w_cv()))
    p = np.array([[0.1, -0.2, 0.3], [-0.3, 0.25, -0.1]])
    pc = p @ w2c_cv[:3, :3].T + w2c_cv[:3, 3]
    uv = (pc @ k.T)[:, :2] / pc[:, 2:]
    np.testing.assert_allclose(cam.project(p)[0], uv, atol=1e-9)


def test_front_view_orientation():
    cam = Camera.from_view(CANONICAL_VIEWS[0], 100)
    xy, z = cam.project(np.array([[0.0, 0.0, 0.0], [0.55, 0.55, 0.2]]))
    np.testing.assert_allclose(xy, [[50, 50], [100, 0]], atol=1e-9)  # +X right, +Y up
    np.testing.assert_allclose(z, [1.8, 1.6], atol=1e-12)
    np.testing.assert_allclose(cam.directions_to_camera(np.zeros((1, 3))), [[0, 0, 1]], atol=1e-12)
    assert cam.pixel_size(1.0) == pytest.approx(1.1 / 100)


def test_bad_cameras():
    with pytest.raises(ValueError):
        Camera(np.eye(4), 0, 10, 0.5)
    with pytest.raises(ValueError):
        Camera(np.eye(4), 10, 10, None, None)
    with pytest.raises(ValueError):
        Camera(np.eye(3), 10, 10, 0.5)
