"""The BVH's winding numbers and distances against brute force, on a real mesh with holes."""
import numpy as np
import pytest
import trimesh

from backend.data.bvh import TriangleBVH
from backend.data.meshes import load_mesh, normalisation
from tests.data.reference import distances, winding_numbers


@pytest.fixture(scope="module")
def bunny(assets):
    v, f = load_mesh(assets / "meshes" / "bunny.ply")
    return normalisation(v, f).apply(v), f


def test_winding_number_matches_brute_force(bunny):
    v, f = bunny
    rng = np.random.default_rng(7)
    q = rng.uniform(-1.05, 1.05, (150, 3))
    exact = winding_numbers(q, v, f)
    bvh = TriangleBVH.build(v, f)
    assert np.abs(bvh.winding_number(q, beta=1e9) - exact).max() < 1e-9  # no far-field terms: exact sums
    fast = bvh.winding_number(q)
    assert np.abs(fast - exact).max() < 0.05
    assert np.array_equal(fast > 0.5, exact > 0.5) or np.abs(exact - 0.5).min() < 0.05


def test_winding_number_of_closed_mesh_is_indicator():
    mesh = trimesh.creation.icosphere(3, 0.8)
    rng = np.random.default_rng(3)
    q = rng.uniform(-1, 1, (2000, 3))
    r = np.linalg.norm(q, axis=1)
    q, r = q[np.abs(r - 0.8) > 0.02], r[np.abs(r - 0.8) > 0.02]
    w = TriangleBVH.build(mesh.vertices, mesh.faces).winding_number(q)
    assert np.abs(w - (r < 0.8)).max() < 0.05  # first-order far field: a few per cent


def test_distance_matches_brute_force(bunny):
    v, f = bunny
    rng = np.random.default_rng(11)
    surface, _ = trimesh.sample.sample_surface(trimesh.Trimesh(v, f, process=False), 100, seed=1)
    q = np.concatenate([rng.uniform(-1.05, 1.05, (100, 3)), surface + rng.normal(0, 0.01, surface.shape)])
    exact = distances(q, v, f)
    bvh = TriangleBVH.build(v, f)
    np.testing.assert_allclose(bvh.distance(q), exact, rtol=1e-9, atol=1e-12)
    capped = bvh.distance(q, cap=0.05)
    np.testing.assert_allclose(capped, np.minimum(exact, 0.05), rtol=1e-9, atol=1e-12)


def test_rejects_bad_meshes():
    with pytest.raises(ValueError):
        TriangleBVH.build(np.zeros((3, 3)), np.zeros((0, 3), dtype=np.int64))
    with pytest.raises(ValueError):
        TriangleBVH.build(np.zeros((3, 3)), np.array([[0, 1, 5]]))
