"""The on-disk contract of a rendered object folder: `blender_render` writes it, the backend's
training loaders (`backend.data.renders`) read it back.

Geometry passes use the encoding the Step1X-3D texture model trains on (step1x3d-reference.md
§4.4, §5.1): Blender Z-up world coordinates, `value * scale + shift` clamped to [0, 1] (position
+ 0.5, normal * 0.5 + 0.5), grey 0.5 off the object, stored as 16-bit PNG codes. Depth is 16-bit
too, mapped linearly from a per-view [near, far] recorded in meta.json, background code 65535.
"""
from __future__ import annotations

META_NAME = "meta.json"  # written last into a complete object folder

BACKGROUND = 0.5  # unit value of position / normal / colour off the object
POSITION_SCALE, POSITION_SHIFT = 1.0, 0.5
NORMAL_SCALE, NORMAL_SHIFT = 0.5, 0.5
UNIT16_MAX = 65535  # 16-bit code of the unit value 1.0
DEPTH_BACKGROUND = 65535
DEPTH_STEPS = 65534  # foreground depth codes 0..65534 span [near, far]
