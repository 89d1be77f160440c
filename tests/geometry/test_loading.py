"""The release's folder layout round-trips through from_pretrained; anything that does not match
the model exactly is refused with a stable code."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from backend.geometry import GeometryPipeline
from backend.geometry.loading import WEIGHTS_NAME
from backend.geometry.vae import ShapeVAE
from shared.errors import BackendError

from .tiny import TINY_VAE, tiny_components, write_release_folder

BASE, LABEL = "Step1X-3D-Geometry-1300m", "Step1X-3D-Geometry-Label-1300m"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    parts = {False: tiny_components(label=False, seed=1), True: tiny_components(label=True, seed=2)}
    write_release_folder(root, parts[False], BASE)
    write_release_folder(root, parts[True], LABEL)
    return root, parts


@pytest.mark.parametrize("variant", ["base", "label"])
def test_round_trip(checkpoints, variant):
    root, parts = checkpoints
    pipe = GeometryPipeline.from_pretrained(root, variant=variant)
    saved = parts[variant == "label"]
    loaded = {"transformer": pipe.denoiser, "vae": pipe.vae, "visual_encoder": pipe.visual_encoder,
              "label_encoder": pipe.label_encoder}
    assert (pipe.label_encoder is not None) == (variant == "label")
    for name, module in saved.items():
        ours, theirs = loaded[name].state_dict(), module.state_dict()
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert torch.equal(ours[key], theirs[key]), key
    assert pipe.scheduler.config.shift == 1.0


def test_dtype_on_load(checkpoints):
    root, _ = checkpoints
    pipe = GeometryPipeline.from_pretrained(root, variant="base", dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for m in pipe.modules for p in m.parameters())


def copy_base(checkpoints, tmp_path):
    root, _ = checkpoints
    shutil.copytree(root / BASE, tmp_path / BASE)
    return tmp_path / BASE


def expect_refusal(tmp_path, match):
    with pytest.raises(BackendError, match=match) as err:
        GeometryPipeline.from_pretrained(tmp_path, variant="base")
    assert err.value.code == "weights_not_found"


def test_missing_component(checkpoints, tmp_path):
    folder = copy_base(checkpoints, tmp_path)
    shutil.rmtree(folder / "vae")
    expect_refusal(tmp_path, "no vae/ folder")


def test_missing_model_index(checkpoints, tmp_path):
    folder = copy_base(checkpoints, tmp_path)
    (folder / "model_index.json").unlink()
    expect_refusal(tmp_path, "model_index.json")


def test_truncated_weights(checkpoints, tmp_path):
    folder = copy_base(checkpoints, tmp_path)
    path = folder / "transformer" / WEIGHTS_NAME
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    expect_refusal(tmp_path, "damaged")


@pytest.mark.parametrize("edit, match", [
    (lambda sd: sd.pop("decoder.output_proj.bias"), "missing 1 keys"),
    (lambda sd: sd.update(extra=torch.zeros(3)), "unexpected"),
    (lambda sd: sd.update({"post_kl.bias": torch.zeros(7)}), "post_kl.bias"),
])
def test_weights_must_match_exactly(checkpoints, tmp_path, edit, match):
    folder = copy_base(checkpoints, tmp_path)
    path = folder / "vae" / WEIGHTS_NAME
    state = load_file(path)
    edit(state)
    save_file(state, path)
    expect_refusal(tmp_path, match)


def test_wrong_config_width(checkpoints, tmp_path):
    folder = copy_base(checkpoints, tmp_path)
    config = json.loads((folder / "vae" / "config.json").read_text())
    config["width"] = 64
    (folder / "vae" / "config.json").write_text(json.dumps(config))
    expect_refusal(tmp_path, "ShapeVAE")


def test_hub_id_through_the_offline_cache(checkpoints, tmp_path, monkeypatch):
    """A repo id resolves through huggingface_hub's cache; offline, a missing repo is a clear error."""
    from huggingface_hub import constants

    root, parts = checkpoints
    repo_dir = tmp_path / "models--someone--step1x-3d-tiny"
    commit = "0" * 40
    shutil.copytree(root / BASE, repo_dir / "snapshots" / commit / BASE)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = GeometryPipeline.from_pretrained("someone/step1x-3d-tiny", variant="base")
    assert torch.equal(pipe.vae.post_kl.weight, parts[False]["vae"].post_kl.weight)
    with pytest.raises(BackendError, match="HF_HUB_OFFLINE") as err:
        GeometryPipeline.from_pretrained("someone/not-cached", variant="base")
    assert err.value.code == "weights_not_found"


def test_component_from_pretrained_directly(checkpoints):
    root, parts = checkpoints
    vae = ShapeVAE.from_pretrained(root / BASE, subfolder="vae")
    assert vae.config.width == TINY_VAE["width"]
    assert torch.equal(vae.pre_kl.weight, parts[False]["vae"].pre_kl.weight)


def test_model_folder_itself(checkpoints):
    """What backend.runtime.weights finds is the model folder; subfolder="" loads it directly."""
    root, _ = checkpoints
    pipe = GeometryPipeline.from_pretrained(root / LABEL, subfolder="")
    assert pipe.label_encoder is not None
