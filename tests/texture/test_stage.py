"""The texture stage: conditioning maps, reference image, LOD chain, and the whole stage on CPU."""
import json

import numpy as np
import pytest
import torch
import trimesh

from backend.context import JobContext, JobSpec
from backend.mesh.camera import Camera
from backend.mesh.decimate import decimate
from backend.mesh.render import render_textured
from backend.mesh.uv import unwrap
from backend.texture.lod import lod_chain
from backend.texture.mv_pipeline import MultiViewPipeline
from backend.texture.reference import reference_image
from backend.texture.stage import TextureStage, conditioning, normalise, write_textured_glb
from shared.errors import BackendError
from shared.settings import defaults
from shared.views import CANONICAL_VIEWS
from tests.texture.tiny_weights import write_tiny_weights


def test_conditioning_maps_of_a_sphere_match_the_analytic_surface():
    sphere = trimesh.creation.uv_sphere(radius=1.0, count=[64, 64])
    verts, faces, _ = normalise(sphere.vertices, sphere.faces)
    r = 0.5  # the unit-box fit makes the extent 1
    size = 48
    control = conditioning(verts, faces, size, torch.device("cpu")).numpy()  # (6, 6, H, W)
    assert control.shape == (6, 6, size, size)
    j, i = np.meshgrid(np.arange(size), np.arange(size))
    x = ((j + 0.5) / size * 2 - 1) * 0.55
    y = (1 - (i + 0.5) / size * 2) * 0.55
    for view, maps in zip(CANONICAL_VIEWS, control):
        c2w = np.array(view.c2w_gl())
        right, up, back = c2w[:3, 0], c2w[:3, 1], c2w[:3, 2]
        # orthographic ray through each pixel centre, hitting the sphere on the camera's side
        inside = x ** 2 + y ** 2 < (0.95 * r) ** 2
        depth = np.sqrt(np.clip(r * r - x ** 2 - y ** 2, 0, None))
        p = x[..., None] * right + y[..., None] * up + depth[..., None] * back  # glTF world point
        zup = lambda v: np.stack([v[..., 0], -v[..., 2], v[..., 1]], axis=-1)  # noqa: E731
        want_pos = zup(p) + 0.5
        want_nrm = zup(p / r) * 0.5 + 0.5
        got = maps.transpose(1, 2, 0)
        np.testing.assert_allclose(got[inside][:, :3], want_pos[inside], atol=2e-3)
        np.testing.assert_allclose(got[inside][:, 3:], want_nrm[inside], atol=5e-3)
        outside = x ** 2 + y ** 2 > (1.05 * r) ** 2
        assert np.all(got[outside] == 0.5)  # grey background


def test_reference_image_is_recentred_scaled_and_composited_on_grey():
    rgb = np.zeros((200, 300, 3), np.uint8)
    rgb[..., 0] = 255
    alpha = np.zeros((200, 300), np.float32)
    alpha[20:60, 200:280] = 1.0  # an 80 x 40 object off to one side
    ref = reference_image(rgb, alpha, 100).numpy()
    assert ref.shape == (3, 100, 100)
    red = (ref[0] > 0.9) & (ref[1] < 0.1)
    rows, cols = np.nonzero(red)
    assert abs((cols.min() + cols.max()) / 2 - 49.5) <= 1 and abs((rows.min() + rows.max()) / 2 - 49.5) <= 1
    assert 85 <= cols.max() - cols.min() + 1 <= 90  # longer side (with the 1 px margin) -> 90 px
    np.testing.assert_allclose(ref[:, 0, 0], 0.5)
    with pytest.raises(BackendError) as err:
        reference_image(rgb, np.zeros((200, 300)), 100)
    assert err.value.code == "empty_foreground"


