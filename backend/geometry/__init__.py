"""Stage 1 of Step1X-3D: image -> watertight mesh, loading the official checkpoints unchanged.

The pipeline (torch, diffusers) is imported on first use, so light modules of this package, such
as the image framing that `prepare-image` uses, load in a fraction of a second.
"""

__all__ = ["GeometryOptions", "GeometryPipeline", "GeometryResult"]


def __getattr__(name: str):
    if name in __all__:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
