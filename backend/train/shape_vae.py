"""Shape-VAE training: encode surface + sharp-edge points, decode the SDF at supervision points.

loss = MSE(predicted field, SDF) + kl_weight * KL(posterior || N(0, I)), the KL summed over the
latent tokens and channels and averaged over the batch (the reference's Michelangelo recipe, KL
weight 1e-3). The field is the raw SDF, positive inside, as the released decoder emits it.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from backend.geometry.vae import CrossAttentionBlock, SelfAttentionBlock, ShapeVAE
from shared.errors import BackendError

from .checkpointing import checkpoint_blocks
from .config import ShapeVAEConfig, TrainConfig
from .export import write_geometry_folder
from .loop import TrainTask
from .shape_data import ShapeSamples, npz_files


def posterior(vae: ShapeVAE, surface: torch.Tensor, sharp: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, clamped log-variance) of the latent posterior, [B, num_latents, embed_dim] each: what
    `ShapeVAE.encode` samples from, kept apart here because the KL term needs both."""
    sets = [surface, sharp] if vae.config.with_sharp_data else [surface]
    tokens = vae.encoder([s.to(vae.pre_kl.weight.dtype) for s in sets], vae.config.num_latents, None)
    mean, logvar = vae.pre_kl(tokens).float().chunk(2, dim=-1)
    return mean, logvar.clamp(-30.0, 20.0)


class ShapeVAEObjective(nn.Module):
    def __init__(self, vae: ShapeVAE, kl_weight: float):
        super().__init__()
        self.vae, self.kl_weight = vae, kl_weight

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        mean, logvar = posterior(self.vae, batch["surface"], batch["sharp_surface"])
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        tokens = self.vae.decode(z * self.vae.config.z_scale_factor)
        predicted = self.vae.query(batch["points"], tokens)
        sdf_loss = F.mse_loss(predicted, batch["sdf"].float())
        kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).sum(dim=(1, 2)).mean()
        return {"loss": sdf_loss + self.kl_weight * kl, "sdf_mse": sdf_loss.detach(), "kl": kl.detach()}


def load_vae(cfg: ShapeVAEConfig) -> ShapeVAE:
    if cfg.init is None:
        try:
            return ShapeVAE(**cfg.model)
        except (TypeError, ValueError) as exc:
            raise BackendError("invalid_setting", f"shape_vae.model: {exc}") from None
    if cfg.model:
        raise BackendError("invalid_setting", "shape_vae: give either init (a released VAE) or model, not both")
    return ShapeVAE.from_pretrained(cfg.init, subfolder=cfg.init_subfolder or None)


def build(config: TrainConfig, accelerator) -> TrainTask:
    cfg: ShapeVAEConfig = config.shape_vae
    vae = load_vae(cfg).float().train()
    vae.requires_grad_(True)
    if config.loop.gradient_checkpointing:
        checkpoint_blocks(vae, (SelfAttentionBlock, CrossAttentionBlock))
    dataset = ShapeSamples(npz_files(cfg.data_dir), cfg.n_samples, cfg.n_supervision, cfg.flip_x)

    def save(module: ShapeVAEObjective, folder: Path) -> None:
        if cfg.geometry_folder:
            write_geometry_folder(Path(cfg.geometry_folder), folder, {"vae": module.vae})
        else:
            module.vae.save_release(folder / "vae")

    return TrainTask(ShapeVAEObjective(vae, cfg.kl_weight), dataset, save,
                     description=f"shape VAE width {vae.config.width}, {vae.config.num_latents} latents")
