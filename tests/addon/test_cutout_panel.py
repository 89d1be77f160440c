"""The panel shows the cut-out as soon as an image is picked, before Generate (bpy module, the real
backend's `prepare-image`, CPU, no weights)."""
import pytest
from PIL import Image

from tests.backend.synth import photo_scene

from .blender_run import ROOT, run_bpy

SCRIPT = """
from addon.blender import panel, cutout
prefs.backend_dir = {root!r}
props = bpy.context.scene.step1x3d

from types import SimpleNamespace
from unittest import mock

def draw():  # the main panel into a recording layout: the label texts drawn, at any depth
    fake = SimpleNamespace(layout=mock.MagicMock())
    panel.STEP1X3D_PT_main.draw(fake, bpy.context)
    return [c.kwargs.get("text") for c in fake.layout.mock_calls if c[0].split(".")[-1] == "label"]

props.image_path = {photo!r}
props.foreground_ratio = 0.85
first_labels = draw()  # picked: the cut-out starts, the picture itself shows meanwhile
cutout.CUTOUTS.wait()
labels = draw()
entries = list(cutout.CUTOUTS._entries.values())
props.image_path = {noise!r}  # a photo the fallback cannot separate: the panel says why
draw()
cutout.CUTOUTS.wait()
bad_labels = draw()
result(first=first_labels, labels=labels, bad=bad_labels, state=[e.state for e in entries],
       checker=entries[0].checker, cut=entries[0].cutout, ratio=entries[0].ratio, method=entries[0].method,
       thumbnails=list(RUNTIME._previews.keys()), state_backend=RUNTIME.state)
"""


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cutout")
    rgb, _ = photo_scene("wall_floor", 200)
    photo, noise = tmp / "cup.png", tmp / "noise.png"
    Image.fromarray(rgb).save(photo)
    import numpy as np

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(noise)
    return run_bpy(SCRIPT.format(root=str(ROOT), photo=str(photo), noise=str(noise)), tmp)


def test_panel_shows_the_cutout_before_generating(outcome):
    r = outcome
    assert "Cutting out the object..." in r["first"]
    assert r["state"] == ["ready"] and r["method"] == "grabcut"
    assert r["ratio"] == pytest.approx(0.85, abs=0.02)
    assert f"Cut-out: fills 85% of the frame (ratio {r['ratio']:.2f}), grabcut" in r["labels"]
    assert any(key.split(":")[0] == r["checker"] for key in r["thumbnails"]), "the thumbnail is the cut-out"
    checker, cut = Image.open(r["checker"]), Image.open(r["cut"])
    assert cut.mode == "RGBA" and checker.mode == "RGB" and checker.size == cut.size == (200, 200)
    assert checker.getpixel((0, 0)) != checker.getpixel((200 // 16, 0)), "checkerboard behind the transparency"
    assert r["state_backend"] == "stopped", "the preview needs no running backend"


def test_panel_explains_a_cutout_that_failed(outcome):
    text = " ".join(t for t in outcome["bad"] if t)
    assert "could not be cut out" in text or "could not tell" in text
