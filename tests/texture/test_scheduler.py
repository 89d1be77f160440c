"""The SNR-shifted DDPM schedule against its defining formula."""
import numpy as np
import torch

from backend.texture.scheduler import posterior, predict_x0, shifted_ddpm_scheduler
from tests.texture.tiny_weights import SDXL_SCHEDULER


def test_shifted_alphas_follow_the_formula():
    sched = shifted_ddpm_scheduler(SDXL_SCHEDULER)
    t = np.arange(1000, dtype=np.float64)
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2
    alpha_bar = np.cumprod(1 - betas)
    snr = alpha_bar / (1 - alpha_bar) * 8.0 ** (-t / 999)
    expected = snr / (1 + snr)
    np.testing.assert_allclose(sched.alphas_cumprod.double().numpy(), expected, rtol=2e-5)
    assert abs(float(sched.alphas_cumprod[0]) - alpha_bar[0]) < 1e-6  # no shift at t = 0
    # the shift makes every step noisier than SDXL's own schedule
    assert np.all(sched.alphas_cumprod.double().numpy()[1:] < alpha_bar[1:])


def test_timesteps_and_scheduler_type():
    sched = shifted_ddpm_scheduler(SDXL_SCHEDULER)
    sched.set_timesteps(50)
    assert sched.timesteps.tolist() == list(range(981, 0, -20))
    assert sched.config.variance_type == "fixed_small" and not sched.config.clip_sample


def test_texture_space_posterior_equals_the_scheduler_step():
    sched = shifted_ddpm_scheduler(SDXL_SCHEDULER)
    sched.set_timesteps(50)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    eps = torch.randn_like(x)
    for t in (981, 501, 21, 1):
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(t), dtype=torch.float64)
        stepped = sched.step(eps, t, x, generator=torch.Generator().manual_seed(t)).prev_sample
        p = posterior(sched, t)
        mine = p.x0_coeff * predict_x0(sched, x, eps, t) + p.xt_coeff * x + p.std * noise
        torch.testing.assert_close(mine, stepped, rtol=1e-5, atol=1e-5)
    last = posterior(sched, 1)  # the final step returns the clean estimate
    assert abs(last.x0_coeff - 1) < 1e-9 and abs(last.xt_coeff) < 1e-9 and last.std < 1e-9
