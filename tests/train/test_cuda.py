"""The CUDA paths: bf16 autocast training of the tiny trainers, and the GPU rasteriser in the
watertight step (compared with the CPU result)."""
import numpy as np
import pytest
import torch
import trimesh

from backend.data.watertight import WatertightOptions, make_watertight
from backend.geometry.pipeline import GeometryPipeline
from backend.geometry.vae import ShapeVAE
from backend.train.__main__ import run
from backend.train.config import from_dict
from tests.geometry.tiny import TINY_VAE, tiny_components, write_release_folder
from tests.train.conftest import loop

pytestmark = pytest.mark.cuda


def test_bf16_vae_training_on_cuda(prepared, tmp_path):
    npz = prepared
    vae = run(from_dict({"task": "shape_vae", "output_dir": str(tmp_path / "vae"),
                         "loop": loop(20, gradient_checkpointing=True), "optim": {"lr": 1e-3},
                         "shape_vae": {"data_dir": str(npz), "model": TINY_VAE, "n_samples": 256, "n_supervision": 256}}))
    assert all(np.isfinite(h["loss"]) for h in vae.history) and "peak_memory_gb" in vae.history[-1]
    ShapeVAE.from_pretrained(vae.final_dir, subfolder="vae")


def test_bf16_lora_training_on_cuda(dataset, tmp_path):
    npz, renders = dataset
    write_release_folder(tmp_path / "models", tiny_components(label=True), "Tiny")
    dit = run(from_dict({"task": "geometry_dit", "output_dir": str(tmp_path / "dit"),
                         "loop": loop(20, gradient_checkpointing=True), "optim": {"lr": 1e-3},
                         "geometry_dit": {"base": str(tmp_path / "models"), "subfolder": "Tiny", "data_dir": str(npz),
                                          "renders_dir": str(renders), "n_samples": 64, "lora": {"rank": 4}}}))
    assert all(np.isfinite(h["loss"]) for h in dit.history)
    GeometryPipeline.from_pretrained(dit.final_dir, subfolder="")


def test_watertight_with_the_gpu_rasteriser():
    mesh = trimesh.creation.annulus(0.3, 0.8, 0.6)
    cpu = make_watertight(mesh.vertices, mesh.faces, WatertightOptions(resolution=48, views=12, view_resolution=128))
    gpu = make_watertight(mesh.vertices, mesh.faces, WatertightOptions(resolution=48, views=12, view_resolution=128,
                                                                     device="cuda"))
    assert trimesh.Trimesh(gpu.vertices, gpu.faces).is_watertight
    assert abs(trimesh.Trimesh(gpu.vertices, gpu.faces).volume - trimesh.Trimesh(cpu.vertices, cpu.faces).volume) \
        < 0.01 * trimesh.Trimesh(cpu.vertices, cpu.faces).volume
