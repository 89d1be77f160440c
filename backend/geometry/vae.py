"""The shape VAE: a perceiver autoencoder between surface point sets and 2048 x 64 latents.

Encoder: Fourier-embedded points (uniform and sharp-edge sets) -> farthest-point-sampled queries
cross-attend to each set -> 8 self-attention blocks -> KL bottleneck. Decoder: 16 self-attention
blocks over the latents, then a query decoder that maps any 3-D point to a field value by
cross-attending to them. Weight layouts follow the release exactly: q/k/v packed *per head*
(`[h0: q k v | h1: q k v | ...]`), Fourier features coordinate-major with the raw input first.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .fps import farthest_point_sample
from .loading import StrictLoadMixin


class FourierEmbedder(nn.Module):
    """[x, sin(x*f), cos(x*f)] with f = 2^k (times pi if asked), products ordered coordinate-major."""

    def __init__(self, num_freqs: int = 8, include_pi: bool = False, input_dim: int = 3):
        super().__init__()
        freqs = 2.0 ** torch.arange(num_freqs, dtype=torch.float32)
        self.register_buffer("frequencies", freqs * torch.pi if include_pi else freqs, persistent=False)
        self.out_dim = input_dim * (2 * num_freqs + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angles = (x[..., None] * self.frequencies.to(x.dtype)).flatten(-2)
        return torch.cat([x, angles.sin(), angles.cos()], dim=-1)


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """[B, N, H, d] tensors -> [B, N, H*d]; SDPA picks the fused kernel."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2).flatten(2)


class MLP(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, qkv_bias: bool):
        super().__init__()
        self.heads = heads
        self.c_qkv = nn.Linear(width, 3 * width, bias=qkv_bias)
        self.c_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head_dim = x.shape[-1] // self.heads
        q, k, v = self.c_qkv(x).unflatten(-1, (self.heads, 3 * head_dim)).split(head_dim, dim=-1)
        return self.c_proj(_attend(q, k, v))


