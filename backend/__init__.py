"""Step1X-3D generation backend: image -> textured GLB. Run as `python -m backend`."""

__version__ = "0.1.0"
