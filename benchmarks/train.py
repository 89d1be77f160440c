"""Training speed and peak memory of each trainer, full size, random weights, one device.

Runs the trainers' own objectives (backend/train) for a few optimiser steps each: bf16 autocast
with fp32 trainable weights and AdamW (what `python -m backend.train` does on a GPU), frozen parts
in bf16, activation checkpointing on unless --no-checkpointing. Peak memory is
torch.cuda.max_memory_allocated over the timed steps (weights, gradients, AdamW states and
activations; the CUDA context and allocator slack come on top). cuDNN fused attention is off, as
in training (LoopConfig.cudnn_attention). For each model the batch is
doubled, then bisected, up to the largest that fits the card (--max-batch-gb, default the card).

    python3 benchmarks/train.py                        # CUDA: every model, batch 1 and the largest batch
    python3 benchmarks/train.py --models dit_lora --batches 1
    python3 benchmarks/train.py --scale tiny           # what a CPU can run (checks the script)

Measured (H100 80 GB, torch 2.11 + CUDA 13, bf16, checkpointing on; 2026-11, random weights):
    vae       191.6M trainable             batch 1: 2.40 steps/s,  3.9 GB   batch 70 (max): 0.50 steps/s, 76.6 GB
    dit       1316M trainable / 1812M      batch 1: 1.25 steps/s, 27.9 GB
    dit_lora  94.4M trainable / 1907M      batch 1: 1.07 steps/s,  8.4 GB
    texture   900.6M trainable / 4369M     batch 1: 0.50 steps/s, 25.5 GB   (6 views at 768 px, cuDNN attention on)

Models: vae (shape VAE, 32768 + 32768 points, 10000 SDF points), dit (base 1300m, all weights;
the VAE and DINOv2-L frozen), dit_lora (rank 128 on the reference's targets), texture (SDXL UNet
with the MV-Adapter + T2I-adapter, 6 views at 768 px, CLIP-L + bigG and the VAE frozen).
"""
from __future__ import annotations

import argparse
import gc
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import GIB, MemoryProbe, print_table, time_calls  # noqa: E402

MODELS = ("vae", "dit", "dit_lora", "texture")


def _sizes(scale: str) -> dict:
    if scale == "full":
        return dict(points=32768, supervision=10000, vae={}, dit={}, dino=None, image=518, views_px=768)
    return dict(points=512, supervision=256, vae=dict(num_latents=64, embed_dim=8, width=64, heads=2,
                                                      num_encoder_layers=1, num_decoder_layers=1),
                dit=dict(input_channels=8, width=64, layers=1, num_single_layers=1, num_heads=2, condition_dim=32,
                         visual_condition_dim=32),
                dino=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2, image_size=28,
                          patch_size=14, num_register_tokens=4), image=28, views_px=64)


def build_vae(s, ckpt: bool):
    from backend.geometry.vae import CrossAttentionBlock, SelfAttentionBlock, ShapeVAE
    from backend.train.checkpointing import checkpoint_blocks
    from backend.train.shape_vae import ShapeVAEObjective

    vae = ShapeVAE(**s["vae"])
    if ckpt:
        checkpoint_blocks(vae, (SelfAttentionBlock, CrossAttentionBlock))

    def batch(b, device):
        pts = lambda n, c: torch.randn(b, n, c, device=device)
        return {"surface": pts(s["points"], 6), "sharp_surface": pts(s["points"], 6),
                "points": pts(s["supervision"], 3), "sdf": pts(s["supervision"], 1)[..., 0]}

    return ShapeVAEObjective(vae, 1e-3), batch


