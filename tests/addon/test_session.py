"""The session against the fake backend (a real subprocess) and, for the timeout rules, a stub."""
import queue
import time

import pytest

from addon.core import jobs, session
from addon.core.jobs import JobRequest
from addon.core.process import BackendProcess, Exited
from addon.core.session import Session, Timeouts
from addon.shared import protocol
from addon.shared.errors import BackendError


def request(tmp_path, name="duck.png", job_id="j1", **settings):
    image = tmp_path / name
    image.write_bytes(b"png")
    return JobRequest(job_id=job_id, output=str(tmp_path / "out" / f"{job_id}.glb"),
                      settings={"seed": 7, **settings}, image=str(image), label="duck")


def drive(s: Session, job_id: str, limit: float = 30.0) -> list[jobs.Outcome]:
    return list(s.wait(job_id, timeout=limit, poll=0.1))


def test_generate_end_to_end(launcher, tmp_path, glb):
    s = Session(launcher())
    assert s.state == session.STOPPED
    job = s.submit(request(tmp_path))
    assert s.state == session.STARTING and job.state == jobs.WAITING
    outcomes = drive(s, "j1")
    assert [o.kind for o in outcomes] == [jobs.PREVIEW, jobs.FINISHED]
    assert outcomes[0].path.endswith("j1.mesh.glb")
    final = outcomes[1].path
    assert final == str(tmp_path / "out" / "j1.glb")
    assert open(final, "rb").read() == glb.read_bytes()
    assert job.metadata["seed"] == 7 and job.engine == "fake"
    assert s.state == session.READY and s.backend_info["version"] == "fake-1"
    s.stop()
    assert s.state == session.STOPPED


def test_jobs_queue_behind_each_other(launcher, tmp_path):
    s = Session(launcher("--step-delay", "0.05"))
    a = s.submit(request(tmp_path, job_id="a"))
    b = s.submit(request(tmp_path, job_id="b", texture=False))
    seen_queued = False
    while b.active:
        s.pump(0.1)
        seen_queued |= b.state == jobs.QUEUED
    assert a.state == jobs.DONE and b.state == jobs.DONE and seen_queued
    assert b.preview_path is None  # untextured: no two-phase preview
    s.stop()


def test_cancel_mid_job_leaves_backend_ready(launcher, tmp_path):
    s = Session(launcher())
    job = s.submit(request(tmp_path, "slow.png"))
    while job.state != jobs.RUNNING:
        s.pump(0.1)
    assert s.cancel("j1") == []
    assert job.state == jobs.CANCELLING
    outcomes = drive(s, "j1")
    assert [o.kind for o in outcomes] == [jobs.WITHDRAWN]
    assert not (tmp_path / "out" / "j1.glb").exists()
    assert s.state == session.READY
    after = s.submit(request(tmp_path, job_id="j2"))
    drive(s, "j2")
    assert after.state == jobs.DONE
    s.stop()


def test_crash_mid_job_is_reported_and_restart_works(launcher, tmp_path):
    s = Session(launcher())
    job = s.submit(request(tmp_path, "crash.png"))
    outcomes = drive(s, "j1")
    assert [o.kind for o in outcomes] == [jobs.ERRORED]
    assert job.error_code == "backend_unavailable"
    assert "exit code 3" in job.error_message and "illegal memory access" in job.error_message
    assert s.state == session.CRASHED and "exit code 3" in s.problem
    again = s.submit(request(tmp_path, job_id="j2"))
    assert s.state == session.STARTING and s.problem == ""
    drive(s, "j2")
    assert again.state == jobs.DONE
    s.stop()


def test_hang_is_detected(launcher, tmp_path):
    s = Session(launcher(), Timeouts(silence=1.5, ping=0.3))
    job = s.submit(request(tmp_path, "hang.png"))
    pid = s.process.pid
    outcomes = drive(s, "j1")
    assert [o.kind for o in outcomes] == [jobs.ERRORED]
    assert "stopped answering" in job.error_message and s.state == session.CRASHED
    with pytest.raises(ProcessLookupError):  # the hung process was killed, not left behind
        import os
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.1)


def test_ignored_cancel_kills_and_restarts_for_the_next_job(launcher, tmp_path):
    s = Session(launcher(), Timeouts(cancel=0.5))
    first = s.submit(request(tmp_path, "stubborn-slow.png", job_id="a"))
    second = s.submit(request(tmp_path, job_id="b"))
    while first.state != jobs.RUNNING:
        s.pump(0.1)
    s.cancel("a")
    outcomes = drive(s, "a")
    assert [o.kind for o in outcomes] == [jobs.WITHDRAWN] and first.state == jobs.CANCELLED
    assert second.state == jobs.WAITING and s.state == session.STARTING  # restarted for the queued job
    drive(s, "b")
    assert second.state == jobs.DONE
    s.stop()


def test_backend_errors_and_noise(launcher, tmp_path):
    s = Session(launcher("--noise"))
    job = s.submit(request(tmp_path, "corrupt.png"))
    drive(s, "j1")
    assert job.state == jobs.FAILED and job.error_code == "input_unreadable" and "corrupt.png" in job.error_message
    assert any("not protocol" in text for _, text in s.log)
    bad = s.submit(request(tmp_path, job_id="j2", geometry_steps=0))
    drive(s, "j2")
    assert bad.error_code == "invalid_setting"
    assert s.state == session.READY
    s.stop()


