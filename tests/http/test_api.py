"""The HTTP API v1 through a real uvicorn process and a real HTTP client (httpx), preview engine."""
from __future__ import annotations

import io
import json
import threading

import httpx
import pytest
from PIL import Image

from .conftest import SMALL, TOKEN_A, TOKEN_B, ServerProcess, auth, events, submit


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = ServerProcess(tmp_path_factory.mktemp("data"), "--no-web", "--max-image-mb", "0.25", "--max-mesh-mb", "0.25",
                      "--max-jobs", "24", tokens=(TOKEN_A, TOKEN_B))
    yield s
    s.kill()


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def test_health_info_auth_openapi(client):
    health = client.get("/v1/health")
    assert health.status_code == 200 and health.json()["status"] == "ok" and health.json()["protocol"] == 1
    for headers in ({}, auth("wrong-token-" + "x" * 20), {"Authorization": TOKEN_A}):
        r = client.get("/v1/info", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
    assert client.get("/v1/info", params={"token": TOKEN_A}).status_code == 401  # never from the URL
    info = client.get("/v1/info", headers=auth(TOKEN_A)).json()
    assert info["engines"] == ["preview", "step1x3d"] and info["gpus"] == [] and "face_count" in info["settings"]
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/health", "/v1/info", "/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/events",
            "/v1/jobs/{job_id}/result", "/v1/jobs/{job_id}/artifacts/{name}"} <= set(paths)
    assert set(paths["/v1/jobs/{job_id}"]) == {"get", "delete"}


def test_job_end_to_end(client, png):
    r = submit(client, png, settings={**SMALL, "seed": 7})
    assert r.status_code == 202, r.text
    job = r.json()["job"]
    assert r.json()["position"] >= 0
    seen = events(client, job)
    kinds = [e["event"] for e in seen]
    assert kinds[0] == "accepted" and kinds[-1] == "done" and kinds.count("done") == 1
    assert set(kinds[1:-1]) == {"progress"} and all(e["job"] == job for e in seen)
    steps = [e["step"] / e["total"] for e in seen if e["event"] == "progress"]
    assert steps == sorted(steps) and steps[-1] == 1.0
    done = seen[-1]
    assert done["path"] == f"/v1/jobs/{job}/result" and done["metadata"]["engine"] == "preview"

    state = client.get(f"/v1/jobs/{job}", headers=auth(TOKEN_A)).json()
    assert state["state"] == "done" and state["error"] is None and state["step"] == state["total"]
    assert state["metadata"]["ignored_settings"]["seed"] == 7 and "seed" not in state["metadata"]["settings"]
    glb = client.get(done["path"], headers=auth(TOKEN_A))
    assert glb.status_code == 200 and glb.headers["content-type"] == "model/gltf-binary"
    assert glb.content[:4] == b"glTF" and len(glb.content) > 1000
    # the stream replays from the start, or after Last-Event-ID
    again = events(client, job)
    assert again == seen

    # another token cannot see, stream, download or cancel it
    for method, path in (("GET", f"/v1/jobs/{job}"), ("GET", f"/v1/jobs/{job}/events"),
                         ("GET", f"/v1/jobs/{job}/result"), ("DELETE", f"/v1/jobs/{job}")):
        r = client.request(method, path, headers=auth(TOKEN_B))
        assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found"
    mine = {j["job"] for j in client.get("/v1/jobs", headers=auth(TOKEN_A)).json()["jobs"]}
    theirs = {j["job"] for j in client.get("/v1/jobs", headers=auth(TOKEN_B)).json()["jobs"]}
    assert job in mine and job not in theirs
    # a finished job cannot be cancelled; an unknown one is not found
    assert client.delete(f"/v1/jobs/{job}", headers=auth(TOKEN_A)).status_code == 400
    assert client.get("/v1/jobs/0123456789abcdef", headers=auth(TOKEN_A)).status_code == 404
    assert client.get(f"/v1/jobs/{job}/artifacts/..%2Frecord.json", headers=auth(TOKEN_A)).status_code == 404


