"""The SNR-shifted DDPM schedule the texture model was trained with.

Generating 6 views of 768 px at once needs noisier early steps than SDXL's 1024 px single-image
schedule, so the release shifts the log-SNR of every training timestep down by up to log(8):
log SNR'(t) = log SNR(t) - t / (T - 1) * log(scale) ("interpolated" mode: no shift at t = 0, the full
shift at t = T - 1). The shifted cumulative alphas are turned back into betas and handed to
diffusers' DDPMScheduler, which keeps the SDXL config's timestep spacing ("leading", offset 1:
t = 981, 961, ..., 1 for 50 steps) and its "fixed_small" posterior variance.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
from diffusers import DDPMScheduler

SNR_SHIFT_SCALE = 8.0

# The DDPM fields that the SDXL scheduler config carries; anything else in it (Euler options such
# as interpolation_type or use_karras_sigmas) does not apply to DDPM and is dropped.
# Clipping and thresholding stay off (SDXL's config has them off) so that `posterior` below and
# DDPMScheduler.step describe the same step.
_DDPM_FIELDS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "timestep_spacing",
                "steps_offset")


def base_alphas_cumprod(config: Mapping[str, Any]) -> np.ndarray:
    """Cumulative alphas (float64) of the unshifted schedule described by a scheduler config."""
    n = int(config.get("num_train_timesteps", 1000))
    start, end = float(config.get("beta_start", 0.00085)), float(config.get("beta_end", 0.012))
    kind = config.get("beta_schedule", "scaled_linear")
    if config.get("trained_betas") is not None:
        betas = np.asarray(config["trained_betas"], dtype=np.float64)
    elif kind == "scaled_linear":
        betas = np.linspace(start ** 0.5, end ** 0.5, n, dtype=np.float64) ** 2
    elif kind == "linear":
        betas = np.linspace(start, end, n, dtype=np.float64)
    else:
        raise ValueError(f"unsupported beta_schedule {kind!r} for the SNR shift")
    return np.cumprod(1.0 - betas)


def shifted_alphas_cumprod(alphas_cumprod: np.ndarray, scale: float = SNR_SHIFT_SCALE) -> np.ndarray:
    """Interpolated SNR shift: SNR'(t) = SNR(t) * scale ** (-t / (T - 1))."""
    a = np.asarray(alphas_cumprod, dtype=np.float64)
    log_snr = np.log(a) - np.log1p(-a)
    ramp = np.linspace(0.0, 1.0, len(a))
    shifted = log_snr - ramp * np.log(scale)
    return 1.0 / (1.0 + np.exp(-shifted))


def betas_from_alphas_cumprod(alphas_cumprod: np.ndarray) -> np.ndarray:
    a = np.asarray(alphas_cumprod, dtype=np.float64)
    return 1.0 - a / np.concatenate([[1.0], a[:-1]])


def shifted_ddpm_scheduler(config: Mapping[str, Any], scale: float = SNR_SHIFT_SCALE) -> DDPMScheduler:
    """A DDPMScheduler with the SNR-shifted betas, from an SDXL (or any DDPM-family) config."""
    if config.get("prediction_type", "epsilon") != "epsilon":
        raise ValueError(f"the texture model predicts epsilon, the config says {config['prediction_type']!r}")
    betas = betas_from_alphas_cumprod(shifted_alphas_cumprod(base_alphas_cumprod(config), scale))
    kwargs = {k: config[k] for k in _DDPM_FIELDS if k in config}
    return DDPMScheduler(**kwargs, trained_betas=betas.tolist(), prediction_type="epsilon",
                         variance_type="fixed_small", clip_sample=False, thresholding=False)


@dataclass(frozen=True)
class Posterior:
    """q(x_prev | x_t, x0) = N(c0 * x0 + ct * x_t, std^2): the DDPM step written for any space,
    used where the step is taken on a UV texture rather than on the view latents."""

    x0_coeff: float
    xt_coeff: float
    std: float


def posterior(scheduler: DDPMScheduler, t: int) -> Posterior:
    """The coefficients DDPMScheduler.step uses at timestep t (fixed_small variance)."""
    prev_t = int(scheduler.previous_timestep(t))
    a_t = float(scheduler.alphas_cumprod[t])
    a_prev = float(scheduler.alphas_cumprod[prev_t]) if prev_t >= 0 else 1.0
    alpha_t = a_t / a_prev
    beta_t = 1.0 - alpha_t
    x0_coeff = a_prev ** 0.5 * beta_t / (1.0 - a_t)
    xt_coeff = alpha_t ** 0.5 * (1.0 - a_prev) / (1.0 - a_t)
    variance = max((1.0 - a_prev) / (1.0 - a_t) * beta_t, 1e-20) if t > 0 else 0.0
    return Posterior(x0_coeff, xt_coeff, variance ** 0.5 if t > 0 else 0.0)


def predict_x0(scheduler: DDPMScheduler, sample: torch.Tensor, eps: torch.Tensor, t: int) -> torch.Tensor:
    """Clean-sample estimate from an epsilon prediction at timestep t."""
    a_t = float(scheduler.alphas_cumprod[t])
    return (sample - (1.0 - a_t) ** 0.5 * eps) / a_t ** 0.5
