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

import os
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Hashable, Iterable, Protocol

from .jobs import RETRIABLE, Task
from .lifetime import die_with_parent


class Pool(Protocol):
    """Runs items somewhere. `run_item`-style outcomes are dicts with `status` ('ok'/'failed'/
    'skipped'), and on failure `error: {code, message}`; a pool turns a dead worker into a
    `worker_crashed` outcome instead of raising."""
    capacity: int

    def submit(self, item: Task) -> Hashable: ...

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


def drive(stream: Iterable[Task], pool: Pool, *, record: Callable[..., object], retries: int = 1,
          is_done: Callable[[Task], bool] | None = None, skip: Callable[[Task], bool] | None = None,
          on_final: Callable[[Task, dict], None] | None = None, progress=None) -> Summary:
    """Run every item of `stream` not yet done through `pool`; returns the counts.

    `record(event, **fields)` receives one 'object' record per attempt (with `final` False when a
    retry follows) and one 'skipped' record per item already done (`is_done`), told to be skipped
    (`skip`), or repeated while its first copy is still in flight. A `progress` line
    (shared/progress.py), counting every item of the stream, is told each final outcome; skipped
    items leave its total."""
    summary = Summary()
    source = iter(stream)
    retry: list[Task] = []
    in_flight: dict[Hashable, Task] = {}
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
                        if progress:
                            progress.total -= 1
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
                record("object", **{**outcome, "id": item.id, "input": item.input, "attempt": item.attempt,
                                      "final": not again})
                if again:
                    summary.retried += 1
                    retry.append(replace(item, attempt=item.attempt + 1))
                    continue
                busy.discard(item.id)
                if status == "skipped":  # a worker found it committed by someone else meanwhile
                    summary.skipped += 1
                    if progress:
                        progress.total -= 1
                else:
                    if progress:
                        if status != "ok":  # the reason on the console too, not only in the log
                            error = outcome.get("error") or {}
                            progress.note(f"failed {item.input}: [{error.get('code')}] {error.get('message')}")
                        progress.update(status == "ok")
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


class SerialPool:
    """Runs each item in this process when it is submitted (one worker, no isolation)."""
    capacity = 1

    def __init__(self, run: Callable[[Task], dict]):
        self._run, self._done, self._n = run, [], 0

    def submit(self, item: Task) -> Hashable:
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
    """A concurrent.futures process pool whose children each run `tasks_per_child` objects and are
    then replaced: what a child compiled or loaded (numba's kernels) serves many objects, and a
    leak lives only that long. A child that dies breaks the pool, so the in-flight items come back
    as `worker_crashed` (the driver retries them) and a fresh pool takes over."""

    def __init__(self, run: Callable[[Task], dict], workers: int, tasks_per_child: int = 32):
        self._run, self.capacity, self.tasks_per_child = run, workers, tasks_per_child
        self._pool = self._new()
        self._futures: dict = {}

    def _new(self):
        from concurrent.futures import ProcessPoolExecutor

        # die_with_parent: a killed batch leaves no worker behind (the kernel's signal follows the
        # starting thread: the driver's, or the pool's manager thread for replacements, both alive
        # as long as the pool)
        return ProcessPoolExecutor(self.capacity, max_tasks_per_child=self.tasks_per_child, initializer=die_with_parent,
                                   initargs=(os.getpid(),))

    def submit(self, item: Task) -> Hashable:
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
