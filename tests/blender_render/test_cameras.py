"""Camera maths and options without Blender: the views agree with shared/views.py, projection
agrees with an independent OpenGL clip-space path, random views are seeded."""
import math

import numpy as np
import pytest

from blender_render.cameras import build_views, project, unproject
from blender_render.options import RenderOptions, add_render_arguments, options_from_args, script_argv
from shared import views
from shared.errors import BackendError


def _gl_pixels(points_blender: np.ndarray, view: views.View, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference: glTF-frame points through shared's w2c and OpenGL projection to pixel coordinates."""
    to_gltf = np.array(views.BLENDER_TO_GLTF)[:3, :3]
    pts = points_blender @ to_gltf.T
    w2c = np.array(view.w2c_gl())
    cam = pts @ w2c[:3, :3].T + w2c[:3, 3]
    clip = np.c_[cam, np.ones(len(cam))] @ np.array(view.projection_gl()).T
    ndc = clip[:, :3] / clip[:, 3:]
    return np.stack([(ndc[:, 0] + 1) / 2 * size, (1 - ndc[:, 1]) / 2 * size], 1), -cam[:, 2]


def test_canonical_views_are_shared_views():
    cams = build_views(RenderOptions(resolution=96))
    assert [c.name for c in cams] == list(views.VIEW_NAMES)
    for cam, view in zip(cams, views.CANONICAL_VIEWS):
        assert cam.view == view and cam.kind == "canonical" and cam.orthographic
        np.testing.assert_allclose(cam.c2w_blender(), np.array(views.GLTF_TO_BLENDER) @ np.array(view.c2w_gl()))
        np.testing.assert_allclose(cam.c2w_opencv(), np.array(view.c2w_blender()) @ np.diag([1, -1, -1, 1.0]))
        np.testing.assert_allclose(cam.w2c_opencv() @ cam.c2w_opencv(), np.eye(4), atol=1e-12)
        assert cam.blender_camera()["ortho_scale"] == pytest.approx(2 * views.ORTHO_HALF_EXTENT)
        meta = cam.to_meta()
        assert meta["width"] == meta["height"] == 96 and meta["projection"] == "ortho"


@pytest.mark.parametrize("projection", ["ortho", "persp"])
def test_project_matches_opengl_path_and_unproject_inverts(projection):
    rng = np.random.default_rng(3)
    opts = RenderOptions(resolution=80, canonical=False, extra_views=5, extra_projection=projection, seed=11)
    for cam in build_views(opts):
        pts = rng.uniform(-0.5, 0.5, (200, 3))
        uv, depth = project(pts, cam)
        ref_uv, ref_depth = _gl_pixels(pts, cam.view, 80)
        np.testing.assert_allclose(uv, ref_uv, atol=1e-9)
        np.testing.assert_allclose(depth, ref_depth, atol=1e-12)
        # unproject the exact depth at pixel centres and project back onto the same centres
        dimg = np.full((80, 80), cam.view.distance)
        world = unproject(dimg, cam)
        uv2, d2 = project(world.reshape(-1, 3), cam)
        jj, ii = np.meshgrid(np.arange(80) + 0.5, np.arange(80) + 0.5)
        np.testing.assert_allclose(uv2, np.stack([jj.ravel(), ii.ravel()], 1), atol=1e-9)
        np.testing.assert_allclose(d2, cam.view.distance, atol=1e-12)


def test_pixel_convention_on_the_front_view():
    """A point at glTF (+x, +y) is right of and above the centre in the front view."""
    front = build_views(RenderOptions(resolution=100))[0]
    p = np.array([views.gltf_to_blender((0.275, 0.275, 0.0))])
    uv, depth = project(p, front)
    np.testing.assert_allclose(uv[0], [75.0, 25.0])
    assert depth[0] == pytest.approx(views.CAMERA_DISTANCE)


def test_random_views_are_seeded_uniform_and_in_range():
    opts = RenderOptions(canonical=False, extra_views=400, seed=5, elevation_range=(-20.0, 60.0))
    a, b = build_views(opts), build_views(opts)
    assert [(c.view.azimuth_deg, c.view.elevation_deg) for c in a] == [(c.view.azimuth_deg, c.view.elevation_deg) for c in b]
    other = build_views(RenderOptions(canonical=False, extra_views=400, seed=6, elevation_range=(-20.0, 60.0)))
    assert a[0].view.azimuth_deg != other[0].view.azimuth_deg
    el = np.array([c.view.elevation_deg for c in a])
    assert el.min() >= -20 and el.max() <= 60
    # uniform on the sphere band: sin(elevation) is uniform, so its mean is the band's midpoint
    s = np.sin(np.radians(el))
    assert abs(s.mean() - (math.sin(math.radians(60)) + math.sin(math.radians(-20))) / 2) < 0.06
    assert [c.index for c in a] == list(range(400)) and a[0].name == "random_000"


def test_perspective_views_fit_the_unit_cube():
    opts = RenderOptions(resolution=64, canonical=False, extra_views=20, extra_projection="persp", fov_deg=30)
    corners = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    for cam in build_views(opts):
        uv, depth = project(corners, cam)
        assert np.all((uv >= 0) & (uv <= 64)) and np.all(depth > 0)
        assert cam.fov_deg == 30 and cam.blender_camera()["type"] == "PERSP"
        k = cam.intrinsics()
        assert k[1, 1] == pytest.approx(32 / math.tan(math.radians(15)))


def test_fibonacci_views_follow_shared():
    cams = build_views(RenderOptions(extra_views=7, extra_mode="fibonacci"))
    ref = views.fibonacci_views(7)
    assert len(cams) == 13 and [c.kind for c in cams[6:]] == ["fibonacci"] * 7
    for cam, v in zip(cams[6:], ref):
        assert (cam.name, cam.view.azimuth_deg, cam.view.elevation_deg) == (v.name, v.azimuth_deg, v.elevation_deg)


def test_options_validate_and_round_trip():
    o = RenderOptions(passes=("normal", "mask", "normal"), extra_views=2, hdri_rotation=None)
    assert o.passes == ("normal", "mask")
    assert RenderOptions.from_dict(o.to_dict()) == o
    for bad in (dict(passes=("albedo",)), dict(passes=("nope",)), dict(resolution=4), dict(engine="x"),
                dict(canonical=False), dict(elevation_range=(10, -10)), dict(color_depth=12)):
        with pytest.raises(BackendError) as err:
            RenderOptions(**bad)
        assert err.value.code == "invalid_setting"
    with pytest.raises(BackendError):
        RenderOptions.from_dict({"resolution": 64, "bogus": 1})


def test_argument_parser_builds_options():
    import argparse

    parser = argparse.ArgumentParser()
    add_render_arguments(parser)
    argv = script_argv(["blender", "-b", "-P", "x.py", "--", "--resolution", "64", "--passes", "all",
                        "--canonical", "off", "--extra-views", "3", "--hdri-rotation", "random", "--exr"])
    o = options_from_args(parser.parse_args(argv))
    assert o.resolution == 64 and o.passes[-1] == "mr" and not o.canonical and o.extra_views == 3
    assert o.hdri_rotation is None and o.exr
    assert script_argv(["prog", "a", "b"]) == ["a", "b"]
