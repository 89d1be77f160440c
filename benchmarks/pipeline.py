"""The whole step1x3d engine at the reference defaults with full-size random weights.

Speed does not depend on weight values; the shape VAE's query decoder is rewired to a smooth blob
field (tests/geometry/tiny.py) so marching cubes, decimation, UV unwrap and baking see a real
closed surface instead of random-weight foam. One warm-up job, then timed jobs through the
engine exactly as the server runs them (device plan, model cache, offload), with per-stage times
from the progress events (CUDA synchronised before each stamp, so GPU work is charged to the stage
that queued it), end-to-end time and peak memory per GPU: torch allocated and reserved, and the
device's used memory (NVML), which is what a card must hold.

    python3 -m benchmarks.pipeline                       # single plan on cuda:0, 50 + 50 steps, 768/2048
    python3 -m benchmarks.pipeline --plan multi          # geometry on cuda:0, texture on cuda:1
    python3 -m benchmarks.pipeline --plan multi --throughput 8   # 8 jobs through the server's job queue
    python3 -m benchmarks.pipeline --tiny                # CPU smoke run with tiny modules
"""
from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import torch

from backend.context import JobContext
from backend.engines import EngineChoice
from backend.engines.step1x3d import Step1X3DEngine
from backend.job_queue import JobQueue
from backend.jobs import JobRunner, make_spec
from backend.runtime.weights import WeightsStatus
from benchmarks.common import MemoryPeak, MemoryProbe, Timing, idle_device_bytes, print_table, sync
from benchmarks.geometry import build as build_geometry
from benchmarks.geometry import input_image
from shared.errors import BackendError
from tests.geometry.tiny import make_blob_field



class RandomWeightsEngine(Step1X3DEngine):
    """The engine with models built from configurations instead of read from disk."""

    def __init__(self, tiny: bool, **plan):
        super().__init__(None, **plan)
        self.tiny = tiny

    def check_weights(self, settings, with_geometry):
        return WeightsStatus(root="random weights")

    def _geometry(self, cache, variant):
        def load(device):
            pipe = build_geometry(self.tiny, device, torch.bfloat16 if device.type == "cuda" else torch.float32)
            make_blob_field(pipe.vae)
            return pipe

        cache.register("geometry", "geometry", load, lambda pipe: pipe.modules)
        return cache.get("geometry")

    def _texture(self, cache, device=None):
        from backend.texture.stage import TextureStage
        from benchmarks.texture import random_pipeline

        def load(device):
            dtype = torch.float16 if device.type == "cuda" else torch.float32
            return TextureStage(random_pipeline(device, dtype))

        cache.register("texture", "texture", load, lambda stage: stage.modules)
        return cache.get("texture", device)


def run_job(engine, image: Path, out: Path, settings: dict) -> tuple[float, dict[str, float]]:
    marks: list[tuple[str, float]] = []

    def progress(stage, step, total, message):
        sync()
        marks.append((stage, time.perf_counter()))

    spec = make_spec(image=str(image), output=str(out), engine="step1x3d", settings=settings)
    t0 = time.perf_counter()
    engine.run(JobContext(spec, out.parent, on_progress=progress))
    sync()
    total = time.perf_counter() - t0
    stages: dict[str, float] = {}
    for (name, start), (_, end) in zip(marks, marks[1:] + [("end", t0 + total)]):
        stages[name] = stages.get(name, 0.0) + end - start
    return total, stages


class BenchRunner(JobRunner):
    """The server's runner with the random-weights engine (no weights on disk to choose by)."""

    def __init__(self, engine: RandomWeightsEngine, plan: str):
        super().__init__(plan=plan)
        self.engine = engine

    def engine_for(self, spec):
        return self.engine, EngineChoice(self.engine.name, "random weights")


class Timeline:
    """Job hooks recording when each job started, left the geometry lane and ended, and where
    it was textured."""

    def __init__(self, work: Path):
        self.work, self.rows, self.t0 = work, {}, time.perf_counter()

    def begin(self, spec):
        row = self.rows[spec.job_id] = {"start": time.perf_counter() - self.t0, "stages": {}}
        last = ["preprocess", time.perf_counter()]

        def progress(stage, step, total, message):
            sync()
            now = time.perf_counter()
            if stage in ("mesh", "texture"):
                row.setdefault("texture_from", now - self.t0)
            row["stages"][last[0]] = row["stages"].get(last[0], 0.0) + now - last[1]
            last[:] = [stage, now]

        row["last"] = last
        return JobContext(spec, self.work, on_progress=progress)

    def end(self, spec, ctx, outcome):
        row = self.rows[spec.job_id]
        sync()
        row["end"] = time.perf_counter() - self.t0
        stage, since = row.pop("last")
        row["stages"][stage] = row["stages"].get(stage, 0.0) + time.perf_counter() - since
        if isinstance(outcome, BackendError):
            row["error"] = outcome.code
        else:
            row["device"] = outcome.metadata.get("texture_device", "")


