"""Encodings and the numpy PNG writer, checked against OpenCV's decoder on random data."""
import cv2
import numpy as np
import pytest

from backend.data import renders
from blender_render import encoding
from shared.render_format import DEPTH_BACKGROUND


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_write_png_round_trips_through_opencv(tmp_path, dtype, channels):
    rng = np.random.default_rng(channels)
    hi = np.iinfo(dtype).max
    shape = (37, 23) if channels == 1 else (37, 23, channels)
    img = rng.integers(0, hi + 1, shape, dtype=np.int64).astype(dtype)
    img[5] = img[4]  # repeated rows exercise the 'Up' filter's zero differences
    path = tmp_path / "x.png"
    encoding.write_png(path, img)
    back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if channels == 2:  # OpenCV expands grey+alpha to BGRA
        assert back.dtype == dtype
        np.testing.assert_array_equal(back[..., 0], img[..., 0])
        np.testing.assert_array_equal(back[..., 3], img[..., 1])
        return
    if channels >= 3:
        back = back[..., [2, 1, 0, 3][:channels]]
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, img)


def test_write_png_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError):
        encoding.write_png(tmp_path / "a.png", np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError):
        encoding.write_png(tmp_path / "a.png", np.zeros((4, 4, 5), np.uint8))


def test_position_normal_encoding_matches_the_reference_convention():
    rng = np.random.default_rng(0)
    mask = rng.random((16, 16)) > 0.3
    pos = rng.uniform(-0.5, 0.5, (16, 16, 3))
    n = rng.normal(size=(16, 16, 3))
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    pu, nu = encoding.position_to_unit(pos, mask), encoding.normal_to_unit(n, mask)
    np.testing.assert_allclose(pu[mask], pos[mask] + 0.5)
    np.testing.assert_allclose(nu[mask], n[mask] * 0.5 + 0.5)
    assert np.all(pu[~mask] == 0.5) and np.all(nu[~mask] == 0.5)
    for unit, ref, decode, step in ((pu, pos, renders.unit_to_position, 1 / 65535),
                                    (nu, n, renders.unit_to_normal, 2 / 65535)):
        back = decode(renders.dequantize16(encoding.quantize16(unit)))
        assert np.abs(back[mask] - ref[mask]).max() <= step / 2 + 1e-12
    assert encoding.position_to_unit(np.full((1, 1, 3), 0.7), np.ones((1, 1), bool)).max() == 1.0  # clamped


def test_depth_round_trip_and_background():
    rng = np.random.default_rng(1)
    depth = rng.uniform(1.0, 2.5, (20, 20))
    mask = rng.random((20, 20)) > 0.5
    codes = encoding.depth_to_uint16(np.where(mask, depth, 1e10), mask, 0.9, 2.7)
    assert np.all(codes[~mask] == DEPTH_BACKGROUND) and codes[mask].max() < DEPTH_BACKGROUND
    back, m = renders.uint16_to_depth(codes, 0.9, 2.7)
    np.testing.assert_array_equal(m, mask)
    assert np.abs(back[mask] - depth[mask]).max() <= 1.8 / 65534 / 2 + 1e-12
    assert np.all(np.isinf(back[~mask]))
    with pytest.raises(ValueError):
        encoding.depth_to_uint16(depth, mask, 2.0, 1.0)


def test_srgb_and_unpremultiply():
    x = np.linspace(0, 1, 101)
    ref = np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)
    np.testing.assert_allclose(encoding.linear_to_srgb(x), ref)
    rgb = np.array([[[0.2, 0.4, 0.1]], [[0.0, 0.0, 0.0]]])
    alpha = np.array([[0.5], [0.0]])
    np.testing.assert_allclose(encoding.unpremultiply(rgb, alpha), [[[0.4, 0.8, 0.2]], [[0, 0, 0]]])
    assert encoding.quantize(np.array([0.0, 0.5, 1.0]), 8).tolist() == [0, 128, 255]
