"""One generation job as the add-on sees it: a small state machine fed by protocol events.

Events that arrive after a job ended, or for a job in the wrong state, change nothing, so a late
`progress` can never resurrect a cancelled job. A job the user cancelled stays cancelled even if
its `done` crosses the cancel on the wire: the scene is left as it was, as the artist asked.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..shared import protocol
from . import timing

WAITING = "waiting"  # created while the backend starts; not yet sent
SUBMITTED = "submitted"  # generate sent, not yet accepted
QUEUED = "queued"  # accepted behind other jobs
RUNNING = "running"
CANCELLING = "cancelling"
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"

TERMINAL = frozenset({DONE, FAILED, CANCELLED})
ACTIVE = frozenset({WAITING, SUBMITTED, QUEUED, RUNNING, CANCELLING})

# What the caller (the Blender layer) must do after an event.
PREVIEW = "preview"  # an untextured mesh is ready: show it now
FINISHED = "finished"  # the final GLB is ready: import it (replacing the preview)
ERRORED = "errored"
WITHDRAWN = "withdrawn"  # cancelled: remove any preview, leave the scene as it was


@dataclass(frozen=True)
class JobRequest:
    """Everything needed to send one `generate` and to place its result."""

    job_id: str
    output: str
    settings: dict[str, Any]
    engine: str = "auto"
    image: str | None = None
    mesh: str | None = None
    label: str = "Step1X-3D"  # the imported object's name

    def line(self) -> str:
        return protocol.request(
            "generate", job=self.job_id, image=self.image, mesh=self.mesh, output=self.output,
            engine=self.engine, settings=dict(self.settings),
        )


@dataclass(frozen=True)
class Outcome:
    kind: str  # PREVIEW, FINISHED, ERRORED or WITHDRAWN
    job: "Job"
    path: str | None = None


@dataclass
class Job:
    request: JobRequest
    state: str = WAITING
    engine: str = ""
    queue_position: int = 0
    stage: str = ""
    step: int = 0
    total: int = 0
    message: str = ""
    preview_path: str | None = None
    result_path: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error_code: str = ""
    error_message: str = ""
    clock: timing.StageClock = field(default_factory=timing.StageClock)
    _shown: float = 0.0  # the bar never moves back

    @property
    def job_id(self) -> str:
        return self.request.job_id

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def fraction(self) -> float:
        """Progress within the current stage, 0..1 (the panel's bar)."""
        return min(1.0, self.step / self.total) if self.total > 0 else 0.0

    def overall(self, now: float | None = None) -> float:
        """The whole job's progress by time spent (see timing.py), never decreasing."""
        if self.state == DONE:
            return 1.0
        now = time.monotonic() if now is None else now
        engine = self.engine or self.request.engine
        self._shown = max(self._shown, timing.fraction(engine, self.clock, self.step, self.total, now))
        return self._shown

    def elapsed(self, now: float | None = None) -> float:
        return self.clock.elapsed(time.monotonic() if now is None else now)

    def describe(self) -> str:
        """One line for the progress bar: the stage and step, or the state."""
        if self.state == CANCELLING:
            return "Cancelling…"
        if self.state in (WAITING, SUBMITTED):
            return "Waiting for the backend…"
        if self.state == QUEUED:
            return f"Queued ({self.queue_position} ahead)"
        if self.state == RUNNING and self.stage:
            text = f"{self.stage.capitalize()} {self.step}/{self.total}" if self.total else self.stage.capitalize()
            return f"{text}: {self.message}" if self.message else text
        return self.state.capitalize()

    # --- transitions --------------------------------------------------------------------------

    def sent(self) -> None:
        if self.state == WAITING:
            self.state = SUBMITTED

    def requeue(self) -> None:
        """Back to waiting after the backend was restarted under a job that had not finished."""
        if self.active:
            self.state, self.stage, self.step, self.total, self.message = WAITING, "", 0, 0, ""
            self.clock, self._shown = timing.StageClock(), 0.0

    def request_cancel(self) -> Outcome | None:
        """Mark a cancel; a job never sent ends at once (the caller need not tell the backend)."""
        if self.state == WAITING:
            return self._withdraw()
        if self.state in (SUBMITTED, QUEUED, RUNNING):
            self.state = CANCELLING
        return None

    def fail(self, code: str, message: str) -> Outcome | None:
        """End the job with an error the add-on detected itself (backend crash, hang, stop)."""
        if self.state in TERMINAL:
            return None
        if self.state == CANCELLING:
            return self._withdraw()
        self.state, self.error_code, self.error_message = FAILED, code, message
        return Outcome(ERRORED, self)

    def apply(self, msg: protocol.Message) -> Outcome | None:
        """Advance on one event addressed to this job; returns what the caller must do, if anything."""
        if self.state in TERMINAL:
            return None
        kind = msg.kind
        if kind == "accepted":
            self.engine = msg.get("engine", "")
            self.queue_position = msg.get("queue_position", 0)
            if self.state in (WAITING, SUBMITTED):
                self.state = QUEUED if self.queue_position > 0 else RUNNING
        elif kind == "progress":
            self.stage, self.step, self.total = msg.get("stage"), msg.get("step"), msg.get("total")
            self.message = msg.get("message", "")
            self.clock.observe(self.stage, time.monotonic(), self.step or 0)
            if self.state != CANCELLING:
                self.state = RUNNING
        elif kind == "artifact":
            glbs = [p for p in msg.get("paths", []) if isinstance(p, str) and p.lower().endswith(".glb")]
            if msg.get("kind") == "mesh" and glbs and self.state != CANCELLING:
                self.preview_path = glbs[0]
                return Outcome(PREVIEW, self, glbs[0])
        elif kind == "done":
            if self.state == CANCELLING:
                return self._withdraw()
            self.state = DONE
            self.result_path = msg.get("path")
            self.metadata = dict(msg.get("metadata", {}))
            self.seconds = float(msg.get("seconds", 0.0))
            return Outcome(FINISHED, self, self.result_path)
        elif kind == "error":
            if msg.get("code") == "cancelled":
                return self._withdraw()
            return self.fail(msg.get("code"), msg.get("message"))
        return None

    def _withdraw(self) -> Outcome:
        self.state = CANCELLED
        return Outcome(WITHDRAWN, self)
