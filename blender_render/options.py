"""Render options: one dataclass, one argument parser, shared by every entry point.

`python -m blender_render`, `blender -b -P render_views.py --` and the batch driver all build their
flags here, and the batch hands the same options to its workers as JSON, so an option is added in
exactly one place. bpy-free.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from shared.errors import BackendError
from shared.views import CAMERA_DISTANCE, ORTHO_HALF_EXTENT

ALL_PASSES = ("color", "normal", "position", "depth", "mask", "albedo", "mr")
GEOMETRY_PASSES = ("normal", "position", "depth", "mask")
DEFAULT_PASSES = ("color", "normal", "position", "depth", "mask")
MATERIAL_PASSES = ("albedo", "mr")  # shader AOVs written by the colour render


# A unit cube's bounding sphere: a perspective camera at this radius / sin(fov / 2) sees all of it.
UNIT_CUBE_RADIUS = math.sqrt(3.0) / 2.0


@dataclass(frozen=True)
class RenderOptions:
    """Everything that decides what one object's renders look like (recorded in meta.json)."""

    resolution: int = 512
    passes: tuple[str, ...] = DEFAULT_PASSES
    exr: bool = False  # also keep float32 EXR of normal, position and depth
    engine: str = "cycles"  # colour engine: cycles | eevee (geometry passes always use Cycles)
    device: str = "cpu"  # cpu | gpu | auto
    samples: int = 32
    denoise: bool = False
    threads: int = 0  # render threads; 0 = all cores
    color_depth: int = 8  # bits per channel of color/albedo/mr PNGs
    canonical: bool = True  # the 6 views of shared/views.py
    extra_views: int = 0
    extra_mode: str = "random"  # random | fibonacci
    extra_projection: str = "ortho"  # ortho | persp
    fov_deg: float = 40.0
    distance: float | None = None  # None: 1.8 for ortho, fit the unit cube for persp
    ortho_half_extent: float = ORTHO_HALF_EXTENT
    elevation_range: tuple[float, float] = (-90.0, 90.0)  # random views
    seed: int = 0
    normalize: str = "unit_cube"  # unit_cube (centred, largest side 1) | none
    up: str = "default"  # default (the importer's convention) | y | z: the source's up axis
    normals: str = "smooth"  # import | smooth | flat
    opaque: bool = True  # colour pass: force Principled alpha to 1
    hdri: str | None = None
    hdri_strength: float = 1.0
    hdri_rotation: float | None = 0.0  # degrees about +Z; None = random from the seed
    light_strength: float = 1.0  # neutral uniform world when no HDRI
    overwrite: bool = False
    keep_failed: bool = False  # keep a failed object's files in OUT.failed/ for inspection

    def __post_init__(self):
        def bad(msg: str):
            raise BackendError("invalid_setting", msg)

        passes = tuple(dict.fromkeys(self.passes))
        unknown = [p for p in passes if p not in ALL_PASSES]
        if unknown or not passes:
            bad(f"unknown or empty passes {unknown or passes}; choose from {', '.join(ALL_PASSES)}")
        if any(p in passes for p in MATERIAL_PASSES) and "color" not in passes:
            bad("albedo and mr are written by the colour render: add the 'color' pass")
        object.__setattr__(self, "passes", passes)
        object.__setattr__(self, "elevation_range", tuple(float(e) for e in self.elevation_range))
        if not 8 <= self.resolution <= 8192:
            bad(f"resolution must be within 8..8192, got {self.resolution}")
        choices = {"engine": ("cycles", "eevee"), "device": ("cpu", "gpu", "auto"),
                   "extra_mode": ("random", "fibonacci"), "extra_projection": ("ortho", "persp"),
                   "normalize": ("unit_cube", "none"), "up": ("default", "y", "z"),
                   "normals": ("import", "smooth", "flat")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                bad(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.samples < 1 or self.threads < 0 or self.extra_views < 0:
            bad("samples must be >= 1, threads and extra_views >= 0")
        if self.color_depth not in (8, 16):
            bad(f"color_depth must be 8 or 16, got {self.color_depth}")
        if not self.canonical and self.extra_views == 0:
            bad("no views: keep the canonical views or ask for extra views")
        if not 1.0 <= self.fov_deg <= 170.0 or self.ortho_half_extent <= 0:
            bad("fov_deg must be within 1..170 and ortho_half_extent positive")
        if self.distance is not None and self.distance <= 0:
            bad(f"distance must be positive, got {self.distance}")
        lo, hi = self.elevation_range
        if not -90.0 <= lo <= hi <= 90.0:
            bad(f"elevation_range must satisfy -90 <= low <= high <= 90, got {self.elevation_range}")

    @property
    def geometry_passes(self) -> tuple[str, ...]:
        return tuple(p for p in self.passes if p in GEOMETRY_PASSES)

    @property
    def material_passes(self) -> tuple[str, ...]:
        return tuple(p for p in self.passes if p in MATERIAL_PASSES)

    def camera_distance(self, perspective: bool) -> float:
        if self.distance is not None:
            return self.distance
        if perspective:
            return UNIT_CUBE_RADIUS / math.sin(math.radians(self.fov_deg) / 2.0)
        return CAMERA_DISTANCE

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["passes"] = list(self.passes)
        d["elevation_range"] = list(self.elevation_range)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RenderOptions":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise BackendError("invalid_setting", f"unknown render options {sorted(unknown)}")
        values = dict(data)
        for key in ("passes", "elevation_range"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


def _on_off(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected on/off, got {text!r}")


def _passes(text: str) -> tuple[str, ...]:
    if text.strip() == "all":
        return ALL_PASSES
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _rotation(text: str) -> float | None:
    return None if text.strip() == "random" else float(text)


def add_render_arguments(parser: argparse.ArgumentParser) -> None:
    """The render flags, with RenderOptions' defaults."""
    d = RenderOptions()
    g = parser.add_argument_group("render")
    g.add_argument("--resolution", type=int, default=d.resolution, help="square image size in pixels")
    g.add_argument("--passes", type=_passes, default=d.passes,
                   help=f"comma list from {','.join(ALL_PASSES)} or 'all' (default: {','.join(d.passes)})")
    g.add_argument("--exr", action="store_true", help="also keep float32 EXR normal/position/depth maps")
    g.add_argument("--engine", choices=("cycles", "eevee"), default=d.engine, help="colour engine")
    g.add_argument("--device", choices=("cpu", "gpu", "auto"), default=d.device)
    g.add_argument("--samples", type=int, default=d.samples, help="colour samples per pixel")
    g.add_argument("--denoise", type=_on_off, default=d.denoise, metavar="on|off")
    g.add_argument("--threads", type=int, default=d.threads, help="render threads (0 = all cores)")
    g.add_argument("--color-depth", type=int, choices=(8, 16), default=d.color_depth)
    v = parser.add_argument_group("views")
    v.add_argument("--canonical", type=_on_off, default=d.canonical, metavar="on|off",
                   help="render the 6 canonical views of shared/views.py")
    v.add_argument("--extra-views", type=int, default=d.extra_views)
    v.add_argument("--extra-mode", choices=("random", "fibonacci"), default=d.extra_mode)
    v.add_argument("--extra-projection", choices=("ortho", "persp"), default=d.extra_projection)
    v.add_argument("--fov", dest="fov_deg", type=float, default=d.fov_deg, help="perspective vertical FoV, degrees")
    v.add_argument("--distance", type=float, default=d.distance,
                   help="extra views' camera distance (default 1.8 ortho; fits the unit cube in persp)")
    v.add_argument("--ortho-half-extent", type=float, default=d.ortho_half_extent, help="extra ortho views")
    v.add_argument("--elevation-range", type=float, nargs=2, default=d.elevation_range, metavar=("LOW", "HIGH"))
    v.add_argument("--seed", type=int, default=d.seed, help="seeds random views and a random HDRI rotation")
    o = parser.add_argument_group("object")
    o.add_argument("--normalize", choices=("unit_cube", "none"), default=d.normalize)
    o.add_argument("--up", choices=("default", "y", "z"), default=d.up, help="the source's up axis")
    o.add_argument("--normals", choices=("import", "smooth", "flat"), default=d.normals)
    o.add_argument("--opaque", type=_on_off, default=d.opaque, metavar="on|off")
    li = parser.add_argument_group("lighting")
    li.add_argument("--hdri", default=d.hdri, help="environment map (.hdr/.exr); default: neutral uniform light")
    li.add_argument("--hdri-strength", type=float, default=d.hdri_strength)
    li.add_argument("--hdri-rotation", type=_rotation, default=d.hdri_rotation, metavar="DEG|random")
    li.add_argument("--light-strength", type=float, default=d.light_strength)
    out = parser.add_argument_group("output")
    out.add_argument("--overwrite", action="store_true", help="replace a complete output folder")
    out.add_argument("--keep-failed", action="store_true", help="keep a failed object's files in OUT.failed/")


def options_from_args(ns: argparse.Namespace) -> RenderOptions:
    names = {f.name for f in dataclasses.fields(RenderOptions)}
    return RenderOptions(**{k: v for k, v in vars(ns).items() if k in names})


def script_argv(argv: list[str]) -> list[str]:
    """The script's own arguments: what follows '--' (Blender's convention), else argv[1:]."""
    return argv[argv.index("--") + 1:] if "--" in argv else argv[1:]
