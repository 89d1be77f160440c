"""The Ray Serve replica's body without Ray (backend/serving.py keeps it free of Serve): a job with a
given mesh is textured on the replica, the mesh kept as it is (the preview engine keeps its faces),
and a request's file names never reach outside the replica's scratch folder."""
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


def _glb_faces(data: bytes) -> int:
    return len(trimesh.load(io.BytesIO(data), file_type="glb", force="mesh").faces)


def test_a_given_mesh_is_textured_on_the_replica(assets):
    mesh = (assets / "meshes" / "Duck.glb").read_bytes()
    want = len(trimesh.load(assets / "meshes" / "Duck.glb", force="mesh").faces)
    replica = EngineReplica({"plan": "cpu"})
    answer = asyncio.run(replica(GenerateRequest(_png(), engine="preview", settings=SETTINGS, job_id="m1",
                                                 mesh=mesh, mesh_name="../../Duck.glb")))
    assert answer["ok"], answer
    assert _glb_faces(answer["glb"]) == want == answer["metadata"]["faces"]
    assert "face_count" in answer["metadata"]["ignored_settings"]  # a given mesh keeps its faces

    odd = asyncio.run(replica(GenerateRequest(_png(), image_name="..", engine="preview", settings=SETTINGS,
                                              job_id="m2", mesh=b"not a mesh", mesh_name="x.obj")))
    assert not odd["ok"] and odd["code"] == "input_unreadable"  # refused as a mesh, not a crash


class _Answered:
    def __init__(self, answer):
        self.answer = answer

    def result(self, timeout_s):
        return self.answer


class _Engines:
    """Records what the runner sends, answers like a replica."""

    def __init__(self):
        self.sent = []

    def submit(self, request):
        self.sent.append(request)
        return _Answered({"ok": True, "glb": b"glTF", "metadata": {}, "replica_pid": 1})

    @staticmethod
    def is_full(exc):
        return False


def test_the_front_door_sends_the_mesh_with_the_image(tmp_path, assets):
    image = tmp_path / "ellipse.png"
    image.write_bytes(_png())
    spec = make_spec(image=str(image), mesh=str(assets / "meshes" / "Duck.glb"), output=str(tmp_path / "o.glb"),
                     engine="preview", settings=SETTINGS, job_id="m3")
    engines = _Engines()
    result = ServeRunner(engines).start(JobContext(spec=spec, work_dir=tmp_path)).result
    (sent,) = engines.sent
    assert sent.mesh == (assets / "meshes" / "Duck.glb").read_bytes() and sent.mesh_name == "Duck.glb"
    assert sent.image == image.read_bytes() and result.path.read_bytes() == b"glTF"
    assert np.array_equal(np.frombuffer(sent.image[:8], np.uint8), np.frombuffer(b"\x89PNG\r\n\x1a\n", np.uint8))
