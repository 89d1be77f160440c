"""Texture stage speed and memory: the full-size SDXL UNet with the MV-Adapter, random weights.

Speed does not depend on weight values, so the UNet (2.6 B), the adapter processors (0.9 B) and
the T2I adapter are built from their configurations with random weights. Prints one table row per
part: median time over the timed calls and the peak allocated memory (weights included).

    python3 benchmarks/texture.py                  # CUDA fp16: batch 12 (6 views x CFG) at 96x96 latents
    python3 benchmarks/texture.py --latent 32      # what a CPU can manage
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusers import T2IAdapter, UNet2DConditionModel  # noqa: E402
from diffusers.models.attention_processor import AttnProcessor2_0  # noqa: E402

from backend.texture.adapter import init_adapter_from_base, install_mv_processors, t2i_adapter_config  # noqa: E402
from backend.texture.mv_attention import MVCall, ReferenceCache  # noqa: E402

# SDXL base 1.0's UNet (unet/config.json), the fields that differ from diffusers' defaults.
SDXL_UNET = dict(
    sample_size=128, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), block_out_channels=(320, 640, 1280),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)
VIEWS = 6


def timed(fn, device: torch.device, warmup: int, repeat: int) -> tuple[float, float]:
    """(median seconds, peak GB) of `fn` over `repeat` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000.0)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else float("nan")
    return statistics.median(times), peak


def randomise_(module: torch.nn.Module, std: float = 0.02) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latent", type=int, default=96, help="latent side (view px / 8); 96 = 768 px views")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50, help="denoising steps the per-job estimate assumes")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    n = args.latent

    torch.manual_seed(0)
    with device:
        unet = UNet2DConditionModel(**SDXL_UNET).to(dtype).eval()
        t2i = T2IAdapter(**t2i_adapter_config(unet.config)).to(dtype).eval()
    plain_processors = {name: AttnProcessor2_0() for name in unet.attn_processors}

    hidden = torch.randn(2 * VIEWS, 77, 2048, device=device, dtype=dtype)
    added = {"text_embeds": torch.randn(2 * VIEWS, 1280, device=device, dtype=dtype),
             "time_ids": torch.tensor([[8.0 * n, 8.0 * n, 0, 0, 8.0 * n, 8.0 * n]], device=device,
                                      dtype=dtype).expand(2 * VIEWS, -1)}
    latents = torch.randn(2 * VIEWS, 4, n, n, device=device, dtype=dtype)
    control = torch.rand(VIEWS, 6, 8 * n, 8 * n, device=device, dtype=dtype)
    reference = torch.randn(1, 4, n, n, device=device, dtype=dtype)

    rows = []
    unet.set_attn_processor(dict(plain_processors))
    rows.append(("plain SDXL UNet step", *timed(
        lambda: unet(latents, 500, encoder_hidden_states=hidden, added_cond_kwargs=added),
        device, args.warmup, args.repeat)))

    install_mv_processors(unet)
    init_adapter_from_base(unet)
    for name, proc in unet.attn_processors.items():
        if isinstance(proc, torch.nn.Module):
            randomise_(proc)
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
                     down_intrablock_additional_residuals=list(features)), device, args.warmup, args.repeat)))

    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, {dtype}, "
          f"latents {n}x{n} ({8 * n} px views), reference K/V cache {cache.nbytes() / 1e6:.0f} MB")
    print(f"{'part':42s} {'ms':>9s} {'peak GB':>8s}")
    for name, seconds, peak in rows:
        print(f"{name:42s} {seconds * 1e3:9.1f} {peak:8.2f}")
    adapted = rows[-1][1]
    print(f"{args.steps} steps with the adapter: {adapted * args.steps:.2f} s "
          f"(plain SDXL: {rows[0][1] * args.steps:.2f} s)")


if __name__ == "__main__":
    main()
