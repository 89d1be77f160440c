"""The generations of one .blend file: what was made, from which image, with which settings.

Stored as JSON text in the file (a history is part of the artist's work, unlike runtime state), so
a damaged or hand-edited entry must never break the panel: unreadable records are skipped.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

LIMIT = 50  # newest first; older records drop off


@dataclass(frozen=True)
class Record:
    job_id: str
    glb: str
    label: str
    image: str = ""
    mesh: str = ""  # the source mesh for texture-only jobs
    engine: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    created: float = field(default_factory=time.time)
    object_name: str = ""

    @property
    def seed(self) -> int | None:
        return self.settings.get("seed")

    def summary(self) -> str:
        when = time.strftime("%m-%d %H:%M", time.localtime(self.created))
        seed = f", seed {self.seed}" if self.seed is not None else ""
        return f"{self.label} ({when}{seed})"


_FIELDS = {f.name for f in fields(Record)}


def loads(text: str) -> list[Record]:
    try:
        raw = json.loads(text or "[]")
    except json.JSONDecodeError:
        return []
    records = []
    for item in raw if isinstance(raw, list) else []:
        if not isinstance(item, dict):
            continue
        try:
            record = Record(**{k: v for k, v in item.items() if k in _FIELDS})
        except TypeError:  # a required field is missing
            continue
        if isinstance(record.job_id, str) and isinstance(record.glb, str) and isinstance(record.settings, dict):
            records.append(record)
    return records


def dumps(records: list[Record]) -> str:
    return json.dumps([asdict(r) for r in records[:LIMIT]], separators=(",", ":"))


def add(text: str, record: Record) -> str:
    """The stored text with `record` first (replacing an older record of the same job)."""
    records = [r for r in loads(text) if r.job_id != record.job_id]
    return dumps([record, *records])
