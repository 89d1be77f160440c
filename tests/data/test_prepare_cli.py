"""The batch CLI: one .npz per object, failures logged with their code, resume skips done work."""
import json
from pathlib import Path

import numpy as np
import trimesh

from backend.data.prepare import KEYS, LOG_NAME, main
from shared.jobs import object_id

FAST = ["--resolution", "24", "--views", "6", "--view-resolution", "48", "--num-surface", "300",
        "--num-sharp", "300", "--num-near", "200", "--num-volume", "200"]


def prepare(*args) -> int:
    return main([*map(str, args), *FAST])


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()]


def test_batch_resume_and_failures(tmp_path):
    good = tmp_path / "cube.glb"
    trimesh.creation.box((1, 0.5, 0.8)).export(good)
    bad = tmp_path / "broken.obj"
    bad.write_text("this is not an obj file\n")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# objects\n{good.name}\n{bad.name}\n")
    out = tmp_path / "out"

    assert prepare(listing, out) == 1
    npz = out / f"{object_id(good)}.npz"
    with np.load(npz) as data:
        assert tuple(data.files) == KEYS
        assert data["surface"].shape == (300, 6)
    log = [r for r in records(out) if r["event"] == "object"]
    status = {r["id"]: r for r in log}
    assert status[object_id(good)]["status"] == "ok"
    assert status[object_id(bad)]["status"] == "failed" and status[object_id(bad)]["error"]["code"] == "input_unreadable"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary leftovers

    mtime = npz.stat().st_mtime_ns
    assert prepare(listing, out) == 1
    last_run = records(out)[[r["event"] for r in records(out)].index("batch", 1):]
    assert [r["id"] for r in last_run if r["event"] == "skipped"] == [object_id(good)]
    assert [r["id"] for r in last_run if r["event"] == "object"] == [object_id(bad)]  # only the failed one again
    assert last_run[-1]["event"] == "done" and last_run[-1]["skipped"] == 1 and last_run[-1]["failed"] == 1
    assert npz.stat().st_mtime_ns == mtime

    assert prepare(good, tmp_path / "single") == 0
    assert (tmp_path / "single" / npz.name).is_file()


def test_missing_source_is_a_coded_error(tmp_path, capsys):
    assert prepare(tmp_path / "nothing.txt", tmp_path / "out") == 3
    assert "input_not_found" in capsys.readouterr().err


def test_killed_batch_leaves_no_worker(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    import uuid

    import psutil

    from tests.process_family import MARK, marked

    for i in range(2):
        trimesh.creation.icosphere(4, 0.5 + 0.1 * i).export(tmp_path / f"ball{i}.glb")
    marker = uuid.uuid4().hex
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "backend.data.prepare", str(tmp_path), str(tmp_path / "out"),
                             "--workers", "2", "--resolution", "256"], cwd=root,
                            env={**os.environ, "PYTHONPATH": str(root), MARK: marker},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        workers = []
        while not workers and time.monotonic() < deadline and proc.poll() is None:
            workers = [p for p in marked(marker) if "spawn_main" in " ".join(p.cmdline())]
            time.sleep(0.05)
        assert workers, "no worker process started"
        family = [p for p in marked(marker) if p.pid != proc.pid]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        # a worker killed while still importing exits when its imports end (die_with_parent's check)
        psutil.wait_procs(family, timeout=60)
        assert marked(marker) == []
    finally:
        for p in marked(marker):
            p.kill()
        if proc.poll() is None:
            proc.kill()
