"""The split plan: guidance halves on two devices give the unsplit results (both "devices" are the
CPU here: the split, the per-call routing and the join are what is tested; the GPUs' copies are
torch's). Tiny texture UNet with the MV-Adapter and tiny geometry DiT."""
import copy

import pytest
import torch

from backend.runtime.cfg_split import split_cfg
from backend.runtime.devices import GpuInfo
from backend.runtime.plan import make_plan
from shared.errors import BackendError
from tests.geometry.test_fast_paths import _image, _pipe
from tests.texture.test_fast_paths import _call, adapted_unet
from backend.geometry import GeometryOptions


class Calls:
    def __init__(self, module):
        self.batches = []
        module.register_forward_pre_hook(lambda m, args: self.batches.append(args[0].shape[0]))


@torch.no_grad()
def test_split_unet_step_equals_the_whole_batch_and_runs_half_on_the_twin():
    whole = adapted_unet()
    split = split_cfg(copy.deepcopy(whole), "cpu")
    twin = Calls(split._cfg_split.twin)
    for seed in (0, 1):  # two jobs: reference keys/values copied once each
        torch.testing.assert_close(_call(split, seed), _call(whole, seed), rtol=1e-5, atol=1e-6)
    assert twin.batches == [6, 6]  # the conditional views of each step; never the reference pass
    assert split_cfg(split, "cpu") is split and split.forward is split._cfg_split


@torch.no_grad()
def test_split_denoiser_gives_the_same_latents():
    whole, quick = _pipe(), _pipe()
    split_cfg(quick.denoiser, "cpu")
    twin = Calls(quick.denoiser._cfg_split.twin)
    options = GeometryOptions(steps=4, octree_resolution=32)
    want = whole.sample(_image(), options)
    torch.testing.assert_close(quick.sample(_image(), options), want, rtol=1e-5, atol=1e-6)
    assert twin.batches == [1, 1, 1]  # steps 2-4 (step 1 is skipped as the release does)
    assert not torch.allclose(whole.sample(_image(), GeometryOptions(steps=4, octree_resolution=32, seed=1)), want)


def gpu(i, free_gib):
    return GpuInfo(i, "GPU", 80 * 2**30, int(free_gib * 2**30))


def test_split_plan_needs_two_gpus_with_room_for_both_stages():
    plan = make_plan("split", [gpu(0, 70), gpu(1, 70)], {})
    assert (plan.kind, plan.geometry_device, plan.texture_device, plan.cfg_device) == ("split", "cuda:0", "cuda:0", "cuda:1")
    assert "split" in plan.describe() and "cuda:1" in plan.describe()
    assert make_plan("split", [gpu(0, 70), gpu(1, 70)], {}, geometry_gpu=1, texture_gpu=0).cfg_device == "cuda:0"
    for gpus, code in (([gpu(0, 70)], "engine_unavailable"), ([gpu(0, 70), gpu(1, 10)], "out_of_memory")):
        with pytest.raises(BackendError) as err:
            make_plan("split", gpus, {})
        assert err.value.code == code
