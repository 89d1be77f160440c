"""The `split` plan's core: one job on two GPUs by classifier-free-guidance branch.

Both denoising loops run the network on a batch made of an unconditional and a conditional half
(the UNet: 6 negative + 6 positive views; the DiT: 1 + 1). `split_cfg` wraps a network in place so
such a call runs the first half on the network's own device and the second half, concurrently, on
a replica on the other device; the second half's output is copied back and the two are joined in
order, so the loops, schedulers and guidance stay as they are and see the same function. Per call,
every tensor whose first dimension is the batch is split, other tensors are copied; the MV-Adapter
call object is split by its view groups, and the job's reference keys/values are copied to the
other device once per job (one copy of about 2.6 GB over the GPUs' link, not one a step).
Calls that cannot be split (batch 1: the reference pass; one group: no guidance) run on the first
device alone.
"""
from __future__ import annotations

import contextlib
import copy
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import torch

from backend.texture.mv_attention import MVCall, ReferenceCache


def _replica(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """A copy of `module` on `device` with none of the wrappers installed on the original."""
    saved = {k: module.__dict__.pop(k) for k in ("forward", "_eager_forward", "_fast_paths", "_cfg_split")
             if k in module.__dict__}
    try:
        twin = copy.deepcopy(module)
    finally:
        module.__dict__.update(saved)
    return twin.to(device)


class CFGSplit:
    """Runs the halves of a CFG batch of `module` on its device and on `other`."""

    def __init__(self, module: torch.nn.Module, other: torch.device | str, forward=None):
        self.module, self.other = module, torch.device(other)
        self.forward = forward or module.forward
        self.twin = _replica(module, self.other)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cfg-split")
        self._cache: tuple[ReferenceCache, ReferenceCache] | None = None  # (the job's, its copy)

    def _moved_cache(self, cache: ReferenceCache) -> ReferenceCache:
        if self._cache is None or self._cache[0] is not cache:
            kv = {k: (a.to(self.other), b.to(self.other)) for k, (a, b) in cache.kv.items()}
            self._cache = (cache, ReferenceCache(kv))
        return self._cache[1]

    def _halves(self, value, batch: int):
        """(first half's value, second half's value on the other device)."""
        if isinstance(value, torch.Tensor):
            if value.ndim and value.shape[0] == batch:
                return value[: batch // 2], value[batch // 2:].to(self.other)
            return value, value.to(self.other)
        if isinstance(value, MVCall):
            g = len(value.ref_groups) // 2
            return (replace(value, ref_groups=value.ref_groups[:g]),
                    replace(value, ref_groups=value.ref_groups[g:], cache=self._moved_cache(value.cache)))
        if isinstance(value, dict):
            pairs = {k: self._halves(v, batch) for k, v in value.items()}
            return {k: p[0] for k, p in pairs.items()}, {k: p[1] for k, p in pairs.items()}
        if isinstance(value, (list, tuple)):
            pairs = [self._halves(v, batch) for v in value]
            return type(value)(p[0] for p in pairs), type(value)(p[1] for p in pairs)
        return value, value

    def splittable(self, args, kwargs) -> bool:
        batch = args[0].shape[0]
        mv = (kwargs.get("cross_attention_kwargs") or {}).get("mv")
        if mv is not None and (mv.mode != "generate" or len(mv.ref_groups) % 2):
            return False
        return batch % 2 == 0 and batch >= 2

    def __call__(self, *args, **kwargs):
        if not self.splittable(args, kwargs):
            return self.forward(*args, **kwargs)
        batch = args[0].shape[0]
        (a1, a2), (k1, k2) = self._halves(list(args), batch), self._halves(kwargs, batch)
        def second():
            with torch.cuda.device(self.other) if self.other.type == "cuda" else contextlib.nullcontext():
                return self.twin(*a2, **k2)

        pending = self._pool.submit(second)
        first = self.forward(*a1, **k1)
        rest = pending.result()
        return _join(first, rest, _device_of(first))


def _device_of(value) -> torch.device:
    if isinstance(value, torch.Tensor):
        return value.device
    return _device_of(value[0])


def _join(first, second, device: torch.device):
    """Concatenate two halves' outputs (a tensor or a tuple/list of tensors) on `device`."""
    if isinstance(first, torch.Tensor):
        return torch.cat([first, second.to(device)])
    return type(first)(_join(a, b, device) for a, b in zip(first, second))


def split_cfg(module: torch.nn.Module, other: torch.device | str) -> torch.nn.Module:
    """Install the split on `module` in place (idempotent for the same `other`); the replica gets
    the same fast paths as the original when those are applied to it afterwards (`twin`)."""
    current = module.__dict__.get("_cfg_split")
    if current is not None and current.other == torch.device(other) and module.forward is current:
        return module
    split = CFGSplit(module, other, module.forward)
    module._cfg_split = split
    module.forward = split
    return module
