"""Degenerate input for data preparation: flat, needle and collapsed triangles, duplicate vertices,
repeated, non-manifold and open faces. The distance kernel is compared with an exact rational
point-triangle distance on random degenerate triangles; whole meshes must prepare with sensible
signed distances; every shared asset prepares."""
import numpy as np
import pytest
import trimesh

from backend.data.bvh import FLAT, TriangleBVH, _triangle_distance2
from backend.data.meshes import tidy
from backend.data.prepare import PrepareOptions, main, prepare_mesh
from backend.data.watertight import WatertightOptions
from tests.data.reference import exact_triangle_distance

SMALL = PrepareOptions(watertight=WatertightOptions(resolution=32, views=8, view_resolution=64),
                       num_surface=500, num_sharp=500, num_near=300, num_volume=500)


def degenerate_triangles(rng: np.random.Generator, count: int):
    """Random triangles of every degenerate kind, at scales 1e-4..1 anywhere in [-1, 1]^3."""
    for i in range(count):
        kind = i % 7
        scale = 10.0 ** rng.uniform(-4, 0)
        o = rng.uniform(-1, 1, 3)
        a, b, c = (o + rng.normal(0, scale, 3) for _ in range(3))
        if kind == 0:  # two corners coincide
            b = a.copy()
        elif kind == 1:  # all three coincide
            b, c = a.copy(), a.copy()
        elif kind == 2:  # collinear, up to rounding
            c = a + rng.uniform(-2, 2) * (b - a)
        elif kind == 3:  # a sliver 10^-3..10^-17 of its edge high
            d = b - a
            side = np.cross(d, rng.normal(size=3))
            c = a + rng.uniform(-0.5, 1.5) * d + side / np.linalg.norm(side) * np.linalg.norm(d) * 10.0 ** -rng.uniform(3, 17)
        elif kind == 4:  # a needle: one edge 10^-3..10^-17 of the others
            b = a + rng.normal(size=3) * scale * 10.0 ** -rng.uniform(3, 17)
        elif kind == 5:  # marching cubes' kind: two corners one float step apart
            b = np.nextafter(a, a + 1.0)
        yield np.array([a, b, c])  # kind 6: an ordinary triangle


def test_triangle_distance_matches_exact_distance_on_degenerate_triangles():
    rng = np.random.default_rng(20261204)
    for tri in degenerate_triangles(rng, 280):
        size = np.linalg.norm(tri.max(0) - tri.min(0))
        queries = np.concatenate([
            tri.mean(0) + rng.normal(0, 1, (5, 3)) * (size + 1e-6) * 10.0 ** rng.uniform(-6, 1, (5, 1)),
            tri[rng.integers(3, size=3)] + rng.normal(0, 1e-9, (3, 3)),  # at a corner
            [tri[0] + 0.3 * (tri[1] - tri[0])],  # on an edge
        ])
        for q in queries:
            got = np.sqrt(_triangle_distance2(q, tri))
            exact = exact_triangle_distance(q, tri)
            # flat triangles are measured by their edges (at most FLAT x longest edge too far);
            # the plane of a barely non-flat one is known to about eps / FLAT
            assert abs(got - exact) <= 3 * FLAT * (size + np.linalg.norm(q - tri[0])) + 1e-300, (tri.tolist(), q.tolist())


def test_bvh_queries_on_a_mesh_full_of_degenerate_faces():
    rng = np.random.default_rng(5)
    tris = np.concatenate([np.stack(list(degenerate_triangles(rng, 140))), trimesh.creation.icosphere(1, 0.7).triangles])
    v, f = tris.reshape(-1, 3), np.arange(len(tris) * 3).reshape(-1, 3)
    q = rng.uniform(-1.2, 1.2, (25, 3))
    bvh = TriangleBVH.build(v, f)
    exact = np.array([min(exact_triangle_distance(p, t) for t in tris) for p in q])
    np.testing.assert_allclose(bvh.distance(q), exact, rtol=3 * FLAT, atol=1e-12)
    assert np.isfinite(bvh.winding_number(q)).all()


