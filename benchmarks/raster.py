"""Rasteriser speed: 6 canonical views of 2048^2 of a ~50k-face mesh, per view.

CPU: the numba z-buffer (with and without the barycentric pass); CUDA when present: the batched
torch scan over all 6 views. `--torch-cpu` also times the torch path on the CPU (seconds a view).
Run: .venv/bin/python -m benchmarks.raster [--faces 50000] [--size 2048] [--torch-cpu]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from backend.mesh.camera import Camera
from backend.mesh.frame import fit_unit_box
from backend.mesh.raster import rasterize_views
from shared.views import CANONICAL_VIEWS

from .common import print_table, time_calls
from .uv import test_mesh


def unit_mesh(faces: int) -> tuple[np.ndarray, np.ndarray]:
    """benchmarks.uv's bumpy sphere in the exported frame (fits the canonical views)."""
    v, f = test_mesh(faces)
    return fit_unit_box(v).apply(v), f


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--faces", type=int, default=50000)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--torch-cpu", action="store_true")
    args = parser.parse_args()
    v, f = unit_mesh(args.faces)
    cams = [Camera.from_view(view, args.size) for view in CANONICAL_VIEWS]
    runs = [("numba", "cpu", True), ("numba", "cpu", False)]
    if args.torch_cpu:
        runs.append(("torch", "cpu", True))
    if torch.cuda.is_available():
        runs += [("torch", "cuda", True), ("torch", "cuda", False)]
    rows = []
    for method, device, bary in runs:
        timing = time_calls(lambda: rasterize_views(v, f, cams, device=device, method=method, barycentrics=bary),
                            repeats=3, device=torch.device(device))
        cpu0 = time.process_time()
        coverage = rasterize_views(v, f, cams, device=device, method=method, barycentrics=bary)[0].mask.float().mean()
        cpu_ms = (time.process_time() - cpu0) / len(cams) * 1e3
        rows.append((method, device, "yes" if bary else "no", len(f), f"{args.size}^2", len(cams),
                     f"{timing.median / len(cams) * 1e3:.1f}", timing.ms(),
                     f"{cpu_ms:.0f}" if device == "cpu" else "-", f"{coverage.item():.2f}"))
    # CPU ms/view sums all threads: on a machine shared with other work it shows the cost that
    # wall time hides behind waiting (on an idle 2-core box wall ~ CPU / 2)
    print_table("Rasteriser (6 canonical views)", rows, ("method", "device", "barycentrics", "faces", "view", "views",
                                                         "ms/view (median)", "ms total min / median / max", "CPU ms/view", "coverage"))


if __name__ == "__main__":
    main()
