"""The shared batch driver without Ray or Blender: bounded in-flight work over a lazy stream,
skips, retries of retriable failures only, one final record per object, the process pool's
crash handling, and inputs streamed from folders and lists."""
from __future__ import annotations

import io
import os
import signal

import pytest

from shared import storage
from shared.batchrun import ProcessPool, Summary, drive, failure
from shared.jobs import Task
from shared.progress import Progress


class FakePool:
    """Finishes items in submission order when waited on, with scripted outcomes per attempt."""

    def __init__(self, capacity: int, script: dict | None = None):
        self.capacity, self.script = capacity, script or {}
        self.running: list[Task] = []
        self.peak = 0
        self.closed = self.killed = False

    def submit(self, task):
        self.running.append(task)
        self.peak = max(self.peak, len(self.running))
        return (task.id, task.attempt)

    def wait(self):
        task = self.running.pop(0)
        outcomes = self.script.get(task.id, ["ok"])
        status = outcomes[min(task.attempt, len(outcomes)) - 1]
        return [((task.id, task.attempt), {"status": "ok"} if status == "ok" else failure(status, "scripted"))]

    def close(self):
        self.closed = True

    def kill(self):
        self.killed = True


def _run(tasks, pool, **kw):
    records = []
    summary = drive(tasks, pool, record=lambda event, **f: records.append({"event": event, **f}), **kw)
    return summary, records


def test_stream_is_pulled_lazily_and_in_flight_work_is_bounded():
    pulled = []

    def stream():
        for i in range(50):
            pulled.append(i)
            yield Task(f"o{i}", f"in/{i}")

    pool = FakePool(3)
    first = []

    def on_final(task, outcome):
        if not first:
            first.append(len(pulled))

    summary, _ = _run(stream(), pool, on_final=on_final)
    assert summary.ok == 50 and pool.peak == 3 and pool.closed
    assert first == [3]  # only the in-flight items had been read when the first one finished


def test_retries_retriable_failures_once_then_final_and_never_retries_bad_input():
    script = {"crash": ["worker_crashed", "ok"], "dies": ["worker_crashed", "timeout"], "bad": ["input_unreadable"]}
    tasks = [Task(i, f"in/{i}") for i in ("a", "crash", "dies", "bad")]
    summary, records = _run(iter(tasks), FakePool(2, script), retries=1)
    assert (summary.ok, summary.failed, summary.retried) == (2, 2, 2)
    objects = [r for r in records if r["event"] == "object"]
    assert [(r["id"], r["attempt"], r["final"]) for r in objects if r["id"] == "crash"] == [("crash", 1, False),
                                                                                           ("crash", 2, True)]
    assert [(r["attempt"], r["error"]["code"]) for r in objects if r["id"] == "dies"] == [(1, "worker_crashed"),
                                                                                         (2, "timeout")]
    assert [r["attempt"] for r in objects if r["id"] == "bad"] == [1]
    assert sorted(r["id"] for r in objects if r["final"]) == ["a", "bad", "crash", "dies"]  # once each


def test_done_told_to_skip_and_repeats_in_flight_are_skipped():
    tasks = [Task("a", "x"), Task("b", "y"), Task("a", "x"), Task("c", "z")]
    progress = Progress(len(tasks), io.StringIO())
    summary, records = _run(iter(tasks), FakePool(4), is_done=lambda t: t.id == "b", skip=lambda t: t.id == "c",
                            progress=progress)
    assert (summary.ok, summary.skipped) == (1, 3)
    assert (progress.total, progress.ok, progress.failed) == (1, 1, 0)  # skipped items leave the total
    assert [(r["id"], r["reason"]) for r in records if r["event"] == "skipped"] == [
        ("b", "done"), ("a", "running"), ("c", "skipped")]
    assert Summary(ok=3, failed=1, skipped=2, seconds=2.0).as_dict()["objects_per_min"] == 120.0


def test_an_interrupted_drive_kills_the_pool():
    def stream():
        yield Task("a", "x")
        raise KeyboardInterrupt

    pool = FakePool(2)
    with pytest.raises(KeyboardInterrupt):
        _run(stream(), pool)
    assert pool.killed and not pool.closed


def _suicide(task):
    if task.id == "boom" and task.attempt == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return {"status": "ok", "pid": os.getpid()}


def test_process_pool_turns_a_dead_child_into_a_retried_object():
    tasks = [Task(i, i) for i in ("a", "boom", "c")]
    summary, records = _run(iter(tasks), ProcessPool(_suicide, 2), retries=1)
    assert (summary.ok, summary.failed) == (3, 0) and summary.retried >= 1
    assert any(r["id"] == "boom" and r.get("error", {}).get("code") == "worker_crashed" for r in records)
    assert sorted(r["id"] for r in records if r["event"] == "object" and r["final"]) == ["a", "boom", "c"]


def _pid(task):
    return {"status": "ok", "pid": os.getpid()}


def test_process_pool_children_serve_several_objects_then_are_replaced():
    pool = ProcessPool(_pid, 1, tasks_per_child=2)
    try:
        pids = []
        for i in range(5):  # one at a time: the order of children is the order of objects
            pool.submit(Task(str(i), i))
            ((_, outcome),) = pool.wait()
            pids.append(outcome["pid"])
    finally:
        pool.close()
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]  # two objects per child, then a new one


def test_sources_stream_from_folders_lists_and_relative_urls(tmp_path):
    (tmp_path / "b").mkdir()
    for name in ("a.glb", "b/c.obj", "b/skip.txt", "z.ply"):
        (tmp_path / name).write_text("x")
    found = list(storage.iter_source(str(tmp_path), {".glb", ".obj", ".ply"}))
    assert [os.path.relpath(p, tmp_path) for p in found] == ["a.glb", "z.ply", os.path.join("b", "c.obj")]
    listing = tmp_path / "list.txt"
    listing.write_text("# c\na.glb\n\ns3://bucket/x/y.glb\n")
    assert list(storage.iter_source(str(listing), {".glb"})) == [str(tmp_path / "a.glb"), "s3://bucket/x/y.glb"]
    assert storage.relative_to("s3://bucket/lists", "../in/a.glb") == "s3://bucket/in/a.glb"


def test_a_folder_output_is_uploaded_with_its_marker_last(tmp_path, monkeypatch):
    fsspec = pytest.importorskip("fsspec")
    (tmp_path / "obj" / "sub").mkdir(parents=True)
    for name in ("a.png", "meta.json", "sub/z.png"):
        (tmp_path / "obj" / name).write_text(name)
    fs = fsspec.filesystem("memory")
    order = []
    put = type(fs).put_file
    monkeypatch.setattr(type(fs), "put_file", lambda self, lpath, rpath, **kw: (order.append(rpath), put(self, lpath, rpath, **kw)))
    storage.publish_tree(str(tmp_path / "obj"), "memory://out/obj", "meta.json")
    assert order[-1].endswith("/meta.json") and len(order) == 3
    assert fs.cat("/out/obj/sub/z.png") == b"sub/z.png"
    assert storage.exists("memory://out/obj/meta.json")