def test_tidy_merges_duplicates_and_drops_collapsed_and_flat_faces():
    box = trimesh.creation.box((1.0, 0.8, 0.6))
    v = np.concatenate([box.vertices, box.vertices[:3]])  # three duplicated vertices
    n = len(box.vertices)
    f = np.concatenate([box.faces, [[n, 1, 2], [0, n, 5], [0, 0, 3]]])  # [n, 1, 2] repeats a face; [0, n, 5] collapses
    v = np.concatenate([v, [(v[0] + v[6]) / 2]])
    f = np.concatenate([f, [[0, 6, len(v) - 1]]])  # three distinct collinear corners: flat
    out = tidy(v, f)
    assert out.stats == {"merged_vertices": 3, "collapsed_faces": 2, "flat_faces": 1}
    assert len(out.vertices) == 8 and len(out.faces) == 13  # the box's 12 and its repeated face
    closed = tidy(v, f, drop_flat=False)
    assert closed.stats["flat_faces"] == 0 and len(closed.faces) == 14


def random_degenerate_mesh(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A closed or open ellipsoid, its vertices partly duplicated, plus slivers, collapsed and
    repeated faces and a non-manifold fin."""
    sphere = trimesh.creation.icosphere(2, 1.0)
    v = sphere.vertices * rng.uniform(0.4, 1.0, 3)
    f = sphere.faces.copy()
    if rng.random() < 0.5:  # open it: drop a cap of faces
        f = f[v[f].mean(axis=1)[:, 1] < 0.6 * v[:, 1].max()]
    dup = rng.choice(len(v), len(v) // 3, replace=False)
    remap = np.arange(len(v))
    remap[dup] = len(v) + np.arange(len(dup))
    v = np.concatenate([v, v[dup]])
    f = np.where(rng.random(f.shape) < 0.5, remap[f], f)  # faces use either copy
    extra = [f[rng.integers(len(f), size=5)]]  # repeated faces
    a, b = rng.integers(len(v), size=(2, 8))
    extra.append(np.stack([a, a, b], axis=1))  # collapsed
    mid = len(v) + np.arange(8)
    v = np.concatenate([v, (v[a] + v[b]) / 2])
    extra.append(np.stack([a, b, mid], axis=1))  # flat: three collinear corners
    e0, e1 = f[0, 0], f[0, 1]
    v = np.concatenate([v, [v[e0] * 1.3 + 0.05]])
    extra.append([[e0, e1, len(v) - 1]])  # a fin on an edge: three faces share it
    return v, np.concatenate([f, *extra])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_degenerate_meshes_prepare_with_sensible_sdf(seed):
    v, f = random_degenerate_mesh(np.random.default_rng(seed))
    prepared = prepare_mesh(v, f, SMALL)
    for name, array in prepared.arrays.items():
        assert np.isfinite(array).all(), name
    assert prepared.info["tidy"]["merged_vertices"] > 0 and prepared.info["tidy"]["collapsed_faces"] >= 8
    vol = prepared.arrays["volume_rand_points"]
    centre = np.linalg.norm(vol[:, :3], axis=1) < 0.2
    corner = np.abs(vol[:, :3]).min(axis=1) > 0.95
    assert (vol[centre, 3] > 0).all() and (vol[corner, 3] < 0).all()  # inside positive, far outside negative


def test_every_shared_asset_prepares_and_failures_are_explained(assets, tmp_path, capfd):
    bad = tmp_path / "list.txt"
    meshes = sorted((assets / "meshes").iterdir())
    bad.write_text("\n".join([*map(str, meshes), str(tmp_path / "missing.obj")]))
    args = ["--resolution", "32", "--views", "6", "--view-resolution", "64", "--num-surface", "300",
            "--num-sharp", "300", "--num-near", "200", "--num-volume", "300"]
    assert main([str(bad), str(tmp_path / "out"), *args]) == 1
    out = capfd.readouterr()
    assert f"{len(meshes)} prepared, 1 failed" in out.out
    assert "missing.obj: [input_not_found]" in out.err  # the reason on the console, not only in the log
