"""What a running job hands to every stage: its inputs, progress reporting and cancellation.

Stages call `ctx.step(stage, i, n)` at each step boundary; that is where a cancel request takes
effect (raising `cancelled`), so a cancel is honoured within one step and never leaves a half file.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from shared.errors import BackendError

ProgressFn = Callable[[str, int, int, str], None]
ArtifactFn = Callable[[str, list[str]], None]


@dataclass
class JobSpec:
    """One generation request, validated: paths are absolute, settings resolved against the schema."""

    job_id: str
    output: Path
    settings: dict[str, Any]
    image: Path | None = None
    mesh: Path | None = None
    engine: str = "auto"


@dataclass
class JobContext:
    spec: JobSpec
    work_dir: Path
    on_progress: ProgressFn = lambda stage, step, total, message: None
    on_artifact: ArtifactFn = lambda kind, paths: None
    cancel_event: threading.Event = field(default_factory=threading.Event)

    def check_cancel(self) -> None:
        if self.cancel_event.is_set():
            raise BackendError("cancelled", f"job {self.spec.job_id} was cancelled")

    def step(self, stage: str, step: int, total: int, message: str = "") -> None:
        """Report progress and honour a pending cancel."""
        self.check_cancel()
        self.on_progress(stage, step, total, message)

    def artifact(self, kind: str, paths: list[str | Path]) -> None:
        self.on_artifact(kind, [str(p) for p in paths])


@dataclass
class JobResult:
    path: Path
    metadata: dict[str, Any]
