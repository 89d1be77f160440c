"""Loaded models kept between jobs, placed and offloaded according to the device plan.

The server loads each pipeline once per device. Under the `single` plan, asking for one stage's
models first moves the other stage's out of GPU memory (to host memory, or frees them with
offload=release), so a 24 GB card holds only the stage that runs. Under `multi` the two lanes ask
from two threads, each for its own device's copies; a lock serialises the bookkeeping and loads.

Cold start: where both stages stay resident, a job starts loading its texture models on a
background thread (`prefetch`) once its geometry models are loaded, so the load overlaps the
geometry stage instead of following it. Loads never run two at once (`LOADING`).
"""
from __future__ import annotations

import gc
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .offload import PinnedHost
from .plan import DevicePlan
from .weights import WeightsStatus


# diffusers builds models under accelerate's `init_empty_weights`, which swaps
# `nn.Module.register_parameter` process-wide: two loads at once can leave it swapped for good
# (every later model is built on the meta device), so loads take turns.
LOADING = threading.Lock()


def _release_cuda() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class _Slot:
    """One copy of a model on one device (the cache's key) and where it is now."""

    stage: str  # "geometry" or "texture"
    load: Callable[[torch.device], Any]
    modules: Callable[[Any], list[torch.nn.Module]]
    model: Any = None
    where: str = "unloaded"  # "unloaded", "device" or "host"
    host: PinnedHost = field(default_factory=PinnedHost)
    loading: threading.Event | None = None  # a prefetch in flight; set when it has ended


@dataclass
class ModelCache:
    plan: DevicePlan
    weights: WeightsStatus
    _slots: dict[tuple[str, str], _Slot] = field(default_factory=dict)
    _loaders: dict[str, tuple[str, Callable, Callable]] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    loads: int = 0  # how many times weights were read from disk (tests, logs)

    @property
    def devices(self) -> tuple[str, str]:
        return self.plan.geometry_device, self.plan.texture_device

    def device_for(self, stage: str) -> torch.device:
        return torch.device(self.plan.geometry_device if stage == "geometry" else self.plan.texture_device)

    def register(self, name: str, stage: str, load: Callable[[torch.device], Any],
                 modules: Callable[[Any], list[torch.nn.Module]]) -> None:
        """`load(device)` builds the model; `modules(model)` lists the torch modules holding its
        weights (what offloading moves)."""
        with self._lock:
            self._loaders.setdefault(name, (stage, load, modules))

    def _slot(self, name: str, device: str | torch.device | None) -> tuple[_Slot, torch.device]:
        stage, load, modules = self._loaders[name]
        home = torch.device(device) if device is not None else self.device_for(stage)
        return self._slots.setdefault((name, str(home)), _Slot(stage, load, modules)), home

    def prefetch(self, name: str, device: str | torch.device | None = None) -> bool:
        """Start loading the named model on a background thread, if it is not loaded and the plan
        keeps both stages resident (offloading plans load one stage at a time, by design). A
        failed prefetch is dropped: `get` then loads again and reports the error itself. Returns
        whether a load started."""
        with self._lock:
            if self.plan.kind == "single" and self.plan.offload != "none":
                return False
            slot, home = self._slot(name, device)
            if slot.where != "unloaded" or slot.loading is not None:
                return False
            slot.loading = done = threading.Event()

        def work() -> None:
            model = None
            try:
                with LOADING:
                    model = slot.load(home)
            except Exception:  # noqa: BLE001 - the job's own `get` loads again and reports it
                pass
            finally:
                with self._lock:
                    if model is not None:
                        slot.model, slot.where = model, "device"
                        self.loads += 1
                    slot.loading = None
                done.set()  # whatever happened, nobody waits for this load any longer

        threading.Thread(target=work, name=f"load-{name}", daemon=True).start()
        return True

    def get(self, name: str, device: str | torch.device | None = None) -> Any:
        """The named model on `device` (default: its stage's), offloading the other stage's under
        `single`. Each device holds its own copy. Waits for a prefetch of it that is in flight."""
        while True:
            with self._lock:
                slot, home = self._slot(name, device)
                pending = slot.loading
                if pending is None:
                    if self.plan.kind == "single" and self.plan.offload != "none":
                        for other in self._slots.values():
                            if other.where == "device" and other.stage != slot.stage:
                                self._offload(other)
                    if slot.where == "unloaded":
                        with LOADING:
                            slot.model = slot.load(home)
                        self.loads += 1
                    elif slot.where == "host":
                        slot.host.restore(slot.modules(slot.model), home)
                    slot.where = "device"
                    return slot.model
            pending.wait()

    def _offload(self, slot: _Slot) -> None:
        if self.plan.offload == "release":
            close = getattr(slot.model, "close", None)
            if close:
                close()
            slot.model, slot.where = None, "unloaded"
        else:
            slot.host.park(slot.modules(slot.model))
            slot.where = "host"
        _release_cuda()

    def close(self) -> None:
        """Free every model; a prefetch in flight is waited for, so nothing loads after this."""
        with self._lock:
            pending = [slot.loading for slot in self._slots.values() if slot.loading is not None]
        for done in pending:
            done.wait()
        with self._lock:
            slots = list(self._slots.values())
        for slot in slots:
            close = getattr(slot.model, "close", None)
            if close:
                close()
            slot.model, slot.where, slot.host = None, "unloaded", PinnedHost()
        _release_cuda()
