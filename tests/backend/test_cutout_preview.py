"""The cut-out preview (`prepare-image`, the server's `prepare_image` op) and photos through the
preview engine: what an artist sees before generating, and that everyday photos now generate."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared import protocol
from shared.errors import CODES

from .glb import load_textured
from .synth import photo_scene
from .test_cli import run_cli
from .test_preview import _generate
from .test_server import backend  # noqa: F401  (the fixture: a real `serve` subprocess)


@pytest.fixture
def photo(tmp_path) -> Path:
    rgb, _ = photo_scene("wall_floor", 240)
    path = tmp_path / "cup photo.jpg"
    Image.fromarray(rgb[:, 20:]).save(path, quality=92)  # not square, lossy, a space in the name
    return path


def test_prepare_image_writes_what_the_models_see(tmp_path, photo):
    out, checker = tmp_path / "cut.png", tmp_path / "chk.png"
    proc = run_cli("prepare-image", str(photo), "-o", str(out), "--checker", str(checker), "--json",
                   "--foreground-ratio", "0.8", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["path"] == str(out) and info["method"] == "grabcut" and info["confidence"] >= 0.5
    assert "python -m backend download" in info["note"]
    cut = Image.open(out)
    assert cut.mode == "RGBA" and cut.size == (240, 240) == (info["size"],) * 2
    x1, y1, x2, y2 = cut.getchannel("A").getbbox()
    assert info["foreground_ratio"] == pytest.approx(max(x2 - x1, y2 - y1) / 240, abs=1e-3)
    assert info["foreground_ratio"] <= 0.8 + 1e-3  # framed with the given setting
    a = np.asarray(cut)
    assert a[0, 0, 3] == 0 and a[120, 110, 3] == 255  # transparent corner, opaque cup
    board = np.asarray(Image.open(checker))
    assert board.shape == (240, 240, 3) and len({tuple(board[0, 0]), tuple(board[0, 240 // 16])}) == 2

    plain = run_cli("prepare-image", str(photo), "-o", str(out))
    assert plain.returncode == 0 and "foreground ratio 0.95" in plain.stdout and "grabcut" in plain.stdout


@pytest.mark.parametrize("kind", ["missing", "broken", "noise"])
def test_prepare_image_refusals_name_the_file(tmp_path, kind):
    path = tmp_path / f"{kind}.png"
    if kind == "broken":
        path.write_text("not an image")
    elif kind == "noise":
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    proc = run_cli("prepare-image", str(path), "-o", str(tmp_path / "cut.png"))
    code = {"missing": "input_not_found", "broken": "input_unreadable", "noise": "background_unclear"}[kind]
    assert proc.returncode == CODES[code].exit_status and f"[{code}]" in proc.stderr and str(path) in proc.stderr
    assert not (tmp_path / "cut.png").exists()


def test_server_answers_prepare_image(backend, photo, tmp_path):  # noqa: F811
    assert backend.next(timeout=120).kind == "ready"
    out = tmp_path / "cut.png"
    backend.send(protocol.request("prepare_image", job="p1", image=str(photo), output=str(out),
                                  checker=str(tmp_path / "chk.png"), settings={"foreground_ratio": 0.9}))
    backend.send(protocol.request("prepare_image", job="p2", image=str(tmp_path / "nope.png"), output=str(out)))
    backend.send(protocol.request("status"))  # answered while the previews run
    answers = {}
    while len(answers) < 2:
        ev = backend.next(timeout=120)
        if ev.kind in ("cutout", "error"):
            answers[ev.get("job")] = ev
    ok, bad = answers["p1"], answers["p2"]
    assert ok.kind == "cutout" and ok.get("path") == str(out) and ok.get("method") == "grabcut"
    assert ok.get("foreground_ratio") == pytest.approx(0.9, abs=0.02) and Image.open(out).mode == "RGBA"
    assert bad.kind == "error" and bad.get("code") == "input_not_found" and "nope.png" in bad.get("message")


@pytest.mark.parametrize("scene", ["silhouette_3pct", "wall_floor", "rug_cat"])
def test_photos_and_silhouettes_give_a_textured_glb_on_cpu(tmp_path, scene):
    """Refused before the background remover (`foreground_fills_frame`); now a textured GLB."""
    rgb, mask = photo_scene(scene, 200)
    path = tmp_path / f"{scene}.jpg"
    Image.fromarray(rgb).save(path, quality=92)
    result, stages = _generate(tmp_path, path, texture_resolution=256, face_count=3000)
    mesh, texture = load_textured(result.path)
    assert result.metadata["textured"] and texture is not None and len(mesh.faces) > 100
    assert result.metadata["background"]["method"] == "grabcut"
    extent = mesh.vertices.max(0) - mesh.vertices.min(0)
    rows, cols = np.nonzero(mask)
    aspect = (np.ptp(cols) + 1) / (np.ptp(rows) + 1)
    assert extent[0] / extent[1] == pytest.approx(aspect, rel=0.1), "the mesh has the object's outline"
