"""One SDXL attn1 with the MV-Adapter processor against the release's processor outputs."""
import json

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention
from safetensors.torch import load_file
from torch import nn

from backend.texture.mv_attention import MVAttnProcessor, MVCall, ReferenceCache

from .conftest import FORWARD_FP32, FORWARD_FP64, folder, rel


@pytest.fixture(scope="module")
def ref():
    return np.load(folder("geometry_and_attention", "reference.npz"))


def layer(dtype):
    """The layer as the UNet holds it: `attn1` with its processor at `attn1.processor`."""
    where = folder("geometry_and_attention", "texture", "mv_attn")
    config = json.loads((where / "config.json").read_text())
    name = config["layer_name"].removesuffix(".processor")
    holder = nn.Module()
    holder.attn1 = Attention(query_dim=config["query_dim"], heads=config["heads"], dim_head=config["dim_head"],
                             out_bias=True)
    holder.attn1.set_processor(MVAttnProcessor(name, config["query_dim"]))
    holder.load_state_dict(load_file(str(where / "attn1.safetensors")), strict=True)
    return holder.attn1.to(dtype).eval(), config


@pytest.mark.parametrize("dtype,tol", [(torch.float32, FORWARD_FP32), (torch.float64, FORWARD_FP64)])
def test_processor_modes(ref, dtype, tol):
    """full / mv_only / ref_only / plain. The reference input differs per batch row here (in the
    pipeline it is one image per group), so the reference term is taken row by row from a cache
    recorded for that row; its attention runs per query token, so this is the release's function."""
    attn, config = layer(dtype)
    x = torch.from_numpy(ref["mv_attn/in/hidden_states"]).to(dtype)
    ref_rows = torch.from_numpy(ref["mv_attn/in/ref_hidden_states"]).to(dtype)
    size = (config["height"], config["width"])
    groups = (True,) * config["batch"]
    suffix = "fp32" if dtype == torch.float32 else "fp64"

    def run(use_mv: bool, use_ref: bool) -> torch.Tensor:
        if not (use_mv or use_ref):
            return attn(x)
        rows = []
        for i in range(len(x)):
            cache = ReferenceCache()
            attn(ref_rows[i:i + 1], mv=MVCall("record", size, cache))
            call = MVCall("generate", size, cache, ref_groups=groups, mv_scale=float(use_mv),
                          ref_scale=float(use_ref))
            rows.append(attn(x, mv=call)[i])
        return torch.stack(rows)

    with torch.no_grad():
        for mode, use_mv, use_ref in (("full", True, True), ("mv_only", True, False),
                                      ("ref_only", False, True), ("plain", False, False)):
            assert rel(run(use_mv, use_ref), ref[f"mv_attn/out/{mode}_{suffix}"]) < tol, mode
