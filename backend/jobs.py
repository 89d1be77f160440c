"""Running one job, the same way for the CLI and the server.

Turns a raw request (paths, engine name, settings) into a validated `JobSpec`, runs the engine in a
scratch folder, and converts every failure into a `BackendError` with a stable code, so the
caller only ever deals with a result or a coded error and the process stays up.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

from shared import settings as settings_schema
from shared.errors import BackendError

from . import engines
from .context import JobContext, JobResult, JobSpec

MESH_SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".stl", ".off")


def default_output(image: Path | None, mesh: Path | None) -> Path:
    source = image or mesh
    assert source is not None
    return Path.cwd() / "out" / f"{source.stem}.glb"


def make_spec(
    image: str | None = None,
    mesh: str | None = None,
    output: str | None = None,
    engine: str = "auto",
    settings: dict[str, Any] | None = None,
    job_id: str | None = None,
) -> JobSpec:
    """Validate what can be validated before queueing: settings, input existence, output folder."""
    if image is None and mesh is None:
        raise BackendError("invalid_request", "give an image, a mesh, or both")
    values = settings_schema.resolve(settings)
    image_path = Path(image).expanduser().absolute() if image else None
    mesh_path = Path(mesh).expanduser().absolute() if mesh else None
    for path in (image_path, mesh_path):
        if path is not None and not path.exists():
            raise BackendError("input_not_found", f"input not found: {path}")
    if mesh_path is not None and mesh_path.suffix.lower() not in MESH_SUFFIXES:
        raise BackendError("input_unreadable", f"unsupported mesh format {mesh_path.suffix!r}: {mesh_path}")
    out = Path(output).expanduser().absolute() if output else default_output(image_path, mesh_path)
    if out.suffix.lower() != ".glb":
        out = out / f"{(image_path or mesh_path).stem}.glb" if out.is_dir() or not out.suffix else out.with_suffix(".glb")
    check_writable(out)
    return JobSpec(
        job_id=job_id or uuid.uuid4().hex[:12],
        output=out,
        settings=values,
        image=image_path,
        mesh=mesh_path,
        engine=engine,
    )


def check_writable(out: Path) -> None:
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise BackendError("output_unwritable", f"cannot write the output {out}: {parent} is not writable")
    if out.exists() and (out.is_dir() or not os.access(out, os.W_OK)):
        raise BackendError("output_unwritable", f"cannot overwrite the output {out}")


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

    def run(self, ctx: JobContext) -> JobResult:
        started = time.perf_counter()
        try:
            engine, choice = self.engine_for(ctx.spec)
            ctx.on_progress("preprocess", 0, 1, f"engine {choice.name}: {choice.reason}")
            result = engine.run(ctx)
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
        result.metadata.setdefault("seconds", round(time.perf_counter() - started, 3))
        return result


def _release_gpu_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


class ScratchDir:
    """A per-job scratch folder, removed afterwards unless STEP1X3D_KEEP_WORK is set."""

    def __enter__(self) -> Path:
        self.path = Path(tempfile.mkdtemp(prefix="step1x3d-job-"))
        return self.path

    def __exit__(self, *exc) -> None:
        if not os.environ.get("STEP1X3D_KEEP_WORK"):
            shutil.rmtree(self.path, ignore_errors=True)
