"""The add-on's side of one backend: process lifecycle, job table, crash and hang detection.

Everything runs on the caller's thread (Blender's main thread): `pump()` drains the reader thread's
queue, advances the jobs and returns what the Blender layer must do (show a preview, import a
result, report an error). With a timeout, `pump()` blocks for the first event, which is the
background-mode path where timers never fire. Time comes from an injectable clock so the timeout
rules are testable without sleeping.
"""
from __future__ import annotations

import collections
import queue
import time
from dataclasses import dataclass
from typing import Callable

from ..shared import protocol
from ..shared.errors import BackendError
from .jobs import WAITING, Job, JobRequest, Outcome
from .process import BackendProcess, Exited, Garbage

STOPPED = "stopped"
STARTING = "starting"
READY = "ready"
BUSY = "busy"
CRASHED = "crashed"

KEEP_FINISHED = 8  # finished jobs kept for the panel; older ones are forgotten


@dataclass(frozen=True)
class Timeouts:
    startup: float = 180.0  # spawn to `ready` (the first import of torch can be slow)
    silence: float = 120.0  # no line at all while work is pending: the backend is hung
    ping: float = 5.0  # after this much silence a `status` request checks it still answers
    cancel: float = 20.0  # a cancel not honoured by then kills the process


class JobTable:
    """What a local and a remote session share: the job table, its pruning and the blocking wait."""

    jobs: dict[str, Job]
    _clock: Callable[[], float]

    @property
    def active_jobs(self) -> list[Job]:
        return [j for j in self.jobs.values() if j.active]

    def pump(self, timeout: float = 0.0) -> list[Outcome]:
        raise NotImplementedError

    def _give_up(self, job_id: str, timeout: float) -> list[Outcome]:
        """End a job that did not finish within `wait`'s timeout (after a cancel was asked for)."""
        raise NotImplementedError

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 0.25):
        """Blocking path (background mode): yield outcomes until the job ends or `timeout` passes."""
        job = self.jobs[job_id]
        deadline = None if timeout is None else self._clock() + timeout
        while job.active:
            if deadline is not None and self._clock() > deadline:
                yield from self.cancel(job_id)
                yield from self._give_up(job_id, timeout)
                break
            yield from self.pump(poll)

    def _forget_old(self) -> None:
        finished = [k for k, j in self.jobs.items() if not j.active]
        for key in finished[:-KEEP_FINISHED] if len(finished) > KEEP_FINISHED else []:
            del self.jobs[key]