class CrossAttention(nn.Module):
    def __init__(self, width: int, heads: int, qkv_bias: bool):
        super().__init__()
        self.heads = heads
        self.c_q = nn.Linear(width, width, bias=qkv_bias)
        self.c_kv = nn.Linear(width, 2 * width, bias=qkv_bias)
        self.c_proj = nn.Linear(width, width)

    def key_values(self, data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        head_dim = data.shape[-1] // self.heads
        k, v = self.c_kv(data).unflatten(-1, (self.heads, 2 * head_dim)).split(head_dim, dim=-1)
        return k, v

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        q = self.c_q(x).unflatten(-1, (self.heads, x.shape[-1] // self.heads))
        return self.c_proj(_attend(q, *kv))


class SelfAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, qkv_bias: bool):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads, qkv_bias)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = MLP(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class CrossAttentionBlock(nn.Module):
    """q + Attn(LN1(q), LN2(data)), then + MLP(LN3(.)); the data side can be precomputed once."""

    def __init__(self, width: int, heads: int, qkv_bias: bool):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.ln_2 = nn.LayerNorm(width)
        self.attn = CrossAttention(width, heads, qkv_bias)
        self.ln_3 = nn.LayerNorm(width)
        self.mlp = MLP(width)

    def key_values(self, data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.attn.key_values(self.ln_2(data))

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), kv)
        return x + self.mlp(self.ln_3(x))


class Transformer(nn.Module):
    def __init__(self, width: int, heads: int, layers: int, qkv_bias: bool):
        super().__init__()
        self.resblocks = nn.ModuleList(SelfAttentionBlock(width, heads, qkv_bias) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


class PerceiverEncoder(nn.Module):
    def __init__(self, fourier: FourierEmbedder, width: int, heads: int, layers: int, point_feats: int,
                 qkv_bias: bool, with_sharp_data: bool):
        super().__init__()
        self.fourier = fourier
        in_dim = fourier.out_dim + point_feats
        self.input_proj = nn.Linear(in_dim, width)
        self.cross_attn = CrossAttentionBlock(width, heads, qkv_bias)
        if with_sharp_data:
            self.input_proj_sharp = nn.Linear(in_dim, width)
            self.cross_attn_sharp = CrossAttentionBlock(width, heads, qkv_bias)
        self.self_attn = Transformer(width, heads, layers, qkv_bias)
        self.ln_post = nn.LayerNorm(width)

    def _project(self, proj: nn.Linear, points: torch.Tensor) -> torch.Tensor:
        points = at_least_float32(points)  # Fourier features of bf16 coordinates are noise at 2^7
        return proj(torch.cat([self.fourier(points[..., :3]), points[..., 3:]], dim=-1).to(proj.weight.dtype))

    def forward(self, sets: list[torch.Tensor], num_latents: int, generator: torch.Generator | None) -> torch.Tensor:
        """`sets` = [uniform] or [uniform, sharp], each [B, N, 3 + point_feats]; queries split evenly."""
        blocks = [(self.input_proj, self.cross_attn)]
        if len(sets) == 2:
            blocks.append((self.input_proj_sharp, self.cross_attn_sharp))
        feats, queries = [], []
        for points, (proj, _) in zip(sets, blocks):
            f = self._project(proj, points)
            idx = farthest_point_sample(points[..., :3], num_latents // len(sets), generator=generator)
            feats.append(f)
            queries.append(torch.gather(f, 1, idx[..., None].expand(-1, -1, f.shape[-1])))
        query = torch.cat(queries, dim=1)
        # The release sums full residual blocks, so the query enters once per point set.
        latents = sum(block(query, block.key_values(f)) for f, (_, block) in zip(feats, blocks))
        return self.ln_post(self.self_attn(latents))


class QueryDecoder(nn.Module):
    def __init__(self, fourier: FourierEmbedder, width: int, heads: int, out_dim: int, qkv_bias: bool):
        super().__init__()
        self.fourier = fourier
        self.query_proj = nn.Linear(fourier.out_dim, width)
        self.cross_attn_decoder = CrossAttentionBlock(width, heads, qkv_bias)
        self.ln_post = nn.LayerNorm(width)
        self.output_proj = nn.Linear(width, out_dim)

    def key_values(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cross_attn_decoder.key_values(tokens)

    def forward(self, points: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        # Features in float32 first: a bf16 coordinate is off by up to 0.004, close to a lattice step.
        x = self.query_proj(self.fourier(at_least_float32(points)).to(self.query_proj.weight.dtype))
        return self.output_proj(self.ln_post(self.cross_attn_decoder(x, kv)))


class ShapeVAE(StrictLoadMixin, ModelMixin, ConfigMixin):
    """The `vae/` component (the release's `MichelangeloAutoencoder`); config keys are the release's."""

    @register_to_config
    def __init__(
        self,
        num_latents: int = 2048,
        embed_dim: int = 64,
        point_feats: int = 3,
        out_dim: int = 1,
        num_freqs: int = 8,
        include_pi: bool = False,
        heads: int = 12,
        width: int = 768,
        num_encoder_layers: int = 8,
        num_decoder_layers: int = 16,
        use_ln_post: bool = True,
        qkv_bias: bool = False,
        use_downsample: bool = True,
        with_sharp_data: bool = True,
        z_scale_factor: float = 1.0,
    ):
        super().__init__()
        if not (use_ln_post and use_downsample):
            raise ValueError("only use_ln_post=True and use_downsample=True (the released VAE) are supported")
        fourier = FourierEmbedder(num_freqs, include_pi)
        self.encoder = PerceiverEncoder(fourier, width, heads, num_encoder_layers, point_feats, qkv_bias, with_sharp_data)
        self.pre_kl = nn.Linear(width, 2 * embed_dim)
        self.post_kl = nn.Linear(embed_dim, width)
        self.transformer = Transformer(width, heads, num_decoder_layers, qkv_bias)
        self.decoder = QueryDecoder(fourier, width, heads, out_dim, qkv_bias)

    def encode(
        self,
        surface: torch.Tensor,
        sharp_surface: torch.Tensor | None = None,
        sample_posterior: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Points [B, N, 3 + point_feats] (xyz + normal) -> diffusion latents [B, num_latents, embed_dim]."""
        if self.config.with_sharp_data and sharp_surface is None:
            raise ValueError("this VAE encodes a uniform and a sharp-edge point set; sharp_surface is missing")
        sets = [surface, sharp_surface] if self.config.with_sharp_data else [surface]
        tokens = self.encoder(sets, self.config.num_latents, generator)
        mean, logvar = self.pre_kl(tokens).float().chunk(2, dim=-1)
        z = mean
        if sample_posterior:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            z = mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * noise
        return z * self.config.z_scale_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Diffusion latents -> the tokens the query decoder attends to ([B, num_latents, width])."""
        z = latents / self.config.z_scale_factor
        return self.transformer(self.post_kl(z.to(self.post_kl.weight.dtype)))

    def query(self, points: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Field value (positive inside) at points [B, P, 3] -> [B, P] in float32."""
        return self.decoder(points, self.decoder.key_values(tokens))[..., 0].float()
