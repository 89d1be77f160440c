"""Engine registry and the `auto` choice.

`auto` picks step1x3d only when a CUDA GPU *and* its weights are present, and says why otherwise,
so a pipeline on a laptop still gets an asset (from the preview engine) instead of an error.
"""
from __future__ import annotations

from dataclasses import dataclass

from shared.errors import BackendError

from .base import Engine


@dataclass
class EngineChoice:
    name: str
    reason: str


def choose(requested: str, weights: str | None = None) -> EngineChoice:
    from backend.runtime.devices import cuda_devices
    from backend.runtime.weights import find_weights

    if requested == "preview":
        return EngineChoice("preview", "requested")
    gpus = cuda_devices()
    found = find_weights(weights)
    if requested == "step1x3d":
        if not gpus:
            raise BackendError("engine_unavailable", "the step1x3d engine needs a CUDA GPU and none was found")
        if found.missing:
            raise BackendError("weights_not_found", found.describe())
        return EngineChoice("step1x3d", "requested")
    if requested != "auto":
        raise BackendError("invalid_request", f"unknown engine {requested!r}")
    if not gpus:
        return EngineChoice("preview", "no CUDA GPU found")
    if found.missing:
        return EngineChoice("preview", f"Step1X-3D weights not found ({found.describe()})")
    return EngineChoice("step1x3d", f"CUDA GPU {gpus[0].name} and weights at {found.root}")


def create(name: str, **options) -> Engine:
    if name == "preview":
        from .preview.engine import PreviewEngine

        return PreviewEngine()
    if name == "step1x3d":
        from .step1x3d import Step1X3DEngine  # provided by the geometry/texture stages

        return Step1X3DEngine(**options)
    raise BackendError("invalid_request", f"unknown engine {name!r}")
