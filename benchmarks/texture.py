"""Texture stage speed and memory at full size with random weights.

Speed does not depend on weight values, so SDXL's UNet (2.6 B), the MV-Adapter processors (0.9 B),
the T2I adapter, the VAE and both CLIP text encoders are built from their configurations with
random weights. Two tables:

* `unet`: one denoising step (6 views x CFG = batch 12), plain SDXL vs with the adapter, plus the
  once-per-job reference pass and T2I-adapter features; median of the timed calls, peak memory.
* `stage`: the whole stage (TextureStage.run) on a real mesh, split into parts by the stage's own
  progress events (CUDA-synchronised), after one warm-up job; peak memory over the timed job.

    python3 benchmarks/texture.py                     # CUDA: both tables, 768 px views, 50 steps
    python3 benchmarks/texture.py --part unet --latent 32   # what a CPU can manage
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffusers import AutoencoderKL, T2IAdapter, UNet2DConditionModel  # noqa: E402
from diffusers.models.attention_processor import AttnProcessor2_0  # noqa: E402
from tokenizers.pre_tokenizers import ByteLevel  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer  # noqa: E402

from backend.context import JobContext, JobSpec  # noqa: E402
from backend.texture.adapter import init_adapter_from_base, install_mv_processors, t2i_adapter_config  # noqa: E402
from backend.texture.mv_attention import MVCall, ReferenceCache  # noqa: E402
from backend.texture.mv_pipeline import MultiViewPipeline  # noqa: E402
from backend.texture.scheduler import shifted_ddpm_scheduler  # noqa: E402
from backend.texture.stage import TextureStage, normalise  # noqa: E402
from backend.texture.sync import TextureSync, surface_samples  # noqa: E402
from benchmarks.common import MemoryPeak, MemoryProbe, Timing, commit, idle_device_bytes, sync, time_calls  # noqa: E402
from shared.views import CANONICAL_VIEWS  # noqa: E402
from shared.settings import defaults  # noqa: E402

# SDXL base 1.0 and its fp16-fix VAE (their config.json files), the fields that differ from the
# library defaults.
SDXL_UNET = dict(
    sample_size=128, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), block_out_channels=(320, 640, 1280),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)
SDXL_VAE = dict(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=1024,
                scaling_factor=0.13025, force_upcast=False)
CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
              num_attention_heads=12, hidden_act="quick_gelu", projection_dim=768)
CLIP_BIGG = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                 num_attention_heads=20, hidden_act="gelu", projection_dim=1280)
SDXL_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                      steps_offset=1, timestep_spacing="leading", prediction_type="epsilon")
VIEWS = 6
DEFAULT_MESH = ROOT.parent / "shared" / "assets" / "meshes" / "bunny.ply"


def timed(fn, device: torch.device, warmup: int, repeat: int) -> tuple[Timing, MemoryPeak]:
    """Timings of `repeat` calls of `fn` after `warmup` calls, and the memory peaks over them."""
    with MemoryProbe(device.index or 0) as probe:
        timing = time_calls(fn, repeat, warmup, device)
    return timing, probe.peak


def randomise_(module: torch.nn.Module, std: float = 0.02) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)


def random_unet(device: torch.device, dtype: torch.dtype) -> UNet2DConditionModel:
    with device:
        return UNet2DConditionModel(**SDXL_UNET).to(dtype).eval()


def add_random_adapter(unet: UNet2DConditionModel) -> None:
    install_mv_processors(unet)
    init_adapter_from_base(unet)
    for proc in unet.attn_processors.values():
        if isinstance(proc, torch.nn.Module):
            randomise_(proc)


def byte_tokenizer() -> CLIPTokenizer:
    chars = sorted(ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars])}
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    tok = CLIPTokenizer(vocab=vocab, merges=[])
    tok.model_max_length = 77
    return tok


def random_pipeline(device: torch.device, dtype: torch.dtype) -> MultiViewPipeline:
    unet = random_unet(device, dtype)
    add_random_adapter(unet)
    with device:
        t2i = T2IAdapter(**t2i_adapter_config(unet.config)).to(dtype).eval()
        vae = AutoencoderKL(**SDXL_VAE).to(dtype).eval()
        te1 = CLIPTextModel(CLIPTextConfig(**CLIP_L)).to(dtype).eval()
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_BIGG)).to(dtype).eval()
    tok = byte_tokenizer()
    return MultiViewPipeline(unet, vae, t2i, te1, te2, tok, tok, shifted_ddpm_scheduler(SDXL_SCHEDULER))


@torch.no_grad()
def unet_table(device: torch.device, dtype: torch.dtype, n: int, warmup: int, repeat: int, steps: int) -> None:
    torch.manual_seed(0)
    unet = random_unet(device, dtype)
    with device:
        t2i = T2IAdapter(**t2i_adapter_config(unet.config)).to(dtype).eval()
    hidden = torch.randn(2 * VIEWS, 77, 2048, device=device, dtype=dtype)
    added = {"text_embeds": torch.randn(2 * VIEWS, 1280, device=device, dtype=dtype),
             "time_ids": torch.tensor([[8.0 * n, 8.0 * n, 0, 0, 8.0 * n, 8.0 * n]], device=device,
                                      dtype=dtype).expand(2 * VIEWS, -1)}
    latents = torch.randn(2 * VIEWS, 4, n, n, device=device, dtype=dtype)
    control = torch.rand(VIEWS, 6, 8 * n, 8 * n, device=device, dtype=dtype)
    reference = torch.randn(1, 4, n, n, device=device, dtype=dtype)

    rows = []
    unet.set_attn_processor({name: AttnProcessor2_0() for name in unet.attn_processors})
    rows.append(("plain SDXL UNet step, batch 12", *timed(
        lambda: unet(latents, 500, encoder_hidden_states=hidden, added_cond_kwargs=added), device, warmup, repeat)))
    add_random_adapter(unet)
    features = [f.repeat(2, 1, 1, 1) for f in t2i(control)]
    cache = ReferenceCache()
    record = {"mv": MVCall("record", (n, n), cache)}
    pos = {k: v[:1] for k, v in added.items()}
    rows.append(("reference pass (once per job)", *timed(
        lambda: unet(reference, 0, encoder_hidden_states=hidden[:1], added_cond_kwargs=pos,
                     cross_attention_kwargs=record), device, 1, 3)))
    rows.append(("T2I adapter on 6 views (once per job)", *timed(lambda: t2i(control), device, 1, 3)))
    call = {"mv": MVCall("generate", (n, n), cache, ref_groups=(False, True))}
    rows.append(("MV-Adapter UNet step, batch 12", *timed(
        lambda: unet(latents, 500, encoder_hidden_states=hidden, added_cond_kwargs=added, cross_attention_kwargs=call,
                     down_intrablock_additional_residuals=list(features)), device, warmup, repeat)))

    print(f"\nUNet: {device_name(device)}, {dtype}, latents {n}x{n} ({8 * n} px views), "
          f"reference K/V cache {cache.nbytes() / 1e6:.0f} MB, commit {commit()}")
    print(f"{'part':42s} {'ms min / median / max':>24s}  peaks GiB: allocated / reserved / device used ({rows[0][2].source})")
    for name, timing, peak in rows:
        print(f"{name:42s} {timing.ms():>24s}  {peak.allocated:.2f} / {peak.reserved:.2f} / {peak.device_used:.2f}")
    print(f"{steps} steps with the adapter: {rows[-1][1].median * steps:.2f} s (plain SDXL: {rows[0][1].median * steps:.2f} s)")
    del unet, t2i, cache
    if device.type == "cuda":
        torch.cuda.empty_cache()


class StageClock:
    """Timestamps of the stage's progress events (CUDA-synchronised, so GPU work is attributed
    to the part that queued it)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.marks: list[tuple[str, int, float]] = []

    def __call__(self, stage: str, step: int, total: int, message: str) -> None:
        sync(self.device)
        self.marks.append((stage, step, time.perf_counter()))

    def at(self, stage: str, step: int) -> float:
        return next(t for s, i, t in self.marks if s == stage and i == step)


