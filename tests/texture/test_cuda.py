"""The texture stage's CUDA paths: fp16 MV attention, the pipeline and the stage on the GPU."""
import numpy as np
import pytest
import torch
import trimesh

from backend.context import JobContext, JobSpec
from backend.texture.mv_attention import MVCall, ReferenceCache
from backend.texture.mv_pipeline import MultiViewPipeline
from backend.texture.stage import TextureStage
from shared.settings import defaults
from tests.texture.test_mv_attention import _layer, naive_layer
from tests.texture.tiny_weights import write_tiny_weights

pytestmark = pytest.mark.cuda


@torch.no_grad()
def test_fp16_processor_on_cuda_matches_float64_reference():
    attn, proc = _layer(c=64, heads=2, seed=3)
    h, w = 6, 8
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, h * w, 64, generator=g, dtype=torch.float64)
    ref_feat = torch.randn(1, h * w, 64, generator=g, dtype=torch.float64)
    want = naive_layer(attn, proc, x, ref_feat, (False, True), h, w)
    attn = attn.to("cuda", torch.float16)
    cache = ReferenceCache()
    attn(ref_feat.to("cuda", torch.float16), mv=MVCall("record", (h, w), cache))
    got = attn(x.to("cuda", torch.float16), mv=MVCall("generate", (h, w), cache, ref_groups=(False, True)))
    err = (got.double().cpu() - want).abs().max() / want.abs().max()
    assert err < 5e-3


@pytest.fixture(scope="module")
def cuda_stage(tmp_path_factory):
    w = write_tiny_weights(tmp_path_factory.mktemp("weights"))
    return TextureStage(MultiViewPipeline.load(str(w.base), str(w.vae), str(w.step1x), device="cuda"))


def test_pipeline_runs_in_fp16_on_cuda_and_is_repeatable(cuda_stage):
    pipe = cuda_stage.pipeline
    assert pipe.unet.dtype == torch.float16 and pipe.unet.device.type == "cuda"
    g = torch.Generator().manual_seed(0)
    ref, ctl = torch.rand(3, 64, 64, generator=g), torch.rand(6, 6, 64, 64, generator=g)
    a = pipe(ref, ctl, seed=5, steps=3)
    b = pipe(ref, ctl, seed=5, steps=3)
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b, atol=2e-3, rtol=0)


def test_stage_on_cuda(cuda_stage, assets, tmp_path):
    mesh = trimesh.load(assets / "meshes" / "Duck.glb", force="mesh")
    settings = defaults()
    settings.update(view_resolution=64, texture_resolution=512, face_count=2000, texture_steps=4)
    ctx = JobContext(JobSpec("job", tmp_path / "duck.glb", settings), tmp_path)
    rgb = np.full((64, 64, 3), 128, np.uint8)
    alpha = np.zeros((64, 64), np.float32)
    alpha[8:56, 8:56] = 1
    out = cuda_stage.run(ctx, mesh.vertices, mesh.faces, rgb, alpha)
    assert out.texture.shape == (512, 512, 3) and len(out.mesh.faces) <= 2000
    assert out.texture.reshape(-1, 3).std(0).max() > 1
