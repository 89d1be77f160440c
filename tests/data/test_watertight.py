"""Watertight remeshing: closed, outward, close to the input; open sheets and hidden shells."""
import numpy as np
import pytest
import trimesh

from backend.data.bvh import TriangleBVH
from backend.data.meshes import load_mesh, normalisation
from backend.data.watertight import WatertightOptions, _affine, depth_cameras, make_watertight
from shared.errors import BackendError


def closed(v, f) -> trimesh.Trimesh:
    mesh = trimesh.Trimesh(v, f, process=True)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume > 0  # outward
    return mesh


def test_bunny_becomes_watertight_and_stays_close(assets):
    v, f = load_mesh(assets / "meshes" / "bunny.ply")
    v = normalisation(v, f).apply(v)
    assert not trimesh.Trimesh(v, f).is_watertight  # the scan has holes in its base
    options = WatertightOptions(resolution=128, view_resolution=512)
    result = make_watertight(v, f, options)
    mesh = closed(result.vertices, result.faces)
    assert len(mesh.split(only_watertight=False)) == 1
    points, _ = trimesh.sample.sample_surface(mesh, 20000, seed=0)
    chamfer = TriangleBVH.build(v, f).distance(points).mean()  # watertight -> input
    box = (v.max(0) - v.min(0)).max()
    assert chamfer < 0.01 * box, chamfer / box
    # and every part of the input is covered by the output (nothing carved away)
    back, _ = trimesh.sample.sample_surface(trimesh.Trimesh(v, f), 5000, seed=1)
    assert TriangleBVH.build(result.vertices, result.faces).distance(back).max() < 4 * options.spacing


def test_open_sheet_becomes_thin_closed_shell():
    v = np.array([[-0.8, 0, -0.8], [0.8, 0, -0.8], [0.8, 0, 0.8], [-0.8, 0, 0.8]], dtype=float)
    f = np.array([[0, 1, 2], [0, 2, 3]])
    o = WatertightOptions(resolution=32, views=12, view_resolution=64)
    result = make_watertight(v, f, o)
    mesh = closed(result.vertices, result.faces)
    assert np.abs(mesh.vertices[:, 1]).max() < o.iso + o.spacing  # hugs the sheet
    assert mesh.area > 2 * 1.6 * 1.6 * 0.95  # both sides


def test_hidden_inner_shell_is_filled():
    outer = trimesh.creation.box((1.6, 1.6, 1.6))
    inner = trimesh.creation.icosphere(2, 0.4)
    inner.invert()  # a sealed cavity facing inwards
    both = trimesh.util.concatenate([outer, inner])
    result = make_watertight(both.vertices, both.faces, WatertightOptions(resolution=32, views=12, view_resolution=64))
    mesh = closed(result.vertices, result.faces)
    assert len(mesh.split(only_watertight=False)) == 1  # no inner surface left
    assert mesh.volume > 1.6**3


def test_depth_camera_affine_map_matches_camera_projection():
    cam = depth_cameras(5, 1.05, 64)[3]
    pts = np.random.default_rng(0).uniform(-1, 1, (50, 3))
    xy, depth = cam.project(pts)
    m = _affine(cam)
    np.testing.assert_allclose(pts @ m[:, :3].T + m[:, 3], np.column_stack([xy, depth]), atol=1e-9)


def test_rejects_unnormalised_input():
    v = trimesh.creation.box((4, 4, 4))
    with pytest.raises(BackendError) as err:
        make_watertight(v.vertices, v.faces, WatertightOptions(resolution=16))
    assert err.value.code == "invalid_setting"
