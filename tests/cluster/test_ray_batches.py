"""Batches through Ray against the local pool: the same outputs, a killed actor or bpy worker
costs only its in-flight object (retried, then every object exactly once), a killed driver
resumes, and inputs and outputs on S3 (a moto server on loopback) round-trip and resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh

from backend.data.prepare import LOG_NAME, PrepareOptions, run_batch
from backend.data.watertight import WatertightOptions
from shared.batchrun import drive
from shared.jobs import Log, Task, object_id, read_log
from shared.raypool import RayPool

from .conftest import BUCKET

ROOT = Path(__file__).resolve().parents[2]
FAST = PrepareOptions(watertight=WatertightOptions(resolution=24, views=6, view_resolution=48), num_surface=300,
                      num_sharp=300, num_near=200, num_volume=200)
FAST_ARGS = ["--resolution", "24", "--views", "6", "--view-resolution", "48", "--num-surface", "300",
             "--num-sharp", "300", "--num-near", "200", "--num-volume", "200"]


def _wait_for(predicate, timeout=120.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


@pytest.fixture(scope="module")
def meshes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("meshes")
    trimesh.creation.box((1, 0.5, 0.8)).export(folder / "box.glb")
    trimesh.creation.icosphere(2).export(folder / "ball.ply")
    trimesh.creation.cylinder(0.3, 1.0).export(folder / "can.obj")
    (folder / "broken.obj").write_text("this is not an obj file\n")
    return folder


def _arrays(path) -> dict:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _objects(log_path: Path) -> list[dict]:
    return [r for r in read_log(log_path) if r["event"] == "object"]


def test_prepare_through_ray_equals_local_and_resumes(meshes, tmp_path, ray_address):
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert run_batch(meshes, local, FAST) == (3, 1)
    assert run_batch(meshes, remote, FAST, workers=2, cluster="ray") == (3, 1)
    npz = sorted(p.name for p in local.glob("*.npz"))
    assert len(npz) == 3 and npz == sorted(p.name for p in remote.glob("*.npz"))
    for name in npz:
        a, b = _arrays(local / name), _arrays(remote / name)
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    failed = [r for r in _objects(remote / LOG_NAME) if r["status"] == "failed"]
    assert [r["error"]["code"] for r in failed] == ["input_unreadable"]  # not retriable: one attempt
    mtimes = {p.name: p.stat().st_mtime_ns for p in remote.glob("*.npz")}
    assert run_batch(meshes, remote, FAST, workers=2, cluster="ray") == (0, 1)  # only the broken one again
    assert {p.name: p.stat().st_mtime_ns for p in remote.glob("*.npz")} == mtimes


def test_killed_actor_costs_only_its_object(tmp_path, ray_address):
    out = tmp_path / "out"
    out.mkdir()
    tasks = [Task(f"obj{i}", f"in/{i}") for i in range(6)]
    pool = RayPool("tests.cluster.workers:SlowWriter", {"out_dir": str(out), "seconds": 1.0}, 2)
    log = Log(tmp_path / "manifest.jsonl")
    killed = []

    def killer():
        _wait_for(lambda: list(out.glob("obj2.started-*")))  # an actor is inside its second round
        pid = int(next(out.glob("obj2.started-*")).name.rsplit("-", 1)[1])
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    summary = drive(iter(tasks), pool, record=log.write, retries=1,
                    is_done=lambda t: (out / f"{t.id}.txt").exists())
    log.close()
    thread.join()
    assert killed
    assert (summary.ok, summary.failed, summary.retried) == (6, 0, 1)
    records = _objects(tmp_path / "manifest.jsonl")
    crash = [r for r in records if r["status"] == "failed"]
    assert [(r["id"], r["error"]["code"], r["final"]) for r in crash] == [("obj2", "worker_crashed", False)]
    finals = [r["id"] for r in records if r["final"]]
    assert sorted(finals) == [t.id for t in tasks]  # every object exactly once
    assert sorted(p.name for p in out.glob("*.txt")) == [f"obj{i}.txt" for i in range(6)]
    assert not list(out.glob(".*tmp*"))  # the killed attempt left no half output


def test_driver_killed_mid_batch_resumes_exactly_once(meshes, tmp_path, ray_address):
    out = tmp_path / "out"
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{meshes / n}\n" for n in ("box.glb", "ball.ply", "can.obj")))
    cmd = [sys.executable, "-m", "backend.data.prepare", str(listing), str(out), "--workers", "1",
           "--cluster", f"ray:{ray_address}", *FAST_ARGS]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: (out / LOG_NAME).exists() and any(r["status"] == "ok" for r in _objects(out / LOG_NAME)),
                  timeout=180)
    finally:
        proc.kill()
        proc.wait()
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npz")}
    assert 1 <= len(first) < 3, "the kill should land part-way"
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    final = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npz")}
    assert len(final) == 3 and all(final[k] == v for k, v in first.items())
    oks = [r["id"] for r in _objects(out / LOG_NAME) if r["status"] == "ok"]
    assert sorted(oks) == sorted(set(oks)) and len(oks) == 3  # each object committed and counted once
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_prepare_on_s3_round_trip_and_resume(meshes, tmp_path, s3, ray_address, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the manifest of a URL output is written here
    for name in ("box.glb", "ball.ply"):
        s3.put_file(str(meshes / name), f"{BUCKET}/in/{name}")
    s3.pipe_file(f"{BUCKET}/lists/objects.txt", b"../in/box.glb\n../in/ball.ply\n")
    s3.invalidate_cache()
    listing = f"s3://{BUCKET}/lists/objects.txt"
    out = f"s3://{BUCKET}/prep"
    assert run_batch(listing, out, FAST, workers=2, cluster="ray") == (2, 0)
    local = tmp_path / "local"
    assert run_batch(meshes / "box.glb", local, FAST) == (1, 0)
    s3.invalidate_cache()
    key = f"{BUCKET}/prep/{object_id(f's3://{BUCKET}/in/box.glb')}.npz"
    s3.get_file(key, str(tmp_path / "box.npz"))
    a, b = _arrays(local / f"{object_id(meshes / 'box.glb')}.npz"), _arrays(tmp_path / "box.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert len(s3.find(f"{BUCKET}/prep")) == 2
    stamps = {p: s3.info(p)["LastModified"] for p in s3.find(f"{BUCKET}/prep")}
    assert run_batch(listing, out, FAST, workers=2, cluster="ray") == (0, 0)  # resume: nothing left
    s3.invalidate_cache()
    assert {p: s3.info(p)["LastModified"] for p in s3.find(f"{BUCKET}/prep")} == stamps
    done = [r for r in read_log(tmp_path / LOG_NAME) if r["event"] == "done"]
    assert done[-1]["skipped"] == 2
