"""Image preparation on synthetic images with known geometry."""
import numpy as np
import pytest
from PIL import Image

from backend.geometry.image_prep import prepare_image
from shared.errors import BackendError

RED = (200, 40, 30)


def rgba_with_rect(w, h, box, alpha_outside=0):
    img = np.zeros((h, w, 4), np.uint8)
    img[..., :3] = (0, 255, 0)  # garbage colour under transparent pixels
    img[..., 3] = alpha_outside
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2] = (*RED, 255)
    return img


def test_alpha_is_trusted_and_recentred_as_the_release():
    img = rgba_with_rect(200, 100, (10, 60, 50, 80))  # 40 x 20 object, off-centre
    prep = prepare_image(img, remover=lambda rgba: pytest.fail("the remover must not run on an image with alpha"))
    assert prep.alpha_source == "file"
    assert prep.rgb.size == prep.alpha.size == (200, 200)
    # s = min(100 * 0.95 / 20, 200 * 0.95 / 40) = 4.75 -> 190 x 95, centred in 200 x 100, then padded
    assert prep.alpha.getbbox() == (5, 52, 195, 147)
    rgb = np.asarray(prep.rgb)
    assert tuple(rgb[100, 100]) == RED
    assert tuple(rgb[10, 10]) == (255, 255, 255) and tuple(rgb[190, 100]) == (255, 255, 255)
    assert (np.asarray(prep.rgb)[np.asarray(prep.alpha) == 0] == 255).all()  # white wherever there is no object


@pytest.mark.parametrize("ratio", [0.95, 0.7])
def test_foreground_ratio(ratio):
    img = rgba_with_rect(120, 120, (30, 50, 90, 70))
    prep = prepare_image(img, foreground_ratio=ratio)
    x1, y1, x2, y2 = prep.alpha.getbbox()
    assert x2 - x1 == int(60 * min(120 * ratio / 20, 120 * ratio / 60))
    assert abs((x1 + x2) / 2 - 60) <= 1 and abs((y1 + y2) / 2 - 60) <= 1


def test_opaque_image_uses_border_segmentation_by_default():
    img = rgba_with_rect(160, 120, (40, 30, 100, 90), alpha_outside=255)
    img[img[..., 0] == 0] = (250, 250, 250, 255)  # plain light backdrop
    prep = prepare_image(Image.fromarray(img[..., :3]))
    assert prep.alpha_source == "remover"
    x1, y1, x2, y2 = prep.alpha.getbbox()
    assert abs((x2 - x1) - 114) <= 4 and abs((y2 - y1) - 114) <= 4  # 60 x 60 object to 0.95 of the 120 px side


def test_pluggable_remover_and_modes():
    img = rgba_with_rect(100, 100, (0, 0, 100, 100))  # fully opaque: no alpha information
    calls = []

    def remover(rgba):
        calls.append(rgba.shape)
        mask = np.zeros(rgba.shape[:2], np.float32)
        mask[40:60, 20:80] = 1.0
        return mask

    prep = prepare_image(img, remover=remover)
    assert calls == [(100, 100, 4)] and prep.alpha_source == "remover"
    assert prep.alpha.getbbox() == (2, 34, 97, 65)  # 60 x 20 scaled by 95/60 -> 95 x 31
    whole = prepare_image(img, remove_background="never")
    assert whole.alpha_source == "none" and whole.alpha.getbbox() == (2, 2, 97, 97)
    forced = prepare_image(rgba_with_rect(100, 100, (10, 10, 20, 20)), remove_background="always", remover=remover)
    assert forced.alpha_source == "remover"


def test_bad_inputs_have_codes(tmp_path):
    with pytest.raises(BackendError) as err:
        prepare_image(rgba_with_rect(50, 50, (0, 0, 0, 0)))
    assert err.value.code == "empty_foreground"
    with pytest.raises(BackendError) as err:
        prepare_image(tmp_path / "missing.png")
    assert err.value.code == "input_not_found"
    with pytest.raises(BackendError) as err:
        prepare_image(rgba_with_rect(50, 50, (5, 5, 9, 9)), remove_background="sometimes")
    assert err.value.code == "invalid_setting"
