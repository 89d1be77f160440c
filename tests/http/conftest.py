"""A real `python -m backend serve --http` process on a free 127.0.0.1 port (preview engine)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.backend.synth import striped_ellipse

ROOT = Path(__file__).resolve().parents[2]
TOKEN_A = "token-a-" + "a" * 24
TOKEN_B = "token-b-" + "b" * 24
SMALL = {"face_count": 500, "texture": False, "texture_resolution": 256}  # a quick preview job


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, data_dir: Path, *args: str, tokens: tuple[str, ...] = (), port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir.parent / f"server-{self.port}-{time.monotonic_ns()}.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "STEP1X3D_TOKENS": ",".join(tokens)}
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "backend", "serve", "--http", f"127.0.0.1:{self.port}", "--engine", "preview",
                 "--data-dir", str(data_dir), *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while True:
            assert self.proc.poll() is None, f"server exited: {self.log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up in 90 s"
            time.sleep(0.2)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)


@pytest.fixture(scope="session")
def png(tmp_path_factory) -> Path:
    rgb, _ = striped_ellipse(96)
    path = tmp_path_factory.mktemp("img") / "ellipse.png"
    Image.fromarray(rgb).save(path)
    return path


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def submit(client: httpx.Client, png: Path, token: str | None = TOKEN_A, settings: dict | None = None,
           **kwargs) -> httpx.Response:
    import json

    with open(png, "rb") as f:
        return client.post("/v1/jobs", files={"image": (png.name, f.read(), "image/png")},
                           data={"settings": json.dumps(SMALL if settings is None else settings)},
                           headers=auth(token) if token else {}, **kwargs)


def events(client: httpx.Client, job: str, token: str | None = TOKEN_A) -> list[dict]:
    """Every event of the job's SSE stream (it ends after `done` or `error`), checked as protocol events."""
    import json

    from shared import protocol

    out = []
    with client.stream("GET", f"/v1/jobs/{job}/events", headers=auth(token) if token else {}, timeout=300) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
                protocol.decode_event(data)  # the JSON-lines protocol's own event objects
                event = json.loads(data)
                assert event["event"] == name
                out.append(event)
    return out
