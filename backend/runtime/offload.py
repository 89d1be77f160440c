"""Parking a model's weights in page-locked host memory between uses (the single plan's offload).

`module.to("cpu")` copies into freshly allocated pageable memory, which the driver stages
through a bounce buffer: about 9 s per job for the two stages' weights on an H100. Here every
parameter and buffer gets one page-locked host buffer, allocated at the first offload and reused
after, and both directions are asynchronous copies at full PCIe speed. Without CUDA (the cpu
plan) there is nothing to park: the tensors are already in host memory.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import torch


def _tensors(modules: Iterable[torch.nn.Module]) -> Iterator[tuple[tuple[int, str], torch.Tensor]]:
    for index, module in enumerate(modules):
        for name, tensor in module.named_parameters():
            yield (index, f"p.{name}"), tensor
        for name, tensor in module.named_buffers():
            yield (index, f"b.{name}"), tensor


class PinnedHost:
    """Reusable page-locked copies of one model's tensors."""

    def __init__(self) -> None:
        self._host: dict[tuple[int, str], torch.Tensor] = {}

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._host.values())

    def park(self, modules: list[torch.nn.Module]) -> None:
        """Move every tensor to its host buffer (copied again each time: a LoRA may have changed
        the weights since)."""
        tensors = list(_tensors(modules))
        devices = {t.device for _, t in tensors if t.is_cuda}
        if not devices:
            return
        for key, tensor in tensors:
            buffer = self._host.get(key)
            if buffer is None or buffer.shape != tensor.shape or buffer.dtype != tensor.dtype:
                buffer = self._host[key] = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            buffer.copy_(tensor.data, non_blocking=True)
        for device in devices:
            torch.cuda.synchronize(device)
        for key, tensor in tensors:
            tensor.data = self._host[key]

    def restore(self, modules: list[torch.nn.Module], device: torch.device) -> None:
        """Copy every tensor back to `device`; the host buffers stay for the next park."""
        if device.type != "cuda":
            return
        for _, tensor in _tensors(modules):
            if not tensor.is_cuda:
                tensor.data = tensor.data.to(device, non_blocking=True)
        torch.cuda.synchronize(device)