def _png_bytes(size: int, colour=(255, 255, 255)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(out, format="PNG")
    return out.getvalue()


def test_bad_requests(client, png, tmp_path):
    def post(files, settings="{}", headers=None):
        return client.post("/v1/jobs", files=files, data={"settings": settings},
                           headers=auth(TOKEN_A) if headers is None else headers)

    ok = png.read_bytes()
    cases = [
        (post({"image": ("e.png", ok)}, headers={}), 401, "unauthorized"),
        (post({"image": ("big.png", b"\x89PNG" + bytes(300 * 1024))}), 413, "input_too_large"),
        (post({"image": ("e.txt", ok)}), 415, "input_unreadable"),
        (post({"image": ("fake.png", b"this is not an image")}), 415, "input_unreadable"),
        (post({"mesh": ("m.obj", b"v 0 0 0\n")}), 415, "input_unreadable"),
        (post({"image": ("e.png", ok)}, json.dumps({"face_count": -5})), 422, "invalid_setting"),
        (post({"image": ("e.png", ok)}, json.dumps({"no_such_setting": 1})), 422, "invalid_setting"),
        (post({"image": ("blank.png", _png_bytes(64))}), 422, "empty_foreground"),
        (post({"image": ("e.png", ok)}, "{not json"), 400, "invalid_request"),
        (post({"settings": (None, "{}")}), 400, "invalid_request"),
    ]
    for response, status, code in cases:
        assert (response.status_code, response.json()["error"]["code"]) == (status, code), response.text
    # a body over the total limit is refused from its Content-Length, before it is read
    big = client.post("/v1/jobs", content=b"x" * (2 << 20), headers={**auth(TOKEN_A), "Content-Type": "multipart/form-data; boundary=x"})
    assert big.status_code == 413 and big.json()["error"]["code"] == "input_too_large"
    # and a chunked one (no Content-Length) as it arrives
    def chunks():
        yield b'--y\r\nContent-Disposition: form-data; name="image"; filename="e.png"\r\n\r\n'
        for _ in range(40):
            yield b"y" * (64 << 10)
    chunked = client.post("/v1/jobs", content=chunks(), headers={**auth(TOKEN_A), "Content-Type": "multipart/form-data; boundary=y"})
    assert chunked.status_code == 413
    # refused uploads leave no job behind
    assert client.get("/v1/jobs", headers=auth(TOKEN_A)).json()["jobs"] == [
        j for j in client.get("/v1/jobs", headers=auth(TOKEN_A)).json()["jobs"] if j["state"] != "queued"]
    assert client.get("/v1/health").json()["queued"] == 0


def test_cancel_queued_and_running(client, png):
    first = submit(client, png).json()["job"]
    second = submit(client, png).json()["job"]
    r = client.delete(f"/v1/jobs/{second}", headers=auth(TOKEN_A))
    assert r.status_code == 202 and r.json()["state"] == "cancelled"
    tail = events(client, second)
    assert [e["event"] for e in tail] == ["accepted", "error"] and tail[-1]["code"] == "cancelled"
    assert client.get(f"/v1/jobs/{second}", headers=auth(TOKEN_A)).json()["state"] == "cancelled"

    with client.stream("GET", f"/v1/jobs/{first}/events", headers=auth(TOKEN_A), timeout=300) as stream:
        lines = stream.iter_lines()
        for line in lines:  # wait until it runs
            if line.startswith("data:") and json.loads(line[5:])["event"] == "progress":
                break
        r = client.delete(f"/v1/jobs/{first}", headers=auth(TOKEN_A))
        assert r.status_code == 202 and r.json()["state"] in ("cancelling", "cancelled")
        rest = [json.loads(line[5:]) for line in lines if line.startswith("data:")]
    assert rest[-1]["event"] == "error" and rest[-1]["code"] == "cancelled"
    state = client.get(f"/v1/jobs/{first}", headers=auth(TOKEN_A)).json()
    assert state["state"] == "cancelled" and state["result"] is None
    assert client.get(f"/v1/jobs/{first}/result", headers=auth(TOKEN_A)).status_code == 400


def test_twenty_concurrent_clients(server, png):
    """20 clients submit at once (two tokens); the first job runs, the rest are cancelled while
    queued. Every client sees its own job exactly once, with one ending, and nothing else."""
    barrier = threading.Barrier(20)
    results: dict[int, dict] = {}

    def client_run(i: int) -> None:
        token = TOKEN_A if i % 2 else TOKEN_B
        with httpx.Client(base_url=server.url, timeout=300) as c:
            barrier.wait()
            r = submit(c, png, token=token, settings={**SMALL, "seed": i})
            job, position = r.json()["job"], r.json()["position"]
            if position >= 1:
                c.delete(f"/v1/jobs/{job}", headers=auth(token))
            seen = events(c, job, token)
            results[i] = {"job": job, "token": token, "events": seen, "status": r.status_code,
                          "glb": c.get(f"/v1/jobs/{job}/result", headers=auth(token)).content[:4]}

    threads = [threading.Thread(target=client_run, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert len(results) == 20 and all(r["status"] == 202 for r in results.values())
    ids = [r["job"] for r in results.values()]
    assert len(set(ids)) == 20
    done = 0
    for r in results.values():
        kinds = [e["event"] for e in r["events"]]
        assert kinds[0] == "accepted" and kinds.count("accepted") == 1
        assert sum(k in ("done", "error") for k in kinds) == 1 and kinds[-1] in ("done", "error")
        assert {e["job"] for e in r["events"]} == {r["job"]}
        if kinds[-1] == "done":
            done += 1
            assert r["glb"] == b"glTF"
        else:
            assert r["events"][-1]["code"] == "cancelled"
    assert done >= 1
    with httpx.Client(base_url=server.url) as c:
        for token in (TOKEN_A, TOKEN_B):
            listed = {j["job"] for j in c.get("/v1/jobs", headers=auth(token)).json()["jobs"]}
            assert {r["job"] for r in results.values() if r["token"] == token} <= listed
            assert not listed & {r["job"] for r in results.values() if r["token"] != token}
