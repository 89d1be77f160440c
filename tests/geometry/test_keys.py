"""Every full-size module's state dict equals the released key list, key for key and shape for shape."""
import json
from pathlib import Path

import pytest
import torch

from backend.geometry.conditioners import DinoClipEncoder, DinoEncoder, LabelEncoder
from backend.geometry.dit import GeometryDenoiser
from backend.geometry.vae import ShapeVAE

KEYS = Path(__file__).resolve().parents[3] / "shared" / "docs" / "reference" / "step1x3d-state-dict-keys.json"

# The release's configurations (configs/train-geometry-diffusion/*.yaml), with our defaults filling the rest.
MODULES = {
    "dit_base_1300m": lambda: GeometryDenoiser(),
    "dit_label_1300m": lambda: GeometryDenoiser(width=1536, layers=8, num_single_layers=16, num_heads=16,
                                                use_label_condition=True),
    "vae": lambda: ShapeVAE(),
    "label_encoder": lambda: LabelEncoder(),
    "visual_encoder_base": lambda: DinoEncoder(image_size=518),
    "visual_encoder_label": lambda: DinoClipEncoder(image_size=224),
}


@pytest.fixture(scope="module")
def released():
    if not KEYS.is_file():
        pytest.skip(f"reference key list not found at {KEYS}")
    return json.loads(KEYS.read_text())["modules"]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_full_size_state_dict_matches_release(released, name):
    with torch.device("meta"):  # no memory: shapes only
        module = MODULES[name]()
    ours = {k: list(v.shape) for k, v in module.release_state_dict().items()}
    theirs = released[name]["keys"]
    assert sorted(set(theirs) - set(ours)) == [], "keys the release has and we lack"
    assert sorted(set(ours) - set(theirs)) == [], "keys we have and the release lacks"
    assert {k: s for k, s in ours.items() if s != theirs[k]} == {}, "shape mismatches"
    assert sum(p.numel() for p in module.parameters()) == released[name]["num_parameters"]
