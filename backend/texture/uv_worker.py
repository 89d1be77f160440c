"""Decimation and UV unwrapping in a worker process, overlapped with the GPU's denoising.

Only the bake needs the decimated, unwrapped mesh; conditioning and texture sync use the full
mesh. pymeshlab's decimation and xatlas together take seconds, hold the GIL and must not run off
a main thread, so they run in the shared mesh worker processes (backend/mesh/workers.py) while
the GPU works. A crash inside xatlas (it segfaults on some inputs) then costs the job, not the
server.
"""
from __future__ import annotations

from concurrent.futures import Future

import numpy as np

from backend.context import JobContext
from backend.mesh.decimate import decimate
from backend.mesh.uv import UVMesh, unwrap
from backend.mesh.workers import MeshWorkers, shared_workers


def decimate_and_unwrap(vertices: np.ndarray, faces: np.ndarray, face_budget: int, texture_size: int) -> UVMesh:
    v, f = decimate(vertices, faces, face_budget)
    return unwrap(v, f, texture_size)


class UVWorker:
    """Submits one stage's UV jobs to the shared mesh workers."""

    def __init__(self, workers: MeshWorkers | None = None) -> None:
        self.workers = workers or shared_workers()

    def submit(self, vertices: np.ndarray, faces: np.ndarray, face_budget: int, texture_size: int) -> Future:
        return self.workers.submit(decimate_and_unwrap, np.asarray(vertices, np.float32),
                                   np.asarray(faces, np.int64), int(face_budget), int(texture_size))

    def result(self, future: Future, ctx: JobContext) -> UVMesh:
        """Wait for `future`, honouring a cancel of the job while waiting."""
        return self.workers.result(future, ctx, what="UV unwrapping (xatlas)")
