"""Stage 1 of Step1X-3D: one image -> a watertight, decimated triangle mesh.

    prepare image -> visual (+ label) tokens -> flow-matching DiT (CFG) -> shape latents
    -> VAE decode -> coarse-to-fine field on the lattice -> marching cubes -> clean-up, decimation

`GeometryPipeline.from_pretrained` reads the release's folders unchanged (a local folder or the
hub repo `stepfun-ai/Step1X-3D` with subfolder `Step1X-3D-Geometry-1300m` or
`Step1X-3D-Geometry-Label-1300m`). Progress is reported through `JobContext.step("geometry", i, n)`
once per denoising step, per decoding level and per mesh step; a pending cancel stops the job there.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from backend.background import Remover
from backend.context import JobContext
from backend.mesh.clean import clean
from backend.mesh.decimate import decimate
from shared.errors import BackendError

from .conditioners import DinoClipEncoder, DinoEncoder, LabelEncoder, ShapeLabels
from .dit import GeometryDenoiser
from .image_prep import PreparedImage, prepare_image
from .loading import read_model_index, resolve_folder
from .marching import marching_cubes
from .sampler import initial_noise, sample_latents
from .vae import ShapeVAE
from .volume import DecodeStats, decode_coarse_to_fine, octree_levels

REPO = "stepfun-ai/Step1X-3D"
VARIANTS = {"base": "Step1X-3D-Geometry-1300m", "label": "Step1X-3D-Geometry-Label-1300m"}
# model_index.json class name (the release's, or ours when a folder was written by save_release)
COMPONENT_CLASSES = {
    "FluxDenoiser": GeometryDenoiser,
    "MichelangeloAutoencoder": ShapeVAE,
    "Dinov2Encoder": DinoEncoder,
    "Dinov2CLIPEncoder": DinoClipEncoder,
    "LabelEncoder": LabelEncoder,
    **{cls.__name__: cls for cls in (GeometryDenoiser, ShapeVAE, DinoEncoder, DinoClipEncoder)},
}
REQUIRED = ("transformer", "vae", "visual_encoder", "scheduler")


@dataclass
class GeometryOptions:
    """Per-job knobs; defaults are the release's (app / label inference where they differ)."""

    steps: int = 50
    guidance_scale: float = 7.5
    seed: int = 2025
    octree_resolution: int = 384
    face_budget: int | None = 400_000  # None: no decimation (the texture stage decimates in parallel)
    symmetry: str = "x"  # label model only
    edge_type: str = "normal"  # label model only: normal / smooth / sharp
    remove_background: str = "auto"
    foreground_ratio: float = 0.95
    zero_first_step: bool = True  # the release's first-step behaviour (output parity)
    bounds: float = 1.05
    mc_level: float = 0.0
    chunk_size: int = 131072  # field queries per decoder call
    min_part_fraction: float = 0.001  # floaters: parts with < 0.1 % of the largest part's faces, as the release

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> "GeometryOptions":
        """From the shared settings schema (shared/settings.py names)."""
        names = {"geometry_steps": "steps", "face_count": "face_budget"}
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{names.get(k, k): v for k, v in settings.items() if names.get(k, k) in known})