@torch.no_grad()
def stage_table(device: torch.device, dtype: torch.dtype, mesh_path: Path, view: int, texture: int,
                steps: int, faces: int) -> None:
    import trimesh

    mesh = trimesh.load(mesh_path, force="mesh")
    while len(mesh.faces) < faces:  # the geometry stage hands over more faces than the budget
        mesh = mesh.subdivide()
    stage = TextureStage(random_pipeline(device, dtype))
    settings = defaults()
    settings.update(view_resolution=view, texture_resolution=texture, texture_steps=steps, face_count=faces)
    rgb = np.full((512, 512, 3), 180, np.uint8)
    alpha = np.zeros((512, 512), np.float32)
    alpha[64:448, 96:416] = 1.0
    with tempfile.TemporaryDirectory() as tmp:
        for run in ("warm-up", "timed"):
            clock = StageClock(device)
            ctx = JobContext(JobSpec(run, Path(tmp) / "out.glb", settings), Path(tmp), on_progress=clock)
            with MemoryProbe(device.index or 0) as probe:
                sync(device)
                t0 = time.perf_counter()
                out = stage.run(ctx, mesh.vertices, mesh.faces, rgb, alpha)
                sync(device)
                total = time.perf_counter() - t0
    peak = probe.peak
    half = next(i for i, t in enumerate(stage.pipeline.scheduler.timesteps.tolist()) if t <= 500)
    c = clock
    parts = [
        ("clean + centre (CPU)", c.at("mesh", 0), c.at("mesh", 1)),
        ("conditioning renders, sync setup, prompts, reference pass, T2I", c.at("mesh", 1), c.at("texture", 0)),
        (f"denoising with texture sync ({half} steps)", c.at("texture", 0), c.at("texture", half)),
        (f"denoising without sync ({steps - half} steps)", c.at("texture", half), c.at("texture", steps)),
        ("VAE decode + views artifact", c.at("texture", steps), c.at("bake", 0)),
        ("waiting for the UV worker (decimate + xatlas)", c.at("bake", 0), c.at("bake", 1)),
        (f"upscale to {max(view, min(texture, 2048))} px + bake", c.at("bake", 1), c.at("bake", 2)),
        ("inpaint + refit", c.at("bake", 2), t0 + total),
    ]
    per_sync = (c.at("texture", half) - c.at("texture", 0)) / max(half, 1)
    per_plain = (c.at("texture", steps) - c.at("texture", half)) / max(steps - half, 1)
    sync_step = time_sync_step(stage, mesh, view // 8, steps, device)
    print(f"\nStage: {device_name(device)}, {dtype}, {mesh_path.name} ({len(mesh.faces)} faces -> "
          f"{len(out.mesh.faces)}), {view} px views, {texture} px texture, {steps} steps")
    print(f"{'part':64s} {'s':>7s}")
    for name, a, b in parts:
        print(f"{name:64s} {b - a:7.2f}")
    print(f"{'total':64s} {total:7.2f}")
    print(f"step time, sync phase minus plain phase: {(per_sync - per_plain) * 1e3:.1f} ms (includes CPU "
          f"contention with the UV worker); TextureSync.step alone: {sync_step * 1e3:.1f} ms")
    print(f"peak GPU memory over the timed job, GiB: torch allocated {peak.allocated:.2f}, torch reserved "
          f"{peak.reserved:.2f}, device used {peak.device_used:.2f} ({peak.source}; context and other libraries "
          f"included), commit {commit()}")


def time_sync_step(stage: TextureStage, mesh, latent: int, steps: int, device: torch.device) -> float:
    verts, faces, _ = normalise(mesh.vertices, mesh.faces)
    samples = surface_samples(verts, faces, CANONICAL_VIEWS, (latent, latent), device=device)
    scheduler = stage.pipeline.scheduler
    scheduler.set_timesteps(steps)
    texture_sync = TextureSync(samples, scheduler, torch.zeros(14, 4, device=device))
    g = torch.Generator().manual_seed(0)
    latents = texture_sync.start(torch.randn(VIEWS, 4, latent, latent).to(device), steps, g)
    eps = torch.randn(VIEWS, 4, latent, latent).to(device)
    t = int(scheduler.timesteps[1])
    return timed(lambda: texture_sync.step(1, t, latents, eps, g), device, 2, 10)[0].median


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("all", "unet", "stage"), default=None,
                        help="default: all on CUDA, unet on the CPU")
    parser.add_argument("--latent", type=int, default=96, help="UNet table: latent side (96 = 768 px views)")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--mesh", type=Path, default=DEFAULT_MESH)
    parser.add_argument("--faces", type=int, default=50000, help="face budget (the mesh is subdivided above it)")
    parser.add_argument("--view", type=int, default=768)
    parser.add_argument("--texture", type=int, default=2048)
    args = parser.parse_args()
    idle_device_bytes()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    part = args.part or ("all" if device.type == "cuda" else "unet")
    if part in ("all", "unet"):
        unet_table(device, dtype, args.latent, args.warmup, args.repeat, args.steps)
    if part in ("all", "stage"):
        stage_table(device, dtype, args.mesh, args.view, args.texture, args.steps, args.faces)


if __name__ == "__main__":
    main()
