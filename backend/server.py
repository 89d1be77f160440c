"""`python -m backend serve`: the JSON-lines server the Blender add-on drives.

A reader thread takes requests from stdin and answers the quick ones at once; the main thread
runs jobs from a FIFO queue (backend/job_queue.py), keeping engines (and their models) loaded
between jobs: one at a time, or, under the multi plan, pipelined on two lanes so the geometry of
one job overlaps the texture of the one before. The protocol stream is a private
duplicate of the original stdout; file descriptor 1 itself is pointed at stderr, so anything a
library prints (Python or C level) lands in the log, never in the protocol.
"""
from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TextIO

from shared import protocol
from shared.errors import BackendError

from . import __version__
from .context import JobContext, JobResult, JobSpec
from .job_queue import JobQueue
from .jobs import JobRunner, make_scratch, make_spec, remove_scratch


@dataclass
class QueuedJob:
    spec: JobSpec
    cancel: threading.Event = field(default_factory=threading.Event)
    started: float = 0.0


class Server:
    def __init__(self, out: TextIO, default_engine: str = "auto", runner: JobRunner | None = None):
        self.out = out
        self.default_engine = default_engine
        self.runner = runner or JobRunner()
        self._lock = threading.Lock()  # guards the stream and the job bookkeeping
        self._pending: list[QueuedJob] = []  # queued, not started, in order
        self._running: list[QueuedJob] = []  # started, in order (two at once under the multi plan)
        self._known: set[str] = set()
        self.jobs = JobQueue(self.runner, self, pipelined=self.runner.pipelined())

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
            position = len(self._pending) + len(self._running)
            self._pending.append(job)
        self.emit("accepted", job=job_id, engine=spec.engine, queue_position=position)
        try:
            self.jobs.put(job)
        except BackendError:  # the queue closed meanwhile: the backend is shutting down
            with self._lock:
                self._pending.remove(job)
            self.emit("error", job=job_id, code="cancelled", message="the backend is shutting down")

    def _op_cancel(self, msg: protocol.Message) -> None:
        job_id = msg.get("job")
        with self._lock:
            job = next((j for j in self._pending + self._running if j.spec.job_id == job_id), None)
            queued = job in self._pending
            if queued:
                self._pending.remove(job)
            if job is not None:
                job.cancel.set()  # a running job stops at its next step boundary and reports itself
        if job is None:
            self.emit("error", job=job_id, code="invalid_request", message=f"no queued or running job {job_id!r}")
            return
        self.jobs.withdraw(job)  # between its stages: reported from there
        if queued:
            self.emit("error", job=job_id, code="cancelled", message=f"job {job_id} was cancelled before it started")

    def _op_prepare_image(self, msg: protocol.Message) -> None:
        """The cut-out preview, on its own thread: quick requests (cancel, status) stay answered."""
        def work() -> None:
            from .cutout_preview import write_cutout

            try:
                result = write_cutout(msg.get("image"), msg.get("output"), msg.get("settings"), msg.get("checker"))
            except BackendError as err:
                self.emit("error", job=msg.get("job"), code=err.code, message=err.message)
            except Exception as exc:  # never let a preview take the server down
                self.emit("error", job=msg.get("job"), code="internal_error", message=f"{type(exc).__name__}: {exc}")
            else:
                self.emit("cutout", job=msg.get("job"), **result.as_dict())

        threading.Thread(target=work, name="step1x3d-cutout", daemon=True).start()

    def _op_status(self, msg: protocol.Message) -> None:
        with self._lock:
            current = self._running[0].spec.job_id if self._running else None
            pending = [j.spec.job_id for j in self._pending]
        self.emit("status", state="busy" if current else "idle", job=current, queue=pending)

    def _op_shutdown(self, msg: protocol.Message) -> bool:
        return False

    # ---- job hooks (called by the job queue's lanes) ----
    def begin(self, job: QueuedJob) -> JobContext | None:
        spec = job.spec
        with self._lock:
            if job.cancel.is_set():
                return None  # cancelled while queued; already reported
            self._pending.remove(job)
            self._running.append(job)
        job.started = time.perf_counter()

        def progress(stage: str, step: int, total: int, message: str = "") -> None:
            self.emit("progress", job=spec.job_id, stage=stage, step=step, total=total, message=message or None)

        def artifact(kind: str, paths: list[str]) -> None:
            self.emit("artifact", job=spec.job_id, kind=kind, paths=paths)

        ctx = JobContext(spec=spec, work_dir=make_scratch(), on_progress=progress, on_artifact=artifact,
                         cancel_event=job.cancel)
        return ctx

    def end(self, job: QueuedJob, ctx: JobContext, outcome: JobResult | BackendError) -> None:
        remove_scratch(ctx.work_dir)
        with self._lock:
            if job in self._running:
                self._running.remove(job)
        if isinstance(outcome, BackendError):
            self.emit("error", job=job.spec.job_id, code=outcome.code, message=outcome.message)
        else:
            self.emit("done", job=job.spec.job_id, path=str(outcome.path), metadata=outcome.metadata,
                      seconds=round(time.perf_counter() - job.started, 3))

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
            for job in dropped + self._running:
                job.cancel.set()
        for job in dropped:
            self.emit("error", job=job.spec.job_id, code="cancelled", message="the backend is shutting down")
        self.jobs.close()

    def serve_forever(self, stdin: TextIO) -> None:
        self._ready()
        threading.Thread(target=self._read, args=(stdin,), name="request-reader", daemon=True).start()
        self.jobs.run()
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
