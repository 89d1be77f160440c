"""Background removal: the rembg/onnxruntime path on a tiny exported model with the real model's
signature, the GrabCut fallback on photo-like scenes with known masks, and every refusal."""
import numpy as np
import pytest
from PIL import Image

from backend import background
from backend.background import model as remover_model
from backend.geometry.image_prep import prepare_image
from backend.imaging import foreground, load_image
from shared.errors import BackendError

from .synth import PHOTO_SCENES, photo_scene, write_tiny_birefnet

SIDE = 1024  # the real BiRefNet session's input side (write_tiny_birefnet's default)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.fixture
def tiny_model(tmp_path, monkeypatch):
    folder = tmp_path / "remover"
    folder.mkdir()
    path = write_tiny_birefnet(folder)
    monkeypatch.setenv(remover_model.HOME_VAR, str(folder))
    import pooch

    def no_download(*args, **kwargs):
        raise AssertionError("a job must never download the remover")

    monkeypatch.setattr(pooch, "retrieve", no_download)
    remover_model.load_remover.cache_clear()
    yield path
    remover_model.load_remover.cache_clear()


def dark_object(h=300, w=460):
    rows, cols = np.mgrid[0:h, 0:w]
    fg = ((rows - 0.55 * h) / (0.3 * h)) ** 2 + ((cols - 0.4 * w) / (0.2 * w)) ** 2 <= 1
    rgb = np.where(fg[..., None], np.array([30, 40, 60], np.uint8), np.array([235, 230, 225], np.uint8))
    return rgb.astype(np.uint8), fg


def test_model_path_end_to_end_on_a_tiny_onnx_model(tiny_model):
    remover = background.default_remover("cpu")
    assert isinstance(remover, remover_model.ModelRemover) and remover.size == (SIDE, SIDE)
    assert remover.providers == ["CPUExecutionProvider"]
    assert background.default_remover("cpu") is remover, "one session per file and device"
    rgb, fg = dark_object()  # not square, not 1024: the resize both ways is exercised
    cut = remover(np.dstack([rgb, np.full(fg.shape, 255, np.uint8)]))
    assert cut.alpha.shape == fg.shape and cut.alpha.dtype == np.float32
    assert cut.method == "birefnet-general" and cut.confidence > 0.9
    assert _iou(cut.alpha > 0.5, fg) > 0.97
    assert cut.alpha[~fg].max() < 0.2 or _iou(cut.alpha > 0.2, fg) > 0.95

    prepared = prepare_image(Image.fromarray(rgb), remove_background="always")
    assert prepared.alpha_source == "remover" and prepared.cutout.method == "birefnet-general"
    assert prepared.rgba.mode == "RGBA" and prepared.rgba.size == (460, 460)
    rows, cols = np.nonzero(fg)
    dy, dx = np.ptp(rows) + 1, np.ptp(cols) + 1
    s = min(300 * 0.95 / dy, 460 * 0.95 / dx)  # the release frames within the original frame, then pads
    assert prepared.foreground_ratio == pytest.approx(max(dx, dy) * s / 460, abs=0.01)


def test_model_sees_an_empty_image_as_empty(tiny_model, tmp_path):
    """No min-max stretch: a blank photo is empty, not noise blown up into a mask."""
    path = tmp_path / "blank.png"
    wall = np.linspace(232, 248, 200)[None, :, None] * np.ones((120, 1, 3))  # a lit wall: a faint gradient
    Image.fromarray(wall.astype(np.uint8)).save(path)
    with pytest.raises(BackendError) as info:
        foreground(load_image(path), "always")
    assert info.value.code == "empty_foreground" and str(path) in info.value.message


def test_provider_follows_the_plan(monkeypatch):
    import onnxruntime as ort

    assert remover_model.providers_for("cpu") == ["CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    cuda = remover_model.providers_for("cuda:1")
    assert cuda[0][0] == "CUDAExecutionProvider" and cuda[0][1]["device_id"] == 1 and cuda[-1] == "CPUExecutionProvider"
    assert remover_model.providers_for("cpu") == ["CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert remover_model.providers_for("cuda:0") == ["CPUExecutionProvider"]  # a CPU-only onnxruntime build


def test_damaged_model_file_names_itself(tmp_path, monkeypatch):
    (tmp_path / remover_model.MODEL_FILE).write_bytes(b"not an onnx model")
    monkeypatch.setenv(remover_model.HOME_VAR, str(tmp_path))
    remover_model.load_remover.cache_clear()
    with pytest.raises(BackendError) as info:
        background.default_remover("cpu")
    remover_model.load_remover.cache_clear()
    assert info.value.code == "weights_not_found" and remover_model.MODEL_FILE in info.value.message
    assert "python -m backend download" in info.value.message


def test_model_file_listing_and_offline_download(tmp_path, monkeypatch):
    monkeypatch.setenv(remover_model.HOME_VAR, str(tmp_path))
    [missing] = background.remover_model_files()
    assert not missing.present and missing.path == tmp_path / remover_model.MODEL_FILE
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackendError) as info:
        background.download_model()
    assert info.value.code == "weights_not_found"
    write_tiny_birefnet(tmp_path, side=64)
    [present] = background.remover_model_files()
    assert present.present


@pytest.mark.parametrize("name", sorted(PHOTO_SCENES))
def test_fallback_cuts_out_photo_like_scenes(name):
    rgb, mask = photo_scene(name, 256, seed=1)
    cut = background.default_remover("cpu")(rgb)
    assert cut.method == "grabcut" and "python -m backend download" in cut.note
    assert cut.confidence >= background.CONFIDENT
    assert _iou(cut.alpha > 0.5, mask) >= 0.9


def _refusal(path) -> BackendError:
    with pytest.raises(BackendError) as info:
        foreground(load_image(path))
    assert str(path) in info.value.message  # every refusal names the file
    return info.value


def test_refusals_depend_on_confidence(tmp_path):
    white = tmp_path / "white.png"
    Image.new("RGB", (80, 60), "white").save(white)
    assert _refusal(white).code == "empty_foreground"  # a plain backdrop: sure there is nothing
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (80, 80, 3), dtype=np.uint8)).save(noise)
    err = _refusal(noise)
    assert err.code == "background_unclear" and "python -m backend download" in err.message
    full = tmp_path / "full.png"
    a = np.zeros((64, 64, 4), np.uint8)
    a[..., 3] = 255
    a[0, 0, 3] = 0
    Image.fromarray(a).save(full)
    assert _refusal(full).code == "foreground_fills_frame"  # the file's alpha is trusted


def test_settings_keep_their_meaning():
    rgb, fg = photo_scene("studio_shadow", 200)
    rgba = np.dstack([rgb, np.where(fg, 255, 0).astype(np.uint8)])
    calls = []

    def remover(image):
        calls.append(image.shape)
        return np.ones(image.shape[:2], np.float32) * 0.0 + fg

    assert background.cutout(rgba, True, "auto", remover).method == "file" and not calls
    assert background.cutout(rgba, True, "always", remover).method != "file" and calls == [(200, 200, 4)]
    never = background.cutout(rgba, True, "never", remover)
    assert never.method == "none" and never.alpha.min() == 1.0 and len(calls) == 1
    with pytest.raises(BackendError) as info:
        background.cutout(rgba, True, "sometimes")
    assert info.value.code == "invalid_setting"
