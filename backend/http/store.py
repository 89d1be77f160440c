"""The HTTP server's jobs on disk: one folder per job with its inputs, result, artifacts and a
`record.json` (the index entry), so finished results outlive a restart.

Records are rewritten whole, to a temporary name then renamed, so a crash leaves the old record or
the new one, never half of one. On start, a job the index shows queued or running was lost with
the previous process: it is marked `job_lost`. Finished jobs are removed once older than the keep
time, and the oldest first while the folder is over its disk budget.
"""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

QUEUED, RUNNING, DONE, ERROR, CANCELLED = "queued", "running", "done", "error", "cancelled"
FINISHED = frozenset({DONE, ERROR, CANCELLED})
RECORD = "record.json"
RESULT = "result.glb"


@dataclass
class JobRecord:
    """What GET /v1/jobs/ID answers, and what is kept on disk between restarts."""

    job: str
    owner: str  # a digest of the token that made the job, never the token itself
    state: str = QUEUED
    engine: str = ""
    stage: str = ""
    step: int = 0
    total: int = 0
    message: str = ""
    error: dict[str, str] | None = None  # {"code", "message"}
    created: float = field(default_factory=time.time)
    finished: float | None = None
    seconds: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)  # name -> kind

    @property
    def finished_state(self) -> bool:
        return self.state in FINISHED

    def public(self) -> dict[str, Any]:
        """The record as the API shows it (the owner digest stays inside)."""
        data = {k: v for k, v in asdict(self).items() if k != "owner"}
        data["result"] = f"/v1/jobs/{self.job}/result" if self.state == DONE else None
        data["artifacts"] = {name: f"/v1/jobs/{self.job}/artifacts/{name}" for name in self.artifacts}
        return data


class ResultStore:
    def __init__(self, root: Path, keep_seconds: float = 24 * 3600, budget_bytes: int = 5 << 30):
        self.root = Path(root)
        self.keep_seconds, self.budget_bytes = keep_seconds, budget_bytes
        (self.root / "jobs").mkdir(parents=True, exist_ok=True)

    def folder(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def create(self, job_id: str) -> Path:
        folder = self.folder(job_id)
        (folder / "input").mkdir(parents=True)
        return folder

    def save(self, record: JobRecord) -> None:
        folder = self.folder(record.job)
        if not folder.is_dir():
            return  # removed (expired, or its upload was refused) while the job ran
        tmp = folder / f".{RECORD}.{threading.get_ident()}.tmp"
        tmp.write_text(json.dumps(asdict(record), separators=(",", ":")), encoding="utf-8")
        os.replace(tmp, folder / RECORD)

    def load(self) -> list[JobRecord]:
        """Every record on disk; jobs the previous process did not finish become `job_lost`, and
        folders without a readable record (an upload cut short by a crash) are removed."""
        records = []
        for folder in sorted((self.root / "jobs").iterdir()):
            try:
                record = JobRecord(**json.loads((folder / RECORD).read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError):
                shutil.rmtree(folder, ignore_errors=True)
                continue
            if not record.finished_state:
                was, record.state, record.finished = record.state, ERROR, time.time()
                record.error = {"code": "job_lost",
                                "message": f"the server restarted while the job was {was}; generate again"}
                self.save(record)
            if record.state == DONE and not (folder / RESULT).is_file():
                continue  # cannot serve it: leave the folder for the sweep
            records.append(record)
        return records

    def remove(self, job_id: str) -> None:
        shutil.rmtree(self.folder(job_id), ignore_errors=True)

    def size(self, job_id: str) -> int:
        total = 0
        for path in self.folder(job_id).rglob("*"):
            try:
                total += path.stat().st_size if path.is_file() else 0
            except OSError:
                pass
        return total

    def expired(self, records: list[JobRecord], now: float | None = None) -> list[str]:
        """Finished jobs to remove: older than the keep time, then oldest first while over budget."""
        now = time.time() if now is None else now
        finished = sorted((r for r in records if r.finished_state), key=lambda r: r.finished or r.created)
        gone = [r.job for r in finished if (r.finished or r.created) < now - self.keep_seconds]
        sizes = {r.job: self.size(r.job) for r in records}
        total = sum(sizes.values()) - sum(sizes[j] for j in gone)
        for record in finished:
            if total <= self.budget_bytes:
                break
            if record.job not in gone:
                gone.append(record.job)
                total -= sizes[record.job]
        return gone
