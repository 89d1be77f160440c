"""Stage 2 orchestration: paint a mesh from a reference image (step1x3d-reference.md §4.2).

clean + centre in the unit box -> (worker process: decimate to the face budget, xatlas UVs) while
the GPU renders the position/normal maps of the 6 canonical views and runs the multi-view
diffusion with texture sync -> views upscaled to the bake resolution -> bake into the UV texture
-> inpaint unseen texels -> refit the decimated mesh to the unit box. The caller exports the GLB
(`write_textured_glb`). Deviations from the release, each deliberate: conditioning and sync see
the full mesh (the release decimates first; the renders only get more exact), the mesh is
centred on its bounding box (the release only scales, so an off-centre mesh leaves the cameras'
frame), xatlas runs once (the release runs it three times) and overlaps the denoising, the
renders use the project's rasteriser, and the baker is the toolkit's gather baker (views
upscaled bicubically on the device rather than Lanczos on the CPU).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from backend.context import JobContext
from backend.mesh.bake import bake
from backend.mesh.camera import Camera
from backend.mesh.clean import clean
from backend.mesh.export import ExportMetadata, write_glb
from backend.mesh.frame import UnitFit, fit_unit_box
from backend.mesh.inpaint import inpaint
from backend.mesh.render import control_maps, render_geometry
from backend.mesh.uv import UVMesh, unwrap
from backend.mesh.workers import call_native
from shared.errors import BackendError
from shared.views import CANONICAL_VIEWS

from .lod import lod_chain
from .mv_pipeline import MultiViewPipeline
from .reference import reference_image
from .sync import BACKGROUND_COLOURS, SyncOptions, TextureSync, surface_samples
from .uv_worker import UVWorker

MAX_BAKE_VIEW = 2048  # the release bakes from views upscaled to 2048 px
MODEL = "Step1X-3D texture: SDXL 1.0 + MV-Adapter (step1x-3d-ig2v)"


@dataclass
class TexturedMesh:
    mesh: UVMesh  # decimated, seam-split, centred with largest extent 1 (glTF frame)
    texture: np.ndarray  # (T, T, 3) uint8
    views: torch.Tensor  # (6, 3, R, R) the generated views in [0, 1]
    fit: UnitFit  # input coordinates -> mesh coordinates


def normalise(vertices: np.ndarray, faces: np.ndarray,
              device: torch.device | None = None) -> tuple[np.ndarray, np.ndarray, UnitFit]:
    """Cleaned mesh (cleaned on `device`) centred on its bounding box with largest extent 1, where
    the cameras frame it. Texturing never drops parts: small pieces of a given mesh are meant to be
    there, and the geometry stage has already removed its floaters."""
    v, f = clean(np.asarray(vertices, np.float64), np.asarray(faces, np.int64), min_part_fraction=0.0, device=device)
    if len(f) == 0:
        raise BackendError("input_unreadable", "the mesh has no usable faces after cleaning")
    fit = fit_unit_box(v)
    return fit.apply(v), f, fit


def refit(mesh: UVMesh, fit: UnitFit) -> tuple[UVMesh, UnitFit]:
    """Put a (decimated) mesh back into the exact unit box; returns it and the composed fit."""
    again = fit_unit_box(mesh.vertices)
    moved = UVMesh(again.apply(mesh.vertices), mesh.faces, mesh.uv, mesh.vmapping, mesh.normals)
    return moved, UnitFit(fit.centre + again.centre / fit.factor, fit.factor * again.factor)


def conditioning(vertices: np.ndarray, faces: np.ndarray, size: int, device: torch.device) -> torch.Tensor:
    """(6, 6, size, size) position + normal maps of the canonical views, as the model was trained."""
    cams = [Camera.from_view(v, size) for v in CANONICAL_VIEWS]
    return control_maps(render_geometry(vertices, faces, cams, device=device))


def upscale(views: torch.Tensor, size: int, device: torch.device) -> torch.Tensor:
    """Views (V, 3, R, R) -> (V, size, size, 3) on `device`, bicubic (the release uses Lanczos on
    the CPU; on the GPU this costs milliseconds)."""
    x = views.to(device=device, dtype=torch.float32)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp_(0.0, 1.0)
    return x.permute(0, 2, 3, 1).contiguous()


class TextureStage:
    """Holds the loaded multi-view pipeline across jobs; `run` textures one mesh."""

    def __init__(self, pipeline: MultiViewPipeline, sync_options: SyncOptions = SyncOptions()):
        self.pipeline = pipeline
        self.sync_options = sync_options
        self._lora: tuple[str, float] = ("", 1.0)
        self._colour_latents: torch.Tensor | None = None
        self.uv_worker = UVWorker()

    @property
    def device(self) -> torch.device:
        return self.pipeline.unet.device

    @property
    def modules(self) -> list[torch.nn.Module]:
        """The torch modules holding the weights (what offloading moves)."""
        return [m for m in self.pipeline.components.values() if isinstance(m, torch.nn.Module)]

    def _apply_lora(self, source: str, scale: float) -> None:
        if (source, scale) != self._lora:
            self.pipeline.set_style_lora(source or None, scale)
            self._lora = (source, scale)

    def run(self, ctx: JobContext, vertices: np.ndarray, faces: np.ndarray, rgb: np.ndarray,
            alpha: np.ndarray) -> TexturedMesh:
        s = ctx.spec.settings
        size, tex = int(s["view_resolution"]), int(s["texture_resolution"])
        ctx.step("mesh", 0, 2, "cleaning the mesh")
        verts, faces, fit = normalise(vertices, faces, self.device)
        uv_job = self.uv_worker.submit(verts, faces, int(s["face_count"]), tex, ctx)
        try:
            views = self._generate(ctx, verts, faces, rgb, alpha, size)
            ctx.step("bake", 0, 3, "waiting for the UV atlas")
            uv_mesh = self.uv_worker.result(uv_job, ctx)
        finally:
            uv_job.cancel()
        ctx.step("bake", 1, 3, "baking the views into the texture")
        bake_size = max(size, min(tex, MAX_BAKE_VIEW))
        baked = bake(uv_mesh, upscale(views, bake_size, self.device), CANONICAL_VIEWS, tex, device=self.device)
        ctx.step("bake", 2, 3, "inpainting unseen texels")
        filled = inpaint(uv_mesh, baked)
        texture = np.clip(filled.texture * 255.0 + 0.5, 0, 255).astype(np.uint8)
        mesh, fit = refit(uv_mesh, fit)
        return TexturedMesh(mesh, texture, views, fit)

    def _generate(self, ctx: JobContext, verts: np.ndarray, faces: np.ndarray, rgb: np.ndarray,
                  alpha: np.ndarray, size: int) -> torch.Tensor:
        s = ctx.spec.settings
        ctx.step("mesh", 1, 2, "rendering the geometry conditioning")
        control = conditioning(verts, faces, size, self.device)
        reference = reference_image(rgb, alpha, size)
        self._apply_lora(s.get("lora", ""), float(s.get("lora_scale", 1.0)))
        latent = size // 8
        samples = surface_samples(verts, faces, CANONICAL_VIEWS, (latent, latent),
                                  visibility_size=self.sync_options.visibility_size, device=self.device)
        if self._colour_latents is None:
            self._colour_latents = self.pipeline.colour_latents(torch.tensor(list(BACKGROUND_COLOURS.values())))
        sync = TextureSync(samples, self.pipeline.scheduler, self._colour_latents, self.sync_options)
        return self.pipeline(reference, control, seed=int(s["seed"]), steps=int(s["texture_steps"]),
                             guidance=float(s["texture_guidance"]), ctx=ctx, sync=sync)


def write_textured_glb(path: Path, textured: TexturedMesh, settings: dict, *, source_image: str | None,
                       name: str = "asset", ctx: JobContext | None = None, ignored: Iterable[str] = ()) -> Path:
    """The textured mesh (+ `lod_levels` coarser levels sharing its texture) as one GLB; the
    `ignored` settings are recorded apart from the applied ones."""
    levels = int(settings.get("lod_levels", 0))
    lods = call_native(lod_chain, textured.mesh, levels, ctx=ctx, what="level-of-detail") if levels else []
    meta = ExportMetadata.applied("step1x3d", MODEL, dict(settings), ignored, source_image=source_image)
    return write_glb(path, textured.mesh, textured.texture, meta, lods=lods, name=name)