def build_dit(s, ckpt: bool, lora: bool):
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock, FluxTransformerBlock
    from PIL import Image

    from backend.geometry.conditioners import DinoEncoder
    from backend.geometry.dit import GeometryDenoiser
    from backend.geometry.pipeline import GeometryPipeline
    from backend.geometry.vae import ShapeVAE
    from backend.train.checkpointing import checkpoint_blocks
    from backend.train.config import GeometryDiTConfig
    from backend.train.geometry_dit import FlowMatchingObjective
    from backend.train.lora import add_lora, lora_config

    denoiser = GeometryDenoiser(**s["dit"])
    vae = ShapeVAE(**s["vae"]).to(torch.bfloat16).requires_grad_(False)
    dino = DinoEncoder(image_size=s["image"], dino_config=s["dino"]).to(torch.bfloat16).requires_grad_(False)
    if ckpt:
        checkpoint_blocks(denoiser, (FluxTransformerBlock, FluxSingleTransformerBlock))
    if lora:
        add_lora(denoiser, lora_config())
    pipe = GeometryPipeline(denoiser, vae, dino, FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000))
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (s["image"], s["image"], 3), dtype=np.uint8))

    def batch(b, device):
        pts = lambda: torch.randn(b, s["points"], 6, device=device)
        return {"surface": pts(), "sharp_surface": pts(), "image": [image] * b, "labels": [None] * b}

    return FlowMatchingObjective(pipe, GeometryDiTConfig()), batch


def build_texture(s, ckpt: bool, scale: str):
    from diffusers import AutoencoderKL, DDPMScheduler, T2IAdapter, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from backend.texture.adapter import init_adapter_from_base, install_mv_processors, t2i_adapter_config
    from backend.texture.scheduler import shifted_ddpm_scheduler
    from backend.train.config import TextureAdapterConfig
    from backend.train.texture_adapter import MultiViewObjective, mark_trainable
    from tests.texture.tiny_weights import SDXL_SCHEDULER, UNET_CONFIG, _write_tokenizer

    if scale == "full":
        from benchmarks.texture import SDXL_UNET

        unet_cfg = SDXL_UNET
        text = [dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                     hidden_act="quick_gelu", projection_dim=768),
                dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                     hidden_act="gelu", projection_dim=1280)]
        vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                            sample_size=1024, scaling_factor=0.13025)
    else:
        unet_cfg = UNET_CONFIG
        text = [dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, projection_dim=16)] * 2
        vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            block_out_channels=(8, 8, 16, 16), layers_per_block=1, latent_channels=4,
                            norm_num_groups=4, scaling_factor=0.13025)
    unet = UNet2DConditionModel(**unet_cfg)
    install_mv_processors(unet)
    init_adapter_from_base(unet)
    t2i = T2IAdapter(**t2i_adapter_config(unet.config))
    unet.to(torch.bfloat16)
    mark_trainable(unet, t2i, ("_mv", "_ref"))
    if ckpt:
        unet.enable_gradient_checkpointing()
    folder = Path(tempfile.mkdtemp(prefix="bench-tok-"))
    vocab = _write_tokenizer(folder)  # a byte-level tokenizer: no download; prompt length as in SDXL (77)
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    encoders = [cls(CLIPTextConfig(vocab_size=49408 if scale == "full" else vocab, max_position_embeddings=77,
                                   bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1, **c))
                .to(torch.bfloat16).requires_grad_(False) for cls, c in zip((CLIPTextModel, CLIPTextModelWithProjection), text)]
    scheduler = shifted_ddpm_scheduler(DDPMScheduler.from_config(SDXL_SCHEDULER).config)
    cfg = TextureAdapterConfig(resolution=s["views_px"])
    objective = MultiViewObjective(unet, t2i, vae.to(torch.bfloat16).requires_grad_(False), encoders,
                                   (tokenizer, tokenizer), scheduler, cfg)
    px = s["views_px"]

    def batch(b, device):
        return {"views": torch.rand(b, 6, 3, px, px, device=device), "control": torch.rand(b, 6, 6, px, px, device=device),
                "reference": torch.rand(b, 3, px, px, device=device), "prompt": ["a wooden chair"] * b}

    return objective, batch


def build(name: str, s: dict, ckpt: bool, scale: str):
    if name == "vae":
        return build_vae(s, ckpt)
    if name in ("dit", "dit_lora"):
        return build_dit(s, ckpt, lora=name == "dit_lora")
    return build_texture(s, ckpt, scale)


