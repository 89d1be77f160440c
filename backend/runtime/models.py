"""Loaded models kept between jobs, placed and offloaded according to the device plan.

The server loads each pipeline once. Under the `single` plan, asking for one stage's models
first moves the other stage's out of GPU memory (to host memory, or frees them with
offload=release), so a 24 GB card holds only the stage that runs.
"""
from __future__ import annotations

import gc
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .plan import DevicePlan
from .weights import WeightsStatus


def _release_cuda() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class _Slot:
    stage: str  # "geometry" or "texture": the device it belongs on
    load: Callable[[torch.device], Any]
    move: Callable[[Any, torch.device], None]
    model: Any = None
    where: str = "unloaded"  # "unloaded", "device" or "host"


@dataclass
class ModelCache:
    plan: DevicePlan
    weights: WeightsStatus
    _slots: dict[str, _Slot] = field(default_factory=dict)
    loads: int = 0  # how many times weights were read from disk (tests, logs)

    def device_for(self, stage: str) -> torch.device:
        return torch.device(self.plan.geometry_device if stage == "geometry" else self.plan.texture_device)

    def register(self, name: str, stage: str, load: Callable[[torch.device], Any],
                 move: Callable[[Any, torch.device], None]) -> None:
        self._slots.setdefault(name, _Slot(stage, load, move))

    def get(self, name: str) -> Any:
        """The named model on its stage's device, offloading the other stage's under `single`."""
        slot = self._slots[name]
        device = self.device_for(slot.stage)
        if self.plan.kind == "single" and self.plan.offload != "none":
            for other_name, other in self._slots.items():
                if other_name != name and other.where == "device" and other.stage != slot.stage:
                    self._offload(other)
        if slot.where == "unloaded":
            slot.model = slot.load(device)
            self.loads += 1
        elif slot.where == "host":
            slot.move(slot.model, device)
        slot.where = "device"
        return slot.model

    def _offload(self, slot: _Slot) -> None:
        if self.plan.offload == "release":
            close = getattr(slot.model, "close", None)
            if close:
                close()
            slot.model, slot.where = None, "unloaded"
        else:
            slot.move(slot.model, torch.device("cpu"))
            slot.where = "host"
        _release_cuda()

    def close(self) -> None:
        for slot in self._slots.values():
            close = getattr(slot.model, "close", None)
            if close:
                close()
            slot.model, slot.where = None, "unloaded"
        _release_cuda()
