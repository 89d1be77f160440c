"""Preview engine end to end (image in, textured GLB out) on a 1024 px image, stage by stage.

Run: .venv/bin/python -m benchmarks.preview [--size 1024] [--repeats 3]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from PIL import Image

from backend.context import JobContext
from backend.engines.preview.engine import PreviewEngine
from backend.jobs import make_spec

from .common import print_table

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    image = work / "robot.png"
    Image.open(ROOT / "examples" / "robot.png").resize((args.size, args.size), Image.LANCZOS).save(image)
    engine = PreviewEngine()
    rows = []
    for run in range(args.repeats + 1):  # the first run pays numba's compilation and is reported apart
        marks: list[tuple[str, float]] = []
        spec = make_spec(image=str(image), output=str(work / "out.glb"), engine="preview")
        ctx = JobContext(spec=spec, work_dir=work, on_progress=lambda st, i, n, m: marks.append((st, time.perf_counter())))
        t0 = time.perf_counter()
        engine.run(ctx)
        total = time.perf_counter() - t0
        stages: dict[str, float] = {}
        for (name, start), (_, end) in zip(marks, marks[1:]):
            stages[name] = stages.get(name, 0.0) + end - start
        rows.append(("first (JIT)" if run == 0 else f"run {run}", *(f"{stages.get(k, 0):.2f}" for k in
                     ("preprocess", "geometry", "mesh", "texture", "bake", "export")), f"{total:.2f}"))
    print_table(f"preview engine, {args.size}px image, default settings (2048 texture, <=30k faces), seconds",
                rows, ("run", "image", "inflate", "clean+decimate", "uv", "bake+inpaint", "export", "total"))


if __name__ == "__main__":
    main()
