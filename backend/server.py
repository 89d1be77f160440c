"""`python -m backend serve`: the JSON-lines server the Blender add-on drives.

A reader thread takes requests from stdin and answers the quick ones at once; the main thread
runs jobs from a FIFO queue, one at a time, keeping engines (and their models) loaded between
jobs. Jobs run on the main thread because native libraries are not all thread-safe (pymeshlab
corrupts the heap when driven from a secondary thread). The protocol stream is a private
duplicate of the original stdout; file descriptor 1 itself is pointed at stderr, so anything a
library prints (Python or C level) lands in the log, never in the protocol.
"""
from __future__ import annotations

import os
import queue
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TextIO

from shared import protocol
from shared.errors import BackendError

from . import __version__
from .context import JobContext, JobSpec
from .jobs import JobRunner, ScratchDir, make_spec


@dataclass
class QueuedJob:
    spec: JobSpec
    cancel: threading.Event = field(default_factory=threading.Event)


class Server:
    def __init__(self, out: TextIO, default_engine: str = "auto", runner: JobRunner | None = None):
        self.out = out
        self.default_engine = default_engine
        self.runner = runner or JobRunner()
        self._lock = threading.Lock()  # guards the stream and the job bookkeeping
        self._queue: "queue.Queue[QueuedJob | None]" = queue.Queue()
        self._pending: list[QueuedJob] = []  # queued, not started, in order
        self._current: QueuedJob | None = None
        self._known: set[str] = set()

    # ---- output ----
    def emit(self, name: str, **fields) -> None:
        line = protocol.event(name, **fields)
        with self._lock:
            try:
                self.out.write(line)
                self.out.flush()
            except (BrokenPipeError, ValueError):
                pass  # the client went away; the read loop will see EOF and stop

    # ---- requests ----
    def handle_line(self, line: str) -> bool:
        """Handle one request line; returns False when the server should stop."""
        if not line.strip():
            return True
        try:
            msg = protocol.decode_request(line)
        except BackendError as err:
            self.emit("error", job=None, code=err.code, message=err.message)
            return True
        handler = getattr(self, f"_op_{msg.kind}")
        return handler(msg) is not False

    def _op_hello(self, msg: protocol.Message) -> None:
        client = msg.get("protocol", protocol.PROTOCOL_VERSION)
        if client != protocol.PROTOCOL_VERSION:
            self.emit("error", job=None, code="invalid_request",
                      message=f"protocol {client} is not supported; this backend speaks {protocol.PROTOCOL_VERSION}")
            return
        self._ready()

    def _ready(self) -> None:
        self.emit("ready", protocol=protocol.PROTOCOL_VERSION, version=__version__, engines=list(protocol.ENGINES))

    def _op_generate(self, msg: protocol.Message) -> None:
        job_id = msg.get("job") or uuid.uuid4().hex[:12]
        try:
            with self._lock:
                if job_id in self._known:
                    raise BackendError("invalid_request", f"job id {job_id!r} was already used")
                self._known.add(job_id)
            spec = make_spec(image=msg.get("image"), mesh=msg.get("mesh"), output=msg.get("output"),
                             engine=msg.get("engine") or self.default_engine, settings=msg.get("settings"),
                             job_id=job_id)
        except BackendError as err:
            self.emit("error", job=job_id, code=err.code, message=err.message)
            return
        job = QueuedJob(spec)
        with self._lock:
            position = len(self._pending) + (1 if self._current else 0)
            self._pending.append(job)
        self.emit("accepted", job=job_id, engine=spec.engine, queue_position=position)
        self._queue.put(job)

    def _op_cancel(self, msg: protocol.Message) -> None:
        job_id = msg.get("job")
        with self._lock:
            current = self._current if self._current and self._current.spec.job_id == job_id else None
            queued = next((j for j in self._pending if j.spec.job_id == job_id), None)
            if queued:
                self._pending.remove(queued)
                queued.cancel.set()
        if current:
            current.cancel.set()  # the running job stops at its next step boundary and reports itself
        elif queued:
            self.emit("error", job=job_id, code="cancelled", message=f"job {job_id} was cancelled before it started")
        else:
            self.emit("error", job=job_id, code="invalid_request", message=f"no queued or running job {job_id!r}")

    def _op_status(self, msg: protocol.Message) -> None:
        with self._lock:
            current = self._current.spec.job_id if self._current else None
            pending = [j.spec.job_id for j in self._pending]
        self.emit("status", state="busy" if current else "idle", job=current, queue=pending)

    def _op_shutdown(self, msg: protocol.Message) -> bool:
        return False

    # ---- worker ----
    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                if job.cancel.is_set():
                    continue  # cancelled while queued; already reported
                self._pending.remove(job)
                self._current = job
            self._run(job)
            with self._lock:
                self._current = None

    def _run(self, job: QueuedJob) -> None:
        spec = job.spec

        def progress(stage: str, step: int, total: int, message: str = "") -> None:
            self.emit("progress", job=spec.job_id, stage=stage, step=step, total=total, message=message or None)

        def artifact(kind: str, paths: list[str]) -> None:
            self.emit("artifact", job=spec.job_id, kind=kind, paths=paths)

        started = time.perf_counter()
        try:
            with ScratchDir() as work:
                ctx = JobContext(spec=spec, work_dir=work, on_progress=progress, on_artifact=artifact,
                                 cancel_event=job.cancel)
                ctx.check_cancel()
                result = self.runner.run(ctx)
        except BackendError as err:
            self.emit("error", job=spec.job_id, code=err.code, message=err.message)
            return
        except BaseException as exc:  # the worker must survive anything a job throws
            self.emit("error", job=spec.job_id, code="internal_error", message=f"{type(exc).__name__}: {exc}")
            return
        self.emit("done", job=spec.job_id, path=str(result.path), metadata=result.metadata,
                  seconds=round(time.perf_counter() - started, 3))

    # ---- lifecycle ----
    def _read(self, stdin: TextIO) -> None:
        for line in stdin:
            if not self.handle_line(line):
                break
        self.stop()  # shutdown requested, or stdin closed because the client is gone

    def stop(self) -> None:
        """Cancel everything and let the job loop end after the running job's next step."""
        with self._lock:
            dropped, self._pending = self._pending, []
            for job in dropped:
                job.cancel.set()
            if self._current:
                self._current.cancel.set()
        for job in dropped:
            self.emit("error", job=job.spec.job_id, code="cancelled", message="the backend is shutting down")
        self._queue.put(None)

    def serve_forever(self, stdin: TextIO) -> None:
        self._ready()
        threading.Thread(target=self._read, args=(stdin,), name="request-reader", daemon=True).start()
        self._work()
        self.runner.close()
        self.emit("bye")


def _protocol_stream() -> TextIO:
    """Keep the real stdout for the protocol and send fd 1 (and sys.stdout) to stderr."""
    sys.stdout.flush()
    proto_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(proto_fd, "w", encoding="utf-8", buffering=1)


def serve(default_engine: str = "auto", runner: JobRunner | None = None) -> int:
    out = _protocol_stream()
    stdin = open(sys.stdin.fileno(), "r", encoding="utf-8", errors="replace", closefd=False)
    Server(out, default_engine=default_engine, runner=runner).serve_forever(stdin)
    return 0
