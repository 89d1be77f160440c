"""clean, decimate, unwrap, frame and GLB export: the toolkit pieces both engines start from."""
import os

import numpy as np
import pytest
import trimesh

from backend.mesh.clean import clean, nondegenerate, weld
from backend.mesh.decimate import decimate
from backend.mesh.export import ExportMetadata, write_glb
from backend.mesh.frame import fit_unit_box
from backend.mesh.raster import rasterize_uv
from backend.mesh.uv import smooth_vertex_normals, unwrap
from shared.errors import BackendError


def _split_sphere():
    """An icosphere stored as a triangle soup (every face has its own 3 vertices), like STL."""
    s = trimesh.creation.icosphere(3)
    return s.vertices[s.faces].reshape(-1, 3), np.arange(len(s.faces) * 3).reshape(-1, 3), s


def test_weld_restores_the_shared_vertices():
    v, f, sphere = _split_sphere()
    wv, wf = (t.numpy() for t in weld(v, f))
    assert len(wv) == len(sphere.vertices)
    assert trimesh.Trimesh(wv, wf, process=False).is_watertight


def test_clean_drops_degenerate_duplicate_and_floating_faces():
    v, f, sphere = _split_sphere()
    speck = trimesh.creation.icosphere(1, radius=0.01)
    v2 = np.concatenate([v, speck.vertices + 3.0, [[0, 0, 0], [1, 0, 0], [2, 0, 0]]])
    f2 = np.concatenate([f, speck.faces + len(v), [[len(v2) - 3, len(v2) - 2, len(v2) - 1]],  # collinear
                         f[:5], [[0, 0, 1]]])  # duplicates and a repeated index
    cv, cf = clean(v2, f2, min_part_fraction=0.1)  # the speck has 80 faces, 6 % of the sphere's
    assert len(cf) == len(sphere.faces) and len(cv) == len(sphere.vertices)
    assert trimesh.Trimesh(cv, cf, process=False).is_watertight
    assert len(nondegenerate(v2.astype(np.float32), f2)) == len(f) + len(speck.faces)


def test_decimate_meets_the_budget_and_stays_closed():
    s = trimesh.creation.icosphere(5)
    v, f = decimate(s.vertices, s.faces, 2000)
    m = trimesh.Trimesh(v, f, process=False)
    assert len(f) <= 2000 and m.is_watertight
    assert abs(m.volume - s.volume) / s.volume < 0.02
    same_v, same_f = decimate(s.vertices, s.faces, 10**6)
    assert len(same_f) == len(s.faces)


def test_unwrap_gives_non_overlapping_charts_and_carried_normals():
    s = trimesh.creation.icosphere(3)
    m = unwrap(s.vertices, s.faces, 512)
    assert m.uv.min() >= 0.0 and m.uv.max() <= 1.0
    np.testing.assert_allclose(m.vertices, s.vertices[m.vmapping], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(m.normals, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(m.normals, s.vertices[m.vmapping], atol=0.02)  # a sphere's normal = position
    # overlapping charts would cover fewer texels than their summed area
    t = 1024
    uv_tri = m.uv[m.faces].astype(np.float64) * t
    area = 0.5 * np.abs(np.cross(uv_tri[:, 1] - uv_tri[:, 0], uv_tri[:, 2] - uv_tri[:, 0])).sum()
    covered = int(rasterize_uv(m.uv, m.faces, t).mask.sum())
    assert abs(covered - area) / area < 0.01


def test_smooth_normals_match_a_float64_reference():
    rng = np.random.default_rng(1)
    s = trimesh.creation.icosphere(2)
    v = s.vertices + rng.normal(0, 0.05, s.vertices.shape)
    ours = smooth_vertex_normals(v, s.faces)
    ref = np.zeros_like(v)
    for a, b, c in s.faces:
        n = np.cross(v[b] - v[a], v[c] - v[a])
        ref[[a, b, c]] += n
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_fit_unit_box():
    rng = np.random.default_rng(2)
    v = rng.uniform(-3, 7, (100, 3)) * [1, 2, 0.5]
    fitted = fit_unit_box(v).apply(v)
    assert np.ptp(fitted, axis=0).max() == pytest.approx(1.0)
    np.testing.assert_allclose((fitted.max(0) + fitted.min(0)) / 2, 0.0, atol=1e-6)


def test_export_is_atomic_and_reports_unwritable_paths(tmp_path):
    s = trimesh.creation.icosphere(2)
    m = unwrap(s.vertices, s.faces, 256)
    meta = ExportMetadata("preview", "none", {})
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(BackendError) as info:
        write_glb(blocker / "a.glb", m, None, meta)
    assert info.value.code == "output_unwritable"
    out = write_glb(tmp_path / "a.glb", m, np.zeros((8, 8, 3), np.uint8), meta)
    assert out.stat().st_size > 0
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # readable like any file, not mkstemp's 0600
    assert sorted(os.listdir(tmp_path)) == ["a.glb", "file"]  # no temporary left behind
