"""Samples in the reference layout: sharp edges of fandisk on its feature edges, SDF signs against
brute-force winding numbers, distances against brute force."""
import math
from collections import defaultdict

import numpy as np
import pytest
import trimesh

from backend.data.meshes import load_mesh
from backend.data.prepare import KEYS, PrepareOptions, prepare_mesh
from backend.data.sampling import sample_sharp
from backend.data.watertight import WatertightOptions
from backend.mesh.clean import weld
from tests.data.reference import distances, winding_numbers


def feature_edges(v, f, angle_deg):
    """Edges between two faces whose normals differ by more than the angle, by a plain loop."""
    owners = defaultdict(list)
    for i, tri in enumerate(f):
        for a, b in ((tri[0], tri[1]), (tri[1], tri[2]), (tri[2], tri[0])):
            owners[(min(a, b), max(a, b))].append(i)
    normals = []
    for tri in v[f]:
        n = np.cross(tri[1] - tri[0], tri[2] - tri[0])
        normals.append(n / np.linalg.norm(n))
    out = []
    for edge, fs in owners.items():
        if len(fs) == 2 and math.degrees(math.acos(np.clip(normals[fs[0]] @ normals[fs[1]], -1, 1))) > angle_deg:
            out.append(edge)
    return np.array(out)


def segment_distance(points, a, b):
    d = b - a
    t = np.clip(((points[:, None] - a[None]) * d[None]).sum(-1) / (d * d).sum(-1)[None], 0, 1)
    closest = a[None] + t[..., None] * d[None]
    return np.linalg.norm(points[:, None] - closest, axis=-1)  # (P, E)


def test_fandisk_sharp_samples_lie_on_feature_edges(assets):
    v, f = load_mesh(assets / "meshes" / "fandisk.obj")
    v, f = (t.numpy() for t in weld(v, f))
    v = v.astype(np.float64)
    samples = sample_sharp(v, f, 3000, 15.0, np.random.default_rng(0))
    assert samples.shape == (3000, 6) and samples.dtype == np.float32
    edges = feature_edges(v, f, 15.0)
    assert len(edges) > 50
    a, b = v[edges[:, 0]], v[edges[:, 1]]
    d = segment_distance(samples[:, :3].astype(np.float64), a, b)
    scale = np.abs(v).max()
    assert d.min(axis=1).max() < 1e-5 * scale  # every sample is on a feature edge
    np.testing.assert_allclose(np.linalg.norm(samples[:, 3:], axis=1), 1.0, atol=1e-5)
    # and the samples spread over the features: most edge length has a sample nearby
    length = np.linalg.norm(b - a, axis=1)
    covered = d.min(axis=0) < 0.02 * scale
    assert length[covered].sum() > 0.9 * length.sum()


def test_smooth_mesh_has_no_sharp_samples():
    sphere = trimesh.creation.icosphere(3)
    assert sample_sharp(sphere.vertices, sphere.faces, 100, 15.0, np.random.default_rng(0)) is None
    box = trimesh.creation.box()
    assert sample_sharp(box.vertices, box.faces, 100, 15.0, np.random.default_rng(0)) is not None


def test_prepared_samples_layout_and_sdf(assets):
    v, f = load_mesh(assets / "meshes" / "bunny.ply")
    o = PrepareOptions(watertight=WatertightOptions(resolution=64, views=20, view_resolution=256),
                       num_surface=3000, num_sharp=2000, num_near=2000, num_volume=2000)
    prepared = prepare_mesh(v, f, o)
    arr = prepared.arrays
    assert tuple(arr) == KEYS
    assert arr["surface"].shape == (3000, 6) and arr["sharp_surface"].shape == (2000, 6)
    assert arr["near_surface_points"].shape == (4000, 4) and arr["volume_rand_points"].shape == (2000, 4)
    assert arr["bounds"].tolist() == pytest.approx([-1.05, 1.05])
    assert all(a.dtype == np.float32 for a in arr.values())
    assert np.abs(arr["volume_rand_points"][:, :3]).max() <= 1.05
    wv, wf = prepared.vertices, prepared.faces
    assert trimesh.Trimesh(wv, wf).is_watertight
    rng = np.random.default_rng(5)
    for key in ("volume_rand_points", "near_surface_points"):
        pts = arr[key][rng.choice(len(arr[key]), 120, replace=False)].astype(np.float64)
        inside = winding_numbers(pts[:, :3], wv, wf) > 0.5
        clear = np.abs(pts[:, 3]) > 1e-4  # float32 rounding of points on the surface
        assert np.array_equal((pts[:, 3] > 0)[clear], inside[clear])  # positive inside
        np.testing.assert_allclose(np.abs(pts[:, 3]), distances(pts[:, :3], wv, wf), atol=2e-6)
    # surface samples lie on the watertight surface, normals unit
    s = arr["surface"][:50].astype(np.float64)
    assert distances(s[:, :3], wv, wf).max() < 1e-5
    np.testing.assert_allclose(np.linalg.norm(arr["surface"][:, 3:], axis=1), 1.0, atol=1e-5)
