"""The server on two lanes (the multi plan), in process with a scripted two-stage engine:
events per job stay well-formed while two jobs run at once, cancels of queued jobs and jobs
between stages are reported once, and shutdown ends the lanes."""
import os
import queue
import threading
from pathlib import Path

from backend.context import JobResult
from backend.engines import EngineChoice
from backend.jobs import JobRunner
from backend.runtime.plan import DevicePlan
from backend.server import Server
from shared import protocol


class Shape:
    plan = DevicePlan("multi", "cpu", "cpu", "none")


class TwoStageEngine:
    name = "scripted"

    def __init__(self):
        self.gates: dict[str, threading.Event] = {}
        self.threads: dict[tuple[str, str], str] = {}

    def first_stage(self, ctx):
        job = ctx.spec.job_id
        self.threads[job, "first"] = threading.current_thread().name
        ctx.step("geometry", 0, 1)
        self.gates.setdefault(job, threading.Event()).wait(30)
        return Shape()

    def second_stage(self, ctx, shape, device=None):
        job = ctx.spec.job_id
        self.threads[job, "second"] = threading.current_thread().name
        ctx.step("texture", 0, 1)
        ctx.spec.output.write_bytes(b"glb")
        return JobResult(ctx.spec.output, {"device": device})


class LanesRunner(JobRunner):
    def __init__(self, engine):
        super().__init__(plan="multi")
        self.engine = engine

    def pipelined(self) -> bool:
        return True

    def engine_for(self, spec):
        return self.engine, EngineChoice("scripted", "test")


class Lines:
    """A text stream whose written lines land in a queue as decoded events."""

    def __init__(self):
        self.events: "queue.Queue[protocol.Message]" = queue.Queue()

    def write(self, text):
        for line in text.splitlines():
            self.events.put(protocol.decode_event(line))

    def flush(self):
        pass

    def until(self, kind, job=None):
        seen = []
        while True:
            ev = self.events.get(timeout=30)
            seen.append(ev)
            if ev.kind == kind and (job is None or ev.get("job") == job):
                return seen


def test_two_lanes_behind_the_protocol(tmp_path):
    engine = TwoStageEngine()
    out = Lines()
    read_fd, write_fd = os.pipe()
    stdin, requests = os.fdopen(read_fd, "r"), os.fdopen(write_fd, "w", buffering=1)
    server = Server(out, default_engine="preview", runner=LanesRunner(engine))
    serving = threading.Thread(target=server.serve_forever, args=(stdin,), name="geometry-lane")
    serving.start()
    out.until("ready")
    image = tmp_path / "in.png"
    image.write_bytes(b"png")
    for job in ("j0", "j1", "j2", "j3"):
        requests.write(protocol.request("generate", job=job, image=str(image), output=str(tmp_path / f"{job}.glb")))
    out.until("accepted", "j3")
    requests.write(protocol.request("cancel", job="j2"))  # still queued: j0 holds the geometry lane
    seen = out.until("error", "j2")
    assert seen[-1].get("code") == "cancelled"
    engine.gates.setdefault("j0", threading.Event()).set()
    engine.gates.setdefault("j1", threading.Event()).set()
    seen += out.until("done", "j1")
    requests.write(protocol.request("status"))
    seen += out.until("status")
    requests.write(protocol.request("cancel", job="j3"))  # in its first stage: stops at its next step
    requests.write(protocol.request("status"))  # answered once the reader has handled the cancel
    seen += out.until("status")
    engine.gates.setdefault("j3", threading.Event()).set()
    seen += out.until("error", "j3")
    requests.write(protocol.request("shutdown"))
    seen += out.until("bye")
    serving.join(30)
    assert not serving.is_alive()
    done = {ev.get("job") for ev in seen if ev.kind == "done"}
    errors = {ev.get("job"): ev.get("code") for ev in seen if ev.kind == "error"}
    assert done == {"j0", "j1"} and errors == {"j2": "cancelled", "j3": "cancelled"}
    assert (tmp_path / "j0.glb").is_file() and not (tmp_path / "j2.glb").exists()
    assert engine.threads["j0", "first"] == "geometry-lane" and engine.threads["j0", "second"] == "texture-lane"
    assert ("j2", "first") not in engine.threads
    for job in ("j0", "j1"):
        kinds = [ev.kind for ev in seen if ev.get("job") == job]
        assert kinds[-1] == "done" and kinds.count("done") == 1 and "error" not in kinds
