"""Render a folder or list of assets with persistent workers; resumable, nothing silently lost.

    python -m blender_render.batch LIST_OR_FOLDER OUTDIR --workers N [--gpus 0,1] [render options]
    ... --cluster ray[:ADDRESS]   (the same workers inside Ray actors: blender_render/cluster.py)

Each worker is a long-lived bpy process (blender_render.worker) that renders object after object,
restarted after a crash, a timeout or `--max-tasks-per-worker` objects. Objects land in
OUTDIR/<id>/ through an atomic rename, so a killed batch resumes where it stopped: complete
folders are skipped, staging leftovers are removed. Every outcome goes to OUTDIR/render_log.jsonl
(with the error code and the worker's log tail on failure); worker output is kept in
OUTDIR/_logs/. Exit status 0 when every object is done, 1 when some failed. bpy-free.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import queue
import selectors
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from shared import jobs, storage
from shared.batchrun import drive, failure
from shared.cli import run_command
from shared.errors import BackendError
from shared.jobs import Task
from shared.progress import Progress
from shared.raypool import Cluster, add_cluster_argument

from . import outputs
from .options import RenderOptions, add_render_arguments, options_from_args

_ROOT = Path(__file__).resolve().parents[1]
LOG_NAME = "render_log.jsonl"
LOG_DIR = "_logs"
LOCK_NAME = ".batch.lock"
STARTUP_TIMEOUT = 300.0
_TAIL = 4000


@dataclass(frozen=True)
class BatchConfig:
    workers: int = 1
    gpus: tuple[str, ...] = ()
    timeout: float = 600.0  # seconds per object, import to meta.json
    retries: int = 1  # extra attempts for retriable failures (timeouts, crashes)
    max_tasks_per_worker: int = 200  # restart a worker after this many objects (memory growth)
    blender: str | None = None  # a Blender executable instead of the bpy module
    skip_failed: bool = False  # skip objects whose last logged outcome was a final failure


class WorkerGone(Exception):
    """The worker died or stopped answering; `code` is worker_crashed or timeout."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class Worker:
    """One worker process and its line-based reply channel."""

    def __init__(self, slot: int, command: list[str], env: dict, log_path: Path):
        self.slot = slot
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     env=env, cwd=str(_ROOT), start_new_session=True)
        self.tasks_done = 0
        self._buffer = b""
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.proc.stdout, selectors.EVENT_READ)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _readline(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerGone("timeout", f"no answer within {timeout:g} s")
            if not self._selector.select(left):
                continue
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                status = self.proc.wait()
                raise WorkerGone("worker_crashed", f"worker {self.pid} exited with status {status}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def wait_ready(self, timeout: float) -> dict:
        message = self._readline(timeout)
        if message.get("event") != "ready":
            raise WorkerGone("worker_crashed", f"unexpected first message {message}")
        return message

    def run(self, task: dict, timeout: float) -> dict:
        try:
            self.proc.stdin.write((json.dumps(task) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise WorkerGone("worker_crashed", f"worker {self.pid} is gone (status {self.proc.wait()})") from None
        while True:
            message = self._readline(timeout)
            if message.get("event") == "result" and message.get("id") == task["id"]:
                self.tasks_done += 1
                return message

    def log_tail(self, since: int) -> str:
        self.log.flush()
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(since, f.seek(0, os.SEEK_END) - _TAIL))
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def stop(self, grace: float = 30.0) -> None:
        """Ask politely (close stdin), then kill the whole process group."""
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=grace)
        except (OSError, subprocess.TimeoutExpired):
            self.kill()
        self._close()

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self._close()

    def _close(self) -> None:
        self._selector.close()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except (OSError, ValueError):
                pass
        self.log.close()


def worker_command(blender: str | None) -> list[str]:
    if blender:
        return [blender, "-b", "--factory-startup", "--python-exit-code", "1",
                "-P", str(_ROOT / "blender_render" / "worker.py"), "--"]
    return [sys.executable, "-m", "blender_render.worker"]


class WorkerSlot:
    """One persistent bpy worker and the objects it renders, one at a time: started on first use,
    restarted after a crash, a timeout or `max_tasks_per_worker` objects. A local batch runs one
    slot per thread; on Ray each actor holds one (blender_render.cluster)."""

    def __init__(self, slot: int, out_root: Path, options: RenderOptions, config: BatchConfig,
                 log_dir: Path, on_start=None):
        self.slot, self.out_root, self.config, self.log_dir, self.on_start = slot, out_root, config, log_dir, on_start
        self.worker: Worker | None = None
        self.options, self.env = self._slot_options(options)

    def _slot_options(self, options: RenderOptions) -> tuple[RenderOptions, dict]:
        env = dict(os.environ, BLENDER_RENDER_PARENT=str(os.getpid()), PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), env.get("PYTHONPATH")) if p)
        if self.config.gpus:
            env["CUDA_VISIBLE_DEVICES"] = self.config.gpus[self.slot % len(self.config.gpus)]
            options = replace(options, device="gpu")
        elif options.threads == 0 and options.device == "cpu":
            options = replace(options, threads=max(1, (os.cpu_count() or 1) // self.config.workers))
        return options, env

    def _start(self) -> Worker:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        worker = Worker(self.slot, worker_command(self.config.blender), self.env,
                        self.log_dir / f"worker-{self.slot}.log")
        self.worker = worker
        try:
            ready = worker.wait_ready(STARTUP_TIMEOUT)
        except WorkerGone as exc:
            tail = worker.log_tail(0)
            worker.kill()
            self.worker = None
            raise WorkerGone("worker_crashed", f"worker failed to start: {exc}; log: {tail[-500:]}") from None
        if self.on_start:
            self.on_start(slot=self.slot, pid=worker.pid, blender=ready.get("blender"))
        return worker

    def run(self, task: Task, out_dir: Path | None = None) -> dict:
        """Render `task` into OUT_ROOT/<id> (or `out_dir`); returns the outcome, never raises."""
        started = time.monotonic()
        reply: dict = {}
        try:
            if self.worker is None or self.worker.tasks_done >= self.config.max_tasks_per_worker:
                self.stop()
                self._start()
                started = time.monotonic()  # the object's time starts once a worker is ready
            worker = self.worker
            since = worker.log_size()
            out_dir = out_dir or self.out_root / task.id
            message = {"id": task.id, "input": str(task.input), "out": str(out_dir),
                       "options": self.options.to_dict(), "attempt": task.attempt}
            try:
                reply = worker.run(message, self.config.timeout)
                reply["worker_pid"] = worker.pid
            except WorkerGone as exc:
                tail = worker.log_tail(since)
                worker.kill()
                outputs.drop_staging(out_dir, worker.pid)
                self.worker = None
                reply = failure(exc.code, str(exc), log_tail=tail, worker_pid=worker.pid)
        except WorkerGone as exc:  # could not start a worker at all
            reply = failure(exc.code, str(exc))
        except Exception as exc:  # a driver-side fault must not leave the batch waiting forever
            self.kill()
            reply = failure("internal_error", f"{type(exc).__name__}: {exc}")
        out = {k: reply[k] for k in _REPLY_KEYS if k in reply}
        out.update(slot=self.slot, seconds=round(time.monotonic() - started, 3))
        return out

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        self.worker = None

    def kill(self) -> None:
        if self.worker is not None:
            self.worker.kill()
        self.worker = None


_REPLY_KEYS = ("status", "error", "warnings", "views", "log_tail", "worker_pid")


class LocalSlots:
    """The local pool for `drive`: one thread per worker slot, fed from a queue."""

    def __init__(self, out_root: Path, options: RenderOptions, config: BatchConfig, log: jobs.Log):
        self.capacity = config.workers
        self.tasks: queue.Queue = queue.Queue()
        self.results: queue.Queue = queue.Queue()
        self.slots = [WorkerSlot(i, out_root, options, config, out_root / LOG_DIR,
                                 on_start=lambda **kw: log.write("worker_start", **kw)) for i in range(config.workers)]
        self.threads = [threading.Thread(target=self._serve, args=(s,), daemon=True) for s in self.slots]
        for th in self.threads:
            th.start()

    def _serve(self, slot: WorkerSlot) -> None:
        while (task := self.tasks.get()) is not None:
            self.results.put((task, slot.run(task)))
        slot.stop()

    def submit(self, task: Task):
        self.tasks.put(task)
        return task

    def wait(self) -> list:
        done = [self.results.get()]
        while not self.results.empty():
            done.append(self.results.get())
        return done

    def close(self) -> None:
        for _ in self.threads:
            self.tasks.put(None)
        for th in self.threads:
            th.join()

    def kill(self) -> None:
        for slot in self.slots:
            w = slot.worker
            if w is not None:
                try:
                    os.killpg(w.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _lock(out_root: Path):
    handle = open(out_root / LOCK_NAME, "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise BackendError("output_unwritable", f"another batch is writing to {out_root}") from None
    return handle


def run_batch(source: Path | str, out_root: Path | str, options: RenderOptions, config: BatchConfig,
              progress_stream=sys.stderr, cluster: str = "local") -> dict:
    """Render every object of `source` that OUT_ROOT does not hold yet. Returns the counts.
    OUT_ROOT may be an fsspec URL with `--cluster ray` (actors render locally, then upload the
    object's folder with meta.json last); the log then stays in ./render_log.jsonl."""
    if config.workers < 1 or config.timeout <= 0 or config.retries < 0 or config.max_tasks_per_worker < 1:
        raise BackendError("invalid_setting", "workers and max_tasks_per_worker must be >= 1, timeout > 0, "
                                              "retries >= 0")
    where = Cluster.parse(cluster)
    remote_out = storage.is_url(out_root)
    if (remote_out or storage.is_url(source)) and where.kind != "ray":
        raise BackendError("invalid_setting", "input or output URLs need --cluster ray")
    if not storage.exists(str(source)):
        raise BackendError("input_not_found", f"{source} is neither a folder nor a list file")
    local_root = Path(".") if remote_out else Path(out_root)
    try:
        (local_root / LOG_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackendError("output_unwritable", f"cannot create {out_root}: {exc}") from None
    lock = _lock(local_root) if not remote_out else None
    log = jobs.Log(local_root / LOG_NAME)
    try:
        stale = [] if remote_out else outputs.clean_stale(local_root)
        skip_ids = jobs.final_failures(jobs.read_log(local_root / LOG_NAME)) if config.skip_failed else set()
        total = sum(1 for _ in jobs.iter_tasks(str(source)))  # streamed: a count, not a list
        log.write("batch_start", pid=os.getpid(), source=str(source), objects=total, stale_removed=len(stale),
                  workers=config.workers, gpus=list(config.gpus), timeout=config.timeout, retries=config.retries,
                  cluster=cluster, options=options.to_dict())
        progress = Progress(total, progress_stream)
        if where.kind == "ray":
            from .cluster import render_pool

            pool = render_pool(str(out_root), options, config, where.address)
        else:
            pool = LocalSlots(local_root, options, config, log)

        try:
            summary = drive(jobs.iter_tasks(str(source)), pool, record=log.write, retries=config.retries,
                            # on an object store the actors check instead: one HEAD each, in parallel
                            is_done=None if remote_out else lambda t: outputs.is_complete(local_root / t.id),
                            skip=lambda t: t.id in skip_ids, progress=progress)
        except BaseException:
            log.write("batch_end", status="interrupted")
            raise
        progress.finish()
        counts = summary.as_dict()
        log.write("batch_end", status="done", **counts)
        return counts
    finally:
        log.close()
        if lock:
            lock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m blender_render.batch", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="a folder (searched recursively) or a list file (.txt/.json); a path or URL")
    parser.add_argument("out_root", help="output root: one folder per object (a URL such as s3://... with Ray)")
    d = BatchConfig()
    b = parser.add_argument_group("batch")
    b.add_argument("--workers", type=int, default=d.workers, help="worker processes (spread over --gpus)")
    b.add_argument("--gpus", type=lambda s: tuple(g.strip() for g in s.split(",") if g.strip()), default=d.gpus,
                   help="GPU ids, e.g. 0,1: workers take them round-robin and render on the GPU")
    b.add_argument("--timeout", type=float, default=d.timeout, help="seconds per object")
    b.add_argument("--retries", type=int, default=d.retries, help="extra attempts after a timeout or crash")
    b.add_argument("--max-tasks-per-worker", type=int, default=d.max_tasks_per_worker)
    b.add_argument("--blender", default=d.blender, help="run workers in this Blender executable")
    b.add_argument("--skip-failed", action="store_true", help="do not retry objects that failed in earlier runs")
    add_cluster_argument(b)
    add_render_arguments(parser)
    ns = parser.parse_args(argv)
    config = BatchConfig(ns.workers, ns.gpus, ns.timeout, ns.retries, ns.max_tasks_per_worker, ns.blender,
                         ns.skip_failed)

    def body() -> int:
        counts = run_batch(ns.source, ns.out_root, options_from_args(ns), config, cluster=ns.cluster)
        print(json.dumps(counts))
        return 1 if counts["failed"] else 0

    return run_command(body, "interrupted; rerun the same command to resume")


if __name__ == "__main__":
    sys.exit(main())
