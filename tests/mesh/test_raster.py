import numpy as np
import pytest
import torch

from backend.mesh.camera import Camera
from backend.mesh.raster import rasterize, rasterize_uv, rasterize_views
from shared.views import make_view

from .reference import reference_raster, screen_reference

METHODS = ["numba", "torch"]  # torch on the CPU runs the CUDA code path


def _camera(orthographic: bool, width=64, height=48, az=30.0, el=20.0) -> Camera:
    view = make_view("t", az, el, ortho_half_extent=0.55 if orthographic else None, fov_deg=40.0)
    return Camera.from_view(view, width, height)


def _random_triangles(rng, n_faces=40, spread=0.6, size=0.5):
    """Triangles with random windings, sizes and overlaps (many interpenetrate: near-ties in depth)."""
    centres = rng.uniform(-spread, spread, (n_faces, 1, 3))
    verts = (centres + rng.normal(0, size / 2, (n_faces, 3, 3))).reshape(-1, 3)
    return verts, np.arange(3 * n_faces).reshape(-1, 3)


def _check(r, ref, exact_bary_tol):
    fid = r.face_id.numpy().astype(np.int64)
    h, w = fid.shape
    ii, jj = np.mgrid[:h, :w]
    ok = np.where(fid >= 0, ref.acceptable[ii, jj, np.maximum(fid, 0)], ref.may_be_empty)
    assert ok.all(), f"{(~ok).sum()} pixels disagree with the reference beyond float tolerance"
    same = fid == ref.face_id
    assert same.mean() > 0.99
    hit = same & (fid >= 0)
    assert hit.sum() > 0.2 * h * w
    np.testing.assert_allclose(r.bary.numpy()[hit], ref.bary[hit], atol=exact_bary_tol)
    np.testing.assert_allclose(r.depth.numpy()[hit], ref.depth[hit], rtol=1e-5, atol=1e-5)
    assert np.isinf(r.depth.numpy()[fid < 0]).all()
    assert (r.bary.numpy()[fid < 0] == 0).all()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("orthographic", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_triangles_match_brute_force(method, orthographic, seed):
    rng = np.random.default_rng(1000 + seed)  # fresh triangles per seed
    verts, faces = _random_triangles(rng)
    cam = _camera(orthographic, az=rng.uniform(0, 360), el=rng.uniform(-60, 60))
    ref = reference_raster(verts, faces, cam)
    r = rasterize(verts, faces, cam, method=method)
    _check(r, ref, 1e-6 if method == "numba" else 2e-4)


@pytest.mark.parametrize("method", METHODS)
def test_both_windings_are_drawn_and_ties_go_to_lower_index(method):
    cam = _camera(True, 32, 32, az=0.0, el=0.0)  # front view: x right, y up, looking down -z
    tri = np.array([[-0.4, -0.4, 0.0], [0.4, -0.4, 0.0], [0.0, 0.4, 0.0]])
    verts = np.concatenate([tri, tri[::-1]])
    ccw, cw = [0, 1, 2], [3, 4, 5]
    for faces in ([ccw], [cw]):
        assert rasterize(verts, np.array(faces), cam, method=method).mask.sum() > 100
    # the same triangle twice: an exact depth tie, the lower face index must win everywhere
    r = rasterize(verts, np.array([cw, ccw, cw]), cam, method=method)
    assert set(np.unique(r.face_id.numpy())) == {-1, 0}


@pytest.mark.parametrize("method", METHODS)
def test_nearest_wins_and_near_plane_drops_whole_triangles(method):
    cam = _camera(False, 40, 40, az=0.0, el=0.0)  # perspective, eye at z = 1.8
    back = [[-0.5, -0.5, -0.2], [0.5, -0.5, -0.2], [0.0, 0.5, -0.2]]
    front = [[-0.2, -0.2, 0.2], [0.2, -0.2, 0.2], [0.0, 0.2, 0.2]]
    crossing = [[-0.1, -0.1, 1.75], [0.1, -0.1, 1.75], [0.0, 0.1, 2.5]]  # one vertex behind the eye
    verts = np.array(back + front + crossing)
    r = rasterize(verts, np.arange(9).reshape(3, 3), cam, method=method)
    fid = r.face_id.numpy()
    assert fid[20, 20] == 1 and (fid == 0).sum() > 0 and (fid == 2).sum() == 0
    assert r.depth[20, 20].item() == pytest.approx(1.6, abs=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_batched_views_with_different_sizes_match_single_views(method):
    rng = np.random.default_rng(7)
    verts, faces = _random_triangles(rng, 30)
    cams = [_camera(True, 40, 24, az=10), _camera(False, 32, 56, az=200, el=-30), _camera(True, 48, 48, el=80)]
    batch = rasterize_views(verts, faces, cams, method=method, chunk=997)  # tiny chunks: exercises splitting
    for cam, r in zip(cams, batch):
        single = rasterize(verts, faces, cam, method=method)
        assert torch.equal(r.face_id, single.face_id)
        assert torch.equal(r.depth, single.depth)
        assert torch.allclose(r.bary, single.bary)


@pytest.mark.parametrize("method", METHODS)
def test_uv_raster_matches_brute_force(method):
    rng = np.random.default_rng(11)
    uv = rng.uniform(-0.1, 1.1, (60, 2))
    faces = rng.integers(0, 60, (25, 3))
    r = rasterize_uv(uv, faces, (40, 56), method=method)
    xy = np.stack([uv[:, 0] * 56, (1 - uv[:, 1]) * 40], axis=1)
    ref = screen_reference(xy, np.ones(60), faces, 40, 56, False, 0.0)
    _check(r, ref, 1e-6 if method == "numba" else 2e-4)


def test_interpolate_and_bad_input():
    cam = _camera(True, 16, 16, az=0.0, el=0.0)
    verts = np.array([[-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.0, 0.5, 0.0]])
    faces = np.array([[0, 1, 2]])
    r = rasterize(verts, faces, cam)
    pos = r.interpolate(torch.from_numpy(verts).float(), torch.from_numpy(faces))
    xy, _ = cam.project(pos[r.mask].double().numpy())
    ii, jj = np.nonzero(r.mask.numpy())
    np.testing.assert_allclose(xy, np.stack([jj, ii], 1) + 0.5, atol=1e-4)
    with pytest.raises(ValueError):
        rasterize(verts, np.array([[0, 1, 3]]), cam)
    with pytest.raises(ValueError):
        rasterize(verts[:, :2], faces, cam)
    with pytest.raises(ValueError):
        rasterize(verts, faces, cam, method="numba", device="meta")


@pytest.mark.cuda
@pytest.mark.parametrize("orthographic", [True, False])
def test_cuda_matches_brute_force_and_cpu(orthographic):
    rng = np.random.default_rng(5)
    verts, faces = _random_triangles(rng, 60)
    cams = [_camera(orthographic, 64, 48, az=a) for a in (0.0, 90.0, 215.0)]
    for cam, r in zip(cams, rasterize_views(verts, faces, cams, device="cuda")):
        assert r.face_id.is_cuda
        r = type(r)(r.face_id.cpu(), r.bary.cpu(), r.depth.cpu())
        _check(r, reference_raster(verts, faces, cam), 2e-4)
    big = _camera(orthographic, 512, 512)
    verts, faces = _random_triangles(rng, 3000, size=0.1)
    gpu = rasterize(verts, faces, big, device="cuda")
    cpu = rasterize(verts, faces, big, method="numba")
    assert (gpu.face_id.cpu() == cpu.face_id).float().mean() > 0.999
