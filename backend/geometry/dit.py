"""The geometry denoiser: a Flux-style 1-D MMDiT over the 2048 shape-latent tokens.

Built from diffusers' Flux blocks (same math, same parameter names as the release), with the
release's differences from image Flux: no positional encoding at all (the latent tokens are an
unordered set of point queries), a timestep embedding as wide as the model with an exact-GELU MLP
and nothing pooled or guidance-related added to it, and the condition tokens projected by one
Linear and placed *before* the latent tokens in every joint attention.
"""
from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import AdaLayerNormContinuous
from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock, FluxTransformerBlock
from torch import nn

from .loading import StrictLoadMixin


class FluxTransformer1D(nn.Module):
    """`dit_model` of the release: velocity v = eps - x0 for latents [B, N, C] given context [B, M, D]."""

    def __init__(self, width: int, heads: int, in_channels: int, layers: int, single_layers: int, context_dim: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        head_dim = width // heads
        self.time_embed = Timesteps(width, flip_sin_to_cos=False, downscale_freq_shift=0)  # sin first, no shift
        self.time_proj = TimestepEmbedding(width, 4 * width, act_fn="gelu", out_dim=width)
        self.proj_in = nn.Linear(in_channels, width)
        self.proj_cross_attention = nn.Linear(context_dim, width)
        self.transformer_blocks = nn.ModuleList(FluxTransformerBlock(width, heads, head_dim) for _ in range(layers))
        self.single_transformer_blocks = nn.ModuleList(
            FluxSingleTransformerBlock(width, heads, head_dim) for _ in range(single_layers)
        )
        self.norm_out = AdaLayerNormContinuous(width, width, elementwise_affine=False, eps=1e-6)
        self.proj_out = nn.Linear(width, in_channels)

    def forward(self, latents: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        dtype = self.proj_in.weight.dtype
        # The sinusoid is computed in float32 (as diffusers does) and only then cast.
        temb = self.time_proj(self.time_embed(timestep.reshape(-1).expand(latents.shape[0])).to(dtype))
        x = self.proj_in(latents.to(dtype))
        c = self.proj_cross_attention(context.to(dtype))
        for block in self.transformer_blocks:
            c, x = block(hidden_states=x, encoder_hidden_states=c, temb=temb)
        for block in self.single_transformer_blocks:
            c, x = block(hidden_states=x, encoder_hidden_states=c, temb=temb)
        return self.proj_out(self.norm_out(x, temb))


class GeometryDenoiser(StrictLoadMixin, ModelMixin, ConfigMixin):
    """The `transformer/` component (the release's `FluxDenoiser`); config keys are the release's.

    Conditions are concatenated along tokens in the release's order: visual, caption, label. A
    condition whose width differs from `condition_dim` first goes through RMSNorm + Linear
    (`proj_*_condtion`, spelled as in the release); the released models need none.
    """

    @register_to_config
    def __init__(
        self,
        input_channels: int = 64,
        width: int = 1280,
        layers: int = 12,
        num_single_layers: int = 24,
        num_heads: int = 20,
        condition_dim: int = 1024,
        multi_condition_type: str = "in_context",
        use_visual_condition: bool = True,
        visual_condition_dim: int = 1024,
        use_caption_condition: bool = False,
        caption_condition_dim: int = 1024,
        use_label_condition: bool = False,
        label_condition_dim: int = 1024,
    ):
        super().__init__()
        if multi_condition_type != "in_context":
            raise ValueError(f"multi_condition_type {multi_condition_type!r} is not supported (only 'in_context')")
        self.dit_model = FluxTransformer1D(width, num_heads, input_channels, layers, num_single_layers, condition_dim)
        for kind, used, dim in (
            ("visual", use_visual_condition, visual_condition_dim),
            ("caption", use_caption_condition, caption_condition_dim),
            ("label", use_label_condition, label_condition_dim),
        ):
            if used and dim != condition_dim:
                self.add_module(f"proj_{kind}_condtion", nn.Sequential(nn.RMSNorm(dim), nn.Linear(dim, condition_dim)))

    def context(
        self,
        visual: torch.Tensor | None = None,
        caption: torch.Tensor | None = None,
        label: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The context token sequence from the conditions this model was trained with."""
        parts = []
        for kind, tokens in (("visual", visual), ("caption", caption), ("label", label)):
            if not self.config[f"use_{kind}_condition"]:
                continue
            if tokens is None:
                raise ValueError(f"this denoiser needs a {kind} condition")
            if tokens.shape[-1] != self.config[f"{kind}_condition_dim"]:
                raise ValueError(f"{kind} condition has width {tokens.shape[-1]}, expected {self.config[f'{kind}_condition_dim']}")
            proj = getattr(self, f"proj_{kind}_condtion", None)
            parts.append(proj(tokens) if proj is not None else tokens)
        return torch.cat(parts, dim=1)

    def forward(self, latents: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.dit_model(latents, timestep, context)
