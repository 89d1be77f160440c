"""MV-Adapter self-attention for SDXL's `attn1` layers (step1x3d-reference.md §4.6).

Each self-attention layer of the UNet sees the 6 views of one object as 6 batch items. Besides the
base self-attention within each view, the adapter adds, from the same normed input:

* multi-view attention with its own q/k/v: *row* attention across the 4 side views (front, right,
  back, left share image rows because they orbit the vertical axis) and *column* attention across
  front (mirrored), back, top and bottom (which share image columns); views in both groups take
  the mean of the two;
* reference attention: queries from the views, keys/values from the same layer's input during one
  UNet pass over the reference image.

out = to_out(SelfAttn) + mv_scale * to_out_mv(MVAttn) + ref_scale * to_out_ref(RefAttn)

Speed: the reference keys/values are projected once per job (`ReferenceCache`), not per step and
batch item; in the classifier-free-guidance negative branch the reference features are zeros, so
its keys and values are zero (the projections have no bias), attention returns zero and the branch
reduces exactly to to_out_ref's bias: nothing is computed there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn

NUM_VIEWS = 6
SIDE_VIEWS = (0, 1, 2, 3)  # front, right, back, left: row attention
COLUMN_VIEWS = (0, 2, 4, 5)  # front (mirrored), back, top, bottom: column attention


@dataclass
class ReferenceCache:
    """Per-layer reference keys/values, [1, tokens, channels] each, filled by a `record` pass."""

    kv: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.kv.values())


@dataclass
class MVCall:
    """What the adapter processors need to know about one UNet call (passed as
    `cross_attention_kwargs={"mv": MVCall(...)}`).

    mode "record": the reference pass; plain self-attention, and each layer stores the projected
    reference keys/values of its input in `cache`.
    mode "generate": the batch is consecutive blocks of the 6 views, one per entry of `ref_groups`;
    `ref_groups[g]` tells whether block g attends to the reference (False for the CFG-negative
    block, whose reference features are zeros).
    """

    mode: Literal["record", "generate"]
    latent_size: tuple[int, int]  # (height, width) of the UNet input latents
    cache: ReferenceCache
    ref_groups: tuple[bool, ...] = (True,)
    mv_scale: float = 1.0
    ref_scale: float = 1.0


def _heads_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Scaled dot-product attention on [B, L, C] tensors split into `heads` heads."""
    b, lq, c = q.shape
    d = c // heads
    q = q.view(b, lq, heads, d).transpose(1, 2)
    k = k.view(k.shape[0], -1, heads, d).transpose(1, 2)
    v = v.view(v.shape[0], -1, heads, d).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(b, lq, c)


def _row_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, V, h, w, C] -> same shape; each image row attends over that row in all V views."""
    b, nv, h, w, c = q.shape

    def rows(t: torch.Tensor) -> torch.Tensor:
        return t.permute(0, 2, 1, 3, 4).reshape(b * h, nv * w, c)

    out = _heads_sdpa(rows(q), rows(k), rows(v), heads)
    return out.view(b, h, nv, w, c).permute(0, 2, 1, 3, 4)


def _column_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, V, h, w, C] -> same shape; each image column attends over that column in all V views."""
    b, nv, h, w, c = q.shape

    def cols(t: torch.Tensor) -> torch.Tensor:
        return t.permute(0, 3, 1, 2, 4).reshape(b * w, nv * h, c)

    out = _heads_sdpa(cols(q), cols(k), cols(v), heads)
    return out.view(b, w, nv, h, c).permute(0, 2, 3, 1, 4)


