"""The HTTP API on Ray Serve: a real `python -m backend serve --http ... --cluster ray:ADDRESS`
process on 127.0.0.1 joins the test's local Ray instance and runs its jobs on an engine replica
(preview, CPU). A job comes back as a downloadable GLB with the protocol's events, a queued and a
running job are cancelled, and a job past `--max-jobs` gets 429 with Retry-After."""
from __future__ import annotations

import io
import json

import httpx
import pytest
import trimesh
from PIL import Image

from tests.backend.synth import striped_ellipse
from tests.http.conftest import ServerProcess, events, submit

pytest.importorskip("ray.serve")

SETTINGS = {"face_count": 1500, "texture": True, "texture_resolution": 512}  # seconds on one CPU: cancellable


@pytest.fixture(scope="module")
def server(ray_address, tmp_path_factory):
    png = tmp_path_factory.mktemp("img") / "ellipse.png"
    Image.fromarray(striped_ellipse(96)[0]).save(png)
    s = ServerProcess(tmp_path_factory.mktemp("data"), "--no-web", "--max-jobs", "2",
                      "--cluster", f"ray:{ray_address}")
    yield s, png
    s.kill()


def _wait_running(stream) -> None:
    for line in stream:
        if line.startswith("data:"):
            event = json.loads(line[5:])
            if event["event"] == "progress":
                assert event["stage"] == "cluster" and event["step"] == 0  # handed to a replica
                return
    raise AssertionError("the job ended before it ran")


def test_http_jobs_on_serve_replicas(server):
    s, png = server
    with httpx.Client(base_url=s.url, timeout=60) as client:
        first = submit(client, png, token=None, settings=SETTINGS).json()["job"]
        second = submit(client, png, token=None, settings=SETTINGS).json()["job"]
        full = submit(client, png, token=None, settings=SETTINGS)  # one running, one queued: --max-jobs 2
        assert full.status_code == 429 and full.json()["error"]["code"] == "queue_full"
        assert int(full.headers["retry-after"]) >= 1
        # the queued job is cancelled in the front door's queue and never reaches a replica
        assert client.delete(f"/v1/jobs/{second}").json()["state"] == "cancelled"
        assert [e["event"] for e in events(client, second, token=None)] == ["accepted", "error"]

        # the running job goes to its end on the replica: a GLB in the server's result store
        done = events(client, first, token=None)
        kinds = [e["event"] for e in done]
        assert kinds[:2] == ["accepted", "progress"] and kinds[-1] == "done" and set(kinds[2:-1]) == {"progress"}
        stages = [e["stage"] for e in done if e["event"] == "progress"]
        assert stages[0] == stages[-1] == "cluster" and {"geometry", "bake"} <= set(stages), stages  # relayed
        assert done[-1]["metadata"]["engine"] == "preview"
        glb = client.get(f"/v1/jobs/{first}/result")
        assert glb.status_code == 200
        mesh = trimesh.load(io.BytesIO(glb.content), file_type="glb", force="mesh")
        assert len(mesh.faces) == 1500

        # a running job is cancelled on the replica at its next step
        third = submit(client, png, token=None, settings=SETTINGS).json()["job"]
        with client.stream("GET", f"/v1/jobs/{third}/events", timeout=300) as stream:
            lines = stream.iter_lines()
            _wait_running(lines)
            r = client.delete(f"/v1/jobs/{third}")
            assert r.status_code == 202 and r.json()["state"] in ("cancelling", "cancelled")
            rest = [json.loads(line[5:]) for line in lines if line.startswith("data:")]
        assert rest[-1]["event"] == "error" and rest[-1]["code"] == "cancelled", rest
        assert client.get(f"/v1/jobs/{third}").json()["state"] == "cancelled"


def test_a_mesh_upload_is_textured_on_a_replica(server, assets):
    s, png = server
    duck = assets / "meshes" / "Duck.glb"
    with httpx.Client(base_url=s.url, timeout=60) as client:
        r = client.post("/v1/jobs", files={"image": (png.name, png.read_bytes(), "image/png"),
                                           "mesh": ("Duck.glb", duck.read_bytes(), "model/gltf-binary")},
                        data={"settings": json.dumps({"texture_resolution": 256})})
        assert r.status_code == 202, r.text
        job = r.json()["job"]
        assert events(client, job, token=None)[-1]["event"] == "done"
        glb = client.get(f"/v1/jobs/{job}/result")
    mesh = trimesh.load(io.BytesIO(glb.content), file_type="glb", force="mesh")
    assert len(mesh.faces) == len(trimesh.load(duck, force="mesh").faces)  # the given mesh, kept
