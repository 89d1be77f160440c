import pytest

from backend.runtime import weights
from shared.errors import BackendError


def test_local_folder_layout_is_found_component_by_component(tmp_path):
    (tmp_path / "Step1X-3D-Geometry-1300m").mkdir()
    (tmp_path / "Step1X-3D-Geometry-1300m" / "model_index.json").write_text("{}")
    (tmp_path / "Step1X-3D" / "Step1X-3D-Texture").mkdir(parents=True)
    (tmp_path / "Step1X-3D" / "Step1X-3D-Texture" / "step1x-3d-ig2v.safetensors").write_bytes(b"")
    (tmp_path / "sdxl-vae-fp16-fix").mkdir()
    (tmp_path / "sdxl-vae-fp16-fix" / "config.json").write_text("{}")
    status = weights.find_weights(str(tmp_path))
    assert set(status.found) == {"geometry-base", "texture-adapter", "sdxl-vae"}
    assert status.missing == ["geometry-label", "sdxl-base"]
    assert "geometry-label" in status.describe()


def test_download_refuses_offline_and_unknown_components(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackendError) as info:
        weights.download(["sdxl-vae"])
    assert info.value.code == "weights_not_found"
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(BackendError) as info:
        weights.download(["nope"])
    assert info.value.code == "invalid_request"
