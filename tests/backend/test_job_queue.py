"""The job queue's lanes with a scripted two-stage runner: order, overlap, painting on the
geometry lane, withdrawal and errors. Overlaps are proven with events (a stage waits for another
to start), never with timings."""
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from backend.context import JobContext, JobResult
from backend.job_queue import JobQueue
from backend.jobs import make_spec
from shared.errors import BackendError

WAIT_S = 10.0


@dataclass
class Pending:
    job: str
    devices: tuple[str, ...]
    result: JobResult | None = None

    def devices_for_second_stage(self) -> tuple[str, ...]:
        return self.devices


@dataclass
class ScriptedRunner:
    """start/finish record (job, stage, device, thread) and run the per-job hooks given."""

    devices: tuple[str, ...] = ("cuda:1", "cuda:0")
    before_first: dict = field(default_factory=dict)  # job -> callable run inside its first stage
    before_second: dict = field(default_factory=dict)
    log: list = field(default_factory=list)
    started: dict = field(default_factory=dict)  # (job, stage) -> Event

    def event(self, job: str, stage: str) -> threading.Event:
        return self.started.setdefault((job, stage), threading.Event())

    def start(self, ctx: JobContext) -> Pending:
        job = ctx.spec.job_id
        self.event(job, "first").set()
        self.log.append((job, "first", None, threading.current_thread().name))
        self.before_first.get(job, lambda: None)()
        return Pending(job, self.devices)

    def finish(self, ctx: JobContext, pending: Pending, device: str | None = None) -> JobResult:
        job = pending.job
        self.event(job, "second").set()
        self.log.append((job, "second", device, threading.current_thread().name))
        self.before_second.get(job, lambda: None)()
        return JobResult(Path(f"/nowhere/{job}.glb"), {"device": device})


class Hooks:
    def __init__(self, tmp_path: Path, skip: set[str] = frozenset()):
        self.tmp_path, self.skip = tmp_path, skip
        self.outcomes: dict[str, JobResult | BackendError] = {}

    def begin(self, job):
        return None if job.job_id in self.skip else JobContext(job, self.tmp_path)

    def end(self, job, ctx, outcome):
        self.outcomes[job.job_id] = outcome


def specs(tmp_path: Path, image: Path, n: int):
    return [make_spec(image=str(image), output=str(tmp_path / f"j{i}.glb"), engine="preview", job_id=f"j{i}")
            for i in range(n)]


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "in.png"
    path.write_bytes(b"not read by the scripted runner")
    return path


def run_queue(runner, hooks, jobs, pipelined: bool) -> None:
    queue = JobQueue(runner, hooks, pipelined=pipelined)
    for job in jobs:
        queue.put(job)
    queue.close()
    worker = threading.Thread(target=queue.run)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "the queue did not drain"


def test_one_lane_runs_whole_jobs_in_order_on_the_calling_thread(tmp_path, image):
    runner, hooks = ScriptedRunner(), Hooks(tmp_path)
    queue = JobQueue(runner, hooks, pipelined=False)
    for job in specs(tmp_path, image, 3):
        queue.put(job)
    queue.close()
    queue.run()
    assert [(j, s) for j, s, _, _ in runner.log] == [("j0", "first"), ("j0", "second"), ("j1", "first"),
                                                      ("j1", "second"), ("j2", "first"), ("j2", "second")]
    assert {t for *_, t in runner.log} == {threading.current_thread().name}
    assert all(isinstance(o, JobResult) and o.metadata["device"] is None for o in hooks.outcomes.values())
    with pytest.raises(BackendError):
        queue.put(specs(tmp_path, image, 1)[0])  # closed


def test_geometry_of_the_next_job_overlaps_the_texture_of_the_previous(tmp_path, image):
    runner = ScriptedRunner(devices=("cuda:1",))  # no spare copy: the geometry lane never paints
    overlapped = {}
    runner.before_second["j0"] = lambda: overlapped.setdefault("j1", runner.event("j1", "first").wait(WAIT_S))
    hooks = Hooks(tmp_path)
    run_queue(runner, hooks, specs(tmp_path, image, 3), pipelined=True)
    assert overlapped["j1"], "job 1's geometry did not start while job 0 was being textured"
    seconds = [(j, d, t) for j, s, d, t in runner.log if s == "second"]
    assert all(d == "cuda:1" and t == "texture-lane" for _, d, t in seconds)
    assert {j for j, s, _, t in runner.log if s == "first"} == {"j0", "j1", "j2"}
    assert all(isinstance(o, JobResult) for o in hooks.outcomes.values()) and len(hooks.outcomes) == 3


