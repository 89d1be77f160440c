"""Training configs: strict keys, the reference recipes as defaults, overrides."""
import json

import pytest

from backend.train.config import load
from shared.errors import BackendError


def write(tmp_path, data, name="c.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data) if name.endswith(".json") else data)
    return path


def test_recipe_defaults_and_overrides(tmp_path):
    path = write(tmp_path, {"task": "texture_adapter", "output_dir": "x", "optim": {"lr": 1e-4},
                            "texture_adapter": {"renders_dir": "r", "reference_views": ["front", "back"]}})
    c = load(path, ["loop.steps=7", "texture_adapter.prompt=a chair"])
    assert c.optim.lr == 1e-4 and c.optim.warmup_steps == 2000 and c.optim.weight_decay == 0.01  # §4.13
    assert c.loop.steps == 7 and c.section.prompt == "a chair"
    assert c.section.reference_views == ("front", "back")
    vae = load(write(tmp_path, "task: shape_vae\noutput_dir: y\nshape_vae: {data_dir: d}\n", "v.yaml"))
    assert vae.optim.lr == 1e-5 and vae.optim.betas == (0.9, 0.99) and vae.shape_vae.kl_weight == 1e-3  # §2.9


@pytest.mark.parametrize("data", [
    {"task": "nope", "output_dir": "x"},
    {"task": "shape_vae", "output_dir": "x", "shape_vae": {"data_dri": "typo"}},
    {"task": "shape_vae", "output_dir": "x", "loop": {"steps": "many"}},
    {"task": "shape_vae", "output_dir": "x", "geometry_dit": {}},
    {"task": "shape_vae", "output_dir": "x", "loop": {"mixed_precision": "fp8"}},
])
def test_bad_configs_are_coded_errors(tmp_path, data):
    with pytest.raises(BackendError) as err:
        load(write(tmp_path, data))
    assert err.value.code == "invalid_setting"


def test_missing_file(tmp_path):
    with pytest.raises(BackendError) as err:
        load(tmp_path / "none.yaml")
    assert err.value.code == "input_not_found"
