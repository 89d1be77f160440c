"""What a generated GLB says about itself, for the object's custom properties.

The backend writes its provenance into the glTF `asset.extras`: the settings it applied and,
apart, those it ignored (the preview engine has no seed or step count to honour). The importer
stamps what the file says over what the panel asked for, so an object never claims a setting that
did not shape it, whichever engine, server or history entry it came from.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

GENERATOR = "Step1X-3D for Blender"  # backend/mesh/export.py writes it as asset.generator


def glb_extras(path: str | Path) -> dict[str, Any]:
    """The `asset.extras` of a GLB our backend wrote; {} for any other file or a damaged header."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(20)
            if len(head) < 20:
                return {}
            magic, _, _, length, kind = struct.unpack("<4sIII4s", head)
            if magic != b"glTF" or kind != b"JSON":
                return {}
            asset = json.loads(fh.read(length)).get("asset", {})
    except (OSError, ValueError, struct.error, AttributeError):
        return {}
    if asset.get("generator") != GENERATOR or not isinstance(asset.get("extras"), dict):
        return {}
    return asset["extras"]


def merged(requested: dict[str, Any] | None, extras: dict[str, Any]) -> dict[str, Any]:
    """`requested` provenance (job, image, panel settings) with the file's applied settings, seed
    and ignored settings in place of the requested ones when the file records them."""
    out = dict(requested or {})
    if "settings" in extras:
        out["settings"] = extras["settings"]
        out["seed"] = extras.get("seed")  # None when the engine ignored the seed: not stamped
        out["ignored_settings"] = extras.get("ignored_settings") or {}
    for key in ("engine", "model"):
        if extras.get(key):
            out[key] = extras[key]
    return out
