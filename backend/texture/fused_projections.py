"""Opt-in fast path: one GEMM for the six input projections of each MV-Adapter `attn1` layer.

Every denoising step, each of the 70 `attn1` layers projects the same normed input six times
(base q/k/v, multi-view q/k/v). `fuse_projections` stacks those six weights into one [6C, C]
matrix per layer and points the original parameters at row slices of it, so the fused copy costs
no memory and the parameters keep their names (state dicts, weight loading and saving unchanged).
A later `.to()` (offloading) moves the parameters one by one and breaks the sharing: `refresh`
notices that from the data pointers and rebuilds the fused matrix, so results never go stale.
A layer whose projections were replaced (a style LoRA wraps them) falls back to the unfused code.

Same function as the eager path up to GEMM rounding; tests/texture/test_fast_paths.py holds the
bound.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from torch import nn

from .mv_attention import MVAttnProcessor, MVCall, _heads_sdpa


def _sources(attn: Attention, proc: MVAttnProcessor) -> list[nn.Linear]:
    return [attn.to_q, attn.to_k, attn.to_v, proc.to_q_mv, proc.to_k_mv, proc.to_v_mv]


class FusedMVAttnProcessor(MVAttnProcessor):
    """`MVAttnProcessor` whose generate pass computes the six input projections as one GEMM. The
    fused matrix is a non-persistent buffer `fused` (moves with the module, never saved)."""

    def fuse(self, attn: Attention) -> bool:
        """(Re)build the fused matrix if the parameters no longer live in it; True if rebuilt."""
        sources = _sources(attn, self)
        if not all(type(m) is nn.Linear and m.bias is None for m in sources):
            self.fused = None  # a LoRA (or a biased projection): the unfused path serves this layer
            return False
        fused = self.fused
        rows = sources[0].weight.shape[0]
        if (fused is not None and fused.device == sources[0].weight.device
                and all(m.weight.data_ptr() == fused[i * rows].data_ptr() for i, m in enumerate(sources))):
            return False
        self.fused = None  # drop a stale copy before building the new one
        with torch.no_grad():
            fused = torch.cat([m.weight.detach() for m in sources])
        for i, m in enumerate(sources):
            m.weight.data = fused[i * rows:(i + 1) * rows]
        self.fused = fused
        return True

    def __call__(self, attn: Attention, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 mv: MVCall | None = None) -> torch.Tensor:
        if (self.fused is None or mv is None or mv.mode != "generate" or encoder_hidden_states is not None
                or attention_mask is not None or hidden_states.ndim != 3):
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, mv)
        x = hidden_states
        q, k, v, q_mv, k_mv, v_mv = F.linear(x, self.fused).chunk(6, dim=-1)
        out = attn.to_out[1](attn.to_out[0](_heads_sdpa(q, k, v, attn.heads)))
        return out + self._adapter_terms_from(attn, x, mv, q_mv, k_mv, v_mv)


def _layers(unet: nn.Module) -> list[tuple[Attention, MVAttnProcessor]]:
    return [(m, m.processor) for m in unet.modules()
            if isinstance(m, Attention) and isinstance(m.processor, MVAttnProcessor)]


def fuse_projections(unet: nn.Module) -> int:
    """Swap every MV-Adapter processor of `unet` for the fused one (in place, parameters kept);
    returns the number of layers fused."""
    count = 0
    for attn, proc in _layers(unet):
        if not isinstance(proc, FusedMVAttnProcessor):
            proc.__class__ = FusedMVAttnProcessor  # same parameters, same names; only the call differs
            proc.register_buffer("fused", None, persistent=False)
        count += proc.fuse(attn) or proc.fused is not None
    return count


def unfuse(unet: nn.Module) -> None:
    """Back to the unfused code in every fused layer (the parameters keep their values)."""
    for _, proc in _layers(unet):
        if isinstance(proc, FusedMVAttnProcessor):
            proc.fused = None


def refresh(unet: nn.Module) -> int:
    """Re-fuse the layers whose parameters moved or were replaced since; returns how many were rebuilt."""
    return sum(proc.fuse(attn) for attn, proc in _layers(unet) if isinstance(proc, FusedMVAttnProcessor))
