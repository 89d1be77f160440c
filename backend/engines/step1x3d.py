"""The `step1x3d` engine: the geometry stage, then the texture stage, under a device plan.

image -> GeometryPipeline (mesh artifact) -> TextureStage (views artifact) -> GLB. With a `mesh`
input the geometry stage is skipped and the given mesh is textured from the image. Models stay
loaded between jobs in a ModelCache placed by the plan.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from backend.context import JobContext, JobResult
from backend.data.meshes import load_mesh
from backend.mesh.export import ExportMetadata, split_settings, write_glb
from backend.mesh.frame import fit_unit_box
from backend.mesh.uv import unwrap
from backend.mesh.workers import call_native, shared_workers
from backend.runtime import fast
from backend.runtime.devices import cuda_devices
from backend.runtime.models import LOADING, ModelCache
from backend.runtime.plan import DevicePlan, make_plan
from backend.runtime.weights import GEOMETRY_COMPONENT, WeightsStatus, find_weights, required_components
from shared.errors import BackendError

if TYPE_CHECKING:
    from backend.geometry.image_prep import PreparedImage

GEOMETRY_SETTINGS = ("model", "geometry_steps", "guidance_scale", "symmetry", "edge_type", "octree_resolution")
LABEL_SETTINGS = ("symmetry", "edge_type")
TEXTURE_SETTINGS = ("texture_steps", "texture_guidance", "view_resolution", "lora", "lora_scale", "lod_levels")


def ignored_settings(settings: dict, with_geometry: bool) -> list[str]:
    """Settings a job leaves unused: the geometry model's when a mesh is given, the label model's
    controls under the base model, the texture model's (and LODs) when not texturing."""
    ignored = [] if with_geometry else list(GEOMETRY_SETTINGS)
    if with_geometry and settings["model"] == "base":
        ignored += LABEL_SETTINGS
    if not settings["texture"]:
        ignored += TEXTURE_SETTINGS
    return ignored


