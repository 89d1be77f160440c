"""Flow-matching sampler: schedule from the checkpoint config, determinism, CFG batching, the
release's first-step behaviour, and the Euler update itself against a float64 loop."""
import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from backend.geometry.dit import GeometryDenoiser
from backend.geometry.sampler import initial_noise, sample_latents

STEPS, GUIDANCE = 6, 7.5


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GeometryDenoiser(input_channels=8, width=32, layers=1, num_single_layers=1, num_heads=2,
                            condition_dim=12, visual_condition_dim=12).double().eval()


@pytest.fixture()
def scheduler():
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)


@pytest.fixture(scope="module")
def conds():
    g = torch.Generator().manual_seed(1)
    cond = torch.randn(1, 5, 12, generator=g, dtype=torch.float64)
    return cond, torch.zeros_like(cond)


def noise(seed):
    return initial_noise((1, 10, 8), torch.Generator().manual_seed(seed), torch.device("cpu"))


def reference_loop(model, cond, uncond, x, zero_first_step):
    """float64, two separate forwards per step, sigmas written out: linear 1 -> 1/1000, then 0."""
    sigmas = np.append(np.linspace(1000, 1, STEPS) / 1000, 0.0)
    x = x.double()
    for i in range(STEPS):
        t = torch.tensor([sigmas[i] * 1000], dtype=torch.float64)
        v_u, v_c = model(x, t, uncond), model(x, t, cond)
        v = v_u + GUIDANCE * (v_c - v_u)
        if zero_first_step and i == 0:
            v = v * 0
        x = x + (sigmas[i + 1] - sigmas[i]) * v
    return x


def test_schedule_follows_scheduler_config(scheduler):
    scheduler.set_timesteps(50)
    np.testing.assert_allclose(scheduler.timesteps.numpy(), np.linspace(1000, 1, 50), rtol=1e-6)
    assert scheduler.sigmas[-1] == 0
    shifted = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    shifted.set_timesteps(50)
    assert not torch.allclose(shifted.sigmas, scheduler.sigmas)  # the checkpoint's config is what counts


@pytest.mark.parametrize("zero_first_step", [True, False])
def test_batched_cfg_matches_separate_passes(model, scheduler, conds, zero_first_step):
    cond, uncond = conds
    with torch.no_grad():
        ours = sample_latents(model, scheduler, cond, uncond, noise(3), STEPS, GUIDANCE, zero_first_step)
        ref = reference_loop(model, cond, uncond, noise(3), zero_first_step)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-5)


def test_zero_first_step_leaves_step_one_idle(model, scheduler, conds):
    cond, uncond = conds
    calls = []
    with torch.no_grad():
        a = sample_latents(model, scheduler, cond, uncond, noise(3), STEPS, GUIDANCE, True, on_step=lambda i, n: calls.append(i))
        b = sample_latents(model, scheduler, cond, uncond, noise(3), STEPS, GUIDANCE, False)
    assert calls == list(range(1, STEPS + 1))
    assert not torch.allclose(a, b)


def test_seeded_and_deterministic(model, scheduler, conds):
    cond, uncond = conds
    with torch.no_grad():
        a = sample_latents(model, scheduler, cond, uncond, noise(7), STEPS, GUIDANCE)
        b = sample_latents(model, scheduler, cond, uncond, noise(7), STEPS, GUIDANCE)
        c = sample_latents(model, scheduler, cond, uncond, noise(8), STEPS, GUIDANCE)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.float32


def test_guidance_one_runs_conditional_only(model, scheduler, conds):
    cond, uncond = conds
    seen = []
    hook = model.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    try:
        with torch.no_grad():
            sample_latents(model, scheduler, cond, uncond, noise(1), 3, 1.0, zero_first_step=False)
            sample_latents(model, scheduler, cond, uncond, noise(1), 3, 7.5, zero_first_step=True)
    finally:
        hook.remove()
    assert seen == [1, 1, 1, 2, 2]  # one batched CFG forward per step; the idle first step is skipped


@pytest.mark.parametrize("guidance", [0.0, 0.5])
def test_guidance_at_or_below_one_is_the_conditional_branch_as_in_the_release(model, scheduler, conds, guidance):
    """The release guides only when guidance > 1; 0 would otherwise sample the unconditional branch."""
    cond, uncond = conds
    with torch.no_grad():
        low = sample_latents(model, scheduler, cond, uncond, noise(1), 3, guidance, zero_first_step=False)
        one = sample_latents(model, scheduler, cond, uncond, noise(1), 3, 1.0, zero_first_step=False)
    assert torch.equal(low, one)
