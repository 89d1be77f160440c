"""Per-file artistic settings on the Scene: the reference image, the generation settings (built
from shared/settings.py), and the file's history. Runtime state (jobs, backend state, progress)
never lives here, so nothing "busy" can be saved into a .blend file."""
from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, PointerProperty, StringProperty

from ..core import schema

EXTRA = {
    "image_source": EnumProperty(
        name="Source", default="FILE",
        items=[("FILE", "File", "An image file on disk"),
               ("IMAGE", "Blender Image", "An image loaded in Blender (packed and generated ones too)")]),
    "image_path": StringProperty(name="Image", subtype="FILE_PATH", description="The reference image"),
    "image": PointerProperty(name="Image", type=bpy.types.Image, description="The reference image"),
    "randomize_seed": BoolProperty(name="Randomize", default=False,
                                   description="Pick a new random seed for every generation"),
    "history": StringProperty(name="History", default="[]", options={"HIDDEN"},
                              description="This file's generations as JSON (newest first)"),
}


def make_settings_class() -> type:
    annotations = {}
    for spec in schema.prop_specs():
        annotations[spec.name] = getattr(bpy.props, spec.kind)(**spec.options)
    clash = set(annotations) & set(EXTRA)
    if clash:
        raise RuntimeError(f"generation settings clash with panel properties: {sorted(clash)}")
    annotations.update(EXTRA)
    return type("STEP1X3D_PG_settings", (bpy.types.PropertyGroup,), {"__annotations__": annotations})


def values(props) -> dict:
    """The generation settings as they are in the panel (unvalidated)."""
    return {spec.name: getattr(props, spec.name) for spec in schema.prop_specs()}
