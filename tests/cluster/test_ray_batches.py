"""Batches through Ray against the local pool: the same outputs, a killed actor or bpy worker
costs only its in-flight object (retried, then every object exactly once), a killed driver
resumes, and inputs and outputs on S3 (a moto server on loopback) round-trip and resume."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import trimesh

from backend.data.prepare import LOG_NAME, PrepareOptions, run_batch
from backend.data.watertight import WatertightOptions
from shared.batchrun import drive
from shared.jobs import Log, Task, object_id, read_log
from shared.raypool import RayPool

from tests.blender_render.test_batch import _wait_for

from .conftest import BUCKET

ROOT = Path(__file__).resolve().parents[2]
FAST = PrepareOptions(watertight=WatertightOptions(resolution=24, views=6, view_resolution=48), num_surface=300,
                      num_sharp=300, num_near=200, num_volume=200)
N_KILLED = 8  # objects of the killed-driver test
FAST_ARGS = ["--resolution", "24", "--views", "6", "--view-resolution", "48", "--num-surface", "300",
             "--num-sharp", "300", "--num-near", "200", "--num-volume", "200"]


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
    copies = tmp_path / "in"  # enough objects that the kill lands part-way on a fast machine too
    copies.mkdir()
    for i in range(N_KILLED):
        shutil.copy(meshes / "ball.ply", copies / f"ball{i}.ply")
    listing.write_text("".join(f"{copies / f'ball{i}.ply'}\n" for i in range(N_KILLED)))
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
    assert 1 <= len(first) < N_KILLED, "the kill should land part-way"
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    final = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npz")}
    assert len(final) == N_KILLED and all(final[k] == v for k, v in first.items())
    records = read_log(out / LOG_NAME)
    oks = [r["id"] for r in records if r["event"] == "object" and r["status"] == "ok"]
    # an object the killed driver saw committed but had not logged yet is found done by the rerun
    found_done = [r["id"] for r in records if r["event"] == "skipped" and r["reason"] == "done"]
    assert len(oks) == len(set(oks)), "no object is prepared twice"
    assert sorted(set(oks) | set(found_done)) == sorted(p.stem for p in out.glob("*.npz"))
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


RENDER_ARGS = ["--resolution", "32", "--samples", "1"]


def _render(source, out, cluster="local", workers=2, **config):
    from blender_render.batch import BatchConfig, run_batch as render_batch
    from blender_render.options import RenderOptions

    options = RenderOptions(resolution=32, samples=1)
    return render_batch(source, out, options, BatchConfig(workers=workers, **config), progress_stream=sys.stderr,
                        cluster=cluster)


def _views(root: Path) -> dict:
    """The decoded pixels (all channels, full bit depth) of every image of every complete object
    folder, by relative path. Blender stamps a time into each PNG, so files differ in bytes."""
    import cv2

    return {str(p.relative_to(root)): cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(root.glob("*/*.png"))
            if (p.parent / "meta.json").is_file()}


def _same_views(a: dict, b: dict) -> bool:
    """Same files, same shapes and bit depths, and every pixel equal but a few on silhouettes:
    Cycles builds its BVH on several threads, and two runs on one machine (local or not) now and
    then hit a different triangle at 2-3 edge pixels of a 32 px view (seen on bunny.ply's normals)."""
    if a.keys() != b.keys():
        return False
    for k in a:
        if a[k].dtype != b[k].dtype or a[k].shape != b[k].shape:
            return False
        differ = np.any(a[k] != b[k], axis=-1) if a[k].ndim == 3 else a[k] != b[k]
        if differ.mean() > 0.005:
            return False
    return True


@pytest.fixture(scope="module")
def render_list(assets, tmp_path_factory):
    listing = tmp_path_factory.mktemp("render") / "list.txt"
    listing.write_text("".join(f"{assets / 'meshes' / n}\n" for n in ("BoxTextured.glb", "bunny.ply", "monkey.glb")))
    return listing


@pytest.fixture(scope="module")
def local_renders(render_list, tmp_path_factory):
    if importlib.util.find_spec("bpy") is None:  # not imported here: pymeshlab, loaded earlier, breaks bpy's embree
        pytest.skip("the bpy module is not installed")
    out = tmp_path_factory.mktemp("render-local")
    counts = _render(render_list, out)
    assert counts["ok"] == 3
    return out


def test_render_through_ray_gives_the_same_pixels_as_local(local_renders, render_list, tmp_path, ray_address):
    out = tmp_path / "ray"
    counts = _render(render_list, out, cluster="ray")
    assert (counts["ok"], counts["failed"]) == (3, 0)
    local, remote = _views(local_renders), _views(out)
    assert len(local) >= 3 * 6 * 4 and _same_views(local, remote)


def _pid_writing_to(log: Path) -> int | None:
    """The worker process whose stderr is `log` (ours alone: the log lives in this test's folder)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "fd" / "2") == str(log):
                    return int(entry.name)
            except OSError:
                continue
    return None


def test_killed_bpy_worker_under_ray_is_retried_and_every_object_lands_once(render_list, tmp_path, ray_address):
    out = tmp_path / "out"
    result = {}
    thread = threading.Thread(target=lambda: result.update(_render(render_list, out, cluster="ray", workers=1)))
    thread.start()
    log = out / "_logs" / "worker-0.log"
    _wait_for(lambda: log.exists() and "--- task" in log.read_text(errors="replace"), timeout=180)
    pid = _pid_writing_to(log)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=300)
    assert (result["ok"], result["failed"], result["retried"]) == (3, 0, 1)
    records = _objects(out / "render_log.jsonl")
    crash = [r for r in records if r["status"] == "failed"]
    assert len(crash) == 1 and crash[0]["error"]["code"] == "worker_crashed" and not crash[0]["final"]
    assert sorted(r["id"] for r in records if r["final"]) == sorted(
        object_id(line) for line in render_list.read_text().split())
    assert len({p.parent.name for p in out.glob("*/meta.json")}) == 3
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name != ".batch.lock"]


def test_render_to_s3_matches_local_and_resumes(local_renders, render_list, tmp_path, s3, ray_address, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = f"s3://{BUCKET}/renders"
    counts = _render(render_list, out, cluster="ray")
    assert (counts["ok"], counts["failed"]) == (3, 0)
    s3.invalidate_cache()
    s3.get(f"{BUCKET}/renders/", str(tmp_path / "down"), recursive=True)
    assert _same_views(_views(local_renders), _views(tmp_path / "down"))
    again = _render(render_list, out, cluster="ray")
    assert (again["ok"], again["skipped"]) == (0, 3)


def test_generate_folder_through_ray_matches_local_and_resumes(tmp_path, s3, ray_address):
    """The preview engine is not bit-reproducible from run to run even on one machine (two local
    runs of one image gave 1571 and 1579 vertices), so Ray and local are compared on what it does
    fix: the face budget and the object's extent."""
    from PIL import Image

    from backend.cli import main as backend_main
    from tests.backend.synth import striped_ellipse

    folder = tmp_path / "in"
    folder.mkdir()
    for i, size in enumerate((96, 128)):
        Image.fromarray(striped_ellipse(size)[0]).save(folder / f"img{i}.png")
    flags = ["--engine", "preview", "--face-count", "1500", "--no-texture"]
    assert backend_main(["generate", str(folder), "-o", str(tmp_path / "local"), *flags]) == 0
    assert backend_main(["generate", str(folder), "-o", str(tmp_path / "ray"), *flags, "--cluster", "ray"]) == 0
    for name in ("img0.glb", "img1.glb"):
        a = trimesh.load(tmp_path / "local" / name, force="mesh")
        b = trimesh.load(tmp_path / "ray" / name, force="mesh")
        assert len(a.faces) == len(b.faces) == 1500
        assert np.allclose(a.bounds, b.bounds, atol=0.02)
    records = [r for r in read_log(tmp_path / "ray" / "generate_log.jsonl") if r["event"] == "object"]
    assert sorted(r["status"] for r in records) == ["ok", "ok"]
    stamp = (tmp_path / "ray" / "img0.glb").stat().st_mtime_ns
    assert backend_main(["generate", str(folder), "-o", str(tmp_path / "ray"), *flags, "--cluster", "ray"]) == 0
    assert (tmp_path / "ray" / "img0.glb").stat().st_mtime_ns == stamp  # a rerun skips finished images
    done = [r for r in read_log(tmp_path / "ray" / "generate_log.jsonl") if r["event"] == "done"]
    assert (done[-1]["ok"], done[-1]["skipped"]) == (0, 2)
