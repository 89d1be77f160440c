"""Batch bookkeeping shared by `blender_render.batch` and `backend.data.prepare`: which objects,
under which ids, which are done, and the JSONL log.

An object's id is its file stem plus a hash of its absolute path, so ids stay stable when the list
grows or is reordered (resume depends on it) and two `model.glb` in different folders never
collide; both batches use the same ids, so `OUTDIR/<id>.npz` pairs with the renders `RENDERS/<id>/`.
What "done" means is each batch's own (a renamed-into-place folder, an .npz), given to `split_done`.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from shared.storage import is_url, iter_source

# Mesh and scene files a batch lists from a folder (what Blender's importers read).
INPUT_FORMATS = ("glb", "gltf", "obj", "fbx", "ply", "stl", "usd", "usda", "usdc", "usdz", "abc", "blend")
SUFFIXES = frozenset(f".{e}" for e in INPUT_FORMATS)
# Failures worth another attempt: they may pass on a fresh worker. Bad input, bad settings and
# failed output checks fail the same way every time.
RETRIABLE = frozenset({"timeout", "worker_crashed", "internal_error", "out_of_memory"})


@dataclass(frozen=True)
class Task:
    id: str
    input: str  # a path or an fsspec URL
    attempt: int = 1


def object_id(path: Path | str) -> str:
    """`<stem>-<8 hex of the absolute path, or of the URL>`."""
    if is_url(path):
        name, full = str(path).rstrip("/").rsplit("/", 1)[-1], str(path)
    else:
        name, full = Path(path).name, str(Path(path).resolve())
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem).strip("._") or "object"
    digest = hashlib.sha1(full.encode()).hexdigest()[:8]
    return f"{stem[:80]}-{digest}"


def list_inputs(source: Path) -> list[Path]:
    """A folder (searched recursively for supported files), one asset file, or a list file: one
    path per line ('#' comments allowed) or a JSON array; relative entries are relative to the
    list file. Repeats are dropped. A batch streams `iter_tasks` instead."""
    return list(dict.fromkeys(Path(p) for p in iter_source(str(source), SUFFIXES)))


def iter_tasks(source: str) -> Iterator[Task]:
    """The tasks of a folder, list file or URL, streamed (a ten-million-line list never sits in
    memory; a repeated entry is caught by the done test or the driver's in-flight check)."""
    return (Task(object_id(p), p) for p in iter_source(str(source), SUFFIXES))


def make_tasks(paths: list[Path]) -> list[Task]:
    tasks: dict[str, Task] = {}
    for p in paths:
        tasks.setdefault(object_id(p), Task(object_id(p), str(p)))
    return list(tasks.values())


def read_log(path: Path) -> list[dict]:
    """Records of earlier runs; a line cut short by a kill is skipped."""
    records = []
    if Path(path).is_file():
        for line in Path(path).read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def final_failures(records: list[dict]) -> set[str]:
    """Ids whose last recorded outcome is a failure that was not going to be retried."""
    last: dict[str, dict] = {}
    for r in records:
        if r.get("event") == "object":
            last[r["id"]] = r
    return {i for i, r in last.items() if r["status"] == "failed" and r.get("final")}


def split_done(tasks: list[Task], is_done: Callable[[Task], bool],
               skip: set[str] = frozenset()) -> tuple[list[Task], list[Task]]:
    """-> (tasks still to run, tasks already complete or skipped)."""
    todo, done = [], []
    for t in tasks:
        (done if t.id in skip or is_done(t) else todo).append(t)
    return todo, done


class Log:
    """Append-only JSONL: one line per event, flushed at once so a kill loses at most one line."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if self.path.is_file() and self.path.stat().st_size and not self.path.read_bytes().endswith(b"\n"):
            with open(self.path, "a") as f:  # a killed run may have cut the last line short
                f.write("\n")
        self._file = open(self.path, "a", buffering=1)

    def write(self, event: str, **fields) -> dict:
        record = {"time": round(time.time(), 3), "event": event, **fields}
        self._file.write(json.dumps(record, default=str) + "\n")
        self._file.flush()
        return record

    def close(self) -> None:
        self._file.close()
