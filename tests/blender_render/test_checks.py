"""The output checks on analytic renders of a sphere (ray cast in numpy), intact and broken."""
import numpy as np
import pytest

from blender_render.cameras import build_views
from blender_render.checks import ChecksFailed, check_color, check_geometry, failures
from blender_render.options import RenderOptions

CENTRE = np.array([0.05, -0.1, 0.02])
RADIUS = 0.4
BOUNDS = (CENTRE - RADIUS, CENTRE + RADIUS)


def _sphere(cam, shift_px=(0.0, 0.0)):
    """Exact passes of a sphere: ray through each pixel centre (+ shift) against the sphere."""
    n = cam.width
    k = cam.intrinsics()
    c2w = cam.c2w_opencv()
    v, u = np.mgrid[0:n, 0:n] + 0.5
    x, y = (u + shift_px[0] - k[0, 2]) / k[0, 0], (v + shift_px[1] - k[1, 2]) / k[1, 1]
    if cam.orthographic:
        origin = np.stack([x, y, np.zeros_like(x)], -1) @ c2w[:3, :3].T + c2w[:3, 3]
        direction = np.broadcast_to(c2w[:3, 2], origin.shape)
    else:
        origin = np.broadcast_to(c2w[:3, 3], (n, n, 3))
        direction = np.stack([x, y, np.ones_like(x)], -1) @ c2w[:3, :3].T
    d = direction / np.linalg.norm(direction, axis=-1, keepdims=True)
    oc = origin - CENTRE
    b = (oc * d).sum(-1)
    disc = b * b - ((oc * oc).sum(-1) - RADIUS ** 2)
    mask = disc > 0
    t = -b - np.sqrt(np.where(mask, disc, 0))
    pos = origin + t[..., None] * d
    normal = (pos - CENTRE) / RADIUS
    depth = ((pos - c2w[:3, 3]) * c2w[:3, 2]).sum(-1)
    return (mask, np.where(mask[..., None], normal, 0), np.where(mask[..., None], pos, 0),
            np.where(mask, depth, 1e10))


@pytest.fixture(params=["ortho", "persp"])
def cam(request):
    opts = RenderOptions(resolution=48, canonical=False, extra_views=1, extra_projection=request.param, seed=2)
    return build_views(opts)[0]


def test_exact_render_passes(cam):
    result = check_geometry(cam, *_sphere(cam), BOUNDS)
    assert result.failures == [] and result.warnings == []
    assert 0.05 < result.coverage < 0.9
    assert result.normal_max_error < 1e-12 and result.position_max_error < 1e-9
    assert max(abs(x) for x in result.sample_offset_px) < 1e-6


def test_broken_renders_fail(cam):
    mask, normal, pos, depth = _sphere(cam)
    cases = {
        "not unit length": (mask, normal * 1.1, pos, depth, BOUNDS),
        "disagree with depth": (mask, normal, pos + 0.01 * cam.c2w_opencv()[:3, 0], depth, BOUNDS),
        "outside": (mask, normal, pos, depth, (BOUNDS[0] + 0.2, BOUNDS[1])),
        "mask and depth disagree": (mask, normal, pos, np.where(mask, 1e10, depth), BOUNDS),
        "empty mask": (np.zeros_like(mask), normal, pos, depth, BOUNDS),
    }
    for expected, args in cases.items():
        result = check_geometry(cam, *args)
        assert any(expected in f for f in result.failures), (expected, result.failures)
    nan_normal = normal.copy()
    nan_normal[mask.nonzero()[0][0], mask.nonzero()[1][0]] = np.nan
    assert any("NaN" in f for f in check_geometry(cam, mask, nan_normal, pos, depth, BOUNDS).failures)


def test_offset_samples_are_reported(cam):
    mask, normal, pos, depth = _sphere(cam, shift_px=(0.3, -0.2))
    result = check_geometry(cam, mask, normal, pos, depth, BOUNDS)
    np.testing.assert_allclose(result.sample_offset_px, (0.3, -0.2), atol=1e-6)
    assert any("off the pixel centres" in w for w in result.warnings)
    assert any("disagree with depth" in f for f in result.failures)  # unprojection assumes centres


def test_few_bad_normals_warn_many_fail(cam):
    mask, normal, pos, depth = _sphere(cam)
    rows, cols = mask.nonzero()
    few = normal.copy()
    few[rows[0], cols[0]] *= 2
    result = check_geometry(cam, mask, few, pos, depth, BOUNDS)
    assert result.failures == [] and any("unit length" in w for w in result.warnings)


def test_colour_check_and_aggregation(cam):
    mask, normal, pos, depth = _sphere(cam)
    result = check_geometry(cam, mask, normal, pos, depth, BOUNDS)
    check_color(result, mask.astype(float), mask)
    assert result.color_coverage == 1.0 and not result.failures
    half = mask & (np.arange(mask.shape[1]) < mask.shape[1] // 2)
    check_color(result, half.astype(float), mask)
    assert any("covers only" in w for w in result.warnings)
    check_color(result, np.zeros_like(depth), mask)
    assert any("blank" in f for f in result.failures)
    err = ChecksFailed(failures([result]))
    assert err.code == "check_failed" and err.exit_status == 20 and "blank" in str(err)
