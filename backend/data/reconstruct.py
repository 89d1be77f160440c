"""Shape-VAE reconstruction: points -> latents -> SDF -> mesh, to see what the VAE keeps of a shape.

    python -m backend.data.reconstruct INPUT OUTPUT.glb [--vae LOCATION] [--subfolder SUB] ...

INPUT is a prepared .npz (backend.data.prepare) or any mesh, prepared on the fly (normalised,
made watertight, sampled). The VAE is a released `vae/` folder: a local folder or a hub repo with
its subfolder (default: the Step1X-3D geometry model's). The latents are the posterior mode (no
sampling noise); decoding, marching cubes and clean-up are the geometry stage's own. With
`--metrics` the mean distances between the input surface and the reconstruction are printed in
the normalised frame ([-1, 1]^3).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from backend.geometry.marching import marching_cubes
from backend.geometry.pipeline import finish_mesh
from backend.geometry.vae import ShapeVAE
from backend.geometry.volume import decode_coarse_to_fine
from shared.cli import run_command
from shared.errors import BackendError

from .bvh import TriangleBVH
from .meshes import load_mesh
from .prepare import PrepareOptions, prepare_mesh
from .sampling import sample_surface
from .watertight import WatertightOptions

DEFAULT_VAE = "stepfun-ai/Step1X-3D"
DEFAULT_SUBFOLDER = "Step1X-3D-Geometry-1300m/vae"


@dataclass
class Reconstruction:
    vertices: np.ndarray
    faces: np.ndarray
    latents: torch.Tensor


def load_vae(location: str, subfolder: str, device: str, dtype: torch.dtype) -> ShapeVAE:
    vae = ShapeVAE.from_pretrained(location, subfolder=subfolder or None, torch_dtype=dtype)
    return vae.to(device).eval().requires_grad_(False)


def read_points(path: Path, options: PrepareOptions) -> tuple[np.ndarray, np.ndarray]:
    """(surface, sharp_surface) point sets [N, 6] of a prepared .npz or of a mesh prepared now."""
    if path.suffix.lower() == ".npz":
        try:
            with np.load(path) as data:
                return data["surface"], data["sharp_surface"]
        except (OSError, KeyError, ValueError) as exc:
            raise BackendError("input_unreadable", f"{path}: not a prepared sample file ({exc})") from None
    vertices, faces = load_mesh(path, options.up)
    arrays = prepare_mesh(vertices, faces, options).arrays
    return arrays["surface"], arrays["sharp_surface"]


@torch.no_grad()
def reconstruct(vae: ShapeVAE, surface: np.ndarray, sharp: np.ndarray, num_points: int = 32768,
                resolution: int = 256, bounds: float = 1.05, seed: int = 0, face_budget: int = 400_000) -> Reconstruction:
    device = vae.device
    g = np.random.default_rng(seed)
    pick = lambda a: torch.from_numpy(a[g.choice(len(a), num_points, replace=len(a) < num_points)])[None].to(device)
    generator = torch.Generator(device).manual_seed(seed)
    latents = vae.encode(pick(surface), pick(sharp), sample_posterior=False, generator=generator)
    tokens = vae.decode(latents)
    kv = vae.decoder.key_values(tokens)
    grid, _ = decode_coarse_to_fine(lambda p: vae.decoder(p[None], kv)[0, :, 0], resolution, bounds, device=device)
    vertices, faces = marching_cubes(grid, 0.0, bounds)
    vertices, faces = finish_mesh(vertices, faces, face_budget, 0.001, device=device)
    return Reconstruction(vertices, faces, latents.cpu())


def surface_distances(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, count: int = 20000) -> dict:
    """Mean and 95th-percentile distances input -> reconstruction and back (normalised frame)."""
    rng = np.random.default_rng(0)
    there = TriangleBVH.build(vertices, faces).distance(points[rng.choice(len(points), min(count, len(points)), replace=False), :3])
    back_pts = sample_surface(np.asarray(vertices, np.float64), np.asarray(faces), count, rng)[:, :3]
    # the input surface is represented by its dense samples; nearest-sample distance is an upper bound
    from scipy.spatial import cKDTree

    back, _ = cKDTree(points[:, :3]).query(back_pts)
    return {"input_to_reconstruction_mean": float(there.mean()), "input_to_reconstruction_p95": float(np.percentile(there, 95)),
            "reconstruction_to_input_mean": float(back.mean()), "reconstruction_to_input_p95": float(np.percentile(back, 95))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend.data.reconstruct", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path, help="prepared .npz or a mesh file")
    parser.add_argument("output", type=Path, help="mesh to write (.glb, .ply, .obj)")
    parser.add_argument("--vae", default=DEFAULT_VAE, help="folder or hub repo holding the VAE")
    parser.add_argument("--subfolder", default=DEFAULT_SUBFOLDER, help="the VAE's folder inside --vae ('' if none)")
    parser.add_argument("--num-points", type=int, default=32768, help="surface and sharp points encoded")
    parser.add_argument("--resolution", type=int, default=256, help="marching-cubes lattice (octree) resolution")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prepare-resolution", type=int, default=256, help="watertight lattice for mesh inputs")
    parser.add_argument("--metrics", action="store_true", help="print input/reconstruction distances as JSON")
    ns = parser.parse_args(argv)

    def body() -> int:
        if not ns.input.is_file():
            raise BackendError("input_not_found", f"{ns.input} does not exist")
        options = replace(PrepareOptions(), watertight=WatertightOptions(resolution=ns.prepare_resolution, device=ns.device))
        surface, sharp = read_points(ns.input, options)
        vae = load_vae(ns.vae, ns.subfolder, ns.device, getattr(torch, ns.dtype))
        result = reconstruct(vae, surface, sharp, ns.num_points, ns.resolution, seed=ns.seed)
        import trimesh

        from backend.mesh.export import write_atomically

        data = trimesh.Trimesh(result.vertices, result.faces, process=False).export(file_type=ns.output.suffix.lstrip("."))
        write_atomically(ns.output, data if isinstance(data, bytes) else data.encode())
        if ns.metrics:
            print(json.dumps(surface_distances(surface, result.vertices, result.faces)))
        print(f"ok: {ns.output} ({len(result.faces)} faces)")
        return 0

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
