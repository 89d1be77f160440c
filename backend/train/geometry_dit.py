"""Geometry DiT training (rectified flow), full or LoRA, from a released geometry folder.

Per object: VAE latents of its surface + sharp-edge points (posterior sample, frozen VAE), the
condition tokens of one random rendered view (frozen DINO / DINO+CLIP, and labels for the Label
model), each condition zeroed with probability `condition_drop` for classifier-free guidance.
sigma ~ logit-normal mapped to the scheduler's 1000 training steps, x = (1 - sigma) x0 + sigma eps;
the model predicts v = eps - x0 and the loss is MSE(x - sigma v, x0) (the reference's
`precondition_outputs`, uniform weighting).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock, FluxTransformerBlock
from torch import nn

from backend.geometry.loading import resolve_folder
from backend.geometry.pipeline import VARIANTS, GeometryPipeline
from shared.errors import BackendError

from .checkpointing import checkpoint_blocks
from .config import GeometryDiTConfig, TrainConfig
from .export import write_geometry_folder
from .loop import TrainTask, compute_dtype
from .lora import add_lora, lora_config, merged_denoiser, save_lora
from .shape_data import ShapeImages, ShapeSamples, collate_shapes, npz_files, read_labels, rendered_objects


class FlowMatchingObjective(nn.Module):
    def __init__(self, pipe: GeometryPipeline, cfg: GeometryDiTConfig):
        super().__init__()
        self.denoiser, self.vae, self.visual_encoder = pipe.denoiser, pipe.vae, pipe.visual_encoder
        self.label_encoder = pipe.label_encoder
        train_schedule = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
        self.register_buffer("timesteps", train_schedule.timesteps.float().clone(), persistent=False)
        self.register_buffer("sigmas", train_schedule.sigmas[:len(train_schedule.timesteps)].float().clone(),
                             persistent=False)
        self.cfg = cfg

    def _keep(self, batch: int, device) -> torch.Tensor:
        return (torch.rand(batch, device=device) >= self.cfg.condition_drop).float()[:, None, None]

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        device = self.timesteps.device
        with torch.no_grad():
            x0 = self.vae.encode(batch["surface"], batch["sharp_surface"], sample_posterior=True).float()
            b = x0.shape[0]
            visual = self.visual_encoder(batch["image"])
            visual = visual * self._keep(b, device).to(visual.dtype)
            label = None
            if self.label_encoder is not None:
                label = self.label_encoder(batch["labels"])
                label = label * self._keep(b, device).to(label.dtype)
        context = self.denoiser.context(visual=visual, label=label)
        u = torch.sigmoid(torch.randn(b, device=device) * self.cfg.logit_std + self.cfg.logit_mean)
        index = (u * len(self.timesteps)).long().clamp_(max=len(self.timesteps) - 1)
        sigma = self.sigmas[index][:, None, None]
        noise = torch.randn_like(x0)
        x = (1.0 - sigma) * x0 + sigma * noise
        velocity = self.denoiser(x, self.timesteps[index], context).float()
        loss = F.mse_loss(x - sigma * velocity, x0)
        return {"loss": loss}


def model_folder(cfg: GeometryDiTConfig) -> Path:
    if cfg.subfolder is None and cfg.variant not in VARIANTS:
        raise BackendError("invalid_setting", f"geometry_dit.variant must be one of {', '.join(VARIANTS)}")
    return resolve_folder(cfg.base, VARIANTS[cfg.variant] if cfg.subfolder is None else cfg.subfolder)


def build(config: TrainConfig, accelerator) -> TrainTask:
    cfg: GeometryDiTConfig = config.geometry_dit
    folder = model_folder(cfg)
    pipe = GeometryPipeline.from_pretrained(folder, subfolder="")
    frozen_dtype = compute_dtype(accelerator.mixed_precision)
    for module in (pipe.vae, pipe.visual_encoder, pipe.label_encoder):
        if module is not None:
            module.to(dtype=frozen_dtype).eval().requires_grad_(False)
    denoiser = pipe.denoiser.float().train()
    if config.loop.gradient_checkpointing:
        checkpoint_blocks(denoiser, (FluxTransformerBlock, FluxSingleTransformerBlock))
    lora = None
    if cfg.lora is not None:
        unknown = set(cfg.lora) - {"rank", "alpha", "dropout"}
        if unknown:
            raise BackendError("invalid_setting", f"geometry_dit.lora: unknown keys {sorted(unknown)}")
        lora = lora_config(int(cfg.lora.get("rank", 128)), float(cfg.lora.get("alpha", 128)),
                           float(cfg.lora.get("dropout", 0.0)))
        add_lora(denoiser, lora)  # base weights stay fp32: the merged export is exact
    else:
        denoiser.float().requires_grad_(True)

    samples = ShapeSamples(npz_files(cfg.data_dir), cfg.n_samples)
    dataset = ShapeImages(samples, rendered_objects(cfg.renders_dir), read_labels(cfg.labels), cfg.foreground_ratio)

    def save(module: FlowMatchingObjective, out: Path) -> None:
        if lora is None:
            write_geometry_folder(folder, out, {"transformer": module.denoiser})
        else:
            save_lora(module.denoiser, out / "lora", lora)
            write_geometry_folder(folder, out, {"transformer": merged_denoiser(module.denoiser)})

    kind = "LoRA rank {}".format(lora.r) if lora else "all weights"
    return TrainTask(FlowMatchingObjective(pipe, cfg), dataset, save, collate=collate_shapes,
                     description=f"geometry DiT ({folder.name}, {kind})")
