"""Native mesh work (pymeshlab, xatlas) in persistent spawned processes.

pymeshlab corrupts the heap when driven from any thread but a process's main thread, and xatlas
segfaults on some inputs. Both therefore run either on the main thread (`call_native` runs inline
there, at no cost) or in these worker processes, whose tasks run on their own main threads. A
crash costs the job that caused it (`internal_error`), never the server; the pool restarts on the
next submit. The processes are spawned (not forked: the parent holds CUDA and thread pools) and
kept between jobs, so the imports are paid once.

They never outlive the parent, however it ends (`kill -9` included): each watches a pipe only the
parent writes to and, on Linux, asks for SIGKILL at the parent's death (shared/lifetime.py). The
kernel sends that when the *thread* that started the process ends, so every process is started
from one thread of the pool's own that lives as long as the pool. With the workers gone, the
multiprocessing resource tracker sees its last writer close and exits too, releasing the caller's
stderr.
"""
from __future__ import annotations

import atexit
import multiprocessing
import os
import threading
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable

from shared.errors import BackendError
from shared.lifetime import die_with_parent

POLL_S = 0.2  # how often a wait checks for a cancel


def default_processes() -> int:
    """One per core the process may use, at most 16 (partitioned decimation still gained from 8 to 16)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(16, cores))


def _warm() -> int:
    """Pay the imports every task needs (a second or two each) while the parent works."""
    import pymeshlab  # noqa: F401

    import backend.mesh.uv  # noqa: F401  (numpy, scipy, xatlas)

    return os.getpid()


def _child_start(parent_pid: int, lifeline) -> None:
    die_with_parent(parent_pid, lifeline)


class MeshWorkers:
    """A pool of spawned processes; `submit`/`map` from any thread, waits honour a job's cancel."""

    def __init__(self, processes: int | None = None):
        self.processes = processes or default_processes()
        self._pool: ProcessPoolExecutor | None = None
        self._watch = self._lifeline = None  # the pool's pipe; its write end closed, the workers exit
        self._lock = threading.Lock()
        # ProcessPoolExecutor starts processes inside `submit`: all submits run on this one thread
        self._starter = ThreadPoolExecutor(1, thread_name_prefix="mesh-workers")

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                context = multiprocessing.get_context("spawn")
                # the read end stays open here too: processes start (and copy it) at later submits
                self._watch, self._lifeline = context.Pipe(duplex=False)
                self._pool = ProcessPoolExecutor(self.processes, mp_context=context, initializer=_child_start,
                                                 initargs=(os.getpid(), self._watch))
            return self._pool

    def _submit_here(self, fn: Callable[..., Any], *args: Any) -> Future:
        try:
            return self._executor().submit(fn, *args)
        except BrokenProcessPool:
            self._reset()
            return self._executor().submit(fn, *args)

    def warm(self) -> None:
        """Start every process and import pymeshlab there now, without waiting for it."""
        for _ in range(self.processes):
            self.submit(_warm)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        return self._starter.submit(self._submit_here, fn, *args).result()

    def result(self, future: Future, ctx=None, what: str = "mesh processing") -> Any:
        """Wait for `future`; a cancel of `ctx`'s job stops the wait (the task finishes unseen)."""
        while True:
            if ctx is not None:
                ctx.check_cancel()
            try:
                return future.result(timeout=POLL_S)
            except FutureTimeout:
                continue
            except BrokenProcessPool:
                self._reset()
                raise BackendError("internal_error", f"the {what} process crashed; try a cleaner mesh or a "
                                   "lower face budget") from None

    def map(self, fn: Callable[..., Any], argument_lists: Iterable[tuple], ctx=None, what: str = "mesh processing") -> list:
        futures = [self.submit(fn, *args) for args in argument_lists]
        try:
            return [self.result(f, ctx, what) for f in futures]
        finally:
            for f in futures:
                f.cancel()

    def _reset(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
            ends, self._watch, self._lifeline = (self._watch, self._lifeline), None, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        for end in ends:
            if end is not None:
                end.close()

    def close(self) -> None:
        self._reset()
        self._starter.shutdown(wait=False)


_shared: MeshWorkers | None = None
_shared_lock = threading.Lock()


def shared_workers() -> MeshWorkers:
    """The process-wide pool (started on first use, stopped at exit)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = MeshWorkers()
            atexit.register(_shared.close)
        return _shared


def on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def call_native(fn: Callable[..., Any], *args: Any, ctx=None, what: str = "mesh processing") -> Any:
    """`fn(*args)` inline on the main thread, else in a worker process (pymeshlab's rule)."""
    if on_main_thread():
        return fn(*args)
    workers = shared_workers()
    return workers.result(workers.submit(fn, *args), ctx, what)