def multiview_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                        height: int, width: int) -> torch.Tensor:
    """Row/column attention over groups of 6 views; q, k, v: [B * 6, height * width, C]."""
    bv, n, c = q.shape
    if bv % NUM_VIEWS or n != height * width:
        raise ValueError(f"expected [B*{NUM_VIEWS}, {height}*{width}, C] tokens, got {tuple(q.shape)}")
    b = bv // NUM_VIEWS

    def grid(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(b, NUM_VIEWS, height, width, c)

    def column_group(t: torch.Tensor) -> torch.Tensor:  # front mirrored left-right, back, top, bottom
        return torch.stack([t[:, 0].flip(2), t[:, 2], t[:, 4], t[:, 5]], dim=1)

    q, k, v = grid(q), grid(k), grid(v)
    row = _row_attention(q[:, :4], k[:, :4], v[:, :4], heads)
    col = _column_attention(column_group(q), column_group(k), column_group(v), heads)
    out = torch.stack([
        0.5 * (row[:, 0] + col[:, 0].flip(2)),
        row[:, 1],
        0.5 * (row[:, 2] + col[:, 1]),
        row[:, 3],
        col[:, 2],
        col[:, 3],
    ], dim=1)
    return out.reshape(bv, n, c)


def latent_grid(tokens: int, latent_size: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of a layer's token grid, from the token count and the UNet input's aspect ratio."""
    lh, lw = latent_size
    scale = math.sqrt(lh * lw / tokens)
    h, w = round(lh / scale), round(lw / scale)
    if h * w != tokens:
        raise ValueError(f"{tokens} tokens do not form a grid with the aspect of {lh}x{lw} latents")
    return h, w


class PlainAttnProcessor(AttnProcessor2_0):
    """SDPA attention for the cross-attention layers; accepts and ignores the `mv` call info
    (diffusers would otherwise log a warning for it on every call)."""

    def __call__(self, attn: Attention, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 mv: MVCall | None = None) -> torch.Tensor:
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class MVAttnProcessor(nn.Module):
    """The adapter's processor for one `attn1` layer; owns the `_mv` and `_ref` projections, so
    its parameters sit at `<layer>.processor.to_q_mv.weight` etc., as in the released file."""

    def __init__(self, layer_name: str, dim: int):
        super().__init__()
        self.layer_name = layer_name
        self.to_q_mv = nn.Linear(dim, dim, bias=False)
        self.to_k_mv = nn.Linear(dim, dim, bias=False)
        self.to_v_mv = nn.Linear(dim, dim, bias=False)
        self.to_out_mv = nn.ModuleList([nn.Linear(dim, dim)])
        self.to_q_ref = nn.Linear(dim, dim, bias=False)
        self.to_k_ref = nn.Linear(dim, dim, bias=False)
        self.to_v_ref = nn.Linear(dim, dim, bias=False)
        self.to_out_ref = nn.ModuleList([nn.Linear(dim, dim)])

    def __call__(self, attn: Attention, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 mv: MVCall | None = None) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None or hidden_states.ndim != 3:
            raise ValueError("the MV-Adapter processor serves unmasked self-attention on [B, L, C] tokens")
        x = hidden_states
        out = attn.to_out[0](_heads_sdpa(attn.to_q(x), attn.to_k(x), attn.to_v(x), attn.heads))
        out = attn.to_out[1](out)
        if mv is None:
            return out
        if mv.mode == "record":
            if x.shape[0] != 1:
                raise ValueError("the reference pass takes one reference image")
            mv.cache.kv[self.layer_name] = (self.to_k_ref(x), self.to_v_ref(x))
            return out
        return out + self._adapter_terms(attn, x, mv)

    def _adapter_terms(self, attn: Attention, x: torch.Tensor, mv: MVCall) -> torch.Tensor:
        return self._adapter_terms_from(attn, x, mv, self.to_q_mv(x), self.to_k_mv(x), self.to_v_mv(x))

    def _adapter_terms_from(self, attn: Attention, x: torch.Tensor, mv: MVCall, q_mv: torch.Tensor,
                            k_mv: torch.Tensor, v_mv: torch.Tensor) -> torch.Tensor:
        """The MV and reference terms given the MV projections of `x` (computed here or fused)."""
        bv, n, c = x.shape
        views, groups = NUM_VIEWS, len(mv.ref_groups)
        if groups * views != bv:
            raise ValueError(f"batch of {bv} is not {groups} groups of {views} views")
        h, w = latent_grid(n, mv.latent_size)
        mv_out = multiview_attention(q_mv, k_mv, v_mv, attn.heads, h, w)
        extra = self.to_out_mv[0](mv_out)
        if mv.mv_scale != 1.0:
            extra = extra * mv.mv_scale
        grouped_x = x.reshape(groups, views * n, c)
        grouped = extra.view(groups, views * n, c)
        for g, attends in enumerate(mv.ref_groups):
            if attends:
                # All views of a group share the reference keys: fold them into one query sequence.
                k_ref, v_ref = mv.cache.kv[self.layer_name]
                ref = _heads_sdpa(self.to_q_ref(grouped_x[g:g + 1]), k_ref, v_ref, attn.heads)
                term = self.to_out_ref[0](ref)[0]
            else:
                term = self.to_out_ref[0].bias
            grouped[g] += term if mv.ref_scale == 1.0 else mv.ref_scale * term
        return extra
