"""The server end to end, as the add-on sees it: a real subprocess speaking JSON lines."""
import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image

from shared import protocol

from .synth import striped_ellipse

ROOT = Path(__file__).resolve().parents[2]


class Backend:
    def __init__(self):
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-m", "backend", "serve", "--engine", "preview"], cwd=ROOT,
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.events: "queue.Queue[protocol.Message]" = queue.Queue()
        self.raw: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.raw.append(line)
            self.events.put(protocol.decode_event(line))  # every stdout line must be a valid event

    def send(self, text: str):
        self.proc.stdin.write(text if text.endswith("\n") else text + "\n")
        self.proc.stdin.flush()

    def next(self, timeout=120) -> protocol.Message:
        return self.events.get(timeout=timeout)

    def until(self, kind: str, job: str | None = None, timeout=180) -> tuple[protocol.Message, list]:
        seen = []
        while True:
            ev = self.next(timeout)
            seen.append(ev)
            if ev.kind == kind and (job is None or ev.get("job") == job):
                return ev, seen


@pytest.fixture
def backend():
    b = Backend()
    yield b
    if b.proc.poll() is None:
        b.proc.kill()
    b.proc.wait(timeout=30)


@pytest.fixture
def image(tmp_path) -> Path:
    rgb, _ = striped_ellipse(128)
    path = tmp_path / "e.png"
    Image.fromarray(rgb).save(path)
    return path


def generate(backend, job, image, out, **settings):
    backend.send(protocol.request("generate", job=job, image=str(image), output=str(out),
                                  settings={"face_count": 3000, "texture_resolution": 256, **settings}))


def test_session(backend, image, tmp_path):
    ready = backend.next(timeout=120)
    assert ready.kind == "ready" and ready.get("protocol") == protocol.PROTOCOL_VERSION

    # garbage and malformed requests: an error each, the server stays up
    for bad in ("this is not json", '{"op": "explode"}', '{"op": "cancel"}', "\x00\x01"):
        backend.send(bad)
        ev = backend.next()
        assert ev.kind == "error" and ev.get("code") == "invalid_request" and ev.get("job") is None

    # a whole job: accepted, progress through the stages, done with a real file
    generate(backend, "one", image, tmp_path / "one.glb")
    done, seen = backend.until("done", "one")
    assert seen[0].kind == "accepted" and seen[0].get("queue_position") == 0
    stages = [e.get("stage") for e in seen if e.kind == "progress"]
    assert {"geometry", "bake", "export"} <= set(stages)
    assert Path(done.get("path")).is_file() and done.get("metadata")["engine"] == "preview"

    # a bad input fails its job only
    generate(backend, "missing", tmp_path / "nope.png", tmp_path / "nope.glb")
    err, _ = backend.until("error", "missing")
    assert err.get("code") == "input_not_found"

    # cancel mid-job: the running job stops at a step boundary and leaves no file
    generate(backend, "slow", image, tmp_path / "slow.glb", texture_resolution=2048, face_count=30000)
    generate(backend, "queued", image, tmp_path / "queued.glb")
    first, _ = backend.until("progress", "slow")
    backend.send(protocol.request("status"))
    status, _ = backend.until("status")
    assert status.get("state") == "busy" and status.get("job") == "slow" and status.get("queue") == ["queued"]
    backend.send(protocol.request("cancel", job="queued"))
    err, _ = backend.until("error", "queued")
    assert err.get("code") == "cancelled"
    backend.send(protocol.request("cancel", job="slow"))
    err, seen = backend.until("error", "slow")
    assert err.get("code") == "cancelled"
    assert not (tmp_path / "slow.glb").exists() and not (tmp_path / "queued.glb").exists()
    assert not list(tmp_path.glob(".slow.glb.*"))

    # still serving after all that
    generate(backend, "two", image, tmp_path / "two.glb")
    done, _ = backend.until("done", "two")
    assert Path(done.get("path")).is_file()
    backend.send(protocol.request("cancel", job="unknown"))
    assert backend.until("error", "unknown")[0].get("code") == "invalid_request"

    backend.send(protocol.request("shutdown"))
    assert backend.until("bye")[0].kind == "bye"
    assert backend.proc.wait(timeout=60) == 0


def test_closing_stdin_stops_the_server(backend):
    assert backend.next(timeout=120).kind == "ready"
    backend.proc.stdin.close()
    assert backend.until("bye")[0].kind == "bye"
    assert backend.proc.wait(timeout=60) == 0


def test_duplicate_job_ids_are_refused(backend, image, tmp_path):
    assert backend.next(timeout=120).kind == "ready"
    generate(backend, "dup", image, tmp_path / "a.glb")
    generate(backend, "dup", image, tmp_path / "b.glb")
    err, _ = backend.until("error", "dup")
    assert err.get("code") == "invalid_request" and "already used" in err.get("message")
    backend.until("done", "dup")
