"""The job logic every front door shares: validate, queue, cancel, report.

`JobService` owns one job queue (backend/job_queue.py) and its engines, and tells a `Sink` what
happens with the protocol's own event objects (`accepted`, `progress`, `artifact`, `done`,
`error`). The JSON-lines server (backend/server.py) writes them to stdout; the HTTP API
(backend/http) keeps them per job for its state, SSE streams and result store. Front doors only
need this small interface: `submit`, `cancel`, `status`, `run`, `stop`. What runs the admitted jobs
is pluggable (`executor`): by default the local `JobQueue` on this process's engines; the HTTP
API's `--cluster ray` hands them to Ray Serve replicas instead (backend/serving.py's `ServeQueue`).
"""
from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from shared.errors import BackendError

from .context import JobContext, JobResult, JobSpec
from .job_queue import JobQueue
from .jobs import JobRunner, make_scratch, make_spec, remove_scratch

Sink = Callable[..., None]  # sink(event_name, **fields): the fields of shared/protocol.py's EVENTS


@dataclass
class QueuedJob:
    spec: JobSpec
    cancel: threading.Event = field(default_factory=threading.Event)
    started: float = 0.0


class JobService:
    def __init__(self, runner: JobRunner, sink: Sink, default_engine: str = "auto", max_jobs: int | None = None,
                 executor: Callable[["JobService"], Any] | None = None):
        """`max_jobs`: queued plus running jobs admitted at once (None: unbounded); one more is
        refused with `queue_full`. `executor(self)` builds what runs the jobs: an object with
        `JobQueue`'s `put`, `withdraw`, `run` and `close` that calls this service's `begin`/`end`."""
        self.runner, self.sink = runner, sink
        self.default_engine, self.max_jobs = default_engine, max_jobs
        self._lock = threading.Lock()  # guards the job bookkeeping
        self._pending: list[QueuedJob] = []  # queued, not started, in order
        self._running: list[QueuedJob] = []  # started, in order (two at once under the multi plan)
        self._known: set[str] = set()
        self._seconds: list[float] = []  # durations of recent jobs, for `retry_after`
        self.jobs = executor(self) if executor else JobQueue(runner, self, pipelined=runner.pipelined())

    # ---- front-door operations ----
    def submit(self, *, image: str | None = None, mesh: str | None = None, output: str | None = None,
               engine: str | None = None, settings: dict[str, Any] | None = None, job_id: str | None = None) -> str:
        """Validate and queue one job; emits `accepted`. Raises BackendError (nothing queued)."""
        job_id = job_id or uuid.uuid4().hex[:12]
        with self._lock:
            if job_id in self._known:
                raise BackendError("invalid_request", f"job id {job_id!r} was already used")
            self._known.add(job_id)
            if self.max_jobs is not None and self.load() >= self.max_jobs:
                raise BackendError("queue_full", f"{self.max_jobs} jobs are queued or running; retry later")
        spec = make_spec(image=image, mesh=mesh, output=output, engine=engine or self.default_engine,
                         settings=settings, job_id=job_id)
        job = QueuedJob(spec)
        with self._lock:
            if self.max_jobs is not None and self.load() >= self.max_jobs:  # others got in while validating
                raise BackendError("queue_full", f"{self.max_jobs} jobs are queued or running; retry later")
            position = self.load()
            self._pending.append(job)
        self.sink("accepted", job=job_id, engine=spec.engine, queue_position=position)
        try:
            self.jobs.put(job)
        except BackendError:  # the queue closed meanwhile: the backend is shutting down
            with self._lock:
                self._pending.remove(job)
            self.sink("error", job=job_id, code="cancelled", message="the backend is shutting down")
        return job_id

    def cancel(self, job_id: str) -> str:
        """Cancel a queued or running job: "queued" (reported at once) or "running" (it stops at
        its next step and reports itself). Raises `invalid_request` for any other id."""
        with self._lock:
            job = next((j for j in self._pending + self._running if j.spec.job_id == job_id), None)
            queued = job in self._pending
            if queued:
                self._pending.remove(job)
            if job is not None:
                job.cancel.set()
        if job is None:
            raise BackendError("invalid_request", f"no queued or running job {job_id!r}")
        self.jobs.withdraw(job)  # between its stages: reported from there
        if queued:
            self.sink("error", job=job_id, code="cancelled", message=f"job {job_id} was cancelled before it started")
        return "queued" if queued else "running"

    def status(self) -> dict[str, Any]:
        with self._lock:
            current = self._running[0].spec.job_id if self._running else None
            pending = [j.spec.job_id for j in self._pending]
        return {"state": "busy" if current else "idle", "job": current, "queue": pending}

    def load(self) -> int:
        """Queued plus running jobs."""
        return len(self._pending) + len(self._running)

    def position(self, job_id: str) -> int | None:
        """Jobs ahead of this one (running ones included); None once it runs or is unknown."""
        with self._lock:
            ids = [j.spec.job_id for j in self._pending]
            return len(self._running) + ids.index(job_id) if job_id in ids else None

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the mean recent job time (30 s before any)."""
        recent = self._seconds[-8:]
        return max(1, round(sum(recent) / len(recent))) if recent else 30

    # ---- lifecycle ----
    def run(self) -> None:
        """The job loop on the calling thread, until `stop`; then the engines are freed."""
        self.jobs.run()
        self.runner.close()

    def stop(self) -> None:
        """Cancel everything and let `run` end after the running job's next step."""
        with self._lock:
            dropped, self._pending = self._pending, []
            for job in dropped + self._running:
                job.cancel.set()
        for job in dropped:
            self.sink("error", job=job.spec.job_id, code="cancelled", message="the backend is shutting down")
        self.jobs.close()

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
            self.sink("progress", job=spec.job_id, stage=stage, step=step, total=total, message=message or None)

        def artifact(kind: str, paths: list[str]) -> None:
            self.sink("artifact", job=spec.job_id, kind=kind, paths=paths)

        return JobContext(spec=spec, work_dir=make_scratch(), on_progress=progress, on_artifact=artifact,
                          cancel_event=job.cancel)

    def end(self, job: QueuedJob, ctx: JobContext, outcome: JobResult | BackendError) -> None:
        remove_scratch(ctx.work_dir)
        seconds = round(time.perf_counter() - job.started, 3)
        with self._lock:
            if job in self._running:
                self._running.remove(job)
            self._seconds = [*self._seconds[-7:], seconds]
        if isinstance(outcome, BackendError):
            self.sink("error", job=job.spec.job_id, code=outcome.code, message=outcome.message)
        else:
            self.sink("done", job=job.spec.job_id, path=str(outcome.path), metadata=outcome.metadata, seconds=seconds)