def test_lod_chain_shares_the_texture(assets):
    duck = trimesh.load(assets / "meshes" / "Duck.glb", force="mesh")
    mesh = unwrap(*decimate(*normalise(duck.vertices, duck.faces)[:2], 4000), 256)
    v, u = np.meshgrid(np.linspace(0, 1, 256), np.linspace(0, 1, 256), indexing="ij")
    # smooth in UV: a colour difference measures how far a surface point's UV moved
    texture = np.stack([0.5 + 0.5 * np.sin(4 * np.pi * u), 0.5 + 0.5 * np.cos(6 * np.pi * v), u * v], -1)
    lods = lod_chain(mesh, 2)
    assert [len(m.faces) for m in lods] == [len(mesh.faces) // 2, len(mesh.faces) // 4]
    cams = [Camera.from_view(v, 96) for v in CANONICAL_VIEWS]
    full = render_textured(mesh, texture, cams)
    for level, lod in enumerate(lods, start=1):
        coarse = render_textured(lod, texture, cams)
        both = full.mask & coarse.mask
        diff = (full.image - coarse.image).abs().amax(-1)[both]
        shuffled = lod.__class__(lod.vertices, lod.faces, lod.uv[::-1].copy(), lod.vmapping, lod.normals)
        control = (full.image - render_textured(shuffled, texture, cams).image).abs().amax(-1)[both]
        # most pixels keep their UV; the seams of this small atlas move a little, more at each level
        # (measured: median 0.001 / 0.016, mean 0.04 / 0.14 against 0.6 for scrambled UVs)
        assert diff.median() < 0.01 * 4 ** (level - 1) and diff.mean() < 0.1 * level ** 1.6 * control.mean()


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    w = write_tiny_weights(tmp_path_factory.mktemp("weights"))
    stage = TextureStage(MultiViewPipeline.load(str(w.base), str(w.vae), str(w.step1x)))
    return stage


def test_whole_stage_textures_a_real_mesh_on_cpu(stage, assets, tmp_path):
    mesh = trimesh.load(assets / "meshes" / "Duck.glb", force="mesh")
    settings = defaults()
    # tiny sizes: the weights are tiny too (the schema's minimums are for real use)
    settings.update(view_resolution=64, texture_resolution=256, face_count=1200, texture_steps=4, lod_levels=1)
    events = []
    ctx = JobContext(JobSpec("job", tmp_path / "duck.glb", settings), tmp_path,
                     on_progress=lambda *a: events.append(("progress",) + a[:3]),
                     on_artifact=lambda kind, paths: events.append(("artifact", kind, len(paths))))
    rgb = np.full((120, 90, 3), (200, 150, 40), np.uint8)
    alpha = np.zeros((120, 90), np.float32)
    alpha[10:110, 15:75] = 1
    out = stage.run(ctx, mesh.vertices, mesh.faces, rgb, alpha)
    assert out.texture.shape == (256, 256, 3) and out.texture.dtype == np.uint8
    assert len(out.mesh.faces) <= 1200 and out.views.shape == (6, 3, 64, 64)
    extent = out.mesh.vertices.max(0) - out.mesh.vertices.min(0)
    assert abs(extent.max() - 1) < 1e-4 and np.abs(out.mesh.vertices.max(0) + out.mesh.vertices.min(0)).max() < 1e-4
    stages = [e[1] for e in events if e[0] == "progress"]
    assert stages.index("mesh") < stages.index("texture") < stages.index("bake")
    assert ("artifact", "views", 6) in events
    # the texture is the baked views, not a constant fill
    assert out.texture.reshape(-1, 3).std(0).max() > 2

    path = write_textured_glb(ctx.spec.output, out, settings, source_image="duck.png", name="duck")
    scene = trimesh.load(path)
    assert set(scene.geometry) == {"duck", "duck_LOD1"}
    geom = scene.geometry["duck"]
    assert geom.visual.material.baseColorTexture.size == (256, 256)
    assert geom.visual.material.metallicFactor == 0.0
    gltf = json.loads(path.read_bytes()[20:20 + int.from_bytes(path.read_bytes()[12:16], "little")])
    assert gltf["asset"]["extras"]["engine"] == "step1x3d"


def test_stage_cancel_leaves_no_output(stage, assets, tmp_path):
    mesh = trimesh.load(assets / "meshes" / "Duck.glb", force="mesh")
    settings = defaults()
    settings.update(view_resolution=64, texture_resolution=256, face_count=800, texture_steps=4)
    ctx = JobContext(JobSpec("job", tmp_path / "x.glb", settings), tmp_path)
    ctx.on_progress = lambda stage_, step, total, msg: ctx.cancel_event.set() if stage_ == "texture" else None
    with pytest.raises(BackendError) as err:
        stage.run(ctx, mesh.vertices, mesh.faces, np.zeros((8, 8, 3), np.uint8), np.ones((8, 8)))
    assert err.value.code == "cancelled" and not (tmp_path / "x.glb").exists()


def test_a_mesh_without_usable_faces_is_rejected():
    with pytest.raises(BackendError) as err:
        normalise(np.zeros((3, 3)), np.array([[0, 1, 2]]))
    assert err.value.code == "input_unreadable"


def test_normalise_keeps_small_parts_of_a_given_mesh():
    big, small = trimesh.creation.icosphere(3), trimesh.creation.icosphere(1, radius=0.02)
    both = trimesh.util.concatenate([big, small.apply_translation([3.0, 0, 0])])
    v, f, _ = normalise(both.vertices, both.faces)
    assert len(f) == len(big.faces) + len(small.faces)  # a ring or a button is not a floater
