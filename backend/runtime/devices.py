"""What accelerators this process can use, without touching them more than needed."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GpuInfo:
    index: int
    name: str
    total_bytes: int
    free_bytes: int

    def describe(self) -> str:
        gib = 1024**3
        return f"cuda:{self.index} {self.name} ({self.free_bytes / gib:.1f} of {self.total_bytes / gib:.1f} GiB free)"


def cuda_devices() -> list[GpuInfo]:
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    found = []
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)
        found.append(GpuInfo(i, torch.cuda.get_device_name(i), int(total), int(free)))
    return found
