"""One streaming batch driver for every batch tool: render, prepare and generate (stdlib only).

A tool hands `drive` a lazy stream of items and a pool that runs them: a local process pool, a
set of persistent bpy workers or Ray actors (shared/raypool.py). The driver keeps at most
`pool.capacity` items in flight, so a list of ten million lines is never held in memory, skips
items whose output is already committed, retries retriable failures (a killed worker, a timeout)
up to a limit, and records one manifest line per item. Exactly once follows from two rules the
workers keep: an item's output is committed atomically (temporary name then rename, or its
marker file written last), and "done" means "committed", so a rerun or a retry never counts half
an object and never redoes a whole one.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Hashable, Iterable, Iterator, Protocol

# Failures worth another attempt: they may pass on a fresh worker. Bad input, bad settings and
# failed output checks fail the same way every time.
RETRIABLE = frozenset({"timeout", "worker_crashed", "internal_error", "out_of_memory"})


@dataclass(frozen=True)
class Item:
    """One object of a batch: a stable id (resume depends on it), its input path or URL, the attempt."""
    id: str
    input: str
    attempt: int = 1


def is_url(path: str) -> bool:
    return "://" in str(path)


def item_id(path: str) -> str:
    """`<stem>-<8 hex of the absolute path or URL>`: stable when a list grows or is reordered,
    and two `model.glb` in different folders never collide."""
    path = str(path)
    full = path if is_url(path) else os.path.abspath(os.path.realpath(path))
    base = path.rstrip("/").rsplit("/", 1)[-1]
    stem = base.rsplit(".", 1)[0] if "." in base.lstrip(".") else base
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "object"
    return f"{stem[:80]}-{hashlib.sha1(full.encode()).hexdigest()[:8]}"


def iter_list(path: str, read_text: Callable[[str], Iterable[str]] | None = None) -> Iterator[str]:
    """Entries of a list file, one per line ('#' comments allowed), read line by line; relative
    entries are relative to the list file."""
    base = os.path.dirname(path)
    lines = read_text(path) if read_text else open(path, encoding="utf-8")
    try:
        for line in lines:
            entry = line.strip()
            if entry and not entry.startswith("#"):
                yield entry if is_url(entry) or os.path.isabs(entry) else os.path.join(base, entry)
    except UnicodeDecodeError:
        from .errors import BackendError

        raise BackendError("input_unreadable", f"{path}: not a text list of paths") from None
    finally:
        close = getattr(lines, "close", None)
        if close:
            close()


def iter_folder(root: str, suffixes: Iterable[str]) -> Iterator[str]:
    """Files under `root` whose suffix is one of `suffixes` (with the dot, lower case), in a
    stable order, one directory at a time."""
    suffixes = {s.lower() for s in suffixes}
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            if os.path.splitext(name)[1].lower() in suffixes:
                yield os.path.join(folder, name)


def items(paths: Iterable[str], id_of: Callable[[str], str] = item_id) -> Iterator[Item]:
    return (Item(id_of(p), str(p)) for p in paths)


class Pool(Protocol):
    """Runs items somewhere. `run_item`-style outcomes are dicts with `status` ('ok'/'failed'/
    'skipped'), and on failure `error: {code, message}`; a pool turns a dead worker into a
    `worker_crashed` outcome instead of raising."""
    capacity: int

    def submit(self, item: Item) -> Hashable: ...

    def wait(self) -> list[tuple[Hashable, dict]]: ...  # blocks until at least one item finished

    def close(self) -> None: ...

    def kill(self) -> None: ...


@dataclass
class Summary:
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    retried: int = 0
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        seconds = self.seconds or (time.monotonic() - self.started)
        done = self.ok + self.failed
        return {"ok": self.ok, "failed": self.failed, "skipped": self.skipped, "retried": self.retried,
                "objects": done + self.skipped, "seconds": round(seconds, 3),
                "objects_per_min": round(60.0 * done / seconds, 2) if seconds > 0 else 0.0}


def failure(code: str, message: str, **extra) -> dict:
    return {"status": "failed", "error": {"code": code, "message": message}, **extra}


def drive(stream: Iterable[Item], pool: Pool, *, record: Callable[..., object], retries: int = 1,
          is_done: Callable[[Item], bool] | None = None, skip: Callable[[Item], bool] | None = None,
          on_final: Callable[[Item, dict], None] | None = None) -> Summary:
    """Run every item of `stream` not yet done through `pool`; returns the counts.

    `record(event, **fields)` receives one 'object' record per attempt (with `final` False when a
    retry follows) and one 'skipped' record per item already done (`is_done`), told to be skipped
    (`skip`), or repeated while its first copy is still in flight."""
    summary = Summary()
    source = iter(stream)
    retry: list[Item] = []
    in_flight: dict[Hashable, Item] = {}
    busy: set[str] = set()
    exhausted = False
    try:
        while True:
            while len(in_flight) < pool.capacity and (retry or not exhausted):
                if retry:
                    item = retry.pop()
                else:
                    item = next(source, None)
                    if item is None:
                        exhausted = True
                        break
                    reason = ("running" if item.id in busy else "done" if is_done and is_done(item)
                              else "skipped" if skip and skip(item) else None)
                    if reason:
                        summary.skipped += 1
                        record("skipped", id=item.id, input=item.input, reason=reason)
                        continue
                in_flight[pool.submit(item)] = item
                busy.add(item.id)
            if not in_flight:
                break
            for handle, outcome in pool.wait():
                item = in_flight.pop(handle)
                status = outcome.get("status")
                code = (outcome.get("error") or {}).get("code")
                again = status == "failed" and code in RETRIABLE and item.attempt <= retries
                record("object", id=item.id, input=item.input, attempt=item.attempt, final=not again, **outcome)
                if again:
                    summary.retried += 1
                    retry.append(replace(item, attempt=item.attempt + 1))
                    continue
                busy.discard(item.id)
                if status == "skipped":  # a worker found it committed by someone else meanwhile
                    summary.skipped += 1
                else:
                    setattr(summary, "ok" if status == "ok" else "failed",
                            getattr(summary, "ok" if status == "ok" else "failed") + 1)
                if on_final:
                    on_final(item, outcome)
    except BaseException:
        pool.kill()
        raise
    summary.seconds = time.monotonic() - summary.started
    pool.close()
    return summary


class JsonlLog:
    """Append-only JSON lines, flushed per record so a kill loses at most the line being written."""

    def __init__(self, path: str):
        self.path = path
        if os.path.isfile(path) and os.path.getsize(path):
            with open(path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                cut = f.read(1) != b"\n"
            if cut:  # a killed run may have cut the last line short
                with open(path, "a") as f:
                    f.write("\n")
        self._file = open(path, "a", buffering=1)

    def write(self, event: str, **fields) -> dict:
        rec = {"time": round(time.time(), 3), "event": event, **fields}
        self._file.write(json.dumps(rec, default=str) + "\n")
        self._file.flush()
        return rec

    def close(self) -> None:
        self._file.close()


class SerialPool:
    """Runs each item in this process when it is submitted (one worker, no isolation)."""
    capacity = 1

    def __init__(self, run: Callable[[Item], dict]):
        self._run, self._done, self._n = run, [], 0

    def submit(self, item: Item) -> Hashable:
        self._n += 1
        self._done.append((self._n, self._run(item)))
        return self._n

    def wait(self) -> list[tuple[Hashable, dict]]:
        done, self._done = self._done, []
        return done

    def close(self) -> None:
        pass

    kill = close


class ProcessPool:
    """A concurrent.futures process pool, one object per child (a crash or a leak stays with its
    object); a child that dies breaks the pool, so its in-flight items come back as
    `worker_crashed` and a fresh pool takes over."""

    def __init__(self, run: Callable[[Item], dict], workers: int):
        self._run, self.capacity = run, workers
        self._pool = self._new()
        self._futures: dict = {}

    def _new(self):
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(self.capacity, max_tasks_per_child=1)

    def submit(self, item: Item) -> Hashable:
        future = self._pool.submit(self._run, item)
        self._futures[future] = item
        return future

    def wait(self) -> list[tuple[Hashable, dict]]:
        from concurrent.futures import FIRST_COMPLETED
        from concurrent.futures import wait as wait_futures
        from concurrent.futures.process import BrokenProcessPool

        done, _ = wait_futures(list(self._futures), return_when=FIRST_COMPLETED)
        out, broken = [], False
        for future in done:
            self._futures.pop(future)
            try:
                out.append((future, future.result()))
            except BrokenProcessPool as exc:
                broken = True
                out.append((future, failure("worker_crashed", f"worker process died: {exc}")))
            except Exception as exc:
                out.append((future, failure("internal_error", f"{type(exc).__name__}: {exc}")))
        if broken:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new()
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def kill(self) -> None:
        for proc in list(getattr(self._pool, "_processes", {}).values()):
            proc.kill()
        self._pool.shutdown(wait=False, cancel_futures=True)
