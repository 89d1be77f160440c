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


def choose(requested: str, weights: str | None = None, settings: dict | None = None,
           plan: str = "auto", with_geometry: bool = True) -> EngineChoice:
    """`plan` "cpu" lets step1x3d run without a GPU (tiny configurations, tests)."""
    from backend.runtime.devices import cuda_devices
    from backend.runtime.weights import find_weights, required_components
    from shared.settings import resolve

    if requested == "preview":
        return EngineChoice("preview", "requested")
    if requested not in ("auto", "step1x3d"):
        raise BackendError("invalid_request", f"unknown engine {requested!r}")
    gpus = cuda_devices()
    found = find_weights(weights)
    missing = [c for c in required_components(settings or resolve(), with_geometry) if c not in found.found]
    usable = bool(gpus) or plan == "cpu"
    if requested == "step1x3d":
        if not usable:
            raise BackendError("engine_unavailable", "the step1x3d engine needs a CUDA GPU and none was found")
        if missing:
            raise BackendError("weights_not_found", f"missing under {found.root}: {', '.join(missing)}")
        return EngineChoice("step1x3d", "requested")
    if not usable:
        return EngineChoice("preview", "no CUDA GPU found")
    if missing:
        return EngineChoice("preview", f"Step1X-3D weights missing under {found.root}: {', '.join(missing)}")
    return EngineChoice("step1x3d", f"{gpus[0].name if gpus else 'CPU plan'} and weights at {found.root}")


def create(name: str, **options) -> Engine:
    if name == "preview":
        from .preview.engine import PreviewEngine

        return PreviewEngine()
    if name == "step1x3d":
        from .step1x3d import Step1X3DEngine  # provided by the geometry/texture stages

        return Step1X3DEngine(**options)
    raise BackendError("invalid_request", f"unknown engine {name!r}")
