"""The Ray Serve replica's body without Ray (backend/serving.py keeps it free of Serve): it streams
the job's progress, then its answer; a given mesh is textured on the replica and kept as it is (the
preview engine keeps its faces); a request's file names stay inside the replica's scratch folder."""
from __future__ import annotations

import asyncio
import io

import numpy as np
import trimesh
from PIL import Image

from backend.serving import EngineReplica, GenerateRequest, ServeRunner
from backend.context import JobContext
from backend.jobs import make_spec

from .synth import striped_ellipse

SETTINGS = {"texture_resolution": 256}


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(striped_ellipse(96)[0]).save(buf, format="PNG")
    return buf.getvalue()


def _answer(replica: EngineReplica, request: GenerateRequest) -> dict:
    """The last item of the replica's stream: the job's answer."""
    async def last():
        return [item async for item in replica.stream(request)][-1]

    return asyncio.run(last())


def _glb_faces(data: bytes) -> int:
    return len(trimesh.load(io.BytesIO(data), file_type="glb", force="mesh").faces)


def test_the_replica_streams_its_progress_then_its_answer():
    async def collect():
        return [item async for item in EngineReplica({"plan": "cpu"}).stream(
            GenerateRequest(_png(), engine="preview", settings=SETTINGS, job_id="s1"))]

    items = asyncio.run(collect())
    stages = [item["progress"][0] for item in items[:-1]]
    assert stages[0] == "preprocess" and {"geometry", "bake", "export"} <= set(stages)
    assert items[-1]["ok"] and _glb_faces(items[-1]["glb"]) > 100


def test_a_given_mesh_is_textured_on_the_replica(assets):
    mesh = (assets / "meshes" / "Duck.glb").read_bytes()
    want = len(trimesh.load(assets / "meshes" / "Duck.glb", force="mesh").faces)
    replica = EngineReplica({"plan": "cpu"})
    answer = _answer(replica, GenerateRequest(_png(), engine="preview", settings=SETTINGS, job_id="m1",
                                              mesh=mesh, mesh_name="../../Duck.glb"))
    assert answer["ok"], answer
    assert _glb_faces(answer["glb"]) == want == answer["metadata"]["faces"]
    assert "face_count" in answer["metadata"]["ignored_settings"]  # a given mesh keeps its faces

    odd = _answer(replica, GenerateRequest(_png(), image_name="..", engine="preview", settings=SETTINGS,
                                           job_id="m2", mesh=b"not a mesh", mesh_name="x.obj"))
    assert not odd["ok"] and odd["code"] == "input_unreadable"  # refused as a mesh, not a crash


class _Engines:
    """Records what the runner sends; answers like a replica's stream (two progress items, then
    the answer)."""

    def __init__(self):
        self.sent = []

    def stream(self, request):
        self.sent.append(request)
        return _Stream([{"progress": ["geometry", 1, 2, "half"]}, {"progress": ["bake", 2, 2, ""]},
                        {"ok": True, "glb": b"glTF", "metadata": {}, "replica_pid": 1}])

    @staticmethod
    def is_full(exc):
        return False


class _Stream(list):
    def cancel(self):
        raise AssertionError("nothing cancelled this job")


def test_the_front_door_sends_the_mesh_with_the_image_and_relays_progress(tmp_path, assets):
    image = tmp_path / "ellipse.png"
    image.write_bytes(_png())
    spec = make_spec(image=str(image), mesh=str(assets / "meshes" / "Duck.glb"), output=str(tmp_path / "o.glb"),
                     engine="preview", settings=SETTINGS, job_id="m3")
    engines, seen = _Engines(), []
    ctx = JobContext(spec=spec, work_dir=tmp_path, on_progress=lambda *event: seen.append(event[:3]))
    result = ServeRunner(engines).start(ctx).result
    assert seen == [("cluster", 0, 1), ("geometry", 1, 2), ("bake", 2, 2), ("cluster", 1, 1)]  # relayed
    (sent,) = engines.sent
    assert sent.mesh == (assets / "meshes" / "Duck.glb").read_bytes() and sent.mesh_name == "Duck.glb"
    assert sent.image == image.read_bytes() and result.path.read_bytes() == b"glTF"
    assert np.array_equal(np.frombuffer(sent.image[:8], np.uint8), np.frombuffer(b"\x89PNG\r\n\x1a\n", np.uint8))


def test_a_caller_that_stops_reading_cancels_the_job_before_its_files_go():
    replica = EngineReplica({"plan": "cpu"})

    async def read_one_then_leave():
        stream = replica.stream(GenerateRequest(_png(), engine="preview", settings=SETTINGS, job_id="gone"))
        first = await stream.__anext__()
        await stream.aclose()  # returns once the job has let go of its scratch folder
        return first

    first = asyncio.run(read_one_then_leave())
    assert first["progress"][0] == "preprocess"
    assert replica.finished == {"gone": "cancelled"}  # stopped at its next step, not left running
