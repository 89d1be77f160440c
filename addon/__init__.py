"""Step1X-3D for Blender: generate a textured 3D asset from one image without leaving Blender.

The package splits like Blender's own glTF add-on: `core/` is plain Python (job state machine,
backend process, placement maths, history) testable without Blender; `blender/` is the bpy layer
(preferences, panel, operators, GLB import). bpy is only imported when Blender registers the add-on.
"""
from . import vendor  # noqa: F401  (makes `.shared` importable from the zip and from the repository)


def register() -> None:
    from .blender import register as register_blender

    register_blender()


def unregister() -> None:
    from .blender import unregister as unregister_blender

    unregister_blender()
