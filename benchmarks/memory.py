"""Memory a job really needs, per stage, and whole jobs on an emulated smaller card.

Runs the step1x3d engine with full-size random weights (benchmarks/pipeline.py's engine) and
records, per stage (from the progress events), the peak of torch's reserved memory and of the
device's used memory over what was in use before this process started (NVML, sampled every 5 ms):
the second is what a card must hold (CUDA context, cuBLAS/cuDNN workspaces and warp's own
allocations included). Beside them: the plan's estimates (backend/runtime/plan.py) for the stage.

With `--card GiB` the process emulates a card of that size: the plan sees a device of that size
with the measured context already in use, torch's allocator is capped at the card minus that
context (`torch.cuda.set_per_process_memory_fraction`), and after each job the device-level peak
is checked against the card: a job "fits" only when it completes AND its device peak stays under
the card.

    python3 -m benchmarks.memory                       # the H200 as it is
    python3 -m benchmarks.memory --card 24 --jobs 1    # an emulated 24 GiB card
    python3 -m benchmarks.memory --card 16 --view 640
"""
from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import torch

from backend.context import JobContext
from backend.engines import step1x3d
from backend.jobs import make_spec
from backend.runtime import devices
from backend.runtime.plan import MARGIN_GIB, geometry_peak_gib, texture_peak_gib
from benchmarks.common import GIB, device_used_reader, idle_device_bytes, print_table
from benchmarks.geometry import input_image
from benchmarks.pipeline import RandomWeightsEngine
from shared.errors import BackendError

STAGES = ("preprocess", "geometry", "mesh", "texture", "bake", "export")


class StagePeaks:
    """Progress callback + sampler thread: per-stage peaks of device used and torch reserved."""

    def __init__(self, idle: int, interval: float = 0.005):
        self.idle, self.interval = idle, interval
        self.stage = "preprocess"
        self.device: dict[str, int] = {}
        self.reserved: dict[str, int] = {}
        reader = device_used_reader(0)
        self.source, self.read = reader if reader else ("none", lambda: 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _note(self) -> None:
        used = self.read()
        self.device[self.stage] = max(self.device.get(self.stage, 0), used)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._note()

    def progress(self, stage, step, total, message) -> None:
        if stage != self.stage:
            torch.cuda.synchronize()
            self._note()
            self.reserved[self.stage] = max(self.reserved.get(self.stage, 0), torch.cuda.max_memory_reserved())
            torch.cuda.reset_peak_memory_stats()
            self.stage = stage

    def __enter__(self) -> StagePeaks:
        torch.cuda.reset_peak_memory_stats()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        torch.cuda.synchronize()
        self._stop.set()
        self._thread.join()
        self._note()
        self.reserved[self.stage] = max(self.reserved.get(self.stage, 0), torch.cuda.max_memory_reserved())

    def over_idle(self, stage: str) -> float:
        return (self.device.get(stage, self.idle) - self.idle) / GIB


def emulate_card(card_gib: float, idle: int, plan_free_gib: float = 0.0) -> float:
    """Cap torch's allocator and show the plan a card of `card_gib`; returns the context GiB."""
    torch.cuda.init()
    torch.zeros(1, device="cuda")
    torch.ones(8, 8, device="cuda") @ torch.ones(8, 8, device="cuda")  # cuBLAS handle + workspace
    torch.cuda.synchronize()
    reader = device_used_reader(0)
    context = (reader[1]() - idle) if reader else 0
    free, total = torch.cuda.mem_get_info(0)
    card = int(card_gib * GIB)
    torch.cuda.set_per_process_memory_fraction(max(card - context, 0) / total, 0)
    name = torch.cuda.get_device_name(0)
    free = int(plan_free_gib * GIB) if plan_free_gib else card - context  # plan_free: test the plan's estimate itself
    emulated = lambda: [devices.GpuInfo(0, f"{name} as a {card_gib:g} GiB card", card, free)]  # noqa: E731
    devices.cuda_devices = step1x3d.cuda_devices = emulated
    return context / GIB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--card", type=float, default=0.0, help="emulate a card of this many GiB")
    parser.add_argument("--plan-free", type=float, default=0.0,
                        help="show the plan this much free memory instead (to run what its estimate refuses)")
    parser.add_argument("--jobs", type=int, default=2, help="jobs (the first also builds the models)")
    parser.add_argument("--view", type=int, default=768)
    parser.add_argument("--octree", type=int, default=384)
    parser.add_argument("--plan", default="single")
    parser.add_argument("--offload", default="auto")
    args = parser.parse_args()
    idle = idle_device_bytes()
    context = emulate_card(args.card, idle, args.plan_free) if args.card else float("nan")
    settings = {"model": "base", "view_resolution": args.view, "octree_resolution": args.octree}
    engine = RandomWeightsEngine(False, plan=args.plan, offload=args.offload)
    work = Path(tempfile.mkdtemp())
    image = work / "input.png"
    input_image().save(image)
    card = f"emulated {args.card:g} GiB card (context {context:.2f} GiB)" if args.card else "whole device"
    rows = []
    for job in range(args.jobs):
        spec = make_spec(image=str(image), output=str(work / f"job{job}.glb"), engine="step1x3d", settings=settings)
        t0 = time.perf_counter()
        outcome = "completes"
        with StagePeaks(idle) as peaks:
            try:
                engine.run(JobContext(spec, work, on_progress=peaks.progress))
            except BackendError as exc:
                outcome = f"{exc.code}: {exc.message[:120]}"
            except torch.OutOfMemoryError:
                outcome = "CUDA out of memory"
        seconds = time.perf_counter() - t0
        worst = max((peaks.over_idle(s) for s in STAGES), default=0.0)
        if outcome == "completes" and args.card and worst > args.card:
            outcome = f"completes but the device peak {worst:.1f} GiB exceeds the card"
        plan = engine.cache.plan.describe() if engine.cache else "-"
        rows.append((f"job {job + 1}", outcome, f"{seconds:.1f}", f"{worst:.2f}", plan))
        stage_rows = [(s, f"{peaks.reserved.get(s, 0) / GIB:.2f}", f"{peaks.over_idle(s):.2f}") for s in STAGES
                      if s in peaks.device]
        print_table(f"job {job + 1} per stage peaks, GiB ({card}, views {args.view}, octree {args.octree}; device "
                    f"used over idle by {peaks.source})", stage_rows, ("stage", "torch reserved", "device over idle"))
    geo, tex = geometry_peak_gib(settings), texture_peak_gib(settings)
    print(f"plan estimates (backend/runtime/plan.py, GiB): geometry {geo:.1f}, texture {tex:.1f}, "
          f"margin {MARGIN_GIB:.1f}; resident need {geo + tex + MARGIN_GIB:.1f}, offloaded need {max(geo, tex) + MARGIN_GIB:.1f}")
    print_table(f"{card}: jobs, plan {args.plan}, offload {args.offload}", rows,
                ("job", "outcome", "seconds", "device peak over idle GiB", "plan"))
    engine.close()


if __name__ == "__main__":
    main()
