"""Decimation: one pymeshlab pass against the partitioned parallel pass, time and quality.

Run: python3 -m benchmarks.decimate [--quick] [--assets DIR] [--processes 2,4,8] [--budgets 200000,50000]

Inputs: the Duck asset marched like the geometry stage does (benchmarks/geometry.py, octree 384),
the Stanford bunny (open borders) Loop-subdivided to 1 M faces, and an analytic wavy sphere of
1.3 M faces. Every call runs from a non-main thread, as in the server, so each pass runs in a
worker process and the transfers are timed too. Quality is measured against the input mesh:
symmetric surface distance (pymeshlab's Hausdorff sampling both ways, as a fraction of the bounding
box diagonal), slivers (smallest angle under 5 degrees), border edges (the input's must all stay)
and two-manifoldness with consistent orientation.
"""
from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from backend.geometry.marching import marching_cubes
from backend.geometry.pipeline import GeometryOptions
from backend.mesh.clean import clean
from backend.mesh.decimate import decimate
from backend.mesh.workers import MeshWorkers

from .common import print_table
from .geometry import asset_field

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ASSETS = ROOT.parent / "shared" / "assets"
SLIVER_DEGREES = 5.0
Mesh = tuple[np.ndarray, np.ndarray]


def duck(assets: Path, octree: int) -> Mesh:
    """The geometry stage's marching-cubes output for the Duck, cleaned as finish_mesh does."""
    o = GeometryOptions()
    field = asset_field(assets / "meshes" / "Duck.glb", octree, o.bounds, torch.device("cpu"))
    v, f = marching_cubes(field, 0.0, o.bounds, backend="skimage")
    return clean(v, f, min_part_fraction=o.min_part_fraction)


