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
    assert extras["ai_generated"] is True and extras["engine"] == "preview" and extras["seed"] == 11
    assert extras["settings"]["face_count"] == 3000
    assert not list(tmp_path.glob(".out.glb.*"))  # no temporary file left behind


def test_untextured_output(tmp_path):
    rgb, _ = striped_ellipse(128)
    Image.fromarray(rgb).save(tmp_path / "e.png")
    result, _ = _generate(tmp_path, tmp_path / "e.png", texture=False, face_count=2000)
    mesh, texture = load_textured(result.path)
    assert texture is None and 0 < len(mesh.faces) <= 2000
