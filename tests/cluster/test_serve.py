"""Serving many artists: two preview-engine replicas under a local Ray instance (CPU). Two jobs
run at once on different replicas, a third waits in the bounded queue, a fourth is refused at
once (back-pressure: the HTTP layer's 429), a running job is cancelled at its next step and a
queued one never runs."""
from __future__ import annotations

import io
import uuid

import pytest
import trimesh

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")


@pytest.fixture(scope="module")
def engines():
    from backend.serving import start
    from shared.raypool import connect

    connect(None, num_cpus=2)
    yield start(num_replicas=2, max_queued=1)
    serve.shutdown()
    ray.shutdown()


def _png() -> bytes:
    from PIL import Image

    from tests.backend.synth import striped_ellipse

    buf = io.BytesIO()
    Image.fromarray(striped_ellipse(96)[0]).save(buf, format="PNG")
    return buf.getvalue()


def test_two_replicas_queue_limit_and_cancel(engines):
    from ray.serve.exceptions import RequestCancelledError

    from backend.serving import GenerateRequest

    image = _png()
    ids = [uuid.uuid4().hex[:8] for _ in range(4)]
    settings = {"face_count": 1500, "texture": False}
    calls = []
    for i, job_id in enumerate(ids):
        calls.append(engines.stream(GenerateRequest(image, engine="preview", settings=settings, job_id=job_id)))
        if i < 2:
            assert "progress" in next(calls[-1])  # a replica has taken the job: its first progress item
    with pytest.raises(Exception) as refused:  # two running, one queued: the fourth is turned away
        next(calls[3])
    assert engines.is_full(refused.value)
    calls[2].cancel()  # queued: never runs
    calls[0].cancel()  # running: stops at its next step
    first = list(calls[1])[-1]
    with pytest.raises(RequestCancelledError):
        list(calls[0])
    assert first["ok"] and first["job_id"] == ids[1]
    assert len(trimesh.load(io.BytesIO(first["glb"]), file_type="glb", force="mesh").faces) == 1500
    seen: dict[int, dict] = {}
    for _ in range(40):  # calls land on either replica: ask until both answered
        pid, finished = engines.handle.outcomes.remote().result(timeout_s=60)
        seen[pid] = finished
        if len(seen) == 2 and ids[0] in {k for f in seen.values() for k in f}:
            break
    assert len(seen) == 2  # two replicas
    outcomes = {k: v for f in seen.values() for k, v in f.items()}
    assert outcomes[ids[1]] == "ok"
    assert outcomes[ids[0]] == "cancelled"
    assert ids[2] not in outcomes and ids[3] not in outcomes
    assert [pid for pid, f in seen.items() if ids[1] in f] != [pid for pid, f in seen.items() if ids[0] in f]


def test_a_second_front_door_shares_the_running_replicas(engines):
    """Deploying the app again would restart its replicas, killing the first server's jobs."""
    from backend.serving import start

    def pids(e) -> set[int]:
        seen: set[int] = set()
        for _ in range(40):  # calls land on either replica: ask until both answered
            seen.add(e.handle.outcomes.remote().result(timeout_s=60)[0])
            if len(seen) == 2:
                break
        return seen

    before = pids(engines)
    again = start(num_replicas=1, max_queued=1)  # asks for other options: the running app wins
    assert again.replicas == 2 and len(before) == 2 and pids(again) == before
