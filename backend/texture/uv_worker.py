"""Decimation and UV unwrapping in a worker process, overlapped with the GPU's denoising.

Only the bake needs the decimated, unwrapped mesh; conditioning and texture sync use the full
mesh. pymeshlab's decimation and xatlas together take seconds and hold the GIL (a thread would
stall the denoising loop), so they run in a persistent spawned process while the GPU works. A
crash inside xatlas (it segfaults on some inputs) then costs the job, not the server.
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from backend.context import JobContext
from backend.mesh.decimate import decimate
from backend.mesh.uv import UVMesh, unwrap
from shared.errors import BackendError

POLL_S = 0.2  # how often a wait checks for a cancel


def decimate_and_unwrap(vertices: np.ndarray, faces: np.ndarray, face_budget: int, texture_size: int) -> UVMesh:
    v, f = decimate(vertices, faces, face_budget)
    return unwrap(v, f, texture_size)


class UVWorker:
    """One persistent worker process; jobs run one at a time."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    def submit(self, vertices: np.ndarray, faces: np.ndarray, face_budget: int, texture_size: int) -> Future:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        return self._pool.submit(decimate_and_unwrap, np.asarray(vertices, np.float32),
                                 np.asarray(faces, np.int64), int(face_budget), int(texture_size))

    def result(self, future: Future, ctx: JobContext) -> UVMesh:
        """Wait for `future`, honouring a cancel of the job while waiting."""
        while True:
            ctx.check_cancel()
            try:
                return future.result(timeout=POLL_S)
            except FutureTimeout:
                continue
            except BrokenProcessPool:
                self.close()
                raise BackendError("internal_error", "the UV unwrapping process crashed (xatlas); "
                                   "try a cleaner mesh or a lower face budget") from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
