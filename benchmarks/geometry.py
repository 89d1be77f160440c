"""Geometry stage (Step1X-3D stage 1) by stage, with full-size random-weight modules.

Run: python3 -m benchmarks.geometry [--dtypes fp32,bf16] [--steps 50] [--octree 384] [--asset PATH]
     python3 -m benchmarks.geometry --tiny      (CPU: tiny modules, octree 128, 5 steps)

Speed does not depend on weight values, but the surface does: random weights give a field of
random sign everywhere, which the coarse-to-fine decoder must refine almost densely. So the
surface-dependent stages (fine-level decoding, marching cubes, clean-up and decimation) are timed
on a realistic shape: an asset mesh is voxelised on the (R+1)^3 lattice and smoothed into a field;
the decoder runs on exactly the points the coarse-to-fine pass asks for (full cost), but the values
it returns for the masks come from the asset. The random-weight field is timed too, as the worst case.
fp32 means TF32 off (how the release runs). Peaks per stage: torch's allocated and reserved memory
and the device's used memory (benchmarks/common.py says which is which), weights included.

The whole stage is timed as what the engine runs: one `GeometryPipeline` call on a real image
(examples/robot.png, background removal included) with the asset's field behind the decoder (the
decoder still runs on every point), warm-up then repeats, min / median / max.
"""
from __future__ import annotations

import argparse
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

from .common import MemoryPeak, MemoryProbe, Timing, idle_device_bytes, print_table, time_calls

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


def meter(fn, device: torch.device, repeats: int, warmup: bool) -> tuple[Timing, MemoryPeak, object]:
    """Timings and memory peaks of `repeats` calls (after one untimed call when `warmup`), last result."""
    keep: list = []
    with MemoryProbe(device.index or 0) as probe:
        timing = time_calls(fn, repeats, int(warmup), device, keep)
    return timing, probe.peak, keep[0]


def with_asset_field(pipe: GeometryPipeline, target: torch.Tensor, octree: int, bounds: float) -> None:
    """Put the asset's field behind the pipeline's decoder: the decoder runs on every point the
    coarse-to-fine pass asks for (its full cost), the values come from the asset."""
    field_fn = type(pipe).field_fn.__get__(pipe)
    n = octree + 1

    def asset_field_fn(tokens):
        field = field_fn(tokens)

        def values(points):
            decoded = field(points)
            ijk = torch.round((points + bounds) / (2 * bounds) * octree).long().clamp_(0, octree)
            # random weights can overflow bf16: keep their cost, never their NaNs
            return target.view(-1)[(ijk[:, 0] * n + ijk[:, 1]) * n + ijk[:, 2]] + 0 * decoded.nan_to_num(0, 0, 0)
        return values

    pipe.field_fn = asset_field_fn


@torch.no_grad()
def run(pipe: GeometryPipeline, args, device: torch.device) -> tuple[dict, dict]:
    workers = shared_workers()
    workers.warm()  # as the engine does when it loads the models
    o = GeometryOptions(steps=args.steps, octree_resolution=args.octree, face_budget=args.faces, chunk_size=args.chunk)
    prepared = prepare_image(input_image())
    rows, info = {}, {}

    def stage(name, fn, repeats=1, warmup=True):
        rows[name] = meter(fn, device, repeats, warmup)
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
    with_asset_field(pipe, target, args.octree, o.bounds)
    asset_fn = pipe.field_fn(tokens)
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
    image = Image.open(ROOT / "examples" / "robot.png")
    whole = GeometryOptions(steps=args.steps, octree_resolution=args.octree, face_budget=args.faces,
                            chunk_size=args.chunk)
    result = stage("whole stage: one pipeline call on examples/robot.png", lambda: pipe(image, whole), args.repeats)
    info["whole-stage parts, last call (s)"] = ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items())
    del pipe.field_fn
    return rows, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--octree", type=int, default=384)
    parser.add_argument("--faces", type=int, default=200_000)
    parser.add_argument("--chunk", type=int, default=131072)
    parser.add_argument("--asset", type=Path, default=DEFAULT_ASSET)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls of the whole stage")
    parser.add_argument("--tiny", action="store_true", help="tiny modules (the CPU default)")
    args = parser.parse_args()
    idle_device_bytes()
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
    header = ("stage",) + tuple(f"{n} {unit}" for n in names for unit in ("ms min / median / max", "GiB alloc / reserved / device"))
    rows = [(s,) + tuple(x for n in names for x in (
        results[n][s][0].ms(), "{0:.2f} / {1:.2f} / {2:.2f}".format(*(float(v) for v in results[n][s][1].row()[:3]))))
        for s in results[names[0]]]
    kind = "tiny modules" if args.tiny else "full-size modules, random weights"
    print_table(f"Geometry stage, {kind}, {args.steps} steps, octree {args.octree}, asset {args.asset.name}", rows, header)
    for n in names:
        print(f"{n}: " + "; ".join(f"{k} {v}" for k, v in infos[n].items()))


if __name__ == "__main__":
    main()
