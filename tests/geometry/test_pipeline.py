"""The whole geometry stage on CPU with tiny weights loaded from the release's folder layout."""
import numpy as np
import pytest
import torch
import trimesh

from backend.context import JobContext, JobSpec
from backend.geometry import GeometryOptions, GeometryPipeline
from backend.geometry.conditioners import ShapeLabels
from backend.geometry.image_prep import prepare_image
from shared.errors import BackendError
from shared.settings import resolve

from .tiny import make_blob_field, tiny_components, write_release_folder

OPTIONS = dict(steps=3, octree_resolution=64, face_budget=3000)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    for label, sub in ((False, "Step1X-3D-Geometry-1300m"), (True, "Step1X-3D-Geometry-Label-1300m")):
        parts = tiny_components(label=label, seed=3)
        make_blob_field(parts["vae"])
        write_release_folder(root, parts, sub)
    return root


def image():
    img = np.zeros((90, 120, 4), np.uint8)
    img[20:70, 30:100] = (180, 60, 40, 255)
    return img


def context(tmp_path, cancel_after=None):
    events = []
    ctx = JobContext(JobSpec("job", tmp_path / "out.glb", {}), tmp_path)

    def on_progress(stage, step, total, message):
        events.append((stage, step, total))
        if cancel_after is not None and len(events) == cancel_after:
            ctx.cancel_event.set()

    ctx.on_progress = on_progress
    return ctx, events


def test_image_to_mesh_file(weights, tmp_path):
    pipe = GeometryPipeline.from_pretrained(weights, variant="base")
    ctx, events = context(tmp_path)
    result = pipe(image(), GeometryOptions(**OPTIONS), ctx)
    path = result.save(tmp_path / "mesh.ply")
    mesh = trimesh.load(path, process=False)
    assert len(mesh.faces) == len(result.faces) <= 3000
    assert mesh.is_watertight and mesh.volume > 0
    assert np.abs(result.vertices).max() < 1.05
    total = OPTIONS["steps"] + 1 + 2  # denoising steps, one decoding level at R = 64, marching cubes, clean-up
    assert [e[1] for e in events] == list(range(1, total + 1))
    assert {e[0] for e in events} == {"geometry"} and {e[2] for e in events} == {total}
    assert set(result.timings) == {"conditioning_and_denoising", "sdf_decoding", "marching_cubes", "cleanup_decimation"}
    assert result.latents.shape == (1, 16, 8)


def test_same_seed_same_latents(weights):
    pipe = GeometryPipeline.from_pretrained(weights, variant="base")
    prepared = prepare_image(image())
    with torch.no_grad():
        cond, uncond = pipe.encode_condition(prepared)
    assert cond.shape == (1, 5, 16) and torch.equal(uncond, torch.zeros_like(cond))
    a = pipe.sample(prepared, GeometryOptions(**OPTIONS))
    b = pipe.sample(prepared, GeometryOptions(**OPTIONS))
    c = pipe.sample(prepared, GeometryOptions(**OPTIONS, seed=1))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_cancel_between_steps(weights, tmp_path):
    pipe = GeometryPipeline.from_pretrained(weights, variant="base")
    ctx, events = context(tmp_path, cancel_after=2)
    with pytest.raises(BackendError) as err:
        pipe(image(), GeometryOptions(**OPTIONS), ctx)
    assert err.value.code == "cancelled" and len(events) == 2


def test_label_model_edge_type_reaches_the_quality_token(weights):
    pipe = GeometryPipeline.from_pretrained(weights, variant="label")
    prepared = prepare_image(image())
    table = pipe.label_encoder.embedding_table_geometry_quality.weight
    symmetry = pipe.label_encoder.embedding_table_symmetry_type.weight
    for options, row in ((GeometryOptions(edge_type="sharp"), 2), (GeometryOptions(edge_type="smooth"), 1)):
        with torch.no_grad():
            cond, uncond = pipe.encode_condition(prepared, ShapeLabels(symmetry=options.symmetry,
                                                                       geometry_quality=options.edge_type))
        torch.testing.assert_close(cond[0, -1], table[row])  # last context token: geometry quality
        torch.testing.assert_close(cond[0, -2], symmetry[1])  # symmetry "x"
        assert torch.equal(uncond, torch.zeros_like(uncond))
    result = pipe(image(), GeometryOptions(**OPTIONS, edge_type="sharp", symmetry="asymmetry"))
    assert len(result.faces) > 0
    with pytest.raises(BackendError) as err:
        pipe(image(), GeometryOptions(**OPTIONS, edge_type="jagged"))
    assert err.value.code == "invalid_setting"


def test_options_from_shared_settings():
    settings = resolve({"geometry_steps": 20, "face_count": 12345, "edge_type": "sharp", "octree_resolution": 256})
    options = GeometryOptions.from_settings(settings)
    assert (options.steps, options.face_budget, options.edge_type, options.octree_resolution) == (20, 12345, "sharp", 256)
    assert options.seed == settings["seed"] and options.guidance_scale == settings["guidance_scale"]


def test_unknown_variant(weights):
    with pytest.raises(BackendError) as err:
        GeometryPipeline.from_pretrained(weights, variant="huge")
    assert err.value.code == "invalid_setting"


def test_seed_gives_the_release_initial_latents(weights, monkeypatch):
    """The geometry stage's one random draw is the release's `prepare_latents`: randn_tensor of
    [1, num_latents, channels] from a generator on the pipeline's device seeded with the seed,
    in float32 (the release's pipelines run in float32)."""
    from diffusers.utils.torch_utils import randn_tensor

    import backend.geometry.pipeline as module

    pipe = GeometryPipeline.from_pretrained(weights, variant="base")
    consumed = []
    real = module.sample_latents
    monkeypatch.setattr(module, "sample_latents", lambda *a, **k: consumed.append(a[4].clone()) or real(*a, **k))
    pipe.sample(prepare_image(image()), GeometryOptions(**OPTIONS, seed=2025))
    device = pipe.device
    release = randn_tensor((1, pipe.vae.config.num_latents, pipe.denoiser.config.input_channels),
                           generator=torch.Generator(device).manual_seed(2025), device=device, dtype=torch.float32)
    (noise,) = consumed
    assert noise.dtype == torch.float32 and torch.equal(noise, release)
