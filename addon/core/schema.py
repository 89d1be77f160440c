"""Blender property definitions derived from shared/settings.py, never declared by hand.

`prop_specs()` says which `bpy.props` function and keyword arguments each setting needs; the bpy
layer only calls them. A new setting in the schema therefore appears in the panel by itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..shared import settings as schema

STAGES = ("image", "geometry", "texture", "output")
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class PropSpec:
    name: str
    kind: str  # BoolProperty, IntProperty, FloatProperty, StringProperty or EnumProperty
    options: dict[str, Any]
    stage: str


def _spec(s: schema.Setting) -> PropSpec:
    options: dict[str, Any] = {"name": s.label, "description": s.help[:1].upper() + s.help[1:]}
    if s.choices:
        items = [(c, c.replace("_", " ").capitalize(), "") for c in s.choices]
        return PropSpec(s.name, "EnumProperty", {**options, "items": items, "default": s.default}, s.stage)
    if s.type is bool:
        return PropSpec(s.name, "BoolProperty", {**options, "default": s.default}, s.stage)
    if s.type is str:
        return PropSpec(s.name, "StringProperty", {**options, "default": s.default}, s.stage)
    limits: dict[str, Any] = {}
    if s.minimum is not None:
        limits["min"] = s.type(s.minimum)
    if s.maximum is not None:
        limits["max"] = s.type(min(s.maximum, _INT32_MAX)) if s.type is int else float(s.maximum)
    if s.type is int:
        return PropSpec(s.name, "IntProperty", {**options, **limits, "default": s.default}, s.stage)
    return PropSpec(s.name, "FloatProperty", {**options, **limits, "default": s.default}, s.stage)


def prop_specs() -> list[PropSpec]:
    return [_spec(s) for s in schema.SETTINGS]


# What the CPU preview engine reads (backend/engines/preview/engine.py); it ignores the rest.
PREVIEW_USES = frozenset({"seed", "remove_background", "face_count", "texture", "texture_resolution"})


def enabled(name: str, values: dict[str, Any], engine: str = "step1x3d") -> bool:
    """Whether a setting matters with the others as they are (the panel greys it out if not)."""
    return not ignored_because(name, values, engine)


def ignored_because(name: str, values: dict[str, Any], engine: str = "step1x3d") -> str:
    """Why the engine ignores this setting as things are ("" when it is used): the tooltip of a
    greyed-out setting."""
    if engine == "preview" and name not in PREVIEW_USES:
        return "The CPU preview plan ignores this setting: it only inflates the image's silhouette"
    if name in ("symmetry", "edge_type") and values.get("model") != "label":
        return "Only the label model takes this control; choose Model: Label"
    setting = schema.BY_NAME.get(name)
    if setting is not None and setting.stage == "texture" and name != "texture" and not values.get("texture"):
        return "Texture is off: nothing is painted"
    if name == "lora_scale" and not values.get("lora"):
        return "No style LoRA is set"
    return ""


def collect(get: Callable[[str], Any]) -> dict[str, Any]:
    """Validated settings from a property getter (raises `invalid_setting` like the backend would)."""
    return schema.resolve({s.name: get(s.name) for s in schema.SETTINGS})
