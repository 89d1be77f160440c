"""Ray's overhead against the local pool for the batch tools, and the driver's cost per object.

Run: .venv/bin/python -m benchmarks.cluster [--repeats 3] [--workers 2] [--resolution 64] [--samples 4]

1. Render and prepare with the same number of workers, as the CLI runs them: each batch is one
   `python -m blender_render.batch` / `python -m backend.data.prepare` process, with
   `--cluster local` or `--cluster ray:ADDRESS` (one Ray instance started once by this script,
   its start-up timed apart, so each Ray batch pays joining it, as on a cluster). Runs alternate,
   outputs go to fresh folders. Two batch sizes (N and 3N objects: copies of the assets under
   other names, so other ids) give the fixed cost per batch (worker start-up) and the steady
   per-object rate, the one that matters for a million objects.
2. Per-object scheduling cost: a worker that does nothing, run through the shared driver by the
   serial pool and by Ray actors; ms per object.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trimesh

from shared.batchrun import SerialPool, drive
from shared.jobs import Task
from shared.raypool import RayPool, connect

from .common import print_table

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets" / "meshes"
RENDER_OBJECTS = ("Duck.glb", "BoxTextured.glb", "monkey.glb", "bunny.ply", "featuretype.STL", "chair_model.obj")
PREPARE_ARGS = ["--resolution", "64", "--views", "12", "--view-resolution", "96", "--num-surface", "20000",
                "--num-sharp", "20000", "--num-near", "10000", "--num-volume", "10000"]


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


def _cli(args: list[str], out: Path) -> float:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} failed: {done.stderr[-2000:]}")
    shutil.rmtree(out, ignore_errors=True)
    return seconds


def _copies(folder: Path, sources: list[Path], n: int) -> Path:
    """`n` inputs: the sources again and again under other names (other ids)."""
    folder.mkdir()
    for i in range(n):
        src = sources[i % len(sources)]
        os.symlink(src, folder / f"{src.stem}-{i}{src.suffix}")
    return folder


def _meshes(folder: Path, n: int) -> list[Path]:
    folder.mkdir()
    paths = []
    for i in range(n):
        mesh = trimesh.creation.icosphere(3) if i % 2 else trimesh.creation.box((1, 0.4 + 0.05 * i, 0.7))
        paths.append(folder / f"obj{i}.glb")
        mesh.export(paths[-1])
    return paths


def scheduling(n: int, workers: int) -> list[tuple]:
    rows = []
    tasks = [Task(f"t{i}", str(i)) for i in range(n)]
    for name, make in (("serial (in process)", lambda: SerialPool(nothing)),
                       (f"ray, {workers} actors", lambda: RayPool("benchmarks.cluster:Nothing", {}, workers))):
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
    parser.add_argument("--objects", type=int, default=6, help="N: the small batch (the large one is 3N)")
    parser.add_argument("--noop-objects", type=int, default=400)
    parser.add_argument("--skip-render", action="store_true")
    parser.add_argument("--skip-ray", action="store_true", help="the local pool only (no Ray instance)")
    args = parser.parse_args(argv)
    clusters = ("local",) if args.skip_ray else ("local", "ray")
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    try:
        t_ray, address = 0.0, None
        if not args.skip_ray:
            import ray

            t_ray = _timed(lambda: connect(None, num_cpus=args.workers))
            address = ray.get_runtime_context().gcs_address
        meshes = _meshes(work / "meshes", args.objects)
        tools = [("prepare", ["backend.data.prepare"], meshes, PREPARE_ARGS)]
        if not args.skip_render:
            tools.insert(0, ("render", ["blender_render.batch"], [ASSETS / n for n in RENDER_OBJECTS],
                             ["--resolution", str(args.resolution), "--samples", str(args.samples)]))
        rows = []
        for name, module, sources, extra in tools:
            sizes = (args.objects, 3 * args.objects)
            inputs = {n: _copies(work / f"{name}-in-{n}", sources, n) for n in sizes}
            times = {(c, n): [] for c in clusters for n in sizes}
            for i in range(args.repeats):
                for n in sizes:
                    for c in clusters:
                        out = work / f"{name}-out-{c}-{n}-{i}"
                        cluster = "local" if c == "local" else f"ray:{address}"
                        times[c, n].append(_cli([*module, str(inputs[n]), str(out), "--workers", str(args.workers),
                                                 "--cluster", cluster, *extra], out))
            med = {k: statistics.median(v) for k, v in times.items()}
            steady = {c: (sizes[1] - sizes[0]) / (med[c, sizes[1]] - med[c, sizes[0]]) * 60 for c in clusters}
            for c in clusters:
                for n in sizes:
                    rows.append((name, c, n, " ".join(f"{t:.1f}" for t in times[c, n]), f"{60 * n / med[c, n]:.1f}",
                                 f"{100 * (med[c, n] / med['local', n] - 1):+.1f}%", ""))
                rows.append((name, c, f"{sizes[0]}->{sizes[1]}", "", "", "",
                             f"{steady[c]:.1f} ({100 * (steady[c] / steady['local'] - 1):+.1f}%)"))
        print_table(f"Batch throughput through the CLI, {args.workers} workers, median of {args.repeats} "
                    f"(Ray start-up {t_ray:.1f} s, once, not included)", rows,
                    ("tool", "cluster", "objects", "wall s per run", "objects/min", "time vs local",
                     "steady objects/min (vs local)"))
        if not args.skip_ray:
            print_table("Per-object scheduling cost (a worker that does nothing)",
                        scheduling(args.noop_objects, args.workers), ("pool", "objects", "ms/object"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
