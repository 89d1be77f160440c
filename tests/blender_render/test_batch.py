"""The batch driver with real bpy workers: a killed batch resumes with every object rendered
exactly once, a killed worker is replaced and its object retried, and a corrupt file, a missing
file and a hanging input (a FIFO nobody writes: the read blocks like a stalled network mount) are
logged as failures while the rest finish."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from backend.data import renders

from .helpers import ROOT, env, needs_bpy, run

pytestmark = needs_bpy
BATCH = [sys.executable, "-m", "blender_render.batch"]


def _log(out):
    path = out / "render_log.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return records


def _wait_for(predicate, timeout=240.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except FileNotFoundError:
        return False


def _complete_objects(out):
    done = {}
    for d in out.iterdir():
        if d.is_dir() and not d.name.startswith((".", "_")):
            meta = renders.load_meta(d)  # raises if the folder is not complete
            for v in meta["views"]:
                for f in v["files"].values():
                    assert (d / f).is_file(), (d, f)
            done[d.name] = (d / "meta.json").stat().st_mtime_ns
    return done


def test_killed_batch_resumes_with_every_object_once(assets, tmp_path):
    names = ["BoxTextured.glb", "monkey.glb", "bunny.ply", "featuretype.STL", "Duck.glb", "chair_model.obj"]
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(str(assets / "meshes" / n) for n in names))
    out = tmp_path / "out"
    args = [str(listing), str(out), "--workers", "2", "--resolution", "64", "--samples", "4"]
    proc = subprocess.Popen(BATCH + args, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for(lambda: any(r.get("status") == "ok" for r in _log(out)))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    workers = [r["pid"] for r in _log(out) if r["event"] == "worker_start"]
    assert workers
    _wait_for(lambda: not any(_alive(p) for p in workers), timeout=20)  # no orphan keeps rendering
    first = _complete_objects(out)
    assert 1 <= len(first) < len(names), "the kill should land part-way"

    second = run(BATCH[1:] + args, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    final = _complete_objects(out)
    assert len(final) == len(names)
    assert all(final[k] == v for k, v in first.items()), "a finished object was rendered again"
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name != ".batch.lock"]
    records = _log(out)
    ends = [r for r in records if r["event"] == "batch_end"]
    assert ends[-1]["skipped"] == len(first)
    last_start = max(i for i, r in enumerate(records) if r["event"] == "batch_start")
    assert sorted(r["id"] for r in records[last_start:] if r["event"] == "skipped") == sorted(first)
    oks = [r["id"] for r in records if r["event"] == "object" and r["status"] == "ok"]
    assert sorted(set(oks)) == sorted(final) and len(oks) == len(set(oks))
    assert json.loads(second.stdout.strip().splitlines()[-1])["ok"] == len(names) - len(first)


def test_killed_worker_is_replaced_and_its_object_retried(assets, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(str(assets / "meshes" / n) for n in ("Duck.glb", "bunny.ply")))
    out = tmp_path / "out"
    proc = subprocess.Popen(BATCH + [str(listing), str(out), "--workers", "1", "--resolution", "48", "--samples", "2"],
                            cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    _wait_for(lambda: any(r["event"] == "worker_start" for r in _log(out)))
    os.kill(next(r["pid"] for r in _log(out) if r["event"] == "worker_start"), signal.SIGKILL)
    stdout, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, stdout
    records = [r for r in _log(out) if r["event"] == "object"]
    crash = next(r for r in records if r["status"] == "failed")
    assert crash["status"] == "failed" and crash["error"]["code"] == "worker_crashed" and not crash["final"]
    retry = [r for r in records if r["id"] == crash["id"] and r["attempt"] == 2]
    assert retry and retry[0]["status"] == "ok"
    assert len([r for r in _log(out) if r["event"] == "worker_start"]) == 2
    assert len(_complete_objects(out)) == 2


def test_corrupt_missing_and_hanging_inputs_are_logged_while_the_rest_finish(assets, tmp_path):
    corrupt = tmp_path / "corrupt.glb"
    corrupt.write_bytes((assets / "meshes" / "Duck.glb").read_bytes()[:5000])
    hang = tmp_path / "hang.glb"
    os.mkfifo(hang)
    listing = tmp_path / "list.txt"
    listing.write_text(f"corrupt.glb\nhang.glb\nmissing.obj\n{assets / 'meshes' / 'BoxTextured.glb'}\n")
    out = tmp_path / "out"
    args = [str(listing), str(out), "--workers", "2", "--resolution", "32", "--samples", "1", "--timeout", "8",
            "--retries", "0"]
    proc = run(BATCH[1:] + args, timeout=600)
    assert proc.returncode == 1, proc.stderr[-2000:]
    by_input = {os.path.basename(r["input"]): r for r in _log(out) if r["event"] == "object"}
    assert by_input["corrupt.glb"]["error"]["code"] == "input_unreadable"
    assert by_input["missing.obj"]["error"]["code"] == "input_not_found"
    assert by_input["hang.glb"]["error"]["code"] == "timeout" and by_input["hang.glb"]["final"]
    assert "hang.glb" in by_input["hang.glb"]["log_tail"]  # the worker's own output comes with it
    assert by_input["BoxTextured.glb"]["status"] == "ok"
    assert list(_complete_objects(out)) == [by_input["BoxTextured.glb"]["id"]]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {k: summary[k] for k in ("ok", "failed", "retried", "objects", "skipped")} == {
        "ok": 1, "failed": 3, "retried": 0, "objects": 4, "skipped": 0}
    assert summary["objects_per_min"] > 0
    # a rerun that skips final failures has nothing left to do
    again = run(BATCH[1:] + args + ["--skip-failed"], timeout=120)
    assert again.returncode == 0 and json.loads(again.stdout.strip().splitlines()[-1])["skipped"] == 4


def test_bad_batch_settings_and_sources(tmp_path):
    proc = run(["-m", "blender_render.batch", str(tmp_path / "none"), str(tmp_path / "out")])
    assert proc.returncode == 3 and "[input_not_found]" in proc.stderr
    proc = run(["-m", "blender_render.batch", str(tmp_path), str(tmp_path / "out"), "--workers", "0"])
    assert proc.returncode == 2 and "[invalid_setting]" in proc.stderr
    for args in (["s3://bucket/list.txt", str(tmp_path / "out")], [str(tmp_path), "s3://bucket/out"],
                 [str(tmp_path), str(tmp_path / "out"), "--cluster", "slurm"]):
        proc = run(["-m", "blender_render.batch", *args])
        assert proc.returncode == 2 and "[invalid_setting]" in proc.stderr, proc.stderr


@pytest.mark.cuda
def test_gpu_workers_render(assets, tmp_path):
    """On a CUDA machine: two workers share GPU 0 and render with Cycles on the GPU."""
    out = tmp_path / "out"
    proc = run(["-m", "blender_render.batch", str(assets / "meshes"), str(out), "--workers", "2", "--gpus", "0",
                "--resolution", "256", "--samples", "64"], timeout=600)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    metas = [renders.load_meta(d) for d in out.iterdir() if (d / "meta.json").is_file()]
    assert metas and all(m["render"]["device"]["device"] == "GPU" for m in metas)


def test_workers_inside_a_blender_executable(assets, tmp_path):
    """`--blender EXE` runs blender_render/worker.py as a script file with Blender's command line;
    a stand-in executable does what Blender does with `-b ... -P FILE -- ARGS`."""
    shim = tmp_path / "blender"
    shim.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import runpy, sys
        import bpy
        argv = sys.argv[1:]
        assert argv[:4] == ["-b", "--factory-startup", "--python-exit-code", "1"], argv
        script = argv[argv.index("-P") + 1]
        sys.argv = ["blender", *argv]
        runpy.run_path(script, run_name="__main__")
    """))
    shim.chmod(0o755)
    out = tmp_path / "out"
    proc = run(["-m", "blender_render.batch", str(assets / "meshes" / "BoxTextured.glb"), str(out), "--blender",
                str(shim), "--resolution", "32", "--samples", "1"], timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(_complete_objects(out)) == 1
