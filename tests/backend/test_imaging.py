import io

import numpy as np
import pytest
from PIL import Image

from backend.imaging import MAX_SIDE, foreground_alpha, load_image
from shared.errors import BackendError

from .synth import striped_ellipse


def _code(path, **kwargs) -> str:
    with pytest.raises(BackendError) as info:
        foreground_alpha(load_image(path), **kwargs)
    assert str(path) in info.value.message  # every message names the file
    return info.value.code


def _save(path, image: Image.Image, **kwargs):
    image.save(path, **kwargs)
    return path


def test_missing_and_unreadable_files(tmp_path):
    assert _code(tmp_path / "nope.png") == "input_not_found"
    (tmp_path / "text.png").write_text("this is not an image")
    assert _code(tmp_path / "text.png") == "input_unreadable"
    (tmp_path / "empty.png").write_bytes(b"")
    assert _code(tmp_path / "empty.png") == "input_unreadable"
    assert _code(tmp_path) == "input_unreadable"  # a folder


def test_truncated_png(tmp_path):
    rgb, _ = striped_ellipse(128)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert _code(path) == "input_unreadable"


def test_huge_image_is_refused_before_decoding(tmp_path):
    path = _save(tmp_path / "wide.png", Image.new("L", (MAX_SIDE + 1, 4), 255))
    assert _code(path) == "input_too_large"


def test_empty_foreground_and_full_frame(tmp_path):
    assert _code(_save(tmp_path / "white.png", Image.new("RGB", (64, 64), "white"))) == "empty_foreground"
    assert _code(_save(tmp_path / "clear.png", Image.new("RGBA", (64, 64), (10, 20, 30, 0)))) == "empty_foreground"
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    # noise has no backdrop: the fallback is not sure of anything, so it says so instead of "fills the frame"
    assert _code(_save(tmp_path / "noise.png", Image.fromarray(noise))) == "background_unclear"
    opaque = np.zeros((64, 64, 4), np.uint8)
    opaque[..., 3] = 255
    opaque[0, 0, 3] = 0  # has an alpha channel with transparency, yet the object covers the frame
    assert _code(_save(tmp_path / "full.png", Image.fromarray(opaque))) == "foreground_fills_frame"


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize("variant", ["rgb", "rgba", "grey", "grey16", "palette", "cmyk", "exif"])
def test_unusual_formats_work(tmp_path, variant):
    rgb, fg = striped_ellipse(160, background=(250, 250, 250))
    im = Image.fromarray(rgb)
    expected = fg
    if variant == "rgba":
        im = Image.fromarray(np.dstack([rgb, fg * 255]).astype(np.uint8))
    elif variant == "grey":
        im = im.convert("L")
    elif variant == "grey16":
        im = Image.fromarray((np.asarray(im.convert("L"), np.uint16) * 257).astype(np.uint16))
        assert im.mode.startswith("I;16")
    elif variant == "palette":
        im = im.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    elif variant == "cmyk":
        im = im.convert("CMYK")
    path = tmp_path / f"{variant}.{'jpg' if variant in ('cmyk', 'exif') else 'png'}"
    if variant == "exif":
        # stored rotated by 90 degrees with orientation 6 ("rotate 90 CW to display")
        stored = im.transpose(Image.Transpose.ROTATE_90)
        exif = Image.Exif()
        exif[0x0112] = 6
        stored.save(path, quality=95, exif=exif)
    else:
        im.save(path, **({"quality": 95} if path.suffix == ".jpg" else {}))
    loaded = load_image(path)
    assert loaded.rgba.dtype == np.uint8 and loaded.rgba.shape == (160, 160, 4)
    alpha = foreground_alpha(loaded)
    assert _iou(alpha > 0.5, expected) > 0.95
    if variant in ("rgb", "rgba", "exif"):
        centre = loaded.rgba[int(0.55 * 160), int(0.45 * 160), :3].astype(int)
        assert np.abs(centre - rgb[int(0.55 * 160), int(0.45 * 160)]).max() < 20  # orientation and colour kept
