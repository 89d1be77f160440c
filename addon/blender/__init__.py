"""The bpy layer: registration, file-load and quit handling."""
from __future__ import annotations

import atexit

import bpy
from bpy.app.handlers import persistent

from . import operators, panel, prefs, props, setup
from .runtime import RUNTIME

_registered: list[type] = []


@persistent
def _on_load_pre(*_args) -> None:
    """Jobs belong to the file they were started in: cancel them before another file replaces it."""
    RUNTIME.forget_scene_objects()
    RUNTIME.cancel()


def _on_exit() -> None:
    RUNTIME.shutdown()


def register() -> None:
    settings_class = props.make_settings_class()
    for cls in (prefs.STEP1X3D_AP_preferences, settings_class, *operators.CLASSES, *setup.CLASSES,
                *panel.classes()):
        bpy.utils.register_class(cls)
        _registered.append(cls)
    bpy.types.Scene.step1x3d = bpy.props.PointerProperty(type=settings_class)
    bpy.app.handlers.load_pre.append(_on_load_pre)
    atexit.register(_on_exit)


def unregister() -> None:
    atexit.unregister(_on_exit)
    RUNTIME.shutdown()
    if _on_load_pre in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_on_load_pre)
    del bpy.types.Scene.step1x3d
    while _registered:
        bpy.utils.unregister_class(_registered.pop())
