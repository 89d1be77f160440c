import numpy as np
import pytest
import torch

from backend.mesh.camera import Camera
from backend.mesh.render import control_maps, render_geometry, render_textured, sample_bilinear
from shared.views import CANONICAL_VIEWS, make_view

from .meshes import quad, quad_mesh, sphere


def test_geometry_maps_of_a_sphere_match_ray_intersections():
    radius = 0.45
    verts, faces = sphere(radius, 64)
    cams = [Camera.from_view(v, 96) for v in CANONICAL_VIEWS] + [
        Camera.from_view(make_view("p", 30, 20, ortho_half_extent=None, fov_deg=40), 96)]
    maps = render_geometry(verts, faces, cams)
    for k, cam in enumerate(cams):
        mask = maps.mask[k].numpy()
        pos = maps.position[k].numpy()[mask]
        nrm = maps.normal[k].numpy()[mask]
        # points lie on the sphere (up to faceting), normals are radial and unit, depth agrees
        np.testing.assert_allclose(np.linalg.norm(pos, axis=1), radius, atol=2e-3)
        assert np.abs(nrm - pos / np.linalg.norm(pos, axis=1, keepdims=True)).max() < 0.02
        _, depth = cam.project(pos.astype(np.float64))
        np.testing.assert_allclose(depth, maps.depth[k].numpy()[mask], atol=1e-4)
        # every masked pixel's 3D point projects back onto that pixel's centre
        ii, jj = np.nonzero(mask)
        xy, _ = cam.project(pos.astype(np.float64))
        np.testing.assert_allclose(xy, np.stack([jj, ii], 1) + 0.5, atol=1e-3)
    # orthographic silhouette: a disc of the sphere's radius
    front = maps.mask[0].numpy()
    assert front.sum() == pytest.approx(np.pi * (radius / 1.1 * 96) ** 2, rel=0.03)


def test_control_maps_use_z_up_encoding_and_grey_background():
    quad_up = quad([0.0, 0.0, 0.1], 0.3, 0.3, [1, 0, 0], [0, 1, 0])  # faces +Z (glTF front)
    mesh = quad_mesh([quad_up])
    cam = Camera.from_view(CANONICAL_VIEWS[0], 32)
    ctrl = control_maps(render_geometry(mesh.vertices, mesh.faces, [cam], normals=mesh.normals))
    assert ctrl.shape == (1, 6, 32, 32)
    centre = ctrl[0, :, 16, 16].numpy()
    # glTF (x, y, z) -> Blender (x, -z, y); position + 0.5; normal +Z_gltf = -Y_blender
    pos_gltf = np.array([(16.5 / 32 * 2 - 1) * 0.55, (1 - 16.5 / 32 * 2) * 0.55, 0.1])
    np.testing.assert_allclose(centre[:3], [pos_gltf[0] + 0.5, -pos_gltf[2] + 0.5, pos_gltf[1] + 0.5], atol=1e-5)
    np.testing.assert_allclose(centre[3:], [0.5, 0.0, 0.5], atol=1e-6)
    assert (ctrl[0, :, 0, 0] == 0.5).all()


def test_textured_render_reads_the_texture_through_the_uvs():
    mesh = quad_mesh([quad([0.0, 0.0, 0.0], 0.5, 0.5, [1, 0, 0], [0, 1, 0])])
    mesh.uv[:] = [[0, 0], [1, 0], [1, 1], [0, 1]]  # whole texture on the quad
    tex = np.zeros((2, 2, 3), np.float32)
    tex[0, 0] = [1, 0, 0]  # row 0 is v = 1: top-left of the image is the quad's top-left
    cam = Camera.from_view(CANONICAL_VIEWS[0], 110)  # 100 px per metre
    r = render_textured(mesh, tex, [cam], background=0.25)
    img, mask = r.image[0].numpy(), r.mask[0].numpy()
    assert mask.sum() == 100 * 100
    np.testing.assert_allclose(img[6, 6], [1, 0, 0], atol=1e-6)  # inside the top-left texel's quarter
    np.testing.assert_allclose(img[104, 104], [0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(img[0, 0], [0.25] * 3)
    np.testing.assert_allclose(img[55, 55], [0.25, 0, 0], atol=0.02)  # bilinear at the middle


def test_sample_bilinear_against_numpy():
    rng = np.random.default_rng(3)
    image = rng.random((7, 9, 2)).astype(np.float32)
    x, y = rng.uniform(-1, 10, 50), rng.uniform(-1, 8, 50)
    got = sample_bilinear(torch.from_numpy(image), torch.from_numpy(x), torch.from_numpy(y)).numpy()
    fx, fy = np.clip(x - 0.5, 0, 8), np.clip(y - 0.5, 0, 6)
    x0, y0 = np.minimum(np.floor(fx).astype(int), 7), np.minimum(np.floor(fy).astype(int), 5)
    tx, ty = (fx - x0)[:, None], (fy - y0)[:, None]
    want = (image[y0, x0] * (1 - tx) * (1 - ty) + image[y0, x0 + 1] * tx * (1 - ty)
            + image[y0 + 1, x0] * (1 - tx) * ty + image[y0 + 1, x0 + 1] * tx * ty)
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.cuda
def test_cuda_geometry_maps_match_cpu():
    verts, faces = sphere(0.45, 64)
    cams = [Camera.from_view(v, 256) for v in CANONICAL_VIEWS]
    cpu = render_geometry(verts, faces, cams)
    gpu = render_geometry(verts, faces, cams, device="cuda")
    assert gpu.position.is_cuda
    same = (cpu.mask == gpu.mask.cpu()).float().mean()
    assert same > 0.999
    both = cpu.mask & gpu.mask.cpu()
    assert (cpu.position - gpu.position.cpu()).abs()[both].max() < 1e-3
    assert (control_maps(cpu) - control_maps(gpu).cpu()).abs().mean() < 1e-3
