"""The MV-Adapter installed in a (tiny, SDXL-structured) diffusers UNet, and the release key set."""
import json
from pathlib import Path

import pytest
import torch
from diffusers import T2IAdapter, UNet2DConditionModel

from backend.texture.adapter import (adapter_shapes, assign_adapter_state, check_adapter_keys, init_adapter_from_base,
                                     install_mv_processors, t2i_adapter_config)
from backend.texture.mv_attention import MVCall, ReferenceCache
from shared.errors import BackendError
from tests.texture.tiny_weights import TEXT_WIDTH, adapter_state, perturb_, tiny_unet

KEYS = Path(__file__).resolve().parents[2].parent / "shared" / "docs" / "reference" / "step1x3d-state-dict-keys.json"


def test_release_adapter_keys_match_full_size_sdxl_exactly():
    if not KEYS.is_file():
        pytest.skip(f"{KEYS} not found")
    release = json.loads(KEYS.read_text())["modules"]["texture_adapter"]
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(release["config"]["unet_config"])
    install_mv_processors(unet)
    config = t2i_adapter_config(unet.config)
    assert config == release["config"]["t2i_adapter_config"]
    with torch.device("meta"):
        t2i = T2IAdapter(**config)
    expected = adapter_shapes(unet, t2i)
    found = {k: tuple(v) for k, v in release["keys"].items()}
    assert len(found) == release["num_keys"] == len(expected)
    check_adapter_keys(expected, found, "release key list")
    assert sum(n.endswith("attn1.processor") for n in unet.attn_processors) == 70
    assert sum(int(torch.Size(s).numel()) for s in expected.values()) == release["num_parameters"]
    with pytest.raises(BackendError) as err:
        check_adapter_keys(expected, {**found, "adapter.conv_in.bias": (321,)}, "edited")
    assert err.value.code == "weights_not_found" and "other shapes" in err.value.message


def _inputs(batch, seed=0, size=8):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, 4, size, size, generator=g, dtype=torch.float64)
    hidden = torch.randn(batch, 7, 2 * TEXT_WIDTH, generator=g, dtype=torch.float64)
    added = {"text_embeds": torch.randn(batch, TEXT_WIDTH, generator=g, dtype=torch.float64),
             "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]], dtype=torch.float64).expand(batch, -1)}
    return sample, hidden, added


def _record(unet, size=8):
    sample, hidden, added = _inputs(1, seed=3, size=size)
    cache = ReferenceCache()
    unet(sample, 0, encoder_hidden_states=hidden, added_cond_kwargs=added,
         cross_attention_kwargs={"mv": MVCall("record", (size, size), cache)})
    return cache


@torch.no_grad()
def test_fresh_adapter_leaves_the_unet_unchanged_and_trained_one_does_not():
    plain = tiny_unet().double()
    adapted = tiny_unet().double()
    install_mv_processors(adapted)
    init_adapter_from_base(adapted)
    cache = _record(adapted)
    assert len(cache.kv) == sum(n.endswith("attn1.processor") for n in adapted.attn_processors)
    sample, hidden, added = _inputs(12)
    call = {"mv": MVCall("generate", (8, 8), cache, ref_groups=(False, True))}
    want = plain(sample, 500, encoder_hidden_states=hidden, added_cond_kwargs=added).sample
    got = adapted(sample, 500, encoder_hidden_states=hidden, added_cond_kwargs=added,
                  cross_attention_kwargs=call).sample
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    for name, proc in adapted.attn_processors.items():
        if name.endswith("attn1.processor"):
            perturb_(proc, 0.1, 0)
    moved = adapted(sample, 500, encoder_hidden_states=hidden, added_cond_kwargs=added,
                    cross_attention_kwargs=call).sample
    assert (moved - want).abs().max() > 1e-3


@torch.no_grad()
def test_release_format_state_round_trips_through_assignment():
    state = adapter_state(tiny_unet())
    unet = tiny_unet()
    install_mv_processors(unet)
    with torch.device("meta"):
        t2i = T2IAdapter(**t2i_adapter_config(unet.config))
    assign_adapter_state(unet, t2i, state, "tiny")
    loaded = {**{k: v for k, v in unet.state_dict().items() if ".processor." in k}, **t2i.state_dict()}
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    with pytest.raises(BackendError):
        assign_adapter_state(unet, t2i, {k: v for k, v in state.items() if "to_q_ref" not in k}, "partial")

