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


def official_recipe(rgba: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple]:
    """step1x3d-reference.md §2.2 step 3 in float64: white composite, crop to the alpha box, scale to
    `ratio` of the frame, paste centred on a white frame of the original size, pad to a square.
    Returns the composite, the alpha, the straight colour and the pasted box (x, y, w, h)."""
    import cv2

    h, w = rgba.shape[:2]
    img = rgba.astype(np.float64) / 255.0
    a = img[..., 3]
    rows, cols = np.nonzero(a > 0)
    y1, y2, x1, x2 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    dx, dy = x2 - x1, y2 - y1
    s = min(h * ratio / dy, w * ratio / dx)
    size = (int(dx * s), int(dy * s))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    comp = img[..., :3] * a[..., None] + (1.0 - a[..., None])
    crop = lambda x: np.ascontiguousarray(x[y1:y2, x1:x2])
    comp_s = cv2.resize(crop(comp), size, interpolation=interp)
    a_s = np.clip(cv2.resize(crop(a), size, interpolation=interp), 0, 1)
    premul = cv2.resize(crop(img[..., :3] * a[..., None]), size, interpolation=interp)
    straight = premul / np.maximum(a_s[..., None], 1e-6)
    side = max(w, h)
    x0, y0 = (w - size[0]) // 2 + (side - w) // 2, (h - size[1]) // 2 + (side - h) // 2
    out_rgb, out_a, out_straight = np.ones((side, side, 3)), np.zeros((side, side)), np.zeros((side, side, 3))
    out_rgb[y0:y0 + size[1], x0:x0 + size[0]] = comp_s
    out_a[y0:y0 + size[1], x0:x0 + size[0]] = a_s
    out_straight[y0:y0 + size[1], x0:x0 + size[0]] = straight
    return out_rgb, out_a, out_straight, (x0, y0, *size)


@pytest.mark.parametrize("shape,ratio,seed", [((240, 320), 0.95, 0), ((300, 180), 0.8, 1), ((256, 256), 0.9, 2),
                                              ((90, 140), 0.95, 3)])
def test_framing_matches_a_float_reference_of_the_release(shape, ratio, seed):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    h, w = shape
    rows, cols = np.mgrid[0:h, 0:w] / max(h, w)
    cy, cx = rng.uniform(0.3, 0.6) * h / max(h, w), rng.uniform(0.3, 0.6) * w / max(h, w)
    ry, rx = rng.uniform(0.1, 0.25), rng.uniform(0.1, 0.25)
    hard = (((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1).astype(np.float64)
    soft = ndimage.gaussian_filter(hard, 1.0) if seed % 2 else hard  # soft and hard edges
    alpha = np.clip(soft * 255 + 0.5, 0, 255).astype(np.uint8)
    colour = np.stack([200 * rows + 40, 180 * cols + 50, 120 + 60 * np.sin(rows * 9)], -1)
    rgba = np.dstack([np.clip(colour, 0, 255).astype(np.uint8), alpha])
    rgba[alpha == 0, :3] = (0, 255, 0)  # garbage under transparency must not show anywhere

    prep = prepare_image(rgba, foreground_ratio=ratio)
    ref_rgb, ref_a, ref_straight, (x0, y0, sw, sh) = official_recipe(rgba, ratio)
    side = max(h, w)
    assert prep.rgb.size == prep.alpha.size == prep.rgba.size == (side, side)
    rows, cols = np.nonzero(ref_a >= 0.5 / 255)  # what survives 8-bit rounding
    want = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
    assert x0 <= want[0] and want[2] <= x0 + sw and y0 <= want[1] and want[3] <= y0 + sh
    assert np.abs(np.subtract(prep.alpha.getbbox(), want)).max() <= 1, "same scale, same place as the release"
    got_rgb = np.asarray(prep.rgb, np.float64) / 255.0
    got_a = np.asarray(prep.alpha, np.float64) / 255.0
    assert np.abs(got_rgb - ref_rgb).mean() < 0.01 and np.abs(got_a - ref_a).mean() < 0.01
    inside = ndimage.binary_erosion(ref_a > 0.02, iterations=3)
    assert np.abs(got_rgb - ref_rgb)[inside].max() < 0.1  # only resampling differences at most
    outside = np.ones(ref_a.shape, bool)
    outside[y0:y0 + sh, x0:x0 + sw] = False
    assert (np.asarray(prep.rgb)[outside] == 255).all(), "white wherever the release pasted nothing"
    assert (np.asarray(prep.alpha)[outside] == 0).all()
    cut = np.asarray(prep.rgba, np.float64) / 255.0
    assert np.array_equal(cut[..., 3], got_a)
    edge = (ref_a > 0.3) & (ref_a < 0.98)  # where a fringe would show
    err = np.abs(cut[..., :3] - ref_straight)[edge].mean()
    assert err < 0.03, f"straight colour, no white or garbage fringe at the edge ({err:.3f})"
