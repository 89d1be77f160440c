from addon.core import jobs
from addon.core.jobs import Job, JobRequest
from addon.shared import protocol


def ev(name, **fields):
    return protocol.decode_event(protocol.event(name, **fields))


def make_job(**kw):
    return Job(JobRequest(job_id="j1", output="/tmp/j1.glb", settings={"seed": 1}, image="/tmp/a.png", **kw))


def test_request_line_is_a_valid_generate():
    job = make_job(label="Duck")
    msg = protocol.decode_request(job.request.line())
    assert msg.kind == "generate"
    assert msg.fields == {"job": "j1", "image": "/tmp/a.png", "output": "/tmp/j1.glb", "engine": "auto",
                          "settings": {"seed": 1}}


def test_happy_path_with_preview_then_result():
    job = make_job()
    job.sent()
    assert job.state == jobs.SUBMITTED
    assert job.apply(ev("accepted", job="j1", engine="preview", queue_position=2)) is None
    assert job.state == jobs.QUEUED and job.describe() == "Queued (2 ahead)"
    job.apply(ev("progress", job="j1", stage="geometry", step=5, total=20))
    assert job.state == jobs.RUNNING and job.fraction == 0.25 and job.describe() == "Geometry 5/20"
    out = job.apply(ev("artifact", job="j1", kind="mesh", paths=["/o/a.mesh.glb"]))
    assert out.kind == jobs.PREVIEW and out.path == "/o/a.mesh.glb"
    assert job.apply(ev("artifact", job="j1", kind="views", paths=["/o/v0.png"])) is None
    out = job.apply(ev("done", job="j1", path="/o/a.glb", metadata={"seed": 1}, seconds=2.5))
    assert out.kind == jobs.FINISHED and out.path == "/o/a.glb" and job.seconds == 2.5
    assert not job.active and job.metadata == {"seed": 1}


def test_events_after_the_end_change_nothing():
    job = make_job()
    job.sent()
    job.apply(ev("error", job="j1", code="out_of_memory", message="CUDA OOM"))
    assert job.state == jobs.FAILED and job.error_code == "out_of_memory"
    assert job.apply(ev("progress", job="j1", stage="texture", step=1, total=2)) is None
    assert job.apply(ev("done", job="j1", path="/o/a.glb", metadata={}, seconds=1)) is None
    assert job.state == jobs.FAILED and job.stage == ""


def test_cancel_wins_over_a_crossing_done():
    job = make_job()
    job.sent()
    job.apply(ev("progress", job="j1", stage="geometry", step=1, total=4))
    assert job.request_cancel() is None and job.state == jobs.CANCELLING
    job.apply(ev("progress", job="j1", stage="geometry", step=2, total=4))
    assert job.state == jobs.CANCELLING  # a late progress does not un-cancel
    assert job.apply(ev("artifact", job="j1", kind="mesh", paths=["/o/m.glb"])) is None  # no preview either
    out = job.apply(ev("done", job="j1", path="/o/a.glb", metadata={}, seconds=1))
    assert out.kind == jobs.WITHDRAWN and job.state == jobs.CANCELLED


def test_cancel_of_an_unsent_job_ends_it_at_once():
    job = make_job()
    out = job.request_cancel()
    assert out.kind == jobs.WITHDRAWN and job.state == jobs.CANCELLED
    assert job.request_cancel() is None


def test_backend_cancelled_error_is_a_withdrawal_not_a_failure():
    job = make_job()
    job.sent()
    job.request_cancel()
    out = job.apply(ev("error", job="j1", code="cancelled", message="job j1 was cancelled"))
    assert out.kind == jobs.WITHDRAWN and job.error_code == ""


def test_fail_while_cancelling_counts_as_cancelled_and_requeue_resets():
    job = make_job()
    job.sent()
    job.apply(ev("progress", job="j1", stage="geometry", step=3, total=4))
    job.requeue()
    assert job.state == jobs.WAITING and job.step == 0 and job.stage == ""
    job.sent()
    job.request_cancel()
    assert job.fail("backend_unavailable", "gone").kind == jobs.WITHDRAWN
    assert job.fail("backend_unavailable", "gone") is None