def test_geometry_lane_paints_on_its_spare_copy_while_the_texture_lane_is_busy(tmp_path, image):
    runner = ScriptedRunner(devices=("cuda:1", "cuda:0"))
    stolen = {}
    # job 0's texture holds the texture lane until job 1's texture has started elsewhere
    runner.before_second["j0"] = lambda: stolen.setdefault("j1", runner.event("j1", "second").wait(WAIT_S))
    hooks = Hooks(tmp_path)
    run_queue(runner, hooks, specs(tmp_path, image, 2), pipelined=True)
    assert stolen["j1"]
    where = {j: (d, t) for j, s, d, t in runner.log if s == "second"}
    assert where["j0"] == ("cuda:1", "texture-lane")
    assert where["j1"][0] == "cuda:0" and where["j1"][1] != "texture-lane"
    assert hooks.outcomes["j1"].metadata["device"] == "cuda:0"


def test_the_texture_lane_is_preferred_when_it_is_free(tmp_path, image):
    runner = ScriptedRunner(devices=("cuda:1", "cuda:0"))
    hooks = Hooks(tmp_path)
    run_queue(runner, hooks, specs(tmp_path, image, 1), pipelined=True)
    assert [(d, t) for _, s, d, t in runner.log if s == "second"] == [("cuda:1", "texture-lane")]


def test_a_withdrawn_queued_job_never_runs(tmp_path, image):
    runner, hooks = ScriptedRunner(), Hooks(tmp_path)
    queue = JobQueue(runner, hooks, pipelined=True)
    jobs = specs(tmp_path, image, 2)
    for job in jobs:
        queue.put(job)
    assert queue.withdraw(jobs[1]) == "queued"
    queue.close()
    queue.run()
    assert {j for j, *_ in runner.log} == {"j0"} and set(hooks.outcomes) == {"j0"}
    assert queue.withdraw(jobs[0]) is None  # done


def test_a_job_withdrawn_between_its_stages_is_reported_cancelled(tmp_path, image):
    runner = ScriptedRunner(devices=("cuda:1",))
    release = threading.Event()
    runner.before_second["j0"] = lambda: release.wait(WAIT_S)  # holds the texture lane
    hooks = Hooks(tmp_path)
    queue = JobQueue(runner, hooks, pipelined=True)
    jobs = specs(tmp_path, image, 2)
    for job in jobs:
        queue.put(job)
    queue.close()
    worker = threading.Thread(target=queue.run)
    worker.start()
    assert runner.event("j1", "first").wait(WAIT_S)
    for _ in range(1000):  # until j1's first stage is over and the geometry lane waits for work
        with queue._cond:
            if not queue._first_stages_running and queue._between:
                break
        threading.Event().wait(0.01)
    threading.Event().wait(0.05)
    where = queue.withdraw(jobs[1])
    release.set()
    worker.join(WAIT_S)
    assert not worker.is_alive(), "the geometry lane kept waiting for the withdrawn job"
    assert where == "between"
    assert isinstance(hooks.outcomes["j1"], BackendError) and hooks.outcomes["j1"].code == "cancelled"
    assert ("j1", "second") not in {(j, s) for j, s, _, _ in runner.log}
    assert isinstance(hooks.outcomes["j0"], JobResult)


def test_a_failing_stage_is_reported_and_the_lanes_go_on(tmp_path, image):
    runner = ScriptedRunner(devices=("cuda:1",))

    def boom():
        raise BackendError("out_of_memory", "the GPU ran out of memory")

    runner.before_first["j0"] = boom
    runner.before_second["j1"] = boom
    hooks = Hooks(tmp_path, skip={"j3"})
    run_queue(runner, hooks, specs(tmp_path, image, 4), pipelined=True)
    assert hooks.outcomes["j0"].code == "out_of_memory" and hooks.outcomes["j1"].code == "out_of_memory"
    assert isinstance(hooks.outcomes["j2"], JobResult)
    assert "j3" not in hooks.outcomes  # skipped by begin (cancelled while queued)
