"""Geometry DiT trainer: full fine-tuning overfits and writes a geometry folder the pipeline
loads; LoRA weights save, load (strictly), change the output and merge into a loadable folder."""
import pytest
import torch

from backend.geometry.dit import GeometryDenoiser
from backend.geometry.pipeline import GeometryPipeline
from backend.train.__main__ import run
from backend.train.config import from_dict
from backend.train.lora import TARGETS, add_lora, load_lora, lora_config, merged_denoiser, save_lora
from shared.errors import BackendError
from tests.geometry.tiny import TINY_DIT, tiny_components, write_release_folder
from tests.train.conftest import fall, loop


def release(tmp_path, label: bool):
    parts = tiny_components(label=label)
    with torch.no_grad():  # a posterior without spread or dependence on the points: fixed targets
        pre_kl = parts["vae"].pre_kl
        pre_kl.weight.zero_()
        pre_kl.bias.normal_()
        pre_kl.bias[pre_kl.out_features // 2:] = -20.0
    return write_release_folder(tmp_path / "models", parts, "Tiny")


def config(tmp_path, dataset, steps, lr, **section):
    npz, renders = dataset
    return from_dict({"task": "geometry_dit", "output_dir": str(tmp_path / "run"), "loop": loop(steps),
                      "optim": {"lr": lr},
                      "geometry_dit": {"base": str(tmp_path / "models"), "subfolder": "Tiny", "data_dir": str(npz),
                                       "renders_dir": str(renders), "n_samples": 64, **section}})


def test_full_training_overfits_and_loads(dataset, tmp_path):
    release(tmp_path, label=False)
    result = run(config(tmp_path, dataset, 200, 3e-3))
    assert fall(result.history) > 10, result.history
    pipe = GeometryPipeline.from_pretrained(result.final_dir, subfolder="")
    trained = torch.load(tmp_path / "run" / "train_state.pt", weights_only=False)["trainable"]
    for name, value in pipe.denoiser.state_dict().items():
        torch.testing.assert_close(value, trained[f"denoiser.{name}"], msg=name)
    base = GeometryPipeline.from_pretrained(tmp_path / "models", subfolder="Tiny")
    torch.testing.assert_close(pipe.vae.state_dict()["pre_kl.bias"], base.vae.state_dict()["pre_kl.bias"])


def test_lora_training_save_load_and_merge(dataset, tmp_path):
    release(tmp_path, label=True)
    result = run(config(tmp_path, dataset, 30, 1e-2, lora={"rank": 4, "alpha": 8}))
    assert result.history[-1]["loss"] < result.history[0]["loss"] * 2  # trains without blowing up
    lora_dir = result.final_dir / "lora"
    base = GeometryDenoiser.from_pretrained(tmp_path / "models" / "Tiny", subfolder="transformer").eval()
    adapted = load_lora(GeometryDenoiser.from_pretrained(tmp_path / "models" / "Tiny", subfolder="transformer"), lora_dir).eval()
    torch.manual_seed(0)
    x, t = torch.randn(2, TINY_DIT["width"] // 2, TINY_DIT["input_channels"]), torch.tensor([300.0, 700.0])
    ctx = torch.randn(2, 7, TINY_DIT["condition_dim"])
    with torch.no_grad():
        before, after = base(x, t, ctx), adapted(x, t, ctx)
    assert (after - before).abs().max() > 1e-3  # the adapter changes the output
    # the merged folder holds exactly the adapted model, loadable by the inference pipeline
    pipe = GeometryPipeline.from_pretrained(result.final_dir, subfolder="")
    with torch.no_grad():
        torch.testing.assert_close(pipe.denoiser(x, t, ctx), after, rtol=1e-5, atol=1e-5)
    assert pipe.label_encoder is not None


def test_lora_layout_and_strict_loading(tmp_path):
    torch.manual_seed(0)
    model = GeometryDenoiser(**TINY_DIT)
    config = lora_config(rank=2, alpha=2)
    params = add_lora(model, config)
    assert all(p.requires_grad for p in params)
    assert not any(p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    wrapped = {n.rsplit(".lora_A", 1)[0] for n, _ in model.named_parameters() if ".lora_A." in n}
    suffixes = {n.split(".", 3)[-1] for n in wrapped}  # strip dit_model.<blocks>.<i>.
    assert suffixes == set(TARGETS) | {"attn.to_q", "attn.to_k", "attn.to_v"}
    with torch.no_grad():
        for p in params:
            p.normal_()
    save_lora(model, tmp_path / "lora", config)
    merged = merged_denoiser(model)
    assert set(merged.state_dict()) == set(GeometryDenoiser(**TINY_DIT).state_dict())
    x, t, ctx = torch.randn(1, 8, 8), torch.tensor([500.0]), torch.randn(1, 3, TINY_DIT["condition_dim"])
    with torch.no_grad():
        torch.testing.assert_close(merged(x, t, ctx), model(x, t, ctx), rtol=1e-5, atol=1e-5)
    wider = GeometryDenoiser(**{**TINY_DIT, "width": 64, "num_heads": 4})
    with pytest.raises(BackendError) as err:
        load_lora(wider, tmp_path / "lora")
    assert err.value.code == "weights_not_found"
