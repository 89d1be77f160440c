"""Decimation and UV unwrapping in the background, overlapped with the GPU's denoising.

Only the bake needs the decimated, unwrapped mesh; conditioning and texture sync use the full
mesh. A background thread drives it: the decimation runs in parallel parts in the shared mesh
worker processes (backend/mesh/decimate.py), then xatlas unwraps in one of them. pymeshlab and
xatlas hold the GIL and must not run off a main thread, so none of it runs in this process; a
crash inside xatlas (it segfaults on some inputs) costs the job, not the server.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from backend.context import JobContext
from backend.mesh.decimate import decimate
from backend.mesh.uv import UVMesh, unwrap
from backend.mesh.workers import MeshWorkers, shared_workers


class UVWorker:
    """One texture stage's UV jobs, one at a time."""

    def __init__(self, workers: MeshWorkers | None = None) -> None:
        self.workers = workers or shared_workers()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="uv")

    def submit(self, vertices: np.ndarray, faces: np.ndarray, face_budget: int, texture_size: int,
               ctx: JobContext | None = None) -> Future:
        return self._thread.submit(self._run, np.asarray(vertices, np.float32), np.asarray(faces, np.int64),
                                   int(face_budget), int(texture_size), ctx)

    def _run(self, vertices: np.ndarray, faces: np.ndarray, face_budget: int, texture_size: int,
             ctx: JobContext | None) -> UVMesh:
        v, f = decimate(vertices, faces, face_budget, self.workers, ctx)
        return self.workers.result(self.workers.submit(unwrap, v, f, texture_size), ctx, what="UV unwrapping (xatlas)")

    def result(self, future: Future, ctx: JobContext) -> UVMesh:
        """Wait for `future`, honouring a cancel of the job while waiting."""
        return self.workers.result(future, ctx, what="UV unwrapping (xatlas)")