def measure(module, make_batch, batch: int, device: torch.device, steps: int) -> tuple[float, float]:
    """(optimiser steps per second, peak GB) over `steps` steps after one warm-up step."""
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-6, betas=(0.9, 0.99), eps=1e-6)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)

    def step():
        data = make_batch(batch, device)
        with autocast:
            loss = module(data)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with MemoryProbe(device.index or 0) as probe:
        timing = time_calls(step, steps, 1, device)
    peak = probe.peak.allocated * GIB / 1e9 if device.type == "cuda" else float("nan")
    del optimizer
    return 1.0 / timing.median, peak


def fits(module, make_batch, batch, device, steps) -> tuple[float, float] | None:
    try:
        return measure(module, make_batch, batch, device, steps)
    except torch.OutOfMemoryError:
        return None
    finally:
        for p in module.parameters():
            p.grad = None
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def largest_batch(module, make_batch, device, steps, limit_gb: float, start: tuple[float, float]):
    """Doubling then bisection on the batch size; a batch counts as fitting when it runs and its
    peak stays under `limit_gb`."""
    ok = {1: start}
    good, bad = 1, None
    while bad is None and good < 1024:
        r = fits(module, make_batch, good * 2, device, steps)
        if r is None or r[1] > limit_gb:
            bad = good * 2
        else:
            good *= 2
            ok[good] = r
    while bad is not None and bad - good > 1:
        mid = (good + bad) // 2
        r = fits(module, make_batch, mid, device, steps)
        if r is None or r[1] > limit_gb:
            bad = mid
        else:
            good, ok[mid] = mid, r
    return good, ok[good]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma list from {','.join(MODELS)}")
    parser.add_argument("--scale", choices=("full", "tiny"), default=None, help="default: full on CUDA, tiny on CPU")
    parser.add_argument("--batches", choices=("1", "max"), default="max", help="batch 1 only, or also the largest")
    parser.add_argument("--steps", type=int, default=3, help="timed optimiser steps per measurement")
    parser.add_argument("--max-batch-gb", type=float, default=80.0, help="memory budget for the largest batch")
    parser.add_argument("--no-checkpointing", action="store_true", help="activation checkpointing off")
    parser.add_argument("--cudnn-attention", action="store_true",
                        help="allow cuDNN fused attention (off, as in training: see LoopConfig.cudnn_attention)")
    args = parser.parse_args()
    torch.backends.cuda.enable_cudnn_sdp(args.cudnn_attention)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    scale = args.scale or ("full" if device.type == "cuda" else "tiny")
    s = _sizes(scale)
    ckpt = not args.no_checkpointing
    rows = []
    for name in args.models.split(","):
        if name not in MODELS:
            raise SystemExit(f"unknown model {name!r}")
        torch.manual_seed(0)
        with torch.device(device):
            module, make_batch = build(name, s, ckpt, scale)
        module.to(device).train()
        n_train = sum(p.numel() for p in module.parameters() if p.requires_grad)
        n_all = sum(p.numel() for p in module.parameters())
        first = fits(module, make_batch, 1, device, args.steps)
        if first is None:
            rows.append((name, f"{n_train / 1e6:.4g}M / {n_all / 1e6:.4g}M", 1, "OOM", "OOM"))
        else:
            rows.append((name, f"{n_train / 1e6:.4g}M / {n_all / 1e6:.4g}M", 1, f"{first[0]:.2f}", f"{first[1]:.1f}"))
            if args.batches == "max" and device.type == "cuda":
                b, (rate, peak) = largest_batch(module, make_batch, device, args.steps, args.max_batch_gb, first)
                rows.append((name, "", f"{b} (max)", f"{rate:.2f}", f"{peak:.1f}"))
        del module, make_batch
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print_table(f"training, {scale} size, bf16 autocast + AdamW, checkpointing {'on' if ckpt else 'off'}", rows,
                ("model", "trainable / all params", "batch", "steps/s", "peak GB"))


if __name__ == "__main__":
    main()
