"""addon/core/remote.py against a real server, without Blender: a server killed and restarted
under a running job ends it as job_lost; a finished result is downloaded whole."""
from __future__ import annotations

import time

from addon.core.jobs import JobRequest
from addon.core.remote import RemoteConfig, RemoteSession
from addon.core.session import Timeouts

from .conftest import SMALL, ServerProcess


def _until(session, condition, limit=240):
    end = time.monotonic() + limit
    outcomes = []
    while not condition():
        assert time.monotonic() < end, "timed out"
        outcomes += session.pump(0.1)
    return outcomes


def test_restart_mid_job_and_download(tmp_path, png):
    data = tmp_path / "data"
    server = ServerProcess(data, "--no-web")
    session = RemoteSession(RemoteConfig(server.url), Timeouts(silence=90))
    try:
        first = session.submit(JobRequest("local1", str(tmp_path / "out" / "a.glb"), dict(SMALL), image=str(png)))
        outcomes = _until(session, lambda: not first.active)
        assert first.state == "done" and [o.kind for o in outcomes][-1] == "finished"
        assert (tmp_path / "out" / "a.glb").read_bytes()[:4] == b"glTF" and first.result_path.endswith("a.glb")
        assert session.state == "ready"

        second = session.submit(JobRequest("local2", str(tmp_path / "out" / "b.glb"), dict(SMALL), image=str(png)))
        _until(session, lambda: second.state == "running")
        server.kill()
        server = ServerProcess(data, "--no-web", port=server.port)
        _until(session, lambda: not second.active)
        assert second.state == "failed" and second.error_code == "job_lost"
        assert not (tmp_path / "out" / "b.glb").exists()
    finally:
        server.kill()


def test_config_checks_without_network():
    import pytest

    from addon.shared.errors import BackendError

    RemoteConfig("http://127.0.0.1:8188", online=False).check()
    RemoteConfig("https://gpu-box.example", online=True).check()
    for url, online in (("http://gpu-box:8188", False), ("ftp://gpu-box", True), ("gpu-box:8188", True)):
        with pytest.raises(BackendError) as err:
            RemoteConfig(url, online=online).check()
        assert err.value.code == "server_unreachable"
