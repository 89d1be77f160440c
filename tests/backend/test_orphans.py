"""`kill -9` of the server mid-job leaves no process behind: the mesh workers and the
multiprocessing resource tracker exit with it, and a caller reading its stderr to the end returns."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
from PIL import Image

from tests.process_family import MARK, marked

from .synth import striped_ellipse

ROOT = Path(__file__).resolve().parents[2]


def test_sigkill_mid_job_leaves_no_descendant_and_stderr_ends(tmp_path):
    rgb, _ = striped_ellipse(512)
    image = tmp_path / "e.png"
    Image.fromarray(rgb).save(image)
    marker = uuid.uuid4().hex
    env = {**os.environ, "PYTHONPATH": str(ROOT), MARK: marker}
    proc = subprocess.Popen([sys.executable, "-m", "backend", "serve", "--engine", "preview"], cwd=ROOT, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stderr_done = threading.Event()
    threading.Thread(target=lambda: (proc.stderr.read(), stderr_done.set()), daemon=True).start()
    try:
        assert json.loads(proc.stdout.readline())["event"] == "ready"
        request = {"op": "generate", "job": "a", "image": str(image), "output": str(tmp_path / "a.glb"),
                   "settings": {"face_count": 2000, "texture_resolution": 256}}
        proc.stdin.write(json.dumps(request) + "\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 180
        workers = []
        while not workers and time.monotonic() < deadline:  # the job decimates in the mesh workers
            workers = [p for p in marked(marker) if "spawn_main" in " ".join(p.cmdline())]
            time.sleep(0.05)
        assert workers, "the job never started the mesh workers"
        assert not (tmp_path / "a.glb").exists()  # still mid-job
        family = [p for p in marked(marker) if p.pid != proc.pid]
        assert any("resource_tracker" in " ".join(p.cmdline()) for p in family)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        _, alive = psutil.wait_procs(family, timeout=5)
        assert [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []
        assert marked(marker) == []
        assert stderr_done.wait(timeout=5), "stderr is still held open by a leftover process"
    finally:
        for p in marked(marker):
            p.kill()
        if proc.poll() is None:
            proc.kill()
