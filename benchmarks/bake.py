"""Baker speed: 6 canonical views of 2048^2 into a 2048^2 texture of a ~50k-face mesh, with
inpainting, stage by stage. The views are random images (content does not change the cost).

Run: .venv/bin/python -m benchmarks.bake [--faces 50000] [--size 2048] [--texture 2048] [--mesh FILE]
The CUDA row bakes on the GPU; inpainting (scipy / OpenCV) always runs on the host CPU.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import trimesh

from backend.mesh.bake import bake, texel_surface
from backend.mesh.frame import fit_unit_box
from backend.mesh.inpaint import inpaint
from backend.mesh.uv import unwrap
from shared.views import CANONICAL_VIEWS

from .common import print_table, time_calls
from .raster import unit_mesh


def load_unit(path: str) -> tuple[np.ndarray, np.ndarray]:
    mesh = trimesh.load(path, force="mesh")
    return fit_unit_box(mesh.vertices).apply(mesh.vertices), np.asarray(mesh.faces)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--faces", type=int, default=50000)
    parser.add_argument("--size", type=int, default=2048, help="view resolution")
    parser.add_argument("--texture", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mesh", help="bake onto this mesh file instead (scaled to the unit box)")
    args = parser.parse_args()
    v, f = unit_mesh(args.faces) if args.mesh is None else load_unit(args.mesh)
    t0 = time.perf_counter()
    mesh = unwrap(v, f, args.texture)
    unwrap_s = time.perf_counter() - t0
    images = torch.rand(len(CANONICAL_VIEWS), args.size, args.size, 3, generator=torch.Generator().manual_seed(0))
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        imgs = images.to(device)
        surface = texel_surface(mesh, args.texture, device)
        baked = bake(mesh, imgs, CANONICAL_VIEWS, args.texture, device=device, surface=surface)

        def timed(fn):
            wall = time_calls(fn, repeats=args.repeats, device=torch.device(device))
            cpu0 = time.process_time()
            fn()
            return wall, time.process_time() - cpu0

        stages = [
            ("UV raster + texel surface", timed(lambda: texel_surface(mesh, args.texture, device))),
            ("6 views: raster, weights, sampling", timed(lambda: bake(mesh, imgs, CANONICAL_VIEWS, args.texture,
                                                                      device=device, surface=surface))),
            ("inpaint (host CPU)", timed(lambda: inpaint(mesh, baked))),
            ("end to end: bake + inpaint", timed(lambda: inpaint(mesh, bake(mesh, imgs, CANONICAL_VIEWS, args.texture,
                                                                              device=device)))),
        ]
        covered = (baked.covered.sum() / baked.surface.chart_mask.sum()).item()
        for name, (wall, cpu) in stages:
            rows.append((device, name, wall.s(), f"{cpu:.3f}", f"{covered:.4f}"))
    print(f"mesh: {len(f)} faces, {len(mesh.vertices)} split vertices; unwrap {unwrap_s:.1f} s (not in the table)")
    print_table(f"Bake {len(CANONICAL_VIEWS)} views of {args.size}^2 into {args.texture}^2", rows,
                ("device", "stage", "seconds min / median / max", "CPU seconds (all threads)", "chart texels painted"))


if __name__ == "__main__":
    main()
