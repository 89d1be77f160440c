"""Bounded queue (429), restart with results kept, refusal to listen openly without a token, and
the result store's retention rules."""
from __future__ import annotations

import subprocess
import sys
import time

import httpx

from addon.core.jobs import JobRequest
from addon.core.remote import RemoteConfig, RemoteSession
from addon.core.session import Timeouts
from backend.http.store import DONE, ERROR, JobRecord, ResultStore
from shared.errors import CODES

from .conftest import ROOT, SMALL, ServerProcess, events, free_port, submit


def _pump_until(session, condition, limit=240):
    end = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < end, "timed out"
        session.pump(0.1)


def test_queue_full_then_restart_keeps_results(tmp_path, png):
    """A full queue answers 429; after kill -9 and a restart the finished result is still served,
    and the job that was running ends as job_lost, also for the add-on's client following it."""
    data = tmp_path / "data"
    server = ServerProcess(data, "--no-web", "--max-jobs", "2")
    session = RemoteSession(RemoteConfig(server.url), Timeouts(silence=90))
    try:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            done_job = submit(c, png, token=None).json()["job"]
            assert events(c, done_job, None)[-1]["event"] == "done"
            glb = c.get(f"/v1/jobs/{done_job}/result").content
            followed = session.submit(JobRequest("local", str(tmp_path / "out" / "b.glb"), dict(SMALL), image=str(png)))
            _pump_until(session, lambda: followed.state == "running")
            queued = submit(c, png, token=None)
            assert queued.status_code == 202
            full = submit(c, png, token=None)
            assert full.status_code == 429 and full.json()["error"]["code"] == "queue_full"
            assert int(full.headers["retry-after"]) >= 1
            running = next(j["job"] for j in c.get("/v1/jobs").json()["jobs"] if j["state"] == "running")
    finally:
        server.kill()  # SIGKILL: no chance to tidy up

    server = ServerProcess(data, "--no-web", "--max-jobs", "2", port=server.port)
    try:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            state = c.get(f"/v1/jobs/{done_job}").json()
            assert state["state"] == "done" and state["result"] == f"/v1/jobs/{done_job}/result"
            again = c.get(state["result"])
            assert again.status_code == 200 and again.content == glb
            assert [e["event"] for e in events(c, done_job, None)] == ["accepted", "done"]
            lost = c.get(f"/v1/jobs/{running}").json()
            assert lost["state"] == "error" and lost["error"]["code"] == "job_lost"
            assert events(c, running, None)[-1]["code"] == "job_lost"
            assert c.get("/v1/health").json()["queued"] == 0
        _pump_until(session, lambda: not followed.active)
        assert followed.state == "failed" and followed.error_code == "job_lost"
        assert not (tmp_path / "out" / "b.glb").exists()
    finally:
        server.kill()


def test_open_address_needs_a_token(tmp_path):
    port = free_port()
    proc = subprocess.run([sys.executable, "-m", "backend", "serve", "--http", f"0.0.0.0:{port}", "--no-web",
                           "--data-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == CODES["unauthorized"].exit_status and "without an access token" in proc.stderr


def _record(store: ResultStore, job: str, finished: float, size: int, state: str = DONE) -> JobRecord:
    store.create(job)
    (store.folder(job) / "result.glb").write_bytes(b"g" * size)
    record = JobRecord(job=job, owner="o", state=state, created=finished - 1, finished=finished)
    store.save(record)
    return record


def test_retention_by_age_and_budget(tmp_path):
    store = ResultStore(tmp_path, keep_seconds=100, budget_bytes=2500)
    now = time.time()
    old = _record(store, "old", now - 200, 100)
    a = _record(store, "a", now - 50, 1000)
    b = _record(store, "b", now - 40, 1000)
    c = _record(store, "c", now - 30, 1000)
    running = JobRecord(job="run", owner="o", state="running")
    store.create("run")
    (store.folder("run") / "input" / "image.png").write_bytes(b"i" * 5000)
    store.save(running)
    # too old goes; then the oldest finished while over budget; a running job never goes
    gone = store.expired([old, a, b, c, running], now)
    assert gone[0] == "old" and "run" not in gone and set(gone) == {"old", "a", "b", "c"}
    store2 = ResultStore(tmp_path, keep_seconds=100, budget_bytes=10_000)
    assert store2.expired([old, a, b, c, running], now) == ["old"]
    store3 = ResultStore(tmp_path, keep_seconds=1000, budget_bytes=7700)  # ~8.9 kB with the records
    assert store3.expired([old, a, b, c, running], now) == ["old", "a"]
    # a restart marks the unfinished job lost and keeps the finished ones
    loaded = {r.job: r for r in ResultStore(tmp_path).load()}
    assert loaded["run"].state == ERROR and loaded["run"].error["code"] == "job_lost"
    assert loaded["c"].state == DONE
