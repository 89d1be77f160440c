"""Rendering on Ray: each actor keeps one persistent bpy worker (a WorkerSlot) alive (bpy-free).

The actor checks the output itself before rendering (another attempt may have committed it), so
a retried object is never rendered twice. A local or shared-filesystem OUT_ROOT gets the usual
staging folder and rename; an fsspec URL gets the object rendered into a local scratch folder and
uploaded with meta.json last, so "OUT/<id>/meta.json exists" stays the one done test everywhere.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

from shared import storage
from shared.batchrun import failure
from shared.jobs import Task
from shared.raypool import RayPool

from .batch import LOG_DIR, BatchConfig, WorkerSlot
from .options import RenderOptions
from .outputs import META_NAME


class RenderWorker:
    def __init__(self, out_root: str, options: dict, config: dict, slot: int):
        self.out_root = out_root
        self.remote = storage.is_url(out_root)
        config = BatchConfig(**{**config, "gpus": tuple(config["gpus"])})
        log_dir = Path(tempfile.gettempdir()) / "blender_render-logs" if self.remote else Path(out_root) / LOG_DIR
        self.slot = WorkerSlot(slot, Path(out_root) if not self.remote else Path("."),
                               RenderOptions.from_dict(options), config, log_dir)

    def __call__(self, task: Task) -> dict:
        target = storage.join(self.out_root, task.id)
        try:
            if storage.exists(storage.join(target, META_NAME)):
                return {"status": "skipped", "reason": "done"}
            if not self.remote and not storage.is_url(task.input):
                return self.slot.run(task)
            scratch = Path(tempfile.mkdtemp(prefix="render-"))
            try:
                local_input = storage.fetch(task.input, str(scratch)) if storage.is_url(task.input) else task.input
                outcome = self.slot.run(Task(task.id, local_input, task.attempt), scratch / "out" / task.id)
                if outcome.get("status") == "ok":
                    storage.publish_tree(str(scratch / "out" / task.id), target, META_NAME)
                return outcome
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        except Exception as exc:  # storage trouble: report it, keep the actor serving
            return failure("internal_error", f"{type(exc).__name__}: {exc}")


def render_pool(out_root: str, options: RenderOptions, config: BatchConfig, address: str | None) -> RayPool:
    """One actor per worker, one CPU each (Cycles gets one thread); with --gpus each actor
    reserves one GPU instead and Ray sets its CUDA_VISIBLE_DEVICES, so the slot picks none."""
    gpus = len(config.gpus)
    cfg = asdict(config)
    if gpus:
        cfg["gpus"] = ()
        options = replace(options, device="gpu")
    elif options.threads == 0 and options.device == "cpu":
        options = replace(options, threads=1)  # what each actor reserves
    kwargs = [{"out_root": out_root, "options": options.to_dict(), "config": cfg, "slot": i}
              for i in range(config.workers)]
    return RayPool("blender_render.cluster:RenderWorker", kwargs, config.workers, address=address,
                   num_cpus=1, num_gpus=1 if gpus else 0)
