"""Stage 1 of Step1X-3D: image -> watertight mesh, loading the official checkpoints unchanged."""
from .pipeline import GeometryOptions, GeometryPipeline, GeometryResult

__all__ = ["GeometryOptions", "GeometryPipeline", "GeometryResult"]
