"""Ray's overhead against the local pool for the batch tools, and the driver's cost per object.

Run: .venv/bin/python -m benchmarks.cluster [--repeats 3] [--workers 2] [--resolution 64] [--samples 4]

1. Render and prepare the same objects with the same number of workers, `--cluster local` and
   `--cluster ray` (one Ray instance started once, its start-up timed apart), alternating runs,
   fresh output folders; objects/min = objects / wall time of the whole batch call, worker
   start-up included on both sides.
2. Per-object scheduling cost: a worker that does nothing, run through the shared driver by the
   serial pool, the local process pool (one child per object) and Ray actors; ms per object.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trimesh

from shared.batchrun import ProcessPool, SerialPool, drive
from shared.jobs import Task
from shared.raypool import RayPool, connect

from .common import print_table

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets" / "meshes"
RENDER_OBJECTS = ("Duck.glb", "BoxTextured.glb", "monkey.glb", "bunny.ply", "featuretype.STL", "chair_model.obj")


class Nothing:
    """A worker that returns at once: what is left is the driver's and the pool's cost."""

    def __call__(self, task: Task) -> dict:
        return {"status": "ok"}


def nothing(task: Task) -> dict:
    return {"status": "ok"}


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _render_runs(listing: Path, work: Path, args, cluster: str, i: int) -> float:
    from blender_render.batch import BatchConfig, run_batch
    from blender_render.options import RenderOptions

    out = work / f"render-{cluster}-{i}"
    options = RenderOptions(resolution=args.resolution, samples=args.samples)
    seconds = _timed(lambda: run_batch(listing, out, options, BatchConfig(workers=args.workers),
                                       progress_stream=open("/dev/null", "w"), cluster=cluster))
    shutil.rmtree(out)
    return seconds


def _prepare_runs(folder: Path, work: Path, args, cluster: str, i: int) -> float:
    from backend.data.prepare import PrepareOptions, run_batch
    from backend.data.watertight import WatertightOptions

    out = work / f"prepare-{cluster}-{i}"
    options = PrepareOptions(watertight=WatertightOptions(resolution=64, views=12, view_resolution=96),
                             num_surface=20_000, num_sharp=20_000, num_near=10_000, num_volume=10_000)
    seconds = _timed(lambda: run_batch(folder, out, options, workers=args.workers, cluster=cluster))
    shutil.rmtree(out)
    return seconds


def _meshes(folder: Path, n: int) -> Path:
    folder.mkdir()
    for i in range(n):
        mesh = trimesh.creation.icosphere(3) if i % 2 else trimesh.creation.box((1, 0.4 + 0.05 * i, 0.7))
        mesh.export(folder / f"obj{i}.glb")
    return folder


def scheduling(n: int, workers: int) -> list[tuple]:
    rows = []
    tasks = [Task(f"t{i}", str(i)) for i in range(n)]
    for name, make in (("serial (in process)", lambda: SerialPool(nothing)),
                       ("local process pool", lambda: ProcessPool(nothing, workers)),
                       ("ray actors", lambda: RayPool("benchmarks.cluster:Nothing", {}, workers))):
        pool = make()
        if isinstance(pool, RayPool):
            pool.pids()  # actors up before the clock starts
        t = _timed(lambda: drive(iter(tasks), pool, record=lambda *a, **k: None))
        rows.append((name, n, f"{1000 * t / n:.2f}"))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--prepare-objects", type=int, default=8)
    parser.add_argument("--noop-objects", type=int, default=400)
    parser.add_argument("--skip-render", action="store_true")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    try:
        t_ray = _timed(lambda: connect(None, num_cpus=args.workers))
        print(f"Ray start-up (local instance, {args.workers} CPUs): {t_ray:.1f} s", file=sys.stderr)
        listing = work / "render.txt"
        listing.write_text("".join(f"{ASSETS / n}\n" for n in RENDER_OBJECTS))
        folder = _meshes(work / "meshes", args.prepare_objects)
        jobs = [("prepare", len(list(folder.iterdir())), lambda c, i: _prepare_runs(folder, work, args, c, i))]
        if not args.skip_render:
            jobs.insert(0, ("render", len(RENDER_OBJECTS), lambda c, i: _render_runs(listing, work, args, c, i)))
        rows = []
        for name, n, run in jobs:
            times = {"local": [], "ray": []}
            for i in range(args.repeats):
                for cluster in ("local", "ray"):
                    times[cluster].append(run(cluster, i))
            med = {c: statistics.median(t) for c, t in times.items()}
            for c in ("local", "ray"):
                rows.append((name, c, n, " ".join(f"{t:.1f}" for t in times[c]), f"{60 * n / med[c]:.1f}",
                             f"{100 * (med[c] / med['local'] - 1):+.1f}%"))
        print_table(f"Batch throughput, {args.workers} workers, median of {args.repeats} (Ray start-up {t_ray:.1f} s "
                    f"not included)", rows, ("tool", "cluster", "objects", "wall s per run", "objects/min",
                                             "vs local"))
        print_table("Per-object scheduling cost (a worker that does nothing)", scheduling(args.noop_objects,
                                                                                             args.workers),
                    ("pool", "objects", "ms/object"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
