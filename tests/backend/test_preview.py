import numpy as np
import pytest
from PIL import Image

from backend.context import JobContext
from backend.engines.preview.engine import PreviewEngine
from backend.jobs import make_spec
from backend.mesh.camera import Camera
from backend.mesh.render import render_textured
from shared.views import CANONICAL_VIEWS

from .glb import gltf_json, load_textured
from .synth import striped_ellipse

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def _crop_resize(a: np.ndarray, mask: np.ndarray, size: int = 128) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    crop = a[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    img = Image.fromarray((crop * 255).astype(np.uint8) if crop.dtype != np.uint8 else crop)
    return np.asarray(img.resize((size, size), Image.BILINEAR), np.float32) / 255.0


def _generate(tmp_path, image_path, **settings):
    spec = make_spec(image=str(image_path), output=str(tmp_path / "out.glb"), engine="preview", settings=settings)
    stages = []
    ctx = JobContext(spec=spec, work_dir=tmp_path, on_progress=lambda st, i, n, m: stages.append((st, i, n)))
    result = PreviewEngine().run(ctx)
    return result, stages


def _front(mesh, texture, size=384):
    r = render_textured(mesh, texture, [Camera.from_view(CANONICAL_VIEWS[0], size)], background=1.0)
    return r.image[0].numpy(), r.mask[0].numpy()


@pytest.mark.parametrize("source", ["ellipse", "robot"])
def test_front_view_matches_the_input(tmp_path, source):
    if source == "ellipse":
        rgb, fg = striped_ellipse(256)
        path = tmp_path / "ellipse.png"
        Image.fromarray(rgb).save(path)
        colour, mask = rgb.astype(np.float32) / 255.0, fg
    else:
        path = ROOT / "examples" / "robot.png"
        rgba = np.asarray(Image.open(path).convert("RGBA"))
        colour, mask = rgba[..., :3].astype(np.float32) / 255.0, rgba[..., 3] > 127
    result, stages = _generate(tmp_path, path, texture_resolution=1024, face_count=20000)
    assert [s[0] for s in stages][:2] == ["preprocess", "geometry"] and stages[-1][1] == stages[-1][2]
    mesh, texture = load_textured(result.path)
    assert texture is not None and texture.shape == (1024, 1024, 3)
    assert len(mesh.faces) <= 20000
    bounds = np.stack([mesh.vertices.min(0), mesh.vertices.max(0)])
    np.testing.assert_allclose(bounds.mean(0), 0.0, atol=1e-3)  # centred
    assert (bounds[1] - bounds[0]).max() == pytest.approx(1.0, abs=1e-3)  # largest extent 1 m

    image, rendered = _front(mesh, texture)
    want, got = _crop_resize(mask.astype(np.float32), mask) > 0.5, _crop_resize(rendered.astype(np.float32), rendered) > 0.5
    assert (want & got).sum() / (want | got).sum() > 0.9
    inside = want & got
    inside = np.asarray(Image.fromarray(inside).resize((128, 128)), bool)
    from scipy import ndimage
    inside = ndimage.binary_erosion(inside, iterations=4)
    err = np.abs(_crop_resize(colour, mask) - _crop_resize(image, rendered))[inside].mean()
    assert err < 0.05, err


def test_glb_carries_pbr_material_and_provenance(tmp_path):
    rgb, _ = striped_ellipse(128)
    Image.fromarray(rgb).save(tmp_path / "e.png")
    result, _ = _generate(tmp_path, tmp_path / "e.png", texture_resolution=256, face_count=3000, seed=11)
    tree = gltf_json(result.path)
    pbr = tree["materials"][0]["pbrMetallicRoughness"]
    assert pbr["metallicFactor"] == 0.0 and pbr["roughnessFactor"] == 1.0 and "baseColorTexture" in pbr
    assert "NORMAL" in tree["meshes"][0]["primitives"][0]["attributes"]
    extras = tree["asset"]["extras"]
    assert extras["ai_generated"] is True and extras["engine"] == "preview"
    assert extras["seed"] is None and extras["ignored_settings"]["seed"] == 11  # nothing in the preview is random
    assert extras["settings"]["face_count"] == 3000
    assert not list(tmp_path.glob(".out.glb.*"))  # no temporary file left behind


def test_untextured_output(tmp_path):
    rgb, _ = striped_ellipse(128)
    Image.fromarray(rgb).save(tmp_path / "e.png")
    result, _ = _generate(tmp_path, tmp_path / "e.png", texture=False, face_count=2000)
    mesh, texture = load_textured(result.path)
    assert texture is None and 0 < len(mesh.faces) <= 2000


def _given_mesh(tmp_path):
    """An off-centre, unevenly scaled sphere in another unit system, written as OBJ (+Y up)."""
    import trimesh

    sphere = trimesh.creation.icosphere(3)
    vertices = sphere.vertices * [3.0, 5.0, 2.0] + [10.0, -4.0, 7.0]
    path = tmp_path / "given.obj"
    trimesh.Trimesh(vertices, sphere.faces, process=False).export(path)
    return path, vertices, np.asarray(sphere.faces)


def test_given_mesh_is_the_geometry_and_gets_the_image_projected(tmp_path):
    import trimesh

    from backend.mesh.frame import fit_unit_box

    rgb, _ = striped_ellipse(256)
    Image.fromarray(rgb).save(tmp_path / "e.png")
    path, vertices, faces = _given_mesh(tmp_path)
    spec = make_spec(image=str(tmp_path / "e.png"), mesh=str(path), output=str(tmp_path / "out.glb"),
                     engine="preview", settings={"texture_resolution": 512})
    result = PreviewEngine().run(JobContext(spec=spec, work_dir=tmp_path))
    mesh, texture = load_textured(result.path)
    # the GLB's geometry is the given mesh after the output normalisation (centred, largest extent 1)
    want = fit_unit_box(vertices).apply(vertices)
    assert len(mesh.faces) == len(faces)
    got_triangles = np.unique(np.round(mesh.vertices[mesh.faces], 4).reshape(-1, 9), axis=0)
    want_triangles = np.unique(np.round(want[faces], 4).reshape(-1, 9), axis=0)
    np.testing.assert_array_equal(got_triangles, want_triangles)
    assert len(trimesh.load(result.path).geometry) == 1
    # the image's colour bands reach the mesh: top of the front view red, middle green, bottom blue
    image, rendered = _front(mesh, texture, 256)
    rows = np.nonzero(rendered.any(1))[0]
    top, bottom = rows.min(), rows.max()
    for frac, band in ((0.15, 0), (0.5, 1), (0.85, 2)):
        row = int(top + frac * (bottom - top))
        colours = image[row][rendered[row]]
        assert colours.mean(0).argmax() == band, (frac, colours.mean(0))
    extras = gltf_json(result.path)["asset"]["extras"]
    assert extras["model"] == "given mesh" and "face_count" in extras["ignored_settings"]
    assert "face_count" not in extras["settings"]


@pytest.mark.parametrize("case", ["missing", "empty", "truncated", "not_a_mesh", "text", "points"])
def test_unreadable_meshes_are_refused_before_any_work(tmp_path, case):
    import trimesh

    from shared.errors import BackendError

    rgb, _ = striped_ellipse(64)
    Image.fromarray(rgb).save(tmp_path / "e.png")
    good = trimesh.creation.icosphere(2)
    if case == "missing":
        path, code = tmp_path / "nothing.glb", "input_not_found"
    elif case == "empty":
        path, code = tmp_path / "empty.obj", "input_unreadable"
        path.write_bytes(b"")
    elif case == "truncated":
        path, code = tmp_path / "cut.glb", "input_unreadable"
        data = good.export(file_type="glb")
        path.write_bytes(data[: len(data) // 2])
    elif case == "not_a_mesh":
        path, code = tmp_path / "image.ply", "input_unreadable"
        path.write_bytes((tmp_path / "e.png").read_bytes())
    elif case == "text":
        path, code = tmp_path / "notes.txt", "input_unreadable"
        path.write_text("v 0 0 0\n")
    else:
        path, code = tmp_path / "points.ply", "input_unreadable"
        trimesh.PointCloud(good.vertices).export(path)
    with pytest.raises(BackendError) as info:
        make_spec(image=str(tmp_path / "e.png"), mesh=str(path), output=str(tmp_path / "out.glb"), engine="preview")
    assert info.value.code == code, info.value.message
    assert not (tmp_path / "out.glb").exists()


def test_provenance_lists_applied_and_ignored_settings_and_lods_are_written(tmp_path):
    rgb, _ = striped_ellipse(128)
    Image.fromarray(rgb).save(tmp_path / "e.png")
    result, _ = _generate(tmp_path, tmp_path / "e.png", texture_resolution=256, face_count=3000, lod_levels=2,
                          geometry_steps=7, model="base", seed=11)
    tree = gltf_json(result.path)
    extras = tree["asset"]["extras"]
    assert extras["settings"]["lod_levels"] == 2 and extras["settings"]["face_count"] == 3000
    for name in ("geometry_steps", "model", "seed", "texture_steps", "octree_resolution"):
        assert name in extras["ignored_settings"] and name not in extras["settings"], name
    assert extras["ignored_settings"]["geometry_steps"] == 7 and extras["seed"] is None
    names = sorted(node["name"] for node in tree["nodes"] if "mesh" in node)
    assert names == ["e", "e_LOD1", "e_LOD2"]
    assert result.metadata["lods"] and len(result.metadata["lods"]) == 2
    assert result.metadata["lods"][0] < result.metadata["faces"] and result.metadata["lods"][1] < result.metadata["lods"][0]
    assert result.metadata["ignored_settings"] == extras["ignored_settings"]


def test_lod_chain_stops_where_a_mesh_cannot_be_coarsened():
    """Separate triangles are all boundary, which the decimation keeps: no level would be coarser."""
    from backend.mesh.uv import unwrap
    from backend.texture.lod import lod_chain

    rng = np.random.default_rng(0)
    corners = rng.uniform(-1, 1, (200, 1, 3)) + rng.uniform(-0.05, 0.05, (200, 3, 3))
    mesh = unwrap(corners.reshape(-1, 3), np.arange(600).reshape(-1, 3), 256)
    chain = lod_chain(mesh, 2)
    assert all(len(b.faces) < len(a.faces) for a, b in zip([mesh, *chain], chain))
    assert chain == []


def test_same_silhouette_gives_the_same_mesh():
    """The medial axis breaks ties at random unless told otherwise: the same image must give the
    same mesh every run (a rectangle with a notch has many tied skeleton pixels)."""
    from backend.engines.preview.inflate import inflate

    alpha = np.zeros((96, 128), np.float32)
    alpha[20:76, 16:112] = 1.0
    alpha[40:56, 60:68] = 0.0
    runs = [inflate(alpha, grid=64) for _ in range(3)]
    for other in runs[1:]:
        np.testing.assert_array_equal(other.vertices, runs[0].vertices)
        np.testing.assert_array_equal(other.faces, runs[0].faces)