def test_missing_interpreter_is_a_clear_error(tmp_path):
    s = Session(lambda: BackendProcess([str(tmp_path / "no-python"), "-m", "backend", "serve"]))
    with pytest.raises(BackendError) as info:
        s.submit(request(tmp_path))
    assert info.value.code == "backend_unavailable" and "no-python" in info.value.message
    assert s.jobs == {} and s.state == session.STOPPED


def test_protocol_mismatch_is_refused(launcher, tmp_path):
    s = Session(launcher("--protocol", "99"))
    job = s.submit(request(tmp_path))
    drive(s, "j1")
    assert job.state == jobs.FAILED and "protocol 99" in job.error_message


def test_stop_during_a_job_withdraws_it(launcher, tmp_path):
    s = Session(launcher())
    job = s.submit(request(tmp_path, "slow.png"))
    while job.state != jobs.RUNNING:
        s.pump(0.1)
    process = s.process
    outcomes = s.stop()
    assert [o.kind for o in outcomes] == [jobs.WITHDRAWN]
    assert not process.running and s.state == session.STOPPED


# --- timeout rules with a stub process and a fake clock ---------------------------------------

class StubProcess:
    def __init__(self):
        self.events = queue.Queue()
        self.sent = []
        self.killed = False
        self.running = True

    def start(self):
        pass

    def send(self, line):
        self.sent.append(protocol.decode_request(line))
        return True

    def kill(self):
        self.killed = True

    def close(self, grace):
        self.running = False

    def emit(self, name, **fields):
        self.events.put(protocol.decode_event(protocol.event(name, **fields)))


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def stub_session(timeouts=Timeouts(startup=10, silence=30, ping=5, cancel=8)):
    stubs = []

    def launch():
        stubs.append(StubProcess())
        return stubs[-1]

    clock = Clock()
    return Session(launch, timeouts, clock), stubs, clock


def test_startup_timeout():
    s, stubs, clock = stub_session()
    job = s.submit(JobRequest("j", "/o/j.glb", {}, image="/i.png"))
    assert [m.kind for m in stubs[0].sent] == ["hello"]  # nothing sent before ready
    clock.now += 9
    assert s.pump() == []
    clock.now += 2
    out = s.pump()
    assert [o.kind for o in out] == [jobs.ERRORED] and "did not report ready within 10 s" in job.error_message
    assert stubs[0].killed and s.state == session.CRASHED


def test_ping_then_silence_timeout():
    s, stubs, clock = stub_session()
    job = s.submit(JobRequest("j", "/o/j.glb", {}, image="/i.png"))
    p = stubs[0]
    p.emit("ready", protocol=1, version="x", engines=[])
    s.pump()
    assert [m.kind for m in p.sent] == ["hello", "generate"] and job.state == jobs.SUBMITTED
    clock.now += 6
    s.pump()
    assert p.sent[-1].kind == "status"
    clock.now += 1
    s.pump()
    assert [m.kind for m in p.sent].count("status") == 1  # one ping per silence
    p.emit("status", state="busy", job="j", queue=[])
    clock.now += 1
    s.pump()  # the answer resets the silence
    clock.now += 29
    assert s.pump() == []
    clock.now += 2
    assert [o.kind for o in s.pump()] == [jobs.ERRORED] and p.killed


def test_idle_backend_is_not_pinged_or_killed():
    s, stubs, clock = stub_session()
    s.start()
    stubs[0].emit("ready", protocol=1, version="x", engines=[])
    s.pump()
    clock.now += 1000
    assert s.pump() == [] and s.state == session.READY and [m.kind for m in stubs[0].sent] == ["hello"]


def test_exit_fails_active_jobs_with_stderr_detail():
    s, stubs, clock = stub_session()
    job = s.submit(JobRequest("j", "/o/j.glb", {}, image="/i.png"))
    stubs[0].emit("ready", protocol=1, version="x", engines=[])
    stubs[0].events.put(Exited(1, "Traceback...\nImportError: No module named torch"))
    out = s.pump()
    assert [o.kind for o in out] == [jobs.ERRORED]
    assert job.error_message == "the backend exited unexpectedly (exit code 1): ImportError: No module named torch"


def test_jobless_backend_error_explains_a_later_exit():
    s, stubs, clock = stub_session()
    job = s.submit(JobRequest("j", "/o/j.glb", {}, image="/i.png"))
    stubs[0].emit("error", job=None, code="weights_not_found", message="no weights in /w")
    stubs[0].events.put(Exited(10, "noise"))
    s.pump()
    assert "[weights_not_found] no weights in /w" in job.error_message


def test_duplicate_job_id_is_refused():
    s, stubs, clock = stub_session()
    s.submit(JobRequest("j", "/o/j.glb", {}, image="/i.png"))
    with pytest.raises(BackendError):
        s.submit(JobRequest("j", "/o/j.glb", {}, image="/i.png"))