def bunny(assets: Path, iterations: int) -> Mesh:
    """The scanned bunny made two-manifold and consistently wound (its 19 holes stay; the faces
    against the winding of a neighbour go), Loop-subdivided."""
    import pymeshlab

    ms = pymeshlab.MeshSet()
    ms.load_new_mesh(str(assets / "meshes" / "bunny.ply"))
    ms.meshing_repair_non_manifold_edges()
    m = ms.current_mesh()
    f = m.face_matrix()
    _, inverse, counts = np.unique(f[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=0, return_inverse=True,
                                   return_counts=True)
    ms.add_mesh(pymeshlab.Mesh(m.vertex_matrix(), f[~(counts[inverse.ravel()] > 1).reshape(-1, 3).any(axis=1)]))
    ms.meshing_repair_non_manifold_vertices()
    ms.meshing_surface_subdivision_loop(iterations=iterations, threshold=pymeshlab.PercentageValue(0))
    m = ms.current_mesh()
    return clean(m.vertex_matrix(), m.face_matrix(), min_part_fraction=0)


def wavy_sphere(resolution: int) -> Mesh:
    """A sphere with a 3D sine relief, marched on a `resolution`^3 lattice."""
    from skimage.measure import marching_cubes as skimage_marching_cubes

    axis = np.linspace(-1.0, 1.0, resolution, dtype=np.float32)
    x, y, z = axis[:, None, None], axis[None, :, None], axis[None, None, :]
    field = 0.75 + 0.06 * np.sin(9 * x) * np.sin(9 * y) * np.sin(9 * z) - np.sqrt(x * x + y * y + z * z)
    v, f, _, _ = skimage_marching_cubes(field, 0.0)
    return clean(v / (resolution - 1) * 2 - 1, f[:, ::-1])


def surface_error(reference: Mesh, mesh: Mesh, samples: int) -> tuple[float, float]:
    """Mean and max closest-surface distance sampled both ways, over the reference's diagonal."""
    import pymeshlab

    ms = pymeshlab.MeshSet()
    for v, f in (reference, mesh):
        ms.add_mesh(pymeshlab.Mesh(np.asarray(v, np.float64), np.asarray(f, np.int32)))
    diag = float(np.linalg.norm(np.ptp(reference[0], axis=0)))
    ways = [ms.get_hausdorff_distance(sampledmesh=a, targetmesh=b, samplevert=False, sampleface=True,
                                      samplenum=samples, maxdist=pymeshlab.PercentageValue(10))
            for a, b in ((0, 1), (1, 0))]
    return sum(w["mean"] for w in ways) / 2 / diag, max(w["max"] for w in ways) / diag


def sliver_fraction(mesh: Mesh) -> float:
    tri = mesh[0][mesh[1]].astype(np.float64)
    edges = [tri[:, (i + 1) % 3] - tri[:, i] for i in range(3)]
    lengths = [np.linalg.norm(e, axis=1) for e in edges]
    cosines = [np.sum(-edges[i - 1] * edges[i], axis=1) / np.maximum(lengths[i - 1] * lengths[i], 1e-30)
               for i in range(3)]
    smallest = np.degrees(np.arccos(np.clip(np.max(cosines, axis=0), -1, 1)))
    return float(np.mean(smallest < SLIVER_DEGREES))


def topology(mesh: Mesh) -> tuple[int, bool]:
    """Border edge count, and whether every edge has at most two faces in consistent orientation
    and every vertex one fan (pymeshlab's two-manifold test)."""
    import pymeshlab

    f = mesh[1]
    directed = f[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    oriented = len(np.unique(directed, axis=0)) == len(directed)
    ms = pymeshlab.MeshSet()
    ms.add_mesh(pymeshlab.Mesh(np.asarray(mesh[0], np.float64), np.asarray(f, np.int32)))
    measures = ms.get_topological_measures()
    return measures["boundary_edges"], oriented and measures["is_mesh_two_manifold"]


def timed(mesh: Mesh, budget: int, workers: MeshWorkers, partition_min_faces: int) -> tuple[float, Mesh]:
    """One decimate call from a non-main thread (as a server job makes it), in seconds."""
    with ThreadPoolExecutor(1) as thread:
        t0 = time.perf_counter()
        out = thread.submit(decimate, *mesh, budget, workers, None, partition_min_faces).result()
        return time.perf_counter() - t0, out


def started(processes: int) -> MeshWorkers:
    """A pool whose processes have all started and imported pymeshlab."""
    workers = MeshWorkers(processes)
    workers.warm()
    workers.map(np.zeros, [(1,)] * processes)
    return workers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--assets", type=Path, default=DEFAULT_ASSETS)
    parser.add_argument("--processes", default="2,4,8", help="partitioned runs, by process count")
    parser.add_argument("--budgets", default="200000,50000")
    parser.add_argument("--samples", type=int, default=500_000, help="surface samples per direction")
    parser.add_argument("--quick", action="store_true", help="inputs of ~0.25 M faces, 2 processes, 50 k faces")
    args = parser.parse_args()
    if args.quick:
        args.processes, args.budgets, args.samples = "2", "50000", 200_000
    octree, iterations, resolution = (192, 2, 300) if args.quick else (384, 3, 520)
    inputs = {f"Duck, octree {octree}": lambda: duck(args.assets, octree),
              f"bunny, Loop x{iterations}": lambda: bunny(args.assets, iterations),
              f"wavy sphere {resolution}^3": lambda: wavy_sphere(resolution)}
    pools = {1: started(1)} | {k: started(k) for k in map(int, args.processes.split(","))}
    rows = []
    for name, build in inputs.items():
        mesh = build()
        input_borders = topology(mesh)[0]
        print(f"{name}: {len(mesh[1])} faces, {input_borders} border edges", flush=True)
        for budget in map(int, args.budgets.split(",")):
            single = None
            for k, workers in pools.items():
                seconds, out = timed(mesh, budget, workers, len(mesh[1]) + 1 if k == 1 else 0)
                mean, worst = surface_error(mesh, out, args.samples)
                single = single or (seconds, mean, worst)
                borders, manifold = topology(out)
                rows.append((name, budget, "single pass" if k == 1 else f"{k} parts", f"{seconds:.2f}",
                             f"{single[0] / seconds:.2f}x", len(out[1]), f"{mean * 1e5:.2f}",
                             f"{mean / single[1]:.2f}", f"{worst * 1e4:.2f}", f"{worst / single[2]:.2f}",
                             f"{100 * sliver_fraction(out):.3f}", f"{borders}/{input_borders}",
                             "yes" if manifold else "NO"))
                print("  ".join(map(str, rows[-1])), flush=True)
    for workers in pools.values():
        workers.close()
    print_table("Decimation: single pymeshlab pass vs partitioned parallel passes", rows,
                ("input", "budget", "method", "s", "speed-up", "faces", "mean err 1e-5", "x single",
                 "max err 1e-4", "x single", "slivers %", "borders", "manifold"))


if __name__ == "__main__":
    main()
