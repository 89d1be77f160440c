"""The FIFO of jobs the server and batch `generate` run: one lane, or two pipelined lanes.

One lane (single and cpu plans): each job runs whole on the calling thread, in order.

Two lanes (the step1x3d `multi` plan): the calling thread is the geometry lane and runs each
job's first stage on the geometry GPU; a second thread, the texture lane, runs second stages on
the texture GPU, so the geometry of job N+1 overlaps the texture of job N. Texturing takes
about four times as long as geometry, so when the geometry lane has no new job and the plan put
a texture copy on its GPU, it takes a waiting second stage itself instead of idling.

Engines with no stages (preview) run whole on the geometry lane. The queue knows nothing of
protocols: `JobHooks` open a job's context when it starts and report its outcome.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from shared.errors import BackendError

from .context import JobContext, JobResult
from .jobs import JobRunner, Pending


class JobHooks(Protocol):
    def begin(self, job: Any) -> JobContext | None:
        """The job's context as it starts, or None to skip it (cancelled while queued)."""

    def end(self, job: Any, ctx: JobContext, outcome: JobResult | BackendError) -> None:
        """Report the outcome and release what `begin` opened."""


@dataclass
class _Between:
    """A job whose first stage is done, waiting for a lane to run its second."""

    job: Any
    ctx: JobContext
    pending: Pending


class JobQueue:
    def __init__(self, runner: JobRunner, hooks: JobHooks, pipelined: bool = False):
        self.runner, self.hooks, self.pipelined = runner, hooks, pipelined
        self._fresh: deque[Any] = deque()
        self._between: deque[_Between] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._first_stages_running = 0
        self._texture_lane_idle = True  # until it takes a task: the geometry lane never paints first

    # ---- producers ----
    def put(self, job: Any) -> None:
        with self._cond:
            if self._closed:
                raise BackendError("invalid_request", "the job queue is closed")
            self._fresh.append(job)
            self._cond.notify_all()

    def close(self) -> None:
        """No more jobs: `run` returns once the queued ones are done (cancel them to hurry it)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def withdraw(self, job: Any) -> str | None:
        """Take a job out if no lane holds it: "queued" (never started) or "between" (its second
        stage had not started; reported here as cancelled). None: not waiting (running or done)."""
        with self._cond:
            self._cond.notify_all()  # a lane waiting for this job may be done once it is gone
            if job in self._fresh:
                self._fresh.remove(job)
                return "queued"
            waiting = next((b for b in self._between if b.job is job), None)
            if waiting is None:
                return None
            self._between.remove(waiting)
        self.hooks.end(job, waiting.ctx, BackendError("cancelled", "the job was cancelled between its stages"))
        return "between"

    # ---- lanes ----
    def run(self) -> None:
        """Run jobs until closed and drained; the calling thread is the first (geometry) lane."""
        if not self.pipelined:
            self._lane(starts=True, slot=None)
            return
        texture_lane = threading.Thread(target=self._lane, kwargs={"starts": False, "slot": 0},
                                        name="texture-lane", daemon=True)
        texture_lane.start()
        self._lane(starts=True, slot=1)
        texture_lane.join()

    def _lane(self, starts: bool, slot: int | None) -> None:
        """`starts`: this lane runs first stages (the geometry lane). `slot`: the index, in a job's
        `devices_for_second_stage`, of the device this lane paints on; None: one lane runs whole
        jobs."""
        while True:
            task = self._take(starts, slot)
            if task is None:
                return
            if isinstance(task, _Between):
                self._second(task, slot)
            else:
                self._first(task, whole=slot is None)

    def _take(self, starts: bool, slot: int | None) -> Any:
        with self._cond:
            while True:
                if starts and self._fresh:
                    self._first_stages_running += 1
                    return self._fresh.popleft()
                # the geometry lane paints only while the texture lane is busy
                if slot is not None and (not starts or not self._texture_lane_idle):
                    task = next((b for b in self._between if slot < max(1, len(b.pending.devices_for_second_stage()))), None)
                    if task is not None:
                        self._between.remove(task)
                        self._texture_lane_idle = self._texture_lane_idle and starts
                        self._cond.notify_all()  # a busy texture lane lets the geometry lane paint
                        return task
                if self._closed and not self._fresh and not self._first_stages_running and not self._between:
                    return None
                if not starts:
                    self._texture_lane_idle = True
                self._cond.wait()

    def _first(self, job: Any, whole: bool) -> None:
        try:
            ctx = self.hooks.begin(job)
            if ctx is None:
                return
            try:
                pending = self.runner.start(ctx)
                if whole or pending.result is not None:
                    self.hooks.end(job, ctx, self.runner.finish(ctx, pending))
                    return
            except BackendError as err:
                self.hooks.end(job, ctx, err)
                return
            with self._cond:
                self._between.append(_Between(job, ctx, pending))
        finally:
            with self._cond:
                self._first_stages_running -= 1
                self._cond.notify_all()

    def _second(self, task: _Between, slot: int) -> None:
        devices = task.pending.devices_for_second_stage()
        try:
            outcome: JobResult | BackendError = self.runner.finish(task.ctx, task.pending,
                                                                   devices[slot] if devices else None)
        except BackendError as err:
            outcome = err
        self.hooks.end(task.job, task.ctx, outcome)
