"""Real assets rendered by the bpy module (through the batch driver, two persistent workers):
every view present, masks non-empty, unit normals, positions on the depth rays and on the mesh,
cameras that reproject the mesh onto the mask (from meta.json and from shared/views.py), analytic
sphere normals, textures in colour and albedo."""
import hashlib
import json

import numpy as np
import pytest
import scipy.ndimage as ndi

from backend.data import renders
from blender_render.cameras import build_views
from blender_render.options import RenderOptions
from shared import views

from .helpers import distance_to_mesh, icosphere_ply, load_blender_frame, needs_bpy, run

pytestmark = needs_bpy
ASSETS = ["Duck.glb", "BoxTextured.glb", "monkey.glb", "chair_model.obj", "bunny.ply", "featuretype.STL"]
RES = 64
EXTRA = 2  # random perspective views on top of the canonical six


@pytest.fixture(scope="module")
def rendered(assets, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("render")
    meshes = assets / "meshes"
    sources = [meshes / a for a in ASSETS] + [icosphere_ply(tmp / "sphere.ply")]
    listing = tmp / "list.txt"
    listing.write_text("\n".join(str(s) for s in sources) + "\n")
    out = tmp / "out"
    proc = run(["-m", "blender_render.batch", str(listing), str(out), "--workers", "2", "--resolution", str(RES),
                "--samples", "2", "--passes", "all", "--exr", "--extra-views", str(EXTRA),
                "--extra-projection", "persp", "--seed", "7"], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    by_name = {}
    for d in out.iterdir():
        if (d / "meta.json").is_file():
            by_name[renders.load_meta(d)["source"]["name"]] = d
    return {"out": out, "dirs": by_name, "sources": {s.name: s for s in sources}}


def _views(obj_dir, exr=False):
    meta = renders.load_meta(obj_dir)
    return meta, [renders.load_view(obj_dir, i, meta, exr=exr) for i in range(len(meta["views"]))]


def _project(points, view_meta):
    """Independent of blender_render.cameras: OpenCV K and world-to-camera from meta.json."""
    k, w2c = np.array(view_meta["intrinsics"]), np.array(view_meta["w2c_opencv"])
    pc = points @ w2c[:3, :3].T + w2c[:3, 3]
    xy = pc[:, :2] if view_meta["projection"] == "ortho" else pc[:, :2] / pc[:, 2:]
    return xy * [k[0, 0], k[1, 1]] + [k[0, 2], k[1, 2]], pc[:, 2]


def _normalised_mesh(rendered, name):
    meta = renders.load_meta(rendered["dirs"][name])
    v, f = load_blender_frame(rendered["sources"][name])
    n = meta["normalization"]
    return n["scale"] * (v + np.array(n["offset"])), f


def test_every_object_and_view_is_present_and_recorded(rendered):
    assert set(rendered["dirs"]) == set(ASSETS) | {"sphere.ply"}
    log = [json.loads(line) for line in (rendered["out"] / "render_log.jsonl").read_text().splitlines()]
    oks = [r["id"] for r in log if r["event"] == "object" and r["status"] == "ok"]
    assert sorted(oks) == sorted(d.name for d in rendered["dirs"].values())
    expected = list(views.VIEW_NAMES) + [f"random_{i:03d}" for i in range(EXTRA)]
    for name, d in rendered["dirs"].items():
        meta = renders.load_meta(d)
        assert meta["status"] == "ok" and meta["failures"] == []
        assert [v["name"] for v in meta["views"]] == expected
        assert meta["blender"]["version"].startswith("5.")
        assert meta["source"]["sha256"] == hashlib.sha256(rendered["sources"][name].read_bytes()).hexdigest()
        assert {"import", "geometry_render", "color_render", "total"} <= set(meta["timings"])
        assert meta["seed"] == 7 and meta["render"]["lighting"]["type"] == "uniform"
        for v in meta["views"]:
            for f in v["files"].values():
                assert (d / f).is_file(), f
        assert not list(d.glob(".*")), "staging leftovers inside the object folder"
    # the recorded options rebuild the very same cameras
    meta = renders.load_meta(rendered["dirs"]["Duck.glb"])
    cams = build_views(RenderOptions.from_dict(meta["options"]))
    for cam, v in zip(cams, meta["views"]):
        np.testing.assert_allclose(cam.c2w_opencv(), v["c2w_opencv"])
        assert (cam.view.azimuth_deg, cam.view.elevation_deg) == (v["azimuth_deg"], v["elevation_deg"])
    assert meta["views"][-1]["projection"] == "persp" and meta["views"][-1]["fov_deg"] == 40.0


def test_masks_nonempty_and_normals_unit_inside(rendered):
    for name, d in rendered["dirs"].items():
        _, png = _views(d)
        _, exr = _views(d, exr=True)
        for vp, ve in zip(png, exr):
            assert vp.mask.mean() > 0.003, (name, vp.meta["name"])
            np.testing.assert_array_equal(np.isfinite(ve.depth), vp.mask)
            assert np.abs(np.linalg.norm(ve.normal[ve.mask], axis=-1) - 1).max() < 1e-5
            assert np.abs(np.linalg.norm(vp.normal[vp.mask], axis=-1) - 1).max() < 1e-4
            # PNG = EXR within half a 16-bit step (plus float32 noise)
            assert np.abs(vp.normal - ve.normal)[vp.mask].max() <= 1 / 65535 + 1e-6
            assert np.abs(vp.position - ve.position)[vp.mask].max() <= 0.5 / 65535 + 1e-6
            lo, hi = vp.meta["depth_png_range"]
            assert np.abs(vp.depth[vp.mask] - ve.depth[vp.mask]).max() <= (hi - lo) / 65534 / 2 + 1e-6


def test_positions_agree_with_depth_and_camera(rendered):
    for name, d in rendered["dirs"].items():
        _, exr = _views(d, exr=True)
        for v in exr:
            rows, cols = np.nonzero(v.mask)
            k, c2w = v.intrinsics, v.c2w_opencv
            x, y, z = (cols + 0.5 - k[0, 2]) / k[0, 0], (rows + 0.5 - k[1, 2]) / k[1, 1], v.depth[v.mask]
            if not v.orthographic:
                x, y = x * z, y * z
            world = np.stack([x, y, z], 1) @ c2w[:3, :3].T + c2w[:3, 3]
            err = np.abs(world - v.position[v.mask]).max(1)
            # float32 passes; grazing pixels of thin parts reach a few 1e-5 in perspective views
            assert np.percentile(err, 99) < 1e-5 and err.max() < 1e-4, (name, v.meta["name"], err.max())
            uv, depth = _project(v.position[v.mask], v.meta)
            assert np.abs(uv - np.stack([cols + 0.5, rows + 0.5], 1)).max() < 0.005


@pytest.mark.parametrize("name", ["Duck.glb", "bunny.ply", "monkey.glb", "featuretype.STL", "sphere.ply"])
def test_meta_cameras_reproject_mesh_vertices_onto_the_mask(rendered, name):
    verts, _ = _normalised_mesh(rendered, name)
    _, png = _views(rendered["dirs"][name])
    for v in png:
        uv, depth = _project(verts, v.meta)
        assert np.all(depth > 0)
        ij = np.floor(uv[:, ::-1]).astype(int)
        inside = np.all((ij >= 0) & (ij < RES), axis=1)
        assert inside.mean() > 0.999, (name, v.meta["name"])
        grown = ndi.binary_dilation(v.mask, iterations=1)
        hit = grown[ij[inside, 0], ij[inside, 1]]
        # sub-pixel parts (the CAD part's thin ribs) can fall between pixel centres
        assert hit.mean() > 0.99, (name, v.meta["name"], hit.mean())
        # the rendered surface is never behind a vertex: the nearest surface around its pixel is
        # at most a pixel's slope deeper than the vertex
        near = ndi.minimum_filter(np.where(v.mask, v.depth, np.inf), size=3)[ij[inside, 0], ij[inside, 1]]
        pixel = 1.1 / RES if v.orthographic else depth[inside] * 2 * np.tan(np.radians(20)) / RES
        assert np.mean(near <= depth[inside] + pixel) > 0.995, (name, v.meta["name"])


@pytest.mark.parametrize("name", ["Duck.glb", "bunny.ply", "monkey.glb", "sphere.ply", "BoxTextured.glb"])
def test_rendered_positions_lie_on_the_mesh(rendered, name):
    verts, faces = _normalised_mesh(rendered, name)
    _, exr = _views(rendered["dirs"][name], exr=True)
    for v in exr[:6:2] + exr[-1:]:
        pts = v.position[v.mask]
        pts = pts[np.random.default_rng(0).permutation(len(pts))[:300]]
        dist = distance_to_mesh(pts, verts, faces)
        assert np.percentile(dist, 99) < 1e-5 and dist.max() < 1e-3, (name, v.meta["name"], dist.max())


def test_canonical_cameras_agree_with_shared_views(rendered):
    """Project the normalised mesh with shared/views.py's glTF-frame OpenGL cameras."""
    to_gltf = np.array(views.BLENDER_TO_GLTF)[:3, :3]
    for name in ("Duck.glb", "monkey.glb"):
        verts, _ = _normalised_mesh(rendered, name)
        meta, png = _views(rendered["dirs"][name])
        pts = verts @ to_gltf.T
        for view, v in zip(views.CANONICAL_VIEWS, png):
            assert v.meta["name"] == view.name
            np.testing.assert_allclose(v.meta["c2w_gltf"], view.c2w_gl())
            np.testing.assert_allclose(v.meta["c2w_blender"], np.array(views.GLTF_TO_BLENDER) @ np.array(view.c2w_gl()))
            w2c = np.array(view.w2c_gl())
            cam = pts @ w2c[:3, :3].T + w2c[:3, 3]
            ndc = np.c_[cam, np.ones(len(cam))] @ np.array(view.projection_gl()).T
            ij = np.floor(np.stack([(1 - ndc[:, 1]) / 2 * RES, (ndc[:, 0] + 1) / 2 * RES], 1)).astype(int)
            grown = ndi.binary_dilation(v.mask, iterations=1)
            assert grown[ij[:, 0], ij[:, 1]].mean() > 0.995, (name, view.name)
            # and the silhouette spans the same pixels as the projected mesh
            rows, cols = np.nonzero(v.mask)
            extent = np.array([rows.min(), rows.max(), cols.min(), cols.max()])
            projected = np.array([ij[:, 0].min(), ij[:, 0].max(), ij[:, 1].min(), ij[:, 1].max()])
            assert np.abs(extent - projected).max() <= 1, (name, view.name, extent, projected)


def test_sphere_normals_match_the_analytic_normals(rendered):
    _, exr = _views(rendered["dirs"]["sphere.ply"], exr=True)
    _, png = _views(rendered["dirs"]["sphere.ply"])
    for ve, vp in zip(exr, png):
        p = ve.position[ve.mask]
        analytic = p / np.linalg.norm(p, axis=1, keepdims=True)  # the sphere is centred by normalisation
        for n in (ve.normal[ve.mask], vp.normal[vp.mask]):
            angle = np.degrees(np.arccos(np.clip((n * analytic).sum(1) / np.linalg.norm(n, axis=1), -1, 1)))
            assert angle.max() < 1.0 and angle.mean() < 0.3, (ve.meta["name"], angle.max(), angle.mean())
        # the front-facing hemisphere only: normals point back at the camera
        toward = -np.array(ve.meta["c2w_opencv"])[:3, 2]
        if ve.orthographic:
            assert ((ve.normal[ve.mask] @ toward) > -1e-3).all()


def test_colour_albedo_and_mr_of_a_textured_asset(rendered):
    meta, png = _views(rendered["dirs"]["Duck.glb"])
    for v in png:
        alpha = v.color[..., 3]
        solid = (alpha > 0.99) & ndi.binary_erosion(v.mask, iterations=2)
        assert solid.sum() > 50
        r, g, b = (v.color[..., c][solid].mean() for c in range(3))
        assert r > 0.6 and g > 0.45 and b < 0.25, (v.meta["name"], r, g, b)  # a yellow duck
        ar, ag, ab = (v.albedo[..., c][solid].mean() for c in range(3))
        assert ar > 0.7 and ag > 0.5 and ab < 0.2
        np.testing.assert_allclose(v.mr[..., 0][solid], 1.0)  # glTF layout: R unused (1)
        assert v.meta["checks"]["color_coverage"] > 0.95
    stl = renders.load_meta(rendered["dirs"]["featuretype.STL"])
    assert any("without a material" in w for w in stl["warnings"])
    box = renders.load_meta(rendered["dirs"]["BoxTextured.glb"])
    assert box["scene"]["images"] >= 1 and box["scene"]["missing_textures"] == []
