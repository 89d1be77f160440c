"""The engine interface: what the CLI and the server call, whatever runs underneath."""
from __future__ import annotations

from typing import Protocol

from backend.context import JobContext, JobResult


class Engine(Protocol):
    name: str

    def run(self, ctx: JobContext) -> JobResult:
        """Produce `ctx.spec.output` (a GLB, written atomically) or raise `BackendError`."""
        ...