class Step1X3DEngine:
    name = "step1x3d"

    def __init__(self, weights: str | None = None, plan: str = "auto", geometry_gpu: int | None = None,
                 texture_gpu: int | None = None, offload: str = "auto"):
        self.weights_location = weights
        self.plan_request = (plan, geometry_gpu, texture_gpu, offload)
        self.cache: ModelCache | None = None

    # ---- set-up ----
    def plan_for(self, settings: dict) -> DevicePlan:
        kind, geo, tex, offload = self.plan_request
        return make_plan(kind, cuda_devices(), settings, geometry_gpu=geo, texture_gpu=tex, offload=offload)

    def check_weights(self, settings: dict, with_geometry: bool) -> WeightsStatus:
        weights = find_weights(self.weights_location)
        missing = [c for c in required_components(settings, with_geometry) if c not in weights.found]
        if missing:
            raise BackendError("weights_not_found", f"missing under {weights.root}: {', '.join(missing)}; "
                               "run `python -m backend download`")
        return weights

    def _cache(self, plan: DevicePlan, weights: WeightsStatus) -> ModelCache:
        """The one model cache; a job whose plan differs only in offloading or spare devices
        (settings change the memory need) updates it instead of reloading every model."""
        if self.cache is not None and self.cache.devices != (plan.geometry_device, plan.texture_device):
            self.cache.close()
            self.cache = None
        if self.cache is None:
            self.cache = ModelCache(plan, weights)
            shared_workers().warm()  # mesh worker processes start while the models load
        self.cache.plan = plan
        return self.cache

    def _geometry(self, cache: ModelCache, variant: str):
        from backend.geometry.pipeline import GeometryPipeline

        dtype = torch.bfloat16 if cache.plan.on_gpu else torch.float32
        folder = str(cache.weights.found[GEOMETRY_COMPONENT[variant]])
        cache.register(f"geometry-{variant}", "geometry",
                       lambda device: GeometryPipeline.from_pretrained(folder, subfolder="", dtype=dtype, device=device),
                       lambda pipe: pipe.modules)
        return cache.get(f"geometry-{variant}")

    def _register_texture(self, cache: ModelCache) -> None:
        from backend.texture.mv_pipeline import MultiViewPipeline
        from backend.texture.stage import TextureStage

        found = cache.weights.found

        def load(device: torch.device) -> TextureStage:
            with _on(str(device)):  # also when a prefetch thread loads it
                pipe = MultiViewPipeline.load(base=str(found["sdxl-base"]), vae=str(found["sdxl-vae"]),
                                              adapter=str(found["texture-adapter"]), device=device)
            return TextureStage(pipe)

        cache.register("texture", "texture", load, lambda stage: stage.modules)

    def _prefetch_texture(self, cache: ModelCache, plan: DevicePlan) -> None:
        """The texture models load on a background thread while this job's geometry stage runs."""
        self._register_texture(cache)
        cache.prefetch("texture", plan.texture_device)

    def _texture(self, cache: ModelCache, device: str | None = None):
        self._register_texture(cache)
        return cache.get("texture", device)

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()

    # ---- a job: two stages, so the multi plan can run them on two lanes ----
    def run(self, ctx: JobContext) -> JobResult:
        return self.second_stage(ctx, self.first_stage(ctx))

    def first_stage(self, ctx: JobContext) -> Shape:
        """The geometry stage (or reading a given mesh): everything that runs on the geometry GPU."""
        from backend.geometry.image_prep import prepare_image
        from backend.geometry.pipeline import GeometryOptions

        spec, s = ctx.spec, ctx.spec.settings
        if spec.image is None:
            raise BackendError("invalid_request", "the step1x3d engine needs a reference image (and optionally a mesh to texture)")
        weights = self.check_weights(s, with_geometry=spec.mesh is None)
        plan = self.plan_for(s)
        cache = self._cache(plan, weights)
        ctx.step("preprocess", 0, 1, plan.describe())
        if spec.mesh is not None:
            self._prefetch_texture(cache, plan)
            prepared = prepare_image(spec.image, s["remove_background"], s["foreground_ratio"],
                                     device=plan.geometry_device)
            return Shape(*load_mesh(spec.mesh), prepared, plan, {})  # checked readable by make_spec
        with _on(plan.geometry_device):
            pipe = self._geometry(cache, s["model"])
            with LOADING:  # the fast paths may build modules: not while a load swaps their constructors
                accelerate(pipe.denoiser, plan)
            # not while torch.compile traces the denoiser: its graph modules take parameters through
            # `register_parameter`, which a load under accelerate's empty-weights patch would redirect
            if s["texture"] and not fast.FastPaths.from_env().compile:
                self._prefetch_texture(cache, plan)
            options = GeometryOptions.from_settings(s)
            if s["texture"]:
                options.face_budget = None  # the texture stage decimates in a worker, overlapping the denoising
            geometry = pipe(spec.image, options, ctx)
        preview = spec.output.with_name(f"{spec.output.stem}.geometry.glb")
        geometry.save(preview)
        ctx.artifact("mesh", [preview])
        return Shape(geometry.vertices, geometry.faces, geometry.image, plan, dict(geometry.timings))

    def second_stage(self, ctx: JobContext, shape: Shape, device: str | None = None) -> JobResult:
        """Texture and export on `device` (default: the plan's texture GPU)."""
        spec, s = ctx.spec, ctx.spec.settings
        ignored = ignored_settings(s, spec.mesh is None)
        applied, skipped = split_settings(s, ignored)
        meta = {"engine": self.name, "plan": shape.plan.kind, "fast_paths": fast.FastPaths.from_env().describe(),
                "model": s["model"] if spec.mesh is None else "given mesh",
                "timings": {k: round(v, 3) for k, v in shape.timings.items()}, "settings": applied,
                "ignored_settings": skipped}
        if not s["texture"]:
            ctx.step("export", 0, 1, "writing the untextured GLB")
            fit = fit_unit_box(shape.vertices)
            mesh = call_native(unwrap, fit.apply(shape.vertices), shape.faces, s["texture_resolution"], ctx=ctx,
                               what="UV unwrapping")
            write_glb(spec.output, mesh, None, ExportMetadata.applied(
                self.name, f"Step1X-3D geometry ({s['model']})", s, ignored, source_image=spec.image.name),
                name=spec.image.stem)
            return JobResult(spec.output, {**meta, "faces": int(len(mesh.faces)), "textured": False})
        from backend.texture.stage import write_textured_glb

        device = device or shape.plan.texture_device
        meta["texture_device"] = device
        with _on(device):
            stage = self._texture(self.cache, device)
            with LOADING:
                accelerate(stage.pipeline.unet, shape.plan)
            cut = np.asarray(shape.image.rgba)  # straight colour: the stage composites on its own grey
            rgb, alpha = np.ascontiguousarray(cut[..., :3]), cut[..., 3].astype(np.float32) / 255.0
            textured = stage.run(ctx, shape.vertices, shape.faces, rgb, alpha)  # emits the `views` artifact itself
        ctx.step("export", 0, 1, "writing the GLB")
        write_textured_glb(spec.output, textured, s, source_image=spec.image.name, name=spec.image.stem, ctx=ctx,
                           ignored=ignored)
        return JobResult(spec.output, {**meta, "faces": int(len(textured.mesh.faces)), "textured": True,
                                       "texture_resolution": int(textured.texture.shape[0])})


@dataclass
class Shape:
    """What the geometry stage hands to the texture stage (possibly on another lane and GPU)."""

    vertices: np.ndarray
    faces: np.ndarray
    image: "PreparedImage"
    plan: DevicePlan
    timings: dict[str, float]


def accelerate(network: torch.nn.Module, plan: DevicePlan) -> None:
    """The opt-in fast paths on a denoising network, and under the split plan its guidance halves
    on two GPUs (the replica on the second gets the same fast paths). Idempotent per job."""
    paths = fast.FastPaths.from_env()
    fast.apply(network, paths)
    if plan.kind == "split":
        from backend.runtime.cfg_split import split_cfg

        split_cfg(network, plan.cfg_device)
        fast.apply(network._cfg_split.twin, paths)


def _on(device: str):
    """Make `device` the thread's current CUDA device (libraries that take no device use it)."""
    return torch.cuda.device(device) if device.startswith("cuda") else contextlib.nullcontext()
