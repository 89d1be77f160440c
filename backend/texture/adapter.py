"""Installing the MV-Adapter into a diffusers SDXL UNet and loading the released adapter file.

`Step1X-3D-Texture/step1x-3d-ig2v.safetensors` holds two things under their original names:
the `_mv`/`_ref` projections of the 70 `attn1` processors (`<layer>.attn1.processor.to_q_mv.weight`,
...) and a diffusers `T2IAdapter` (`full_adapter_xl`, 6 input channels) under `adapter.*`. The
processors are created on the meta device and receive the file's tensors by assignment, so the
900 M adapter parameters are never initialised only to be overwritten.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from diffusers import T2IAdapter, UNet2DConditionModel
from diffusers.models.attention_processor import Attention
from safetensors import safe_open
from safetensors.torch import load_file

from shared.errors import BackendError

from .mv_attention import MVAttnProcessor, PlainAttnProcessor

ADAPTER_FILE = "Step1X-3D-Texture/step1x-3d-ig2v.safetensors"
T2I_PREFIX = "adapter."
CONTROL_CHANNELS = 6  # position RGB + normal RGB


def t2i_adapter_config(unet_config: Mapping) -> dict:
    """The release's T2I-adapter configuration, derived from the UNet it feeds (SDXL: channels
    320/640/1280/1280, pixel-unshuffle 16 = VAE factor 8 x the first UNet downsample)."""
    blocks = list(unet_config["block_out_channels"])
    if len(blocks) != 3:
        raise ValueError("full_adapter_xl feeds a UNet with SDXL's three down blocks")
    return {"in_channels": CONTROL_CHANNELS, "channels": [*blocks, blocks[-1]], "num_res_blocks": 2,
            "downscale_factor": 16, "adapter_type": "full_adapter_xl"}


def _self_attention_layers(unet: UNet2DConditionModel) -> list[tuple[str, Attention]]:
    return [(name, m) for name, m in unet.named_modules() if name.endswith("attn1") and isinstance(m, Attention)]


def install_mv_processors(unet: UNet2DConditionModel) -> None:
    """Give every attn1 an (empty, meta-device) MV-Adapter processor and every other attention layer
    the plain SDPA processor. Follow with `load_adapter` or `init_adapter_from_base`."""
    processors = {}
    for layer, attn in _self_attention_layers(unet):
        dim = attn.to_q.in_features
        plain = (attn.to_q.out_features == dim and attn.group_norm is None and attn.spatial_norm is None
                 and attn.norm_q is None and not attn.residual_connection and attn.rescale_output_factor == 1.0)
        if not plain:
            raise ValueError(f"{layer} is not an SDXL-style self-attention layer")
        with torch.device("meta"):
            processors[f"{layer}.processor"] = MVAttnProcessor(layer, dim)
    for name in unet.attn_processors:
        processors.setdefault(name, PlainAttnProcessor())
    unet.set_attn_processor(processors)


def adapter_shapes(unet: UNet2DConditionModel, t2i: T2IAdapter) -> dict[str, tuple[int, ...]]:
    """Every parameter the adapter file must provide, with its shape."""
    shapes = {n: tuple(p.shape) for n, p in unet.named_parameters() if ".processor." in n}
    shapes.update({n: tuple(p.shape) for n, p in t2i.state_dict().items()})
    return shapes


def check_adapter_keys(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]],
                       source: str) -> None:
    """Exact key-and-shape match, or a `weights_not_found` error listing what differs."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    reshaped = sorted(k for k in set(expected) & set(found) if tuple(expected[k]) != tuple(found[k]))
    if missing or unexpected or reshaped:
        parts = [f"{len(missing)} missing (e.g. {missing[:3]})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})" if unexpected else "",
                 f"{len(reshaped)} with other shapes (e.g. {reshaped[:3]})" if reshaped else ""]
        raise BackendError("weights_not_found", f"{source} is not a Step1X-3D texture adapter for this UNet: "
                           + ", ".join(p for p in parts if p))


def file_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(str(path), framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def assign_adapter_state(unet: UNet2DConditionModel, t2i: T2IAdapter, state: Mapping[str, torch.Tensor],
                         source: str) -> None:
    """Check `state` against the installed processors and the T2I adapter, then assign it (cast to
    the UNet's dtype and device)."""
    check_adapter_keys(adapter_shapes(unet, t2i), {k: tuple(v.shape) for k, v in state.items()}, source)
    dtype, device = unet.dtype, unet.device
    cast = {k: v.to(device=device, dtype=dtype) for k, v in state.items()}
    unet.load_state_dict({k: v for k, v in cast.items() if not k.startswith(T2I_PREFIX)}, strict=False, assign=True)
    t2i.load_state_dict({k: v for k, v in cast.items() if k.startswith(T2I_PREFIX)}, strict=True, assign=True)


def load_adapter(unet: UNet2DConditionModel, path: Path) -> T2IAdapter:
    """Install the processors, read the adapter file and return the loaded T2I adapter."""
    install_mv_processors(unet)
    with torch.device("meta"):
        t2i = T2IAdapter(**t2i_adapter_config(unet.config))
    check_adapter_keys(adapter_shapes(unet, t2i), file_shapes(path), str(path))
    assign_adapter_state(unet, t2i, load_file(str(path)), str(path))
    return t2i.eval()


def init_adapter_from_base(unet: UNet2DConditionModel) -> None:
    """MV-Adapter's initialisation: `_mv`/`_ref` q/k/v copied from the layer's own attention,
    output projections zero, so a fresh adapter leaves the UNet's output unchanged."""
    for layer, attn in _self_attention_layers(unet):
        proc = attn.processor
        if not isinstance(proc, MVAttnProcessor):
            raise ValueError(f"{layer} has no MV-Adapter processor; call install_mv_processors first")
        state = {}
        for branch in ("mv", "ref"):
            for p in ("q", "k", "v"):
                state[f"to_{p}_{branch}.weight"] = getattr(attn, f"to_{p}").weight.detach().clone()
            state[f"to_out_{branch}.0.weight"] = torch.zeros_like(attn.to_out[0].weight)
            state[f"to_out_{branch}.0.bias"] = torch.zeros_like(attn.to_out[0].bias)
        proc.load_state_dict(state, strict=True, assign=True)
