"""The step1x3d engine end to end on the CPU plan with tiny weights in the official layouts."""
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from backend.context import JobContext
from backend.engines.step1x3d import Step1X3DEngine
from backend.job_queue import JobQueue
from backend.jobs import JobRunner, make_spec
from backend.runtime.plan import DevicePlan
from shared.errors import BackendError
from tests.backend.glb import load_textured
from tests.backend.synth import striped_ellipse
from tests.geometry.tiny import MOVED, make_blob_field, mesh_gap, tiny_components, write_release_folder
from tests.texture.tiny_weights import write_tiny_weights

FAST = {"model": "base", "geometry_steps": 2, "octree_resolution": 64, "face_count": 1500, "texture_steps": 2,
        "view_resolution": 64, "texture_resolution": 256}


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("weights")
    parts = tiny_components(label=False)
    make_blob_field(parts["vae"])
    write_release_folder(root / "Step1X-3D", parts, "Step1X-3D-Geometry-1300m")
    tiny = write_tiny_weights(root)
    tiny.base.rename(root / "stable-diffusion-xl-base-1.0")  # the layout `find_weights` reads
    return root


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    rgb, fg = striped_ellipse(96)
    path = tmp_path_factory.mktemp("img") / "ellipse.png"
    Image.fromarray(np.dstack([rgb, fg * 255]).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def other_image(tmp_path_factory) -> Path:
    rgb, fg = striped_ellipse(96)
    rgb, fg = np.ascontiguousarray(rgb.transpose(1, 0, 2)[:, :, ::-1]), fg.T  # upright, other colours
    path = tmp_path_factory.mktemp("img") / "upright.png"
    Image.fromarray(np.dstack([rgb, fg * 255]).astype(np.uint8)).save(path)
    return path


@pytest.fixture(autouse=True)
def one_thread(single_thread_torch):
    """Every test here on one torch thread (tests/conftest.py says why)."""


def run_job(engine, tmp_path, name, image, mesh=None, **settings):
    spec = make_spec(image=str(image), mesh=mesh, output=str(tmp_path / f"{name}.glb"), engine="step1x3d",
                     settings={**FAST, **settings})
    events = []
    ctx = JobContext(spec, tmp_path, on_progress=lambda st, i, n, m: events.append(("progress", st)),
                     on_artifact=lambda kind, paths: events.append((kind, paths)))
    return engine.run(ctx), events


class SinglePlanEngine(Step1X3DEngine):
    """The single-GPU plan's offload logic, exercised on the CPU."""

    def __init__(self, weights, offload):
        super().__init__(weights)
        self.offload = offload

    def plan_for(self, settings):
        return DevicePlan("single", "cpu", "cpu", self.offload)


def test_image_to_textured_glb_with_artifacts(weights, image, tmp_path, monkeypatch):
    from backend.geometry.pipeline import GeometryPipeline
    from backend.texture.mv_pipeline import MultiViewPipeline

    # the texture models load on their own thread while the geometry stage runs: the geometry call
    # waits (bounded) for that load to begin, which never happens if the load only follows it
    loading, seen = threading.Event(), {}
    load, call = MultiViewPipeline.load, GeometryPipeline.__call__

    def texture_load(**kw):
        seen["thread"] = threading.current_thread().name
        loading.set()
        return load(**kw)

    def geometry_call(self, *a):
        seen["overlapped"] = loading.wait(60)
        return call(self, *a)

    monkeypatch.setattr(MultiViewPipeline, "load", staticmethod(texture_load))
    monkeypatch.setattr(GeometryPipeline, "__call__", geometry_call)
    engine = Step1X3DEngine(str(weights), plan="cpu")
    try:
        result, events = run_job(engine, tmp_path, "a", image)
    finally:
        engine.close()
    assert seen == {"thread": "load-texture", "overlapped": True}
    kinds = [e[0] for e in events]
    stages = {e[1] for e in events if e[0] == "progress"}
    assert {"geometry", "texture", "bake"} <= stages
    assert kinds.index("mesh") < kinds.index("views")
    mesh_glb = Path(dict((k, v) for k, v in events if k != "progress")["mesh"][0])
    assert mesh_glb.is_file() and mesh_glb.name == "a.geometry.glb"
    views = dict((k, v) for k, v in events if k != "progress")["views"]
    assert len(views) == 6 and all(Path(p).is_file() for p in views)
    mesh, texture = load_textured(result.path)
    assert texture is not None and texture.shape == (256, 256, 3) and 0 < len(mesh.faces) <= 1500
    assert result.metadata["engine"] == "step1x3d" and result.metadata["plan"] == "cpu"


def test_offload_and_reload_give_identical_outputs(weights, image, tmp_path):
    resident = Step1X3DEngine(str(weights), plan="cpu")
    released = SinglePlanEngine(str(weights), offload="release")
    try:
        out = {}
        for name, engine in (("resident", resident), ("released", released)):
            for job in range(2):
                result, _ = run_job(engine, tmp_path, f"{name}{job}", image, seed=5)
                out[name, job] = load_textured(result.path)
        assert resident.cache.loads == 2  # geometry + texture, once
        assert released.cache.loads == 4  # each stage dropped the other's models: reloaded every job
    finally:
        resident.close()
        released.close()
    ref_mesh, ref_tex = out["resident", 0]
    for key, (mesh, tex) in out.items():
        np.testing.assert_array_equal(mesh.vertices, ref_mesh.vertices, err_msg=str(key))
        np.testing.assert_array_equal(mesh.faces, ref_mesh.faces, err_msg=str(key))
        np.testing.assert_array_equal(tex, ref_tex, err_msg=str(key))


class PipelinedCpuEngine(Step1X3DEngine):
    """The multi plan's two-lane flow with both "GPUs" being the CPU."""

    def plan_for(self, settings):
        return DevicePlan("multi", "cpu", "cpu", "none")


class CollectingHooks:
    def __init__(self, tmp_path):
        self.tmp_path, self.outcomes, self.threads = tmp_path, {}, {}

    def begin(self, spec):
        def progress(stage, step, total, message):
            self.threads.setdefault((spec.job_id, stage), threading.current_thread().name)

        return JobContext(spec, self.tmp_path, on_progress=progress)

    def end(self, spec, ctx, outcome):
        self.outcomes[spec.job_id] = outcome


def test_pipelined_lanes_give_the_same_assets_as_one_lane(weights, image, other_image, tmp_path):
    """Geometry of one job and texture of another run at once on two threads (pymeshlab and
    xatlas in worker processes); every asset equals the one-lane run's: meshes bit for bit,
    textures up to one 8-bit step on a few texels (the lane thread has its own CPU thread pool,
    so float sums are ordered differently). The three jobs differ in seed or image, and so do
    their meshes: equal meshes could not come from a pipeline that ignored both."""
    jobs = [(image, 0), (image, 1), (other_image, 0)]
    assets = {}
    for lanes in ("one", "two"):
        runner = JobRunner(weights=str(weights), plan="cpu")
        runner._engines["step1x3d"] = PipelinedCpuEngine(str(weights), plan="cpu")
        hooks = CollectingHooks(tmp_path)
        queue = JobQueue(runner, hooks, pipelined=lanes == "two")
        for i, (picture, seed) in enumerate(jobs):
            queue.put(make_spec(image=str(picture), output=str(tmp_path / f"{lanes}{i}.glb"), engine="step1x3d",
                                settings={**FAST, "seed": seed, "lod_levels": 1}, job_id=f"{lanes}{i}"))
        queue.close()
        queue.run()
        runner.close()
        for i in range(3):
            outcome = hooks.outcomes[f"{lanes}{i}"]
            assert not isinstance(outcome, BackendError), outcome
            assets[lanes, i] = load_textured(outcome.path)
        if lanes == "two":
            assert {hooks.threads[f"two{i}", "texture"] for i in range(3)} == {"texture-lane"}
            assert {hooks.threads[f"two{i}", "geometry"] for i in range(3)} == {threading.current_thread().name}
    for i in range(3):
        (m1, t1), (m2, t2) = assets["one", i], assets["two", i]
        np.testing.assert_array_equal(m1.vertices, m2.vertices)
        np.testing.assert_array_equal(m1.faces, m2.faces)
        diff = np.abs(t1.astype(np.float64) - t2)
        assert diff.max() <= 1.5 / 255 and (diff > 0).mean() < 1e-3
    meshes = [assets["one", i][0].vertices for i in range(3)]
    assert mesh_gap(meshes[0], meshes[1]) > MOVED  # another seed, another mesh
    assert mesh_gap(meshes[0], meshes[2]) > MOVED  # another image, another mesh


def test_texture_a_given_mesh_skips_geometry(weights, image, tmp_path, assets):
    engine = Step1X3DEngine(str(weights), plan="cpu")
    try:
        result, events = run_job(engine, tmp_path, "duck", image, mesh=str(assets / "meshes" / "Duck.glb"))
    finally:
        engine.close()
    stages = {e[1] for e in events if e[0] == "progress"}
    assert "geometry" not in stages and "mesh" not in [e[0] for e in events]
    mesh, texture = load_textured(result.path)
    assert texture is not None and len(mesh.faces) <= 1500
    assert result.metadata["model"] == "given mesh"


def test_missing_weights_are_named(image, tmp_path):
    engine = Step1X3DEngine(str(tmp_path), plan="cpu")
    with pytest.raises(BackendError) as info:
        run_job(engine, tmp_path, "x", image)
    assert info.value.code == "weights_not_found"
    assert "geometry-base" in info.value.message and "sdxl-base" in info.value.message


def test_out_of_memory_is_reported_and_the_runner_stays_usable(weights, image, tmp_path, monkeypatch):
    runner = JobRunner(weights=str(weights), plan="cpu")
    engine, _ = runner.engine_for(make_spec(image=str(image), output=str(tmp_path / "o.glb"), engine="step1x3d",
                                            settings=FAST))
    real_texture = engine.second_stage
    calls = []

    def oom_once(ctx, shape, device=None):
        calls.append(1)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_texture(ctx, shape, device)

    monkeypatch.setattr(engine, "second_stage", oom_once)
    spec = make_spec(image=str(image), output=str(tmp_path / "o.glb"), engine="step1x3d", settings=FAST)
    with pytest.raises(BackendError) as info:
        runner.run(JobContext(spec, tmp_path))
    assert info.value.code == "out_of_memory" and "view_resolution" in info.value.message
    assert not spec.output.exists()
    result = runner.run(JobContext(spec, tmp_path))
    assert result.path.is_file()
    runner.close()
