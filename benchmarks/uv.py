"""UV unwrap time (xatlas) for a ~50k-face mesh, bounded charts vs xatlas defaults.

Run: .venv/bin/python -m benchmarks.uv [--faces 50000]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import trimesh

from backend.mesh.decimate import decimate
from backend.mesh.uv import unwrap

from .common import print_table


def test_mesh(faces: int) -> tuple[np.ndarray, np.ndarray]:
    """A bumpy sphere with about `faces` faces: curved everywhere, like generated assets."""
    sphere = trimesh.creation.icosphere(subdivisions=7)
    v = sphere.vertices * (1.0 + 0.08 * np.sin(5 * sphere.vertices[:, :1]) * np.cos(4 * sphere.vertices[:, 1:2]))
    return decimate(v, sphere.faces, faces)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--faces", type=int, default=50000)
    parser.add_argument("--defaults", action="store_true", help="also time xatlas' default chart options (slow)")
    args = parser.parse_args()
    v, f = test_mesh(args.faces)
    rows = []
    for fast in ([True, False] if args.defaults else [True]):
        t0 = time.perf_counter()
        mesh = unwrap(v, f, 2048, fast=fast)
        seconds = time.perf_counter() - t0
        rows.append(("bounded charts" if fast else "xatlas defaults", len(f), len(mesh.vertices), f"{seconds:.2f}"))
    print_table("UV unwrap", rows, ("options", "faces", "split vertices", "seconds"))


if __name__ == "__main__":
    main()
