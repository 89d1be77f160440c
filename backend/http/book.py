"""The HTTP front door's view of its jobs: the `JobService` sink that turns protocol events into
per-job records (kept on disk by the store) and event logs (replayed to SSE clients).

Events arrive on the job threads; SSE streams wait on the server's event loop. Each append wakes
the job's waiters through `loop.call_soon_threadsafe`, so no stream holds a thread while it waits.
Server-side paths never leave the server: an artifact is copied into the job's folder at once
(the engine's scratch folder is gone when the job ends) and every path in an event becomes the URL
that serves the file.
"""
from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared import protocol

from .store import CANCELLED, DONE, ERROR, RUNNING, JobRecord, ResultStore


@dataclass
class LiveJob:
    record: JobRecord
    events: list[dict[str, Any]] = field(default_factory=list)  # protocol event objects, in order
    waiters: list[asyncio.Future] = field(default_factory=list)


class JobBook:
    def __init__(self, store: ResultStore):
        self.store = store
        self.jobs: dict[str, LiveJob] = {}
        self.loop: asyncio.AbstractEventLoop | None = None  # set when the server starts
        self._lock = threading.Lock()
        for record in store.load():
            live = LiveJob(record)
            live.events.append(_event("accepted", job=record.job, engine=record.engine or "auto", queue_position=0))
            live.events.append(_final_event(record))
            self.jobs[record.job] = live

    # ---- queries (any thread) ----
    def get(self, job_id: str, owner: str) -> LiveJob | None:
        """The job, if `owner` made it: other tokens cannot tell it from one that never existed."""
        live = self.jobs.get(job_id)
        return live if live is not None and live.record.owner == owner else None

    def owned(self, owner: str) -> list[LiveJob]:
        return [j for j in list(self.jobs.values()) if j.record.owner == owner]

    # ---- changes ----
    def open(self, job_id: str, owner: str) -> Path:
        """The folder for a new job's uploads, before it is queued."""
        folder = self.store.create(job_id)
        with self._lock:
            self.jobs[job_id] = LiveJob(JobRecord(job=job_id, owner=owner))
        return folder

    def discard(self, job_id: str) -> None:
        """Forget a job and delete its folder (refused upload, or expired result)."""
        with self._lock:
            live = self.jobs.pop(job_id, None)
        self.store.remove(job_id)
        if live is not None:
            self._wake(live)

    def sweep(self) -> list[str]:
        """Remove expired results; returns their ids."""
        gone = self.store.expired([j.record for j in list(self.jobs.values())])
        for job_id in gone:
            self.discard(job_id)
        return gone

    def sink(self, name: str, **fields: Any) -> None:
        """JobService's sink: validate as a protocol event, update the record, log and wake."""
        live = self.jobs.get(fields.get("job"))
        if live is None:
            return
        record = live.record
        folder = self.store.folder(record.job)
        persist = False
        if name == "accepted":
            record.engine = fields["engine"]
            persist = True
        elif name == "progress":
            persist = record.state != RUNNING
            record.state = RUNNING
            record.stage, record.step, record.total = fields["stage"], fields["step"], fields["total"]
            record.message = fields.get("message") or ""
        elif name == "artifact":
            fields["paths"] = [self._keep_artifact(record, fields["kind"], Path(p), folder) for p in fields["paths"]]
        elif name == "done":
            record.state, record.metadata, record.seconds = DONE, dict(fields["metadata"]), fields["seconds"]
            fields["path"] = f"/v1/jobs/{record.job}/result"
        elif name == "error":
            cancelled = fields["code"] == "cancelled"
            record.state = CANCELLED if cancelled else ERROR
            record.error = {"code": fields["code"], "message": fields["message"]}
        if name in ("done", "error"):
            record.finished, persist = time.time(), True
        event = _event(name, **fields)
        if persist:
            self.store.save(record)
        with self._lock:
            live.events.append(event)
        self._wake(live)

    def _keep_artifact(self, record: JobRecord, kind: str, path: Path, folder: Path) -> str:
        name = f"{kind}-{path.name}" if not path.name.startswith(kind) else path.name
        target = folder / "artifacts" / name
        try:
            target.parent.mkdir(exist_ok=True)
            tmp = target.with_name(f".{name}.tmp")
            shutil.copyfile(path, tmp)
            tmp.replace(target)
            record.artifacts[name] = kind
        except OSError:
            return ""  # the folder was removed meanwhile: nothing to point at
        return f"/v1/jobs/{record.job}/artifacts/{name}"

    # ---- waiting (on the event loop) ----
    def _wake(self, live: LiveJob) -> None:
        if self.loop is None:
            return

        def wake() -> None:
            waiters, live.waiters = live.waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

        try:
            self.loop.call_soon_threadsafe(wake)
        except RuntimeError:  # the loop closed: the server is stopping
            pass

    async def events(self, live: LiveJob, after: int = -1):
        """(index, event) from `after + 1` on, waiting for new ones, until the job's last event."""
        # a restarted server holds fewer events than a client saw: its last one is sent again
        index = min(after + 1, len(live.events) - (1 if live.record.finished_state else 0))
        while True:
            while index < len(live.events):
                yield index, live.events[index]
                index += 1
            if _ended(live, index) or live.record.job not in self.jobs:
                return  # the last event was sent, or the job was removed
            fut = asyncio.get_running_loop().create_future()
            live.waiters.append(fut)
            if index < len(live.events):
                continue  # something arrived while registering
            await fut


def _ended(live: LiveJob, sent: int) -> bool:
    """Whether the `sent` events include the job's last one (`done` or `error`); the record's state
    changes just before that event is logged, so the log, not the state, says when to stop."""
    return sent > 0 and live.events[sent - 1]["event"] in ("done", "error")


def _event(name: str, **fields: Any) -> dict[str, Any]:
    """The event object exactly as the JSON-lines protocol writes it (validated there)."""
    return json.loads(protocol.event(name, **fields))


def _final_event(record: JobRecord) -> dict[str, Any]:
    if record.state == DONE:
        return _event("done", job=record.job, path=f"/v1/jobs/{record.job}/result", metadata=record.metadata,
                      seconds=record.seconds or 0.0)
    error = record.error or {"code": "internal_error", "message": "the job ended without a reason"}
    return _event("error", job=record.job, code=error["code"], message=error["message"])