class Session(JobTable):
    def __init__(self, launch: Callable[[], BackendProcess], timeouts: Timeouts = Timeouts(),
                 clock: Callable[[], float] = time.monotonic):
        self._launch = launch
        self.timeouts = timeouts
        self._clock = clock
        self.process: BackendProcess | None = None
        self.jobs: dict[str, Job] = {}
        self.backend_info: dict = {}  # fields of the last `ready` event
        self.problem = ""  # why the backend is not usable, for the panel; "" when fine
        self.log: collections.deque[tuple[str, str]] = collections.deque(maxlen=200)
        self._ready = False
        self._crashed = False
        self._started_at = 0.0
        self._last_line_at = 0.0
        self._ping_sent_at: float | None = None
        self._cancel_sent_at: dict[str, float] = {}
        self._last_backend_error = ""

    # --- state --------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        if self.process is None:
            return CRASHED if self._crashed else STOPPED
        if not self._ready:
            return STARTING
        return BUSY if any(j.active for j in self.jobs.values()) else READY

    # --- commands -----------------------------------------------------------------------------

    def start(self) -> None:
        """Spawn the backend unless it runs; raises `backend_unavailable` when it cannot start."""
        if self.process is not None:
            return
        process = self._launch()
        process.start()
        self.process = process
        self._ready = self._crashed = False
        self.problem = self._last_backend_error = ""
        self._started_at = self._last_line_at = self._clock()
        self._ping_sent_at = None
        self._send(protocol.request("hello", protocol=protocol.PROTOCOL_VERSION, client="step1x3d-blender"))

    def stop(self, grace: float = 5.0) -> list[Outcome]:
        """Stop the backend; jobs still running end as cancelled (the artist stopped them)."""
        outcomes = self._end_active("backend_unavailable", "the backend was stopped", withdraw=True)
        process, self.process = self.process, None
        self._ready = self._crashed = False
        if process is not None:
            process.close(grace)
        return outcomes

    def submit(self, request: JobRequest) -> Job:
        if request.job_id in self.jobs:
            raise BackendError("invalid_request", f"job id {request.job_id!r} is already in use")
        self.start()
        job = Job(request)
        self.jobs[request.job_id] = job
        if self._ready:
            self._send_job(job)
        self._forget_old()
        return job

    def cancel(self, job_id: str) -> list[Outcome]:
        job = self.jobs.get(job_id)
        if job is None or not job.active:
            return []
        sent_before = job.state != WAITING
        outcome = job.request_cancel()
        if outcome is not None:
            return [outcome]
        if sent_before and job_id not in self._cancel_sent_at:
            self._cancel_sent_at[job_id] = self._clock()
            self._send(protocol.request("cancel", job=job_id))
        return []

    def pump(self, timeout: float = 0.0) -> list[Outcome]:
        """Handle every queued event (waiting up to `timeout` s for the first), then the timers."""
        outcomes: list[Outcome] = []
        process = self.process
        if process is not None:
            try:
                item = process.events.get(timeout=timeout) if timeout > 0 else process.events.get_nowait()
                while True:
                    outcomes += self._handle(item)
                    if self.process is not process:  # it exited: later lines belong to no one
                        break
                    item = process.events.get_nowait()
            except queue.Empty:
                pass
        outcomes += self._check_timers()
        return outcomes

    def _give_up(self, job_id: str, timeout: float) -> list[Outcome]:
        return self._kill(f"the job did not finish within {timeout:g} s")

    # --- internals ----------------------------------------------------------------------------

    def _send(self, line: str) -> None:
        if self.process is not None:
            self.process.send(line)  # a dead pipe surfaces as Exited from the reader

    def _send_job(self, job: Job) -> None:
        self._send(job.request.line())
        job.sent()

    def _handle(self, item) -> list[Outcome]:
        self._last_line_at = self._clock()
        self._ping_sent_at = None
        if isinstance(item, Exited):
            return self._exited(item)
        if isinstance(item, Garbage):
            self.log.append(("warning", f"ignored a line that is not protocol ({item.reason}): {item.line}"))
            return []
        kind = item.kind
        if kind == "ready":
            return self._on_ready(item)
        if kind == "log":
            self.log.append((item.get("level"), item.get("message")))
            return []
        if kind == "error" and item.get("job") is None:
            self._last_backend_error = f"[{item.get('code')}] {item.get('message')}"
            self.log.append(("error", self._last_backend_error))
            return []
        job = self.jobs.get(item.get("job")) if kind in ("accepted", "progress", "artifact", "done", "error") else None
        if job is None:
            return []
        outcome = job.apply(item)
        if not job.active:
            self._cancel_sent_at.pop(job.job_id, None)
        return [outcome] if outcome else []

    def _on_ready(self, msg: protocol.Message) -> list[Outcome]:
        self.backend_info = dict(msg.fields)
        if msg.get("protocol") != protocol.PROTOCOL_VERSION:
            return self._kill(
                f"the backend speaks protocol {msg.get('protocol')} and the add-on {protocol.PROTOCOL_VERSION}: "
                "install the same version of both"
            )
        self._ready = True
        for job in self.jobs.values():
            if job.state == WAITING:
                self._send_job(job)
        return []

    def _exited(self, item: Exited) -> list[Outcome]:
        self.process = None
        self._ready = False
        self._crashed = True
        detail = self._last_backend_error or (item.stderr_tail.strip().splitlines() or [""])[-1]
        code = item.returncode
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited unexpectedly (exit code {code})"
        self.problem = f"the backend {how}" + (f": {detail}" if detail else "")
        self.log.append(("error", self.problem + ("\n" + item.stderr_tail if item.stderr_tail else "")))
        return self._end_active("backend_unavailable", self.problem)

    def _kill(self, reason: str) -> list[Outcome]:
        process, self.process = self.process, None
        self._ready = False
        self._crashed = True
        self.problem = reason
        self.log.append(("error", reason))
        if process is not None:
            process.kill()
        return self._end_active("backend_unavailable", reason)

    def _restart_for_cancel(self) -> list[Outcome]:
        """A cancel the backend ignores is enforced by killing it; the other jobs are resent."""
        cancelling = [self.jobs[k] for k in self._cancel_sent_at if k in self.jobs]
        others = [j for j in self.active_jobs if j not in cancelling]
        process, self.process = self.process, None
        self._ready = False
        self._cancel_sent_at.clear()
        self.log.append(("warning", f"the backend did not honour a cancel within {self.timeouts.cancel:g} s; "
                                    "it was restarted"))
        process.kill()
        outcomes = [o for j in cancelling if (o := j.fail("cancelled", "cancelled by stopping the backend"))]
        for job in others:
            job.requeue()
        if others:
            try:
                self.start()
            except BackendError as err:
                outcomes += [o for j in others if (o := j.fail(err.code, err.message))]
        return outcomes

    def _end_active(self, code: str, message: str, withdraw: bool = False) -> list[Outcome]:
        outcomes = []
        for job in self.active_jobs:
            outcome = job.request_cancel() if withdraw else None
            outcome = outcome or job.fail(code, message)
            if outcome:
                outcomes.append(outcome)
        self._cancel_sent_at.clear()
        return outcomes

    def _check_timers(self) -> list[Outcome]:
        if self.process is None:
            return []
        now = self._clock()
        t = self.timeouts
        if not self._ready:
            if now - self._started_at > t.startup:
                return self._kill(f"the backend did not report ready within {t.startup:g} s")
            return []
        if any(now - sent_at > t.cancel for sent_at in self._cancel_sent_at.values()):
            return self._restart_for_cancel()
        if not self.active_jobs:
            return []
        silent = now - self._last_line_at
        if silent > t.silence:
            return self._kill(f"the backend stopped answering (nothing for {t.silence:g} s)")
        if silent > t.ping and self._ping_sent_at is None:
            self._ping_sent_at = now
            self._send(protocol.request("status"))
        return []
