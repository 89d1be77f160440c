"""blender_render speed: seconds per object per pass, and process-per-object vs persistent workers.

Run: .venv/bin/python -m benchmarks.render [--resolution 512] [--samples 32] [--device cpu|gpu]

1. Per pass: one persistent worker renders the assets with all passes; meta.json's timings give,
   per object, import, the geometry render (normal + position + depth + mask in one Cycles render
   per view), the colour render (colour + albedo + metallic-roughness AOVs) and file writing.
2. Process per object vs persistent workers, geometry passes only (6 views): the public scripts
   start one Blender per object; `blender_render.batch` keeps workers alive. Both run the same
   objects with the same workers count; seconds per object = wall time / objects.
All bpy work happens in child processes (bpy must not share a process with pymeshlab).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .common import print_table

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets" / "meshes"
OBJECTS = ("Duck.glb", "BoxTextured.glb", "monkey.glb", "bunny.ply", "featuretype.STL", "chair_model.obj")
GEOMETRY = "normal,position,depth,mask"


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


class _Timer:
    """Wall time, and CPU time of the child processes (robust when other jobs share the machine)."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), self._children()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, self._children() - self.cpu

    @staticmethod
    def _children() -> float:
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime


def _batch(listing: Path, out: Path, workers: int, flags: list[str]) -> _Timer:
    with _Timer() as timer:
        subprocess.run([sys.executable, "-m", "blender_render.batch", str(listing), str(out), "--workers",
                        str(workers), *flags], cwd=ROOT, env=_env(), check=True, capture_output=True)
    return timer


def _per_process(sources: list[Path], out: Path, workers: int, flags: list[str]) -> _Timer:
    """One `python -m blender_render` process per object, `workers` at a time."""
    threads = ["--threads", str(max(1, (os.cpu_count() or 1) // workers))] if "--device" not in flags else []

    def one(src: Path) -> None:
        subprocess.run([sys.executable, "-m", "blender_render", str(src), str(out / src.stem), *flags, *threads],
                       cwd=ROOT, env=_env(), check=True, capture_output=True)

    with _Timer() as timer, ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, sources))
    return timer


def per_pass_table(listing: Path, out: Path, common: list[str], args) -> None:
    wall = _batch(listing, out, 1, [*common, "--passes", "all", "--samples", str(args.samples)]).wall
    rows = []
    for d in sorted(p for p in out.iterdir() if (p / "meta.json").is_file()):
        meta = json.loads((d / "meta.json").read_text())
        t, n = meta["timings"], len(meta["views"])
        rows.append((meta["source"]["name"], meta["scene"]["triangles"], f"{t['import']:.2f}",
                     f"{t['geometry_render']:.2f}", f"{t['geometry_render'] / n:.3f}", f"{t['color_render']:.2f}",
                     f"{t['color_render'] / n:.3f}", f"{t['geometry_write'] + t['color_write']:.2f}",
                     f"{t['checks']:.2f}", f"{t['total']:.2f}"))
    print_table(f"Per pass, one persistent worker, 6 views at {args.resolution} px, colour {args.samples} spp, "
                f"{args.device} (batch wall {wall:.1f} s for {len(rows)} objects; writes and checks overlap renders)",
                rows, ("object", "triangles", "import s", "geometry s", "geom s/view", "colour+AOV s",
                       "colour s/view", "write s", "checks s", "total s"))


def process_table(sources: list[Path], listing: Path, tmp: Path, common: list[str], args) -> None:
    rows = []
    flags = [*common, "--passes", GEOMETRY]
    n = len(sources)
    for workers in args.workers:
        separate = _per_process(sources, tmp / f"proc{workers}", workers, flags)
        persistent = _batch(listing, tmp / f"batch{workers}", workers, flags)
        rows.append((workers, f"{separate.wall / n:.2f}", f"{persistent.wall / n:.2f}",
                     f"{separate.wall / persistent.wall:.2f}x", f"{separate.cpu / n:.2f}", f"{persistent.cpu / n:.2f}",
                     f"{separate.cpu / persistent.cpu:.2f}x"))
    print_table(f"Geometry passes (normal, position, depth, mask), 6 views at {args.resolution} px, {args.device}: "
                f"seconds per object over {n} objects (wall, and CPU of all processes)", rows,
                ("workers", "per-object wall", "persistent wall", "speed-up", "per-object CPU", "persistent CPU",
                 "CPU ratio"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--samples", type=int, default=32, help="colour samples (per-pass table)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--assets", type=Path, default=ASSETS)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to compare")
    parser.add_argument("--skip-passes", action="store_true", help="only the process-vs-persistent table")
    args = parser.parse_args()
    sources = [args.assets / name for name in OBJECTS]
    common = ["--resolution", str(args.resolution)] + (["--device", "gpu"] if args.device == "gpu" else [])
    tmp = Path(tempfile.mkdtemp(prefix="bench_render_"))
    try:
        listing = tmp / "list.txt"
        listing.write_text("\n".join(str(s) for s in sources))
        if not args.skip_passes:
            per_pass_table(listing, tmp / "passes", common, args)
        process_table(sources, listing, tmp, common, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