def throughput(engine: RandomWeightsEngine, image: Path, work: Path, settings: dict, jobs: int, plan: str) -> None:
    """`jobs` jobs through the job queue exactly as the server runs them (two lanes under multi)."""
    runner = BenchRunner(engine, plan)
    pipelined = runner.pipelined()
    warm = make_spec(image=str(image), output=str(work / "warm.glb"), engine="step1x3d", settings=settings)
    runner.run(JobContext(warm, work))
    for device in engine.cache.plan.texture_devices[1:]:  # load and warm the spare texture copy too
        ctx = JobContext(warm, work)
        runner.finish(ctx, runner.start(ctx), device)
    timeline = Timeline(work)
    queue = JobQueue(runner, timeline, pipelined=pipelined)
    for i in range(jobs):
        queue.put(make_spec(image=str(image), output=str(work / f"t{i}.glb"), engine="step1x3d", settings=settings,
                            job_id=f"job{i + 1}"))
    queue.close()
    with probing() as probes:
        queue.run()
    wall = max(r["end"] for r in timeline.rows.values())
    stages = ("geometry", "mesh", "texture", "bake", "export")
    rows = [(job, f"{r['start']:.1f}", f"{r.get('texture_from', 0):.1f}", f"{r['end']:.1f}",
             f"{r['end'] - r['start']:.1f}", r.get("device", r.get("error", "")),
             *(f"{r['stages'].get(k, 0.0):.2f}" for k in stages)) for job, r in timeline.rows.items()]
    print_table(f"{jobs} jobs through the job queue, plan {engine.cache.plan.describe()}, "
                f"{'two lanes' if pipelined else 'one lane'}; seconds from the first job's start, then "
                "seconds per stage (texture: conditioning, denoising and decoding)", rows,
                ("job", "started", "texturing from", "done", "latency", "textured on", *stages))
    print(f"wall {wall:.1f} s, {wall / jobs:.2f} s per job, {60 * jobs / wall:.2f} jobs per minute")
    print_peaks(probes)
    engine.close()


@contextlib.contextmanager
def probing():
    """Memory probes on every CUDA device over the block."""
    with contextlib.ExitStack() as stack:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        yield [stack.enter_context(MemoryProbe(i)) for i in range(count)]


def print_peaks(probes: list[MemoryProbe]) -> None:
    if probes:
        rows = [(f"cuda:{p.index}", *p.peak.row(), p.peak.source) for p in probes]
        print_table("peak GPU memory over the timed jobs", rows, ("device", *MemoryPeak.HEADER, "device reading"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", default="auto", choices=("auto", "single", "multi", "cpu"))
    parser.add_argument("--offload", default="auto", choices=("auto", "cpu", "release", "none"))
    parser.add_argument("--tiny", action="store_true", help="tiny modules on the CPU (smoke run)")
    parser.add_argument("--jobs", type=int, default=2, help="timed jobs after the warm-up")
    parser.add_argument("--throughput", type=int, default=0, metavar="N",
                        help="instead: N jobs through the server's job queue (pipelined under multi)")
    args = parser.parse_args()
    idle_device_bytes()
    settings = {"model": "base"}
    if args.tiny:
        args.plan = "cpu"
        settings.update(geometry_steps=2, texture_steps=2, octree_resolution=64, view_resolution=64,
                        texture_resolution=256, face_count=2000)
    engine = RandomWeightsEngine(args.tiny, plan=args.plan, offload=args.offload)
    work = Path(tempfile.mkdtemp())
    image = work / "input.png"
    input_image().save(image)
    if args.throughput:
        throughput(engine, image, work, settings, args.throughput, args.plan)
        return
    t0 = time.perf_counter()
    run_job(engine, image, work / "warmup.glb", settings)
    print(f"first job (models built, cold caches): {time.perf_counter() - t0:.1f} s")
    rows, totals = [], []
    names = ("preprocess", "geometry", "mesh", "texture", "bake", "export")
    per_stage: dict[str, list[float]] = {k: [] for k in names}
    with probing() as probes:
        for job in range(args.jobs):
            total, stages = run_job(engine, image, work / f"job{job}.glb", settings)
            totals.append(total)
            for k in names:
                per_stage[k].append(stages.get(k, 0.0))
            rows.append((f"job {job + 1}", *(f"{stages.get(k, 0.0):.2f}" for k in names), f"{total:.2f}"))
    rows.append(("min / median / max", *(Timing(per_stage[k]).s() for k in names), Timing(totals).s()))
    plan = engine.cache.plan
    print_table(f"step1x3d engine, plan {plan.describe()}, defaults 50+50 steps, octree "
                f"{settings.get('octree_resolution', 384)}, views {settings.get('view_resolution', 768)}, "
                f"texture {settings.get('texture_resolution', 2048)}; seconds", rows,
                ("run", "preprocess", "geometry", "mesh prep", "texture", "bake", "export", "total"))
    print_peaks(probes)
    engine.close()


if __name__ == "__main__":
    main()
