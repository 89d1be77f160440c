"""Flow-matching sampling of shape latents with classifier-free guidance.

The scheduler is diffusers' FlowMatchEulerDiscreteScheduler as configured by the checkpoint
(`x_s = (1 - s) x0 + s eps`, the model predicts v = eps - x0, Euler steps). The unconditional and
conditional branches run as one batched forward; latents stay float32 between steps whatever
precision the model runs in; nothing in the loop waits on the device, so the GPU stays busy while
the host reports progress.
"""
from __future__ import annotations

from typing import Callable

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from .dit import GeometryDenoiser


def initial_noise(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Float32 Gaussian noise drawn on the generator's device (the release draws on the pipeline
    device, so the same seed gives the same noise as the release on the same device type)."""
    return torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32).to(device)


@torch.no_grad()
def sample_latents(
    denoiser: GeometryDenoiser,
    scheduler: FlowMatchEulerDiscreteScheduler,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    noise: torch.Tensor,
    steps: int,
    guidance_scale: float,
    zero_first_step: bool = True,
    on_step: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Denoise `noise` [B, N, C] to clean latents given context tokens `cond` / `uncond` [B, M, D].

    `zero_first_step` reproduces the release (`use_zero_init`): the guided velocity of step 0 is
    multiplied by zero, so that step leaves the latents unchanged. It is skipped instead of
    computed and discarded, which is bitwise the same and saves one of the `steps` forwards.
    Guidance applies only above 1, as in the release; any value up to 1 samples the conditional
    branch alone.
    """
    if steps < 1:
        raise ValueError(f"need at least one step, got {steps}")
    scheduler.set_timesteps(steps, device=noise.device)
    first = 1 if zero_first_step else 0
    scheduler.set_begin_index(first)
    guided = guidance_scale > 1.0  # the release's condition: at or below 1 the conditional branch alone
    context = torch.cat([uncond, cond]) if guided else cond
    latents = noise.float()
    if on_step and first:
        on_step(1, steps)
    for i in range(first, steps):
        t = scheduler.timesteps[i]
        x = torch.cat([latents, latents]) if guided else latents
        velocity = denoiser(x, t, context).float()
        if guided:
            v_uncond, v_cond = velocity.chunk(2)
            velocity = v_uncond + guidance_scale * (v_cond - v_uncond)
        latents = scheduler.step(velocity, t, latents).prev_sample
        if on_step:
            on_step(i + 1, steps)
    return latents
