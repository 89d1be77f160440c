"""Running one job, the same way for the CLI and the server.

Turns a raw request (paths, engine name, settings) into a validated `JobSpec`, runs the engine in a
scratch folder, and converts every failure into a `BackendError` with a stable code, so the
caller only ever deals with a result or a coded error and the process stays up.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared import settings as settings_schema
from shared.errors import BackendError

from . import engines
from .context import JobContext, JobResult, JobSpec

MESH_SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".stl", ".off")


def default_output(image: Path) -> Path:
    return Path.cwd() / "out" / f"{image.stem}.glb"


def make_spec(
    image: str | None = None,
    mesh: str | None = None,
    output: str | None = None,
    engine: str = "auto",
    settings: dict[str, Any] | None = None,
    job_id: str | None = None,
) -> JobSpec:
    """Validate what can be validated before queueing: settings, inputs (a given mesh is read
    once here, so a broken one is refused before any work), the output path."""
    if image is None:
        raise BackendError("invalid_request", "give a reference image (and optionally a mesh to texture from it)")
    values = settings_schema.resolve(settings)
    image_path = Path(image).expanduser().absolute()
    mesh_path = Path(mesh).expanduser().absolute() if mesh else None
    for path in (image_path, mesh_path):
        if path is not None and not path.exists():
            raise BackendError("input_not_found", f"input not found: {path}")
    if mesh_path is not None:
        check_mesh(mesh_path)
    out = Path(output).expanduser().absolute() if output else default_output(image_path)
    if out.suffix.lower() != ".glb":
        out = out / f"{image_path.stem}.glb" if out.is_dir() or not out.suffix else out.with_suffix(".glb")
    check_writable(out)
    return JobSpec(
        job_id=job_id or uuid.uuid4().hex[:12],
        output=out,
        settings=values,
        image=image_path,
        mesh=mesh_path,
        engine=engine,
    )


def check_mesh(path: Path) -> None:
    """Refuse a mesh that is not a supported file, cannot be read, has no triangles or no extent."""
    from .data.meshes import load_mesh

    if path.is_dir() or path.suffix.lower() not in MESH_SUFFIXES:
        raise BackendError("input_unreadable", f"not a mesh file ({', '.join(MESH_SUFFIXES)}): {path}")
    vertices, faces = load_mesh(path)
    if faces.min() < 0 or faces.max() >= len(vertices) or not np.ptp(vertices[np.unique(faces)], axis=0).max() > 0:
        raise BackendError("input_unreadable", f"the mesh {path} has faces past its vertices or no extent")


def check_writable(out: Path) -> None:
    """Prove the output can be created before any work: the nearest existing folder must take a
    new file (tried, not guessed from permission bits, which say yes to root under /proc), and the
    output itself must not be a folder or read-only."""
    if out.is_dir():
        raise BackendError("output_unwritable", f"the output {out} is a folder")
    if out.exists() and not os.access(out, os.W_OK):
        raise BackendError("output_unwritable", f"cannot overwrite the output {out}")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise BackendError("output_unwritable", f"cannot write the output {out}: {parent} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".step1x3d-probe-", dir=parent)
    except OSError as exc:
        raise BackendError("output_unwritable", f"cannot write the output {out}: {parent}: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(probe)


class JobRunner:
    """Holds engines between jobs (so a server keeps models loaded) and runs one job at a time."""

    def __init__(self, weights: str | None = None, plan: str = "auto", geometry_gpu: int | None = None,
                 texture_gpu: int | None = None, offload: str = "auto"):
        self.weights = weights
        self.plan_options = {"plan": plan, "geometry_gpu": geometry_gpu, "texture_gpu": texture_gpu, "offload": offload}
        self._engines: dict[str, engines.Engine] = {}

    def engine_for(self, spec: JobSpec) -> tuple[engines.Engine, engines.EngineChoice]:
        choice = engines.choose(spec.engine, self.weights, spec.settings, self.plan_options["plan"],
                                with_geometry=spec.mesh is None)
        if choice.name not in self._engines:
            options = {"weights": self.weights, **self.plan_options} if choice.name == "step1x3d" else {}
            self._engines[choice.name] = engines.create(choice.name, **options)
        return self._engines[choice.name], choice

    def close(self) -> None:
        """Free loaded models and helper processes (the server calls this when it stops)."""
        for engine in self._engines.values():
            close = getattr(engine, "close", None)
            if close:
                close()
        self._engines.clear()

    def pipelined(self) -> bool:
        """Whether jobs should run on two lanes: the step1x3d `multi` plan (asked for, or `auto`
        with two GPUs). Other engines then run whole on the first lane."""
        from .runtime.devices import cuda_devices

        plan = self.plan_options["plan"]
        return plan == "multi" or (plan == "auto" and len(cuda_devices()) >= 2)

    def run(self, ctx: JobContext) -> JobResult:
        return self.finish(ctx, self.start(ctx))

    def start(self, ctx: JobContext) -> Pending:
        """Choose the engine and run its first stage (the whole job for one-stage engines)."""
        pending = Pending(time.perf_counter())
        with _coded():
            engine, choice = self.engine_for(ctx.spec)
            ctx.on_progress("preprocess", 0, 1, f"engine {choice.name}: {choice.reason}")
            first_stage = getattr(engine, "first_stage", None)
            if first_stage is None:
                pending.result = engine.run(ctx)
            else:
                pending.engine, pending.state = engine, first_stage(ctx)
        return pending

    def finish(self, ctx: JobContext, pending: Pending, device: str | None = None) -> JobResult:
        """Run the second stage of a started job, on `device` when given (the engine's default else)."""
        with _coded():
            result = pending.result or pending.engine.second_stage(ctx, pending.state, device)
        result.metadata.setdefault("seconds", round(time.perf_counter() - pending.started, 3))
        return result


@dataclass
class Pending:
    """A job between its two stages."""

    started: float
    engine: Any = None
    state: Any = None  # the first stage's hand-over (step1x3d: the untextured Shape)
    result: JobResult | None = None  # set when the engine ran the whole job at once

    def devices_for_second_stage(self) -> tuple[str, ...]:
        """Devices that may run the second stage, preferred first; empty: any lane, no device."""
        plan = getattr(self.state, "plan", None)
        return plan.texture_devices if plan is not None and plan.kind == "multi" else ()


@contextlib.contextmanager
def _coded():
    """Every failure as a BackendError with a stable code; GPU memory released after an OOM."""
    try:
        yield
    except BackendError:
        raise
    except MemoryError:
        raise BackendError("out_of_memory", "the host ran out of memory; lower the resolutions or face budget") from None
    except Exception as exc:
        if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError, without importing torch
            _release_gpu_memory()
            raise BackendError(
                "out_of_memory",
                "the GPU ran out of memory; lower view_resolution or octree_resolution, or use another device plan",
            ) from None
        traceback.print_exc()
        raise BackendError("internal_error", f"{type(exc).__name__}: {exc}") from None


def _release_gpu_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def make_scratch() -> Path:
    """A per-job scratch folder (see `remove_scratch`)."""
    return Path(tempfile.mkdtemp(prefix="step1x3d-job-"))


def remove_scratch(path: Path) -> None:
    """Remove a job's scratch folder, unless STEP1X3D_KEEP_WORK is set (debugging)."""
    if not os.environ.get("STEP1X3D_KEEP_WORK"):
        shutil.rmtree(path, ignore_errors=True)
