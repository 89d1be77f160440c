"""The opt-in fast paths (backend/runtime/fast.py) on the two denoising networks, full size, random
weights: one texture UNet step (6 views x CFG = batch 12, MV-Adapter + reference + T2I features,
fp16) and one geometry DiT step (batch 2, bf16), per variant: min / median / max ms, peak memory,
and the output against the eager path on the same inputs (relative error, cosine). Compiled
variants also report the first call (compilation, cold) and a second call with fresh per-job
objects (no recompilation expected).

    python3 -m benchmarks.fast_paths                  # CUDA
    python3 -m benchmarks.fast_paths --only dit --variants eager,cudnn
"""
from __future__ import annotations

import argparse
import time

import torch

from backend.runtime import fast
from benchmarks.common import MemoryProbe, idle_device_bytes, print_table, sync, time_calls

VIEWS = 6


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0).item()


def unet_case(device: torch.device, n: int):
    """(module factory, call(module, job) -> output): the texture UNet's generate step."""
    from diffusers import T2IAdapter

    from backend.texture.adapter import t2i_adapter_config
    from backend.texture.mv_attention import MVCall, ReferenceCache
    from benchmarks.texture import add_random_adapter, random_unet

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    unet = random_unet(device, dtype)
    add_random_adapter(unet)
    cfg = unet.config
    pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
    with device:
        t2i = T2IAdapter(**t2i_adapter_config(unet.config)).to(dtype).eval()
    g = torch.Generator(device).manual_seed(0)
    hidden = torch.randn(2 * VIEWS, 77, cfg.cross_attention_dim, device=device, dtype=dtype, generator=g)
    added = {"text_embeds": torch.randn(2 * VIEWS, pooled, device=device, dtype=dtype, generator=g),
             "time_ids": torch.tensor([[8.0 * n, 8.0 * n, 0, 0, 8.0 * n, 8.0 * n]], device=device,
                                      dtype=dtype).expand(2 * VIEWS, -1)}
    latents = torch.randn(2 * VIEWS, 4, n, n, device=device, dtype=dtype, generator=g)
    control = torch.rand(VIEWS, 6, 8 * n, 8 * n, device=device, dtype=dtype, generator=g)
    reference = torch.randn(1, 4, n, n, device=device, dtype=dtype, generator=g)
    with torch.no_grad():
        features = [f.repeat(2, 1, 1, 1) for f in t2i(control)]
    pos = {k: v[:1] for k, v in added.items()}

    caches: dict[int, ReferenceCache] = {}

    def call(module, job: int, t: int = 500):
        """One generate step; a job's first call also runs its reference pass (untimed after that)."""
        if job not in caches:
            caches[job] = ReferenceCache()  # per job, as the pipeline makes them
            module(reference, 0, encoder_hidden_states=hidden[:1], added_cond_kwargs=pos,
                   cross_attention_kwargs={"mv": MVCall("record", (n, n), caches[job])})
        mv = MVCall("generate", (n, n), caches[job], ref_groups=(False, True))
        return module(latents, t, encoder_hidden_states=hidden, added_cond_kwargs=added, cross_attention_kwargs={"mv": mv},
                      down_intrablock_additional_residuals=list(features), return_dict=False)[0]

    return unet, call


def dit_case(device: torch.device):
    from backend.geometry.dit import GeometryDenoiser

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    with device:
        dit = GeometryDenoiser().to(dtype).eval().requires_grad_(False)
    g = torch.Generator(device).manual_seed(0)
    x = torch.randn(2, 2048, 64, device=device, generator=g)
    ctx = torch.randn(2, 1370, 1024, device=device, generator=g)

    def call(module, job: int, t: float = 500.0):
        return module(x, torch.tensor(float(t), device=device), ctx)  # float, as the sampler's timesteps

    return dit, call


@torch.no_grad()
def measure(name: str, make, variants: list[str], repeats: int, device: torch.device,
            split_device: str = "") -> list[tuple]:
    """`split` in a variant (last: it stays installed) halves each guided call onto `split_device`."""
    module, call = make()
    rows, ref = [], None
    for variant in variants:
        words = [w for w in variant.split(",") if w not in ("eager", "split")]
        paths = fast.FastPaths.parse(",".join(words))
        fast.apply(module, paths)
        if "split" in variant:
            from backend.runtime.cfg_split import split_cfg

            split_cfg(module, split_device)
            fast.apply(module._cfg_split.twin, paths)
        cold = float("nan")
        if paths.compile:
            torch._dynamo.reset()
            sync(device)
            t0 = time.perf_counter()
            call(module, 1)
            sync(device)
            cold = time.perf_counter() - t0
        # a new job's first call: new per-job objects and another timestep (a recompile would show here)
        second = time_calls(lambda: call(module, 3 + len(rows), 400), 1, 0, device).median
        keep: list = []
        with MemoryProbe(device.index or 0) as probe:
            timing = time_calls(lambda: call(module, 2), repeats, 2, device, keep)
        out = keep[0].float()
        if ref is None:
            ref = out
        rows.append((name, variant, timing.ms(), f"{cold:.1f}", f"{second * 1e3:.1f}", f"{rel_err(out, ref):.2e}",
                     f"{cosine(out, ref):.6f}", f"{probe.peak.reserved:.2f}", f"{probe.peak.device_used:.2f}"))
        print(*rows[-1], sep="  ", flush=True)
    del module
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("unet", "dit", "both"), default="both")
    parser.add_argument("--unet-variants", default="eager,cudnn,flash,efficient,fuse,compile,compile+cudnn+fuse")
    parser.add_argument("--dit-variants", default="eager,cudnn,flash,compile,compile+cudnn")
    parser.add_argument("--latent", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--split-device", default="cuda:1", help="the second device of `split` variants")
    args = parser.parse_args()
    idle_device_bytes()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    if args.only in ("unet", "both"):
        rows += measure("texture UNet step, batch 12", lambda: unet_case(device, args.latent),
                        [v.replace("+", ",") for v in args.unet_variants.split(",")], args.repeats, device,
                        args.split_device)
    if args.only in ("dit", "both"):
        rows += measure("geometry DiT step, batch 2", lambda: dit_case(device),
                        [v.replace("+", ",") for v in args.dit_variants.split(",")], args.repeats, device,
                        args.split_device)
    print_table("Fast paths against the eager path (same inputs; error and cosine vs the first variant)", rows,
                ("network", "variant", "ms min / median / max", "first call s (compile)", "next job's first call ms (UNet: + its reference pass)",
                 "rel. error", "cosine", "reserved GiB", "device used GiB"))


if __name__ == "__main__":
    main()
