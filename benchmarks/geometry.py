"""Geometry stage (Step1X-3D stage 1) by stage, with full-size random-weight modules.

Run: python3 -m benchmarks.geometry [--dtypes fp32,bf16] [--steps 50] [--octree 384] [--asset PATH]
     python3 -m benchmarks.geometry --tiny      (CPU: tiny modules, octree 128, 5 steps)

Speed does not depend on weight values, but the surface does: random weights give a field of
random sign everywhere, which the coarse-to-fine decoder must refine almost densely. So the
surface-dependent stages (fine-level decoding, marching cubes, clean-up and decimation) are timed
on a realistic shape: an asset mesh is voxelised on the (R+1)^3 lattice and smoothed into a field;
the decoder runs on exactly the points the coarse-to-fine pass asks for (full cost), but the values
it returns for the masks come from the asset. The random-weight field is timed too, as the worst case.
fp32 means TF32 off (how the release runs). Peak = torch.cuda.max_memory_allocated per stage,
weights included.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from backend.geometry.conditioners import DinoEncoder, ShapeLabels
from backend.geometry.dit import GeometryDenoiser
from backend.geometry.image_prep import prepare_image
from backend.geometry.marching import marching_cubes
from backend.geometry.pipeline import GeometryOptions, GeometryPipeline
from backend.mesh.clean import clean
from backend.mesh.decimate import decimate
from backend.mesh.workers import shared_workers
from backend.geometry.sampler import initial_noise, sample_latents
from backend.geometry.vae import ShapeVAE
from backend.geometry.volume import decode_coarse_to_fine

from .common import print_table

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ASSET = ROOT.parent / "shared" / "assets" / "meshes" / "Duck.glb"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build(tiny: bool, device: torch.device, dtype: torch.dtype) -> GeometryPipeline:
    from diffusers import FlowMatchEulerDiscreteScheduler

    torch.manual_seed(0)
    with torch.device(device):
        if tiny:
            from tests.geometry.tiny import tiny_components

            parts = tiny_components(label=False)
        else:
            parts = {"transformer": GeometryDenoiser(), "vae": ShapeVAE(), "visual_encoder": DinoEncoder()}
    pipe = GeometryPipeline(parts["transformer"], parts["vae"], parts["visual_encoder"],
                            FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0))
    for module in pipe.modules:
        module.eval().requires_grad_(False)
    return pipe.to(device, dtype)


def input_image() -> Image.Image:
    img = Image.new("RGBA", (1024, 1024), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    draw.ellipse((250, 200, 780, 860), fill=(190, 120, 60, 255))
    draw.rectangle((420, 120, 600, 300), fill=(90, 90, 200, 255))
    return img


def asset_field(path: Path | None, resolution: int, bounds: float, device: torch.device) -> torch.Tensor:
    """A smooth inside-positive field on the (R+1)^3 lattice whose zero set is the asset's surface
    (|value| < 0.95 within ~2 lattice cells of it). Falls back to a torus if there is no asset."""
    from scipy import ndimage

    n = resolution + 1
    if path is not None and path.is_file():
        import trimesh

        mesh = trimesh.load(path, force="mesh")
        v = mesh.vertices - (mesh.bounds[0] + mesh.bounds[1]) / 2
        mesh = trimesh.Trimesh(v / np.abs(v).max() * 0.95, mesh.faces, process=False)
        pts = mesh.sample(max(2_000_000, 40 * n * n))
        ijk = np.clip(np.rint((pts + bounds) / (2 * bounds) * resolution).astype(np.int64), 0, resolution)
        surface = np.zeros((n, n, n), bool)
        surface[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = True
        surface = ndimage.binary_dilation(surface)
        labels, count = ndimage.label(~surface)  # one pass; binary_fill_holes iterates for minutes at 385^3
        border = np.unique(np.concatenate([labels[[0, -1]].ravel(), labels[:, [0, -1]].ravel(),
                                           labels[:, :, [0, -1]].ravel()]))
        outside = np.zeros(count + 1, bool)
        outside[border[border > 0]] = True
        inside = ~outside[labels]
    else:
        axis = np.linspace(-bounds, bounds, n, dtype=np.float32)
        x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
        inside = (np.sqrt(x**2 + z**2) - 0.6) ** 2 + y**2 < 0.25**2
    smooth = ndimage.gaussian_filter(inside.astype(np.float32), sigma=1.0)
    return torch.from_numpy(np.clip((smooth - 0.5) * 2.2, -1, 1)).to(device)


class Meter:
    """Seconds and peak device memory of one call (the device is synchronised around it)."""

    def __init__(self, device: torch.device):
        self.device = device

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, fn, repeats: int = 1):
        times, out = [], None
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        for _ in range(repeats):
            self.sync()
            t0 = time.perf_counter()
            out = fn()
            self.sync()
            times.append(time.perf_counter() - t0)
        peak = torch.cuda.max_memory_allocated(self.device) / 2**30 if self.device.type == "cuda" else float("nan")
        return statistics.median(times), peak, out


@torch.no_grad()
def run(pipe: GeometryPipeline, args, device: torch.device) -> tuple[dict, dict]:
    meter = Meter(device)
    workers = shared_workers()
    workers.warm()  # as the engine does when it loads the models
    o = GeometryOptions(steps=args.steps, octree_resolution=args.octree, face_budget=args.faces, chunk_size=args.chunk)
    prepared = prepare_image(input_image())
    rows, info = {}, {}

    def stage(name, fn, repeats=1, warmup=True):
        if warmup:
            fn()
        rows[name] = meter(fn, repeats)
        return rows[name][2]

    cond, uncond = stage("conditioning (image encoder)", lambda: pipe.encode_condition(prepared, ShapeLabels()), 3)
    noise = initial_noise((1, pipe.vae.config.num_latents, pipe.denoiser.config.input_channels),
                          torch.Generator(device).manual_seed(0), device)
    x2, ctx2 = torch.cat([noise, noise]), torch.cat([uncond, cond])
    stage("DiT forward, batch 2 (CFG)", lambda: pipe.denoiser(x2, torch.tensor(999.0, device=device), ctx2), 5)
    latents = stage(f"DiT {args.steps}-step CFG loop", lambda: sample_latents(
        pipe.denoiser, pipe.scheduler, cond, uncond, noise, args.steps, 7.5, True), 1)
    tokens = stage("VAE decode (post-KL + blocks)", lambda: pipe.vae.decode(latents), 3)

    target = asset_field(args.asset, args.octree, o.bounds, device)
    n = args.octree + 1
    field = pipe.field_fn(tokens)

    def asset_fn(points):  # full decoder cost; values from the asset
        decoded = field(points)
        ijk = torch.round((points + o.bounds) / (2 * o.bounds) * args.octree).long().clamp_(0, args.octree)
        # random weights can overflow bf16: keep their cost, never their NaNs
        return target.view(-1)[(ijk[:, 0] * n + ijk[:, 1]) * n + ijk[:, 2]] + 0 * decoded.nan_to_num(0, 0, 0)

    grid, stats = stage(f"SDF decoding, octree {args.octree} (asset shell)", lambda: decode_coarse_to_fine(
        asset_fn, args.octree, o.bounds, o.chunk_size, device), 1)
    info["asset queries"] = f"{stats.total_queries / 1e6:.2f} M ({'/'.join(f'{q / 1e6:.2f}' for q in stats.queries)})"
    _, rstats = stage(f"SDF decoding, octree {args.octree} (random-weight field)", lambda: decode_coarse_to_fine(
        field, args.octree, o.bounds, o.chunk_size, device), 1, warmup=False)
    info["random-field queries"] = f"{rstats.total_queries / 1e6:.2f} M of {n**3 / 1e6:.2f} M dense"
    if device.type == "cuda":
        stage("marching cubes (warp, GPU)", lambda: marching_cubes(grid, 0.0, o.bounds, backend="warp"), 3)
    verts, faces = stage("marching cubes (scikit-image, CPU)", lambda: marching_cubes(grid.cpu(), 0.0, o.bounds,
                                                                                        backend="skimage"), 1)
    info["marching-cubes faces"] = f"{len(faces) / 1e6:.2f} M"
    cleaned = stage(f"clean-up (weld, degenerate faces, floaters; {device.type}, as the engine)", lambda: clean(
        verts, faces, o.min_part_fraction, device=device), 3)
    info["faces after clean-up"] = f"{len(cleaned[1]) / 1e6:.2f} M"
    v, f = stage(f"decimation to {args.faces} faces (CPU, {workers.processes} processes)", lambda: decimate(
        *cleaned, args.faces, workers), 1, warmup=False)
    info["final faces"] = str(len(f))
    return rows, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--octree", type=int, default=384)
    parser.add_argument("--faces", type=int, default=200_000)
    parser.add_argument("--chunk", type=int, default=131072)
    parser.add_argument("--asset", type=Path, default=DEFAULT_ASSET)
    parser.add_argument("--tiny", action="store_true", help="tiny modules (the CPU default)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not args.tiny:
        print("no CUDA device: running the tiny configuration on the CPU (octree 128, 5 steps)")
        args.tiny, args.octree, args.steps, args.dtypes = True, 128, 5, "fp32"
    results, infos = {}, {}
    for name in args.dtypes.split(","):
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        pipe = build(args.tiny, device, DTYPES[name])
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        results[name], infos[name] = run(pipe, args, device)
        del pipe
        if device.type == "cuda":
            torch.cuda.empty_cache()
    names = list(results)
    header = ("stage",) + tuple(f"{n} {unit}" for n in names for unit in ("ms", "peak GB"))
    stages = list(results[names[0]])
    rows = [(s,) + tuple(x for n in names for x in (f"{results[n][s][0] * 1e3:.1f}", f"{results[n][s][1]:.2f}"))
            for s in stages]
    mc = "marching cubes (warp" if device.type == "cuda" else "marching cubes (scikit"
    whole = [s for s in stages if s.startswith(("conditioning", "DiT " + str(args.steps), "VAE", mc, "clean-up", "decimation"))
             or "asset shell" in s]
    rows.append(("whole stage: " + ", ".join(s.split(" (")[0].split(",")[0] for s in whole),) + tuple(
        x for n in names for x in (f"{sum(results[n][s][0] for s in whole) * 1e3:.0f}",
                                   f"{max(results[n][s][1] for s in whole):.2f}")))
    kind = "tiny modules" if args.tiny else "full-size modules, random weights"
    print_table(f"Geometry stage, {kind}, {args.steps} steps, octree {args.octree}, asset {args.asset.name}", rows, header)
    for n in names:
        print(f"{n}: " + "; ".join(f"{k} {v}" for k, v in infos[n].items()))


if __name__ == "__main__":
    main()
