"""Texture trainer on blender_render outputs with tiny release-layout SDXL weights: it overfits,
and what it saves is what the inference pipeline loads."""
import torch
from safetensors.torch import load_file

from backend.texture.adapter import ADAPTER_FILE, adapter_shapes, check_adapter_keys
from backend.texture.mv_pipeline import MultiViewPipeline
from backend.train.__main__ import run
from backend.train.config import from_dict
from backend.train.texture_data import MultiViewRenders
from shared.views import VIEW_NAMES
from tests.texture.tiny_weights import write_tiny_weights
from tests.train.conftest import fall, loop


def config(tmp_path, weights, renders, steps, lr, **section):
    return from_dict({"task": "texture_adapter", "output_dir": str(tmp_path / "run"),
                      "loop": loop(steps, batch_size=1), "optim": {"lr": lr, "warmup_steps": 0},
                      "texture_adapter": {"base": str(weights.base), "vae": str(weights.vae), "renders_dir": str(renders),
                                          "resolution": 64, **section}})


def test_samples_from_renders(dataset):
    _, renders = dataset
    item = MultiViewRenders(renders, 64, ("front",))[0]
    assert item["views"].shape == (6, 3, 64, 64) and item["control"].shape == (6, 6, 64, 64)
    assert item["reference"].shape == (3, 64, 64) and item["prompt"] == "high quality"
    corner = item["control"][:, :, 0, 0]  # background: grey 0.5 in both maps
    torch.testing.assert_close(corner, torch.full_like(corner, 0.5))
    # the views come in the adapter's order; the front view sees the box's +Z (glTF) face, whose
    # normal is -Y in the Blender frame the maps are encoded in
    box = MultiViewRenders(renders, 64, ("front",))
    assert [p.name.split("-")[0] for p, _, _ in box.objects] == ["box", "egg"]
    names = [box_meta["name"] for box_meta in __import__("json").loads((box.objects[0][0] / "meta.json").read_text())["views"]]
    assert [names[i] for i in box.objects[0][1]] == list(VIEW_NAMES)
    torch.testing.assert_close(item["control"][0, 3:, 32, 32], torch.tensor([0.5, 0.0, 0.5]), atol=0.02, rtol=0)


def test_overfits_and_the_pipeline_loads_the_result(dataset, tmp_path):
    _, renders = dataset
    weights = write_tiny_weights(tmp_path / "weights")
    # the whole tiny UNet trains (a random frozen base leaves the adapters nothing to fit), at the
    # noisy end of the schedule, without prompt or control dropout and (for speed) without the
    # reference pass, which the adapter-only test below runs: a fit a few CPU steps can show
    result = run(config(tmp_path, weights, renders, 80, 4e-3, adapter=str(weights.step1x), trainable_modules=[""],
                        timestep_range=[900, 1000], prompt_drop=0, reference_drop=1, control_drop=0))
    assert fall(result.history) > 10, result.history
    pipe = MultiViewPipeline.load(str(result.final_dir / "sdxl"), str(weights.vae), str(result.final_dir))
    saved = load_file(str(result.final_dir / ADAPTER_FILE))
    loaded = {**{k: v for k, v in pipe.unet.state_dict().items() if ".processor." in k}, **pipe.t2i_adapter.state_dict()}
    assert saved.keys() == loaded.keys()
    for k in saved:
        torch.testing.assert_close(loaded[k], saved[k])
    trained = torch.load(tmp_path / "run" / "train_state.pt", weights_only=False)["trainable"]
    torch.testing.assert_close(pipe.unet.state_dict()["conv_in.weight"], trained["unet.conv_in.weight"])


def test_adapter_only_training_from_mv_adapter_init(dataset, tmp_path):
    _, renders = dataset
    weights = write_tiny_weights(tmp_path / "weights")
    result = run(config(tmp_path, weights, renders, 2, 1e-3, adapter=None))
    assert not (result.final_dir / "sdxl").exists()  # the base UNet did not train
    pipe = MultiViewPipeline.load(str(weights.base), str(weights.vae), str(result.final_dir))
    saved = load_file(str(result.final_dir / ADAPTER_FILE))
    check_adapter_keys(adapter_shapes(pipe.unet, pipe.t2i_adapter), {k: tuple(v.shape) for k, v in saved.items()}, "x")
    init = load_file(str(tmp_path / "run" / "init" / ADAPTER_FILE))
    out_keys = [k for k in init if "to_out_mv" in k and k.endswith("weight")]
    assert all(init[k].abs().max() == 0 for k in out_keys)  # MV-Adapter init: zero output projections
    assert any(saved[k].abs().max() > 0 for k in out_keys)  # and training moved them
