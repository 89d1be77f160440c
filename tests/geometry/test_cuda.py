"""CUDA paths: warp marching cubes, coarse-to-fine decoding on the GPU, a sampling loop that never
waits on the device, and the whole stage in bf16. Skipped without a GPU."""
import numpy as np
import pytest
import torch
import trimesh
from diffusers import FlowMatchEulerDiscreteScheduler

from backend.geometry import GeometryOptions, GeometryPipeline
from backend.geometry.dit import GeometryDenoiser
from backend.geometry.fps import farthest_point_sample
from backend.geometry.marching import marching_cubes
from backend.geometry.sampler import initial_noise, sample_latents
from backend.geometry.volume import decode_coarse_to_fine, decode_dense

from .test_volume import field_of, sphere, torus
from .tiny import MOVED, make_blob_field, mesh_gap, on_blob_surface, tiny_components, write_release_folder

pytestmark = pytest.mark.cuda
CUDA = torch.device("cuda")


def test_warp_marching_cubes_on_cuda():
    grid = decode_dense(field_of(torus), 128, 1.05, device=CUDA)
    vw, fw = marching_cubes(grid, 0.0, 1.05)  # auto: warp on CUDA
    vs, fs = marching_cubes(grid.cpu(), 0.0, 1.05, backend="skimage")
    from backend.mesh.clean import clean

    vw, fw = clean(vw, fw, min_part_fraction=0.0)
    mw = trimesh.Trimesh(vw, fw)
    assert mw.is_watertight and mw.volume > 0
    assert mw.volume == pytest.approx(trimesh.Trimesh(vs, fs).volume, rel=1e-3)


def test_coarse_to_fine_on_cuda_matches_cpu():
    field = field_of(sphere)
    gpu, stats_gpu = decode_coarse_to_fine(field, 128, 1.05, device=CUDA)
    cpu, stats_cpu = decode_coarse_to_fine(field, 128, 1.05, device="cpu")
    assert stats_gpu.queries == stats_cpu.queries
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-5)


def test_fps_on_cuda_matches_cpu():
    points = torch.rand(2, 4000, 3, generator=torch.Generator().manual_seed(0))
    a = farthest_point_sample(points, 256, generator=torch.Generator().manual_seed(1))
    b = farthest_point_sample(points.to(CUDA), 256, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b.cpu())


def test_sampling_loop_never_waits_on_the_device():
    torch.manual_seed(0)
    model = GeometryDenoiser(input_channels=8, width=64, layers=2, num_single_layers=2, num_heads=2,
                             condition_dim=16, visual_condition_dim=16).to(CUDA, torch.bfloat16).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    scheduler.set_timesteps(10, device=CUDA)  # builds the schedule on the host once, before the loop
    scheduler.set_timesteps = lambda *args, **kwargs: None
    cond = torch.randn(1, 7, 16, device=CUDA)
    noise = initial_noise((1, 32, 8), torch.Generator(CUDA).manual_seed(0), CUDA)
    progress = []
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.no_grad():
            out = sample_latents(model, scheduler, cond, torch.zeros_like(cond), noise, 10, 7.5,
                                 on_step=lambda i, n: progress.append(i))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert progress == list(range(1, 11)) and out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_whole_stage_low_precision_on_cuda(tmp_path, dtype):
    parts = tiny_components(label=True, seed=3)
    make_blob_field(parts["vae"])
    write_release_folder(tmp_path, parts, "Step1X-3D-Geometry-Label-1300m")
    pipe = GeometryPipeline.from_pretrained(tmp_path, variant="label", dtype=dtype, device="cuda")
    img = np.zeros((90, 120, 4), np.uint8)
    img[20:70, 30:100] = (180, 60, 40, 255)
    options = GeometryOptions(steps=4, octree_resolution=256, face_budget=20000)
    result = pipe(img, options)
    mesh = trimesh.Trimesh(result.vertices, result.faces)
    assert mesh.is_watertight and mesh.volume > 0 and len(mesh.faces) <= 20000
    assert result.decode.levels == [64, 128, 256]
    assert on_blob_surface(result.vertices)  # the blob field's surface (the release's /(R+1) shrink included)
    again = pipe(img, options)  # equal inputs, the same surface (warp may emit it in another order)
    assert len(again.faces) == len(result.faces) and mesh_gap(again.vertices, result.vertices) < 1e-6
    other_seed = pipe(img, GeometryOptions(steps=4, octree_resolution=256, face_budget=20000, seed=options.seed + 1))
    upright = np.ascontiguousarray(img.transpose(1, 0, 2))
    other_image = pipe(upright, options)
    assert mesh_gap(other_seed.vertices, result.vertices) > MOVED  # the seed reaches the surface
    assert mesh_gap(other_image.vertices, result.vertices) > MOVED  # and so does the image
