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


def _batch(listing: Path, out: Path, workers: int, flags: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "blender_render.batch", str(listing), str(out), "--workers", str(workers),
                    *flags], cwd=ROOT, env=_env(), check=True, capture_output=True)
    return time.perf_counter() - t0


def _per_process(sources: list[Path], out: Path, workers: int, flags: list[str]) -> float:
    """One `python -m blender_render` process per object, `workers` at a time."""
    threads = ["--threads", str(max(1, (os.cpu_count() or 1) // workers))] if "--device" not in flags else []

    def one(src: Path) -> None:
        subprocess.run([sys.executable, "-m", "blender_render", str(src), str(out / src.stem), *flags, *threads],
                       cwd=ROOT, env=_env(), check=True, capture_output=True)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, sources))
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--samples", type=int, default=32, help="colour samples (per-pass table)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--assets", type=Path, default=ASSETS)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to compare")
    args = parser.parse_args()
    sources = [args.assets / name for name in OBJECTS]
    common = ["--resolution", str(args.resolution), "--device", args.device] if args.device == "gpu" else \
        ["--resolution", str(args.resolution)]
    tmp = Path(tempfile.mkdtemp(prefix="bench_render_"))
    try:
        listing = tmp / "list.txt"
        listing.write_text("\n".join(str(s) for s in sources))

        out = tmp / "passes"
        wall = _batch(listing, out, 1, [*common, "--passes", "all", "--samples", str(args.samples)])
        rows = []
        for d in sorted(p for p in out.iterdir() if (p / "meta.json").is_file()):
            meta = json.loads((d / "meta.json").read_text())
            t, n = meta["timings"], len(meta["views"])
            rows.append((meta["source"]["name"], meta["scene"]["triangles"], f"{t['import']:.2f}",
                         f"{t['geometry_render']:.2f}", f"{t['geometry_render'] / n:.3f}", f"{t['color_render']:.2f}",
                         f"{t['color_render'] / n:.3f}", f"{t['geometry_write'] + t['color_write']:.2f}",
                         f"{t['checks']:.2f}", f"{t['total']:.2f}"))
        print_table(f"Per pass, one persistent worker, 6 views at {args.resolution} px, colour {args.samples} spp, "
                    f"{args.device} (batch wall {wall:.1f} s for {len(sources)} objects)", rows,
                    ("object", "triangles", "import s", "geometry s", "geom s/view", "colour+AOV s", "colour s/view",
                     "write s", "checks s", "total s"))

        rows = []
        flags = [*common, "--passes", GEOMETRY]
        for workers in args.workers:
            separate = _per_process(sources, tmp / f"proc{workers}", workers, flags)
            persistent = _batch(listing, tmp / f"batch{workers}", workers, flags)
            n = len(sources)
            rows.append((workers, f"{separate / n:.2f}", f"{persistent / n:.2f}", f"{separate / persistent:.2f}x"))
        print_table(f"Geometry passes (normal, position, depth, mask), 6 views at {args.resolution} px, {args.device}: "
                    f"seconds per object over {len(sources)} objects", rows,
                    ("workers", "process per object", "persistent workers", "speed-up"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
