"""Shape-VAE trainer: overfits two objects, its checkpoint loads through the strict inference
loader (alone and inside a geometry folder), a run resumes, activation checkpointing is exact."""
import copy

import pytest
import torch

from backend.geometry.pipeline import GeometryPipeline
from backend.geometry.vae import CrossAttentionBlock, SelfAttentionBlock, ShapeVAE
from backend.train.__main__ import run
from backend.train.checkpointing import checkpoint_blocks
from backend.train.config import from_dict
from backend.train.metrics import read_metrics
from backend.train.shape_data import ShapeSamples, collate_shapes, npz_files
from backend.train.shape_vae import ShapeVAEObjective
from tests.geometry.tiny import TINY_VAE, tiny_components, write_release_folder
from tests.train.conftest import fall, loop

VAE = dict(TINY_VAE)


def config(out, data_dir, steps, **section):
    return from_dict({"task": "shape_vae", "output_dir": str(out), "loop": loop(steps),
                      "optim": {"lr": 2e-3},
                      "shape_vae": {"data_dir": str(data_dir), "model": VAE, "n_samples": 256, "n_supervision": 256,
                                    "kl_weight": 1e-4, **section}})


def test_overfits_and_checkpoint_loads(prepared, tmp_path):
    npz = prepared
    result = run(config(tmp_path / "run", npz, 200))
    assert fall(result.history) > 10, result.history
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "logs")][-1] == 200
    assert list((tmp_path / "run" / "logs").glob("events.out.tfevents.*"))  # TensorBoard is pinned

    loaded = ShapeVAE.from_pretrained(result.final_dir, subfolder="vae").eval()
    batch = collate_shapes([ShapeSamples(npz_files(npz), 64, 64)[0]])
    torch.manual_seed(0)
    trained = torch.load(tmp_path / "run" / "train_state.pt", weights_only=False)["trainable"]
    reference = ShapeVAE(**VAE)
    reference.load_state_dict({k.removeprefix("vae."): v for k, v in trained.items()})
    z = torch.randn(1, VAE["num_latents"], VAE["embed_dim"])
    with torch.no_grad():
        expected = reference.eval().query(batch["points"], reference.decode(z))
        got = loaded.query(batch["points"], loaded.decode(z))
    torch.testing.assert_close(got, expected)


def test_resume_continues_and_geometry_folder_export(prepared, tmp_path):
    npz = prepared
    base = write_release_folder(tmp_path / "models", tiny_components(label=False), "Tiny")
    cfg = config(tmp_path / "run", npz, 10, geometry_folder=str(base))
    run(cfg)
    cfg.loop.steps, cfg.loop.resume = 20, True
    second = run(cfg)
    assert [h["step"] for h in second.history] == [20]  # started at 10
    pipe = GeometryPipeline.from_pretrained(second.final_dir, subfolder="")
    assert pipe.vae.config.width == VAE["width"]
    state = torch.load(tmp_path / "run" / "train_state.pt", weights_only=False)
    assert state["step"] == 20
    torch.testing.assert_close(pipe.vae.state_dict()["pre_kl.weight"], state["trainable"]["vae.pre_kl.weight"])


def test_activation_checkpointing_gives_the_same_gradients(prepared):
    npz = prepared
    torch.manual_seed(1)
    plain = ShapeVAEObjective(ShapeVAE(**VAE), 1e-3)
    wrapped = copy.deepcopy(plain)
    assert checkpoint_blocks(wrapped, (SelfAttentionBlock, CrossAttentionBlock)) == 5  # 2 cross + 1 + 1 + decoder
    batch = collate_shapes([ShapeSamples(npz_files(npz), 64, 64)[i] for i in range(2)])
    grads = []
    for model in (plain, wrapped):
        torch.manual_seed(2)
        model(batch)["loss"].backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], msg=name)
    assert plain.state_dict().keys() == wrapped.state_dict().keys()