@dataclass
class GeometryResult:
    vertices: np.ndarray  # (V, 3) float32, object frame (+Y up, front +Z), inside about [-1, 1]^3
    faces: np.ndarray  # (F, 3) int64, outward winding
    image: PreparedImage
    latents: torch.Tensor
    decode: DecodeStats
    timings: dict[str, float] = field(default_factory=dict)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the mesh (format from the suffix: .glb, .ply, .obj, ...) atomically."""
        import trimesh

        from backend.mesh.export import write_atomically

        path = Path(path)
        data = trimesh.Trimesh(self.vertices, self.faces, process=False).export(file_type=path.suffix.lstrip("."))
        write_atomically(path, data if isinstance(data, bytes) else data.encode())
        return path


def finish_mesh(vertices: np.ndarray, faces: np.ndarray, face_budget: int | None, min_part_fraction: float,
                ctx: JobContext | None = None, device: torch.device | None = None):
    """Weld, drop degenerate faces and floaters (on `device`: the GPU does it in milliseconds),
    then decimate to the budget (backend/mesh; in parallel worker processes for large meshes,
    waits honouring `ctx`'s cancel)."""
    v, f = clean(vertices, faces, min_part_fraction=min_part_fraction, device=device)
    if len(f) == 0:
        raise BackendError("internal_error", "the generated surface vanished during clean-up")
    return (v, f) if face_budget is None else decimate(v, f, face_budget, ctx=ctx)


class _Clock:
    """Stage timings; synchronises the device at stage boundaries only."""

    def __init__(self, device: torch.device):
        self.device, self.times, self._t = device, {}, time.perf_counter()

    def lap(self, name: str) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.times[name] = now - self._t
        self._t = now


class GeometryPipeline:
    def __init__(
        self,
        denoiser: GeometryDenoiser,
        vae: ShapeVAE,
        visual_encoder: DinoEncoder | DinoClipEncoder,
        scheduler: FlowMatchEulerDiscreteScheduler,
        label_encoder: LabelEncoder | None = None,
    ):
        if denoiser.config.use_label_condition and label_encoder is None:
            raise BackendError("weights_not_found", "this denoiser is conditioned on labels but has no label_encoder")
        self.denoiser, self.vae, self.visual_encoder = denoiser, vae, visual_encoder
        self.scheduler, self.label_encoder = scheduler, label_encoder

    @property
    def modules(self) -> list[torch.nn.Module]:
        return [m for m in (self.denoiser, self.vae, self.visual_encoder, self.label_encoder) if m is not None]

    @property
    def device(self) -> torch.device:
        return self.denoiser.device

    @property
    def dtype(self) -> torch.dtype:
        return self.denoiser.dtype

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "GeometryPipeline":
        moves = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        for module in self.modules:
            # nn.Module.to: diffusers' override warns about fp32-only submodules on every dtype
            # cast, even when (as here) there are none.
            torch.nn.Module.to(module, **moves)
        return self

    @classmethod
    def from_pretrained(
        cls,
        location: str | os.PathLike = REPO,
        variant: str = "base",
        subfolder: str | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> "GeometryPipeline":
        """Load a geometry folder. `location` is a folder holding the variant's subfolder (or the
        model folder itself with subfolder=""), or a hub repo id."""
        if subfolder is None:
            if variant not in VARIANTS:
                raise BackendError("invalid_setting", f"model variant must be one of {', '.join(VARIANTS)}; got {variant!r}")
            subfolder = VARIANTS[variant]
        folder = resolve_folder(location, subfolder)
        index = read_model_index(folder)
        missing = [name for name in REQUIRED if not index.get(name, (None, None))[1]]
        if missing:
            raise BackendError("weights_not_found", f"{folder}/model_index.json names no {', '.join(missing)}")
        scheduler_class = index["scheduler"][1]
        if scheduler_class != FlowMatchEulerDiscreteScheduler.__name__:
            raise BackendError("weights_not_found", f"unsupported scheduler {scheduler_class} in {folder}")
        if not (folder / "scheduler" / "scheduler_config.json").is_file():
            raise BackendError("weights_not_found", f"missing {folder}/scheduler/scheduler_config.json")
        scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(folder, subfolder="scheduler")
        loaded = {}
        for name in ("transformer", "vae", "visual_encoder", "label_encoder"):
            class_name = index.get(name, (None, None))[1]
            if class_name is None:
                continue
            if class_name not in COMPONENT_CLASSES:
                raise BackendError("weights_not_found", f"{folder}: unknown {name} class {class_name}")
            if not (folder / name).is_dir():
                raise BackendError("weights_not_found", f"{folder} has no {name}/ folder")
            loaded[name] = COMPONENT_CLASSES[class_name].from_pretrained(folder, subfolder=name, torch_dtype=dtype)
        pipe = cls(loaded["transformer"], loaded["vae"], loaded["visual_encoder"], scheduler, loaded.get("label_encoder"))
        for module in pipe.modules:
            module.eval().requires_grad_(False)
        return pipe.to(device)

    @torch.no_grad()
    def encode_condition(self, image: PreparedImage, labels: ShapeLabels | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Context tokens (conditional, unconditional) for one prepared image."""
        visual = self.visual_encoder([image.rgb])
        label = None
        if self.label_encoder is not None:
            label = self.label_encoder([labels or ShapeLabels()])
        cond = self.denoiser.context(visual=visual, label=label)
        uncond = self.denoiser.context(
            visual=self.visual_encoder.unconditional(visual),
            label=None if label is None else self.label_encoder.unconditional(label),
        )
        return cond, uncond

    def field_fn(self, tokens: torch.Tensor):
        """Lattice points [P, 3] -> field values [P] for one decoded latent set [1, N, W]."""
        kv = self.vae.decoder.key_values(tokens)

        def field(points: torch.Tensor) -> torch.Tensor:
            return self.vae.decoder(points[None], kv)[0, :, 0]

        return field

    @torch.no_grad()
    def sample(self, prepared: PreparedImage, options: GeometryOptions, on_step=None) -> torch.Tensor:
        """Shape latents [1, N, C] (float32) for a prepared image: conditioning + denoising."""
        labels = ShapeLabels(symmetry=options.symmetry, geometry_quality=options.edge_type)
        try:
            cond, uncond = self.encode_condition(prepared, labels)
        except ValueError as exc:  # an unknown label value
            raise BackendError("invalid_setting", str(exc)) from None
        generator = torch.Generator(self.device).manual_seed(options.seed)
        shape = (1, self.vae.config.num_latents, self.denoiser.config.input_channels)
        noise = initial_noise(shape, generator, self.device)
        return sample_latents(self.denoiser, self.scheduler, cond, uncond, noise, options.steps,
                              options.guidance_scale, options.zero_first_step, on_step=on_step)

    @torch.no_grad()
    def decode_field(self, latents: torch.Tensor, options: GeometryOptions, on_level=None):
        """The field on the (R+1)^3 lattice for one latent set, coarse-to-fine."""
        return decode_coarse_to_fine(self.field_fn(self.vae.decode(latents)), options.octree_resolution,
                                     options.bounds, options.chunk_size, self.device, options.mc_level,
                                     on_level=on_level)

    def __call__(
        self,
        image,
        options: GeometryOptions | None = None,
        ctx: JobContext | None = None,
        remover: Remover | None = None,
    ) -> GeometryResult:
        o = options or GeometryOptions()
        levels = len(octree_levels(o.octree_resolution))
        total = o.steps + levels + 2

        def report(i: int, message: str) -> None:
            if ctx is not None:
                ctx.step("geometry", i, total, message)

        clock = _Clock(self.device)
        prepared = prepare_image(image, o.remove_background, o.foreground_ratio, remover, device=str(self.device))
        latents = self.sample(prepared, o, on_step=lambda i, n: report(i, "denoising"))
        clock.lap("conditioning_and_denoising")
        grid, stats = self.decode_field(latents, o, on_level=lambda i, n: report(o.steps + i, f"decoding level {i}/{n}"))
        clock.lap("sdf_decoding")
        vertices, faces = marching_cubes(grid, o.mc_level, o.bounds)
        del grid
        report(o.steps + levels + 1, "marching cubes")
        clock.lap("marching_cubes")
        vertices, faces = finish_mesh(vertices, faces, o.face_budget, o.min_part_fraction, ctx, self.device)
        report(total, "mesh ready")
        clock.lap("cleanup_decimation")
        return GeometryResult(vertices, faces, prepared, latents, stats, clock.times)
