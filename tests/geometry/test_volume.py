"""Field decoding and surface extraction on analytic shapes with known surfaces."""
import numpy as np
import pytest
import torch
import trimesh

from backend.geometry.marching import marching_cubes
from backend.geometry.volume import decode_coarse_to_fine, decode_dense, lattice_points, octree_levels
from backend.mesh.clean import clean, face_components

BOUNDS, RES = 1.05, 128
H = 2 * BOUNDS / RES
TRUNCATION = 0.03  # field = clip(-distance / 0.03, -1, 1): positive inside, a thin |v| < 0.95 band


def sphere(p):
    return p.norm(dim=-1) - 0.7


def torus(p):
    q = torch.stack([torch.sqrt(p[:, 0] ** 2 + p[:, 2] ** 2) - 0.6, p[:, 1]], -1)
    return q.norm(dim=-1) - 0.22


def box(p):
    q = p.abs() - torch.tensor([0.6, 0.4, 0.5], dtype=p.dtype)
    return q.clamp(min=0).norm(dim=-1) + q.max(dim=-1).values.clamp(max=0)


SHAPES = {  # distance function, genus, volume
    "sphere": (sphere, 0, 4 / 3 * np.pi * 0.7**3),
    "torus": (torus, 1, 2 * np.pi**2 * 0.6 * 0.22**2),
    "box": (box, 0, 1.2 * 0.8 * 1.0),
}


def field_of(distance):
    return lambda p: (-distance(p) / TRUNCATION).clamp(-1, 1)


def exact_frame(vertices):
    """Undo the release's /(R+1) vertex mapping, back to exact lattice coordinates."""
    return (vertices + BOUNDS) / (2 * BOUNDS) * (RES + 1) * H - BOUNDS


def test_octree_levels():
    assert octree_levels(384) == [96, 192, 384]
    assert octree_levels(256) == [64, 128, 256]
    assert octree_levels(100) == [100]
    assert octree_levels(64) == [64]


def test_lattice_points():
    n = RES + 1
    idx = torch.tensor([0, n**3 - 1, (n // 2) * n * n + 3 * n + 7])
    pts = lattice_points(idx, RES, BOUNDS)
    axis = torch.linspace(-BOUNDS, BOUNDS, n)
    torch.testing.assert_close(pts, torch.stack([axis[[0, -1, n // 2]], axis[[0, -1, 3]], axis[[0, -1, 7]]], -1))


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_coarse_to_fine_equals_dense_and_exact_surface(name):
    distance, genus, volume = SHAPES[name]
    field = field_of(distance)
    dense = decode_dense(field, RES, BOUNDS)
    sparse, stats = decode_coarse_to_fine(field, RES, BOUNDS)
    assert stats.levels == [64, 128]
    assert stats.total_queries < 0.6 * dense.numel()  # it really skipped most of the lattice
    v_dense, f_dense = marching_cubes(dense, 0.0, BOUNDS, backend="skimage")
    v, f = marching_cubes(sparse, 0.0, BOUNDS, backend="skimage")
    np.testing.assert_array_equal(f, f_dense)
    np.testing.assert_array_equal(v, v_dense)

    mesh = trimesh.Trimesh(v, f, process=False)
    assert mesh.is_watertight
    assert len(np.unique(face_components(f, len(v)))) == 1  # no second shell
    assert mesh.euler_number == 2 - 2 * genus
    assert mesh.volume > 0  # outward winding
    # every vertex on the exact surface (up to MC's linear interpolation error)
    d = distance(torch.from_numpy(exact_frame(v.astype(np.float64)))).abs().max().item()
    assert d < (0.5 * H if name == "box" else 0.05 * H)
    assert trimesh.Trimesh(exact_frame(v), f).volume == pytest.approx(volume, rel=0.02)
    # the release's /(R+1) mapping shrinks by R/(R+1) about -bounds
    np.testing.assert_allclose(v, (exact_frame(v) + BOUNDS) * RES / (RES + 1) - BOUNDS, atol=1e-5)


def test_undecoded_region_makes_no_second_shell():
    """A band too thin for the coarse level: the fine level sees only part of the lattice. Filling
    the rest with a sentinel (as the release does) would wrap the evaluated band in a second
    surface; the interpolated fill keeps a single closed one."""
    field = field_of(sphere)
    grid, stats = decode_coarse_to_fine(field, RES, BOUNDS, band=0.2)
    v, f = marching_cubes(grid, 0.0, BOUNDS, backend="skimage")
    v, f = clean(v, f, min_part_fraction=0.0)
    assert len(np.unique(face_components(f, len(v)))) == 1
    assert trimesh.Trimesh(v, f).is_watertight
    assert np.abs(np.linalg.norm(exact_frame(v.astype(np.float64)), axis=1) - 0.7).max() < 0.05 * H
    # the same grid with the release's sentinel fill has a second shell
    known = torch.zeros_like(grid, dtype=torch.bool).view(-1)
    n = RES + 1
    pts = lattice_points(torch.arange(n**3), RES, BOUNDS)
    exact = field(pts)
    known[(grid.view(-1) - exact).abs() < 1e-6] = True
    sentinel = torch.where(known, exact, torch.tensor(-10000.0)).view(n, n, n)
    vs, fs = marching_cubes(sentinel, 0.0, BOUNDS, backend="skimage")
    vs, fs = clean(vs, fs, min_part_fraction=0.0)
    assert len(np.unique(face_components(fs, len(vs)))) > 1


def test_no_surface_is_an_error():
    from shared.errors import BackendError

    with pytest.raises(BackendError, match="no surface"):
        marching_cubes(torch.ones(9, 9, 9), 0.0)


def test_warp_backend_matches_skimage():
    pytest.importorskip("warp")
    field = field_of(torus)
    grid = decode_dense(field, 64, BOUNDS)
    vs, fs = marching_cubes(grid, 0.0, BOUNDS, backend="skimage")
    vw, fw = marching_cubes(grid, 0.0, BOUNDS, backend="warp")
    vw, fw = clean(vw, fw, min_part_fraction=0.0)  # warp emits zero-area triangles at exact zeros
    mw, ms = trimesh.Trimesh(vw, fw), trimesh.Trimesh(vs, fs)
    assert mw.is_watertight and mw.volume > 0
    assert mw.volume == pytest.approx(ms.volume, rel=1e-3)
    # the same vertices (edge crossings), whatever the triangulation
    from scipy.spatial import cKDTree

    assert len(vw) == len(vs)
    assert cKDTree(vs).query(vw)[0].max() < 1e-5 and cKDTree(vw).query(vs)[0].max() < 1e-5
