"""Training at scale stays on accelerate/torchrun: for each trainer, one step in a two-process
DDP group on the CPU (gloo) gives the same gradients, on every rank, as one process averaging
the two samples' gradients."""
import socket

import torch
import torch.multiprocessing as mp

from tests.geometry.tiny import TINY_VAE
from tests.texture.tiny_weights import write_tiny_weights
from tests.train.conftest import loop
from tests.train.ddp_step import step
from tests.train.test_geometry_dit import release


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(config: dict, tmp_path) -> None:
    mp.spawn(step, args=(2, _port(), config, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    single = r0["single"]
    assert single and r0["ddp"].keys() == single.keys() == r1["ddp"].keys()
    assert any(g.abs().max() > 0 for g in single.values())
    for name, g in single.items():
        torch.testing.assert_close(r0["ddp"][name], g, rtol=1e-4, atol=1e-7, msg=name)
        torch.testing.assert_close(r1["ddp"][name], g, rtol=1e-4, atol=1e-7, msg=name)


def _base(task: str, tmp_path, section: dict, **loop_extra) -> dict:
    return {"task": task, "output_dir": str(tmp_path / "run"), "loop": {**loop(1, **loop_extra), "cpu": True},
            task: section}


def test_shape_vae_ddp_step_matches_one_process(prepared, tmp_path):
    _run(_base("shape_vae", tmp_path, {"data_dir": str(prepared), "model": dict(TINY_VAE), "n_samples": 128,
                                       "n_supervision": 128}), tmp_path)


def test_geometry_dit_ddp_step_matches_one_process(dataset, tmp_path):
    npz, renders = dataset
    release(tmp_path, label=False)
    _run(_base("geometry_dit", tmp_path, {"base": str(tmp_path / "models"), "subfolder": "Tiny", "data_dir": str(npz),
                                          "renders_dir": str(renders), "n_samples": 64}), tmp_path)


def test_texture_adapter_ddp_step_matches_one_process(dataset, tmp_path):
    _, renders = dataset
    weights = write_tiny_weights(tmp_path / "weights")
    _run(_base("texture_adapter", tmp_path, {"base": str(weights.base), "vae": str(weights.vae),
                                             "renders_dir": str(renders), "resolution": 64, "adapter": str(weights.step1x)},
               batch_size=1), tmp_path)
