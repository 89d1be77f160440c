"""Activation (gradient) checkpointing for models that do not support it themselves.

The geometry models loop over their blocks in plain `forward`s; wrapping each block instance's
forward in `torch.utils.checkpoint` (non-reentrant, so keyword arguments and frozen inputs work)
keeps only the block inputs during the forward pass and recomputes the rest in backward. The
wrapper is an instance attribute, so module names and state-dict keys do not change.
"""
from __future__ import annotations

import functools

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def checkpoint_blocks(root: nn.Module, block_types: tuple[type, ...]) -> int:
    """Wrap every submodule of the given types; returns how many were wrapped."""
    count = 0
    for module in root.modules():
        if isinstance(module, block_types) and not getattr(module, "_checkpointed", False):
            inner = module.forward

            @functools.wraps(inner)
            def forward(*args, _inner=inner, **kwargs):
                if torch.is_grad_enabled():
                    return checkpoint(_inner, *args, use_reentrant=False, **kwargs)
                return _inner(*args, **kwargs)

            module.forward = forward
            module._checkpointed = True
            count += 1
    return count
