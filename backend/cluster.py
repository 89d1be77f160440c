"""`generate` over many images on Ray: one actor per GPU keeps its JobRunner (models) loaded.

Each image becomes one GLB, `OUT/<image stem>.glb`, as a local folder batch names it. The GLB is
written under a temporary name and renamed (backend.mesh.export), or published in one PUT when
OUT is a URL, so "the GLB exists" is the done test: a rerun or a retried job skips finished
images and never sees half a file. Every outcome goes to OUT/generate_log.jsonl (./ for a URL).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from shared import storage
from shared.batchrun import drive, failure
from shared.errors import BackendError
from shared.jobs import Log, Task, object_id
from shared.raypool import RayPool, connect

LOG_NAME = "generate_log.jsonl"


def output_for(out_dir: str, task: Task) -> str:
    name = task.input.rstrip("/").rsplit("/", 1)[-1]
    return storage.join(out_dir, f"{Path(name).stem}.glb")


class GenerateWorker:
    """A Ray actor's worker: one JobRunner, its engines created on first use and kept."""

    def __init__(self, out_dir: str, engine: str, settings: dict, runner: dict):
        from .jobs import JobRunner

        self.out_dir, self.engine, self.settings = out_dir, engine, settings
        self.runner = JobRunner(**runner)

    def __call__(self, task: Task) -> dict:
        from .context import JobContext
        from .jobs import make_scratch, make_spec, remove_scratch

        target = output_for(self.out_dir, task)
        t0 = time.perf_counter()
        if storage.exists(target):
            return {"status": "skipped", "reason": "done", "output": target}
        work = make_scratch()
        try:
            image = storage.fetch(task.input, str(work)) if storage.is_url(task.input) else task.input
            local = target if not storage.is_url(target) else str(work / "out" / Path(target).name)
            spec = make_spec(image=image, output=local, engine=self.engine, settings=self.settings, job_id=task.id)
            result = self.runner.run(JobContext(spec=spec, work_dir=work))
            if storage.is_url(target):
                storage.publish_file(str(result.path), target)
            return {"status": "ok", "output": target, "engine": result.metadata.get("engine"),
                    "seconds": round(time.perf_counter() - t0, 3)}
        except BackendError as exc:
            return failure(exc.code, exc.message)
        except Exception as exc:  # storage trouble or a bug: report it, keep the models loaded
            return failure("internal_error", f"{type(exc).__name__}: {exc}")
        finally:
            remove_scratch(work)


def actors_for(address: str | None) -> tuple[int, float]:
    """One actor per GPU of the cluster, else one per CPU: (actors, GPUs each)."""
    import ray

    connect(address)
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    return (gpus, 1.0) if gpus else (max(1, int(resources.get("CPU", 1))), 0.0)


def generate_batch(images: list[str], out_dir: str, engine: str, settings: dict, runner: dict,
                   address: str | None, stream=sys.stderr) -> dict:
    """Generate every image whose GLB is not there yet; returns the summary counts."""
    storage.makedirs(out_dir)
    log = Log(Path(LOG_NAME) if storage.is_url(out_dir) else Path(out_dir) / LOG_NAME)
    actors, gpus = actors_for(address)
    log.write("batch", images=len(images), out_dir=out_dir, engine=engine, actors=actors, gpus_each=gpus)
    pool = RayPool("backend.cluster:GenerateWorker",
                   {"out_dir": out_dir, "engine": engine, "settings": settings, "runner": runner},
                   actors, address=address, num_cpus=0 if gpus else 1, num_gpus=gpus)
    tasks = (Task(object_id(i), i) for i in images)
    summary = None
    try:
        summary = drive(tasks, pool, record=log.write, retries=1,
                        is_done=None if storage.is_url(out_dir) else lambda t: storage.exists(output_for(out_dir, t)),
                        on_final=lambda t, o: print(f"{o['status']:7} {t.input} -> {o.get('output', '')}"
                                                    f"{'' if o['status'] != 'failed' else ' ' + str(o['error'])}",
                                                    file=stream, flush=True))
    finally:
        log.write("done", **(summary.as_dict() if summary else {"status": "interrupted"}))
        log.close()
    return summary.as_dict()
