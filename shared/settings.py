"""The one schema of generation settings.

The backend CLI builds its flags from it, the server validates requests with it and the Blender
panel draws its properties from it, so a setting is added in exactly one place. Defaults follow the
Step1X-3D release (step1x3d-reference.md §2.1, §4.1, §6.1) unless noted.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .errors import BackendError


@dataclass(frozen=True)
class Setting:
    name: str
    type: type  # bool, int, float or str
    default: Any
    help: str
    label: str
    stage: str  # "image", "geometry", "texture" or "output": where the panel groups it
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None

    def coerce(self, value: Any) -> Any:
        """Return `value` as this setting's type, or raise `invalid_setting` naming the setting."""
        try:
            if self.type is bool:
                if isinstance(value, str):
                    lowered = value.strip().lower()
                    if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                        raise ValueError(value)
                    value = lowered in ("1", "true", "yes", "on")
                elif not isinstance(value, bool):
                    raise ValueError(value)
            elif self.type is int:
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError(value)
                value = int(value)
            elif self.type is float:
                if isinstance(value, bool):
                    raise ValueError(value)
                value = float(value)
                if value != value:  # NaN
                    raise ValueError(value)
            elif not isinstance(value, str):
                raise ValueError(value)
        except (TypeError, ValueError):
            raise BackendError(
                "invalid_setting", f"setting {self.name!r} expects {self.type.__name__}, got {value!r}"
            ) from None
        if self.choices is not None and value not in self.choices:
            raise BackendError(
                "invalid_setting", f"setting {self.name!r} must be one of {', '.join(self.choices)}; got {value!r}"
            )
        if self.minimum is not None and value < self.minimum:
            raise BackendError("invalid_setting", f"setting {self.name!r} must be >= {self.minimum}; got {value!r}")
        if self.maximum is not None and value > self.maximum:
            raise BackendError("invalid_setting", f"setting {self.name!r} must be <= {self.maximum}; got {value!r}")
        return value


SETTINGS: tuple[Setting, ...] = (
    Setting("seed", int, 2025, "random seed; the same seed and settings give the same asset", "Seed",
            "image", 0, 2**31 - 1),
    Setting("remove_background", str, "auto",
            "auto trusts an existing alpha channel, always re-segments, never uses the image as is",
            "Remove Background", "image", choices=("auto", "always", "never")),
    Setting("foreground_ratio", float, 0.95, "share of the square frame the object fills after recentring",
            "Foreground Ratio", "image", 0.5, 1.0),
    Setting("model", str, "label", "geometry checkpoint: base 1300m, or label 1300m with symmetry/edge controls",
            "Model", "geometry", choices=("base", "label")),
    Setting("geometry_steps", int, 50, "flow-matching steps of the geometry model", "Geometry Steps",
            "geometry", 1, 200),
    Setting("guidance_scale", float, 7.5, "classifier-free guidance of the geometry model", "Guidance",
            "geometry", 0.0, 30.0),
    Setting("symmetry", str, "x", "label model: mirror symmetry across x, or none", "Symmetry", "geometry",
            choices=("x", "asymmetry")),
    Setting("edge_type", str, "normal", "label model: surface character (sharp, normal or smooth edges)",
            "Edge Type", "geometry", choices=("sharp", "normal", "smooth")),
    Setting("octree_resolution", int, 384, "resolution of the SDF grid that marching cubes runs on",
            "Octree Resolution", "geometry", 64, 1024),
    Setting("face_count", int, 50000, "face budget of the exported mesh", "Face Budget", "geometry",
            500, 1000000),
    Setting("texture", bool, True, "paint a texture; off exports the untextured mesh", "Texture", "texture"),
    Setting("texture_steps", int, 50, "denoising steps of the multi-view texture model", "Texture Steps",
            "texture", 1, 200),
    Setting("texture_guidance", float, 3.0, "classifier-free guidance of the texture model",
            "Texture Guidance", "texture", 0.0, 30.0),
    Setting("view_resolution", int, 768, "resolution of the generated views", "View Resolution", "texture",
            64, 1536),
    Setting("texture_resolution", int, 2048, "side of the baked UV texture in pixels", "Texture Resolution",
            "texture", 256, 8192),
    Setting("lora", str, "", "path or hub id of an SDXL LoRA that changes the texture style", "Style LoRA",
            "texture"),
    Setting("lora_scale", float, 1.0, "strength of the style LoRA", "LoRA Scale", "texture", 0.0, 2.0),
    Setting("lod_levels", int, 0, "extra coarser levels of detail sharing the one texture", "LOD Levels",
            "output", 0, 4),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def defaults() -> dict[str, Any]:
    return {s.name: s.default for s in SETTINGS}


def resolve(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults updated with validated overrides; unknown names are rejected, not ignored."""
    values = defaults()
    for name, value in (overrides or {}).items():
        if name not in BY_NAME:
            raise BackendError("invalid_setting", f"unknown setting {name!r}")
        values[name] = BY_NAME[name].coerce(value)
    return values
