"""Checks on what was rendered, before an object is accepted (bpy-free).

None of the public render scripts looks at its own output, so blank renders, camera-space normals
and broken cameras end up in datasets (anchors-render.md §A.2). Each view's float passes are checked
here: a non-empty mask, no NaN, unit normals inside the mask, positions that agree with the depth
pass unprojected through the recorded camera, positions inside the normalised bounding box, and a
colour render that is not blank. A failure rejects the object; a warning is recorded in meta.json.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .cameras import CameraSpec, project, unproject_pixels

CHECK_FAILED = "check_failed"  # the batch log's code for an object whose renders failed a check
NO_HIT_DEPTH = 1e9  # Cycles writes 1e10 where a ray hits nothing
NORMAL_TOLERANCE = 1e-3  # | |n| - 1 |
POSITION_TOLERANCE = 1e-3  # world units per unit of scene radius
MAX_BAD_FRACTION = 0.01  # of the mask's pixels; more than this fails the view
MAX_SAMPLE_OFFSET_PX = 0.01  # mean distance of the geometry samples from the pixel centres


class ChecksFailed(Exception):
    """Rendered output failed the checks; carries every failure message."""

    code = CHECK_FAILED
    exit_status = 20

    def __init__(self, failures: list[str]):
        super().__init__("; ".join(failures))
        self.failures = failures


@dataclass
class ViewCheck:
    name: str
    coverage: float = 0.0  # fraction of pixels inside the mask
    nan_pixels: int = 0
    normal_max_error: float = 0.0
    normal_bad_fraction: float = 0.0
    position_max_error: float = 0.0  # position pass vs depth pass unprojected through the camera
    position_bad_fraction: float = 0.0
    outside_bounds_fraction: float = 0.0
    sample_offset_px: tuple[float, float] = (0.0, 0.0)  # mean (du, dv) of the samples from pixel centres
    color_coverage: float | None = None  # fraction of mask pixels the colour alpha covers (> 0.5)
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_meta(self) -> dict:
        return asdict(self)


def _fraction(bad: np.ndarray) -> float:
    return float(bad.mean()) if bad.size else 0.0


def check_geometry(cam: CameraSpec, mask: np.ndarray, normal: np.ndarray, position: np.ndarray,
                   depth: np.ndarray, bounds: tuple[np.ndarray, np.ndarray]) -> ViewCheck:
    """Check one view's float passes ((H, W) mask and depth, (H, W, 3) normal and position) against
    its camera; `bounds` is the normalised bounding box."""
    result = ViewCheck(cam.name)
    mask = np.asarray(mask, dtype=bool)
    result.coverage = float(mask.mean())
    if not mask.any():
        result.failures.append(f"{cam.name}: empty mask (nothing rendered)")
        return result
    if mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any():
        result.warnings.append(f"{cam.name}: the object touches the image border (may be clipped)")
    for name, data in (("normal", normal), ("position", position), ("depth", depth)):
        nan = int(np.count_nonzero(~np.isfinite(np.asarray(data))))
        result.nan_pixels += nan
        if nan:
            result.failures.append(f"{cam.name}: {nan} NaN/inf values in the {name} pass")

    length = np.linalg.norm(np.nan_to_num(np.asarray(normal, dtype=np.float64)[mask]), axis=-1)
    err = np.abs(length - 1.0)
    result.normal_max_error = float(err.max())
    result.normal_bad_fraction = _fraction(err > NORMAL_TOLERANCE)
    if result.normal_bad_fraction > MAX_BAD_FRACTION:
        result.failures.append(f"{cam.name}: {result.normal_bad_fraction:.2%} of normals are not unit length")
    elif result.normal_bad_fraction > 0:
        result.warnings.append(f"{cam.name}: {result.normal_bad_fraction:.3%} of normals are not unit length")

    disagree = _fraction((np.asarray(depth) < NO_HIT_DEPTH) != mask)
    if disagree > MAX_BAD_FRACTION:
        result.failures.append(f"{cam.name}: mask and depth disagree on {disagree:.2%} of pixels")

    lo, hi = (np.asarray(b, dtype=np.float64) for b in bounds)
    tol = POSITION_TOLERANCE * max(1.0, float(np.max(np.abs(np.concatenate([lo, hi])))))
    pos = np.nan_to_num(np.asarray(position, dtype=np.float64)[mask])
    result.outside_bounds_fraction = _fraction(np.any((pos < lo - tol) | (pos > hi + tol), axis=-1))
    if result.outside_bounds_fraction > MAX_BAD_FRACTION:
        result.failures.append(f"{cam.name}: {result.outside_bounds_fraction:.2%} of positions lie outside "
                               "the object's bounding box")
    rows, cols = np.nonzero(mask)
    uv, _ = project(pos, cam)
    result.sample_offset_px = tuple(float(x) for x in (uv - np.stack([cols + 0.5, rows + 0.5], 1)).mean(0))
    if max(abs(x) for x in result.sample_offset_px) > MAX_SAMPLE_OFFSET_PX:
        result.warnings.append(f"{cam.name}: geometry samples sit {result.sample_offset_px} px off the pixel centres")
    expected = unproject_pixels(rows, cols, np.nan_to_num(np.asarray(depth)[mask]), cam)
    err = np.linalg.norm(pos - expected, axis=-1)
    result.position_max_error = float(err.max())
    result.position_bad_fraction = _fraction(err > tol)
    if result.position_bad_fraction > MAX_BAD_FRACTION:
        result.failures.append(f"{cam.name}: positions disagree with depth + camera on "
                               f"{result.position_bad_fraction:.2%} of pixels (max error {result.position_max_error:.4g})")
    return result


def check_color(result: ViewCheck, alpha: np.ndarray, mask: np.ndarray) -> None:
    """Add the colour render's check to `result`: not blank where the geometry is."""
    mask = np.asarray(mask, dtype=bool)
    opaque = np.asarray(alpha, dtype=np.float64) > 0.5
    if not mask.any():
        return
    result.color_coverage = _fraction(opaque[mask])
    if not opaque.any():
        result.failures.append(f"{result.name}: the colour render is blank (alpha is zero everywhere)")
    elif result.color_coverage < 0.9:
        result.warnings.append(f"{result.name}: the colour alpha covers only {result.color_coverage:.1%} "
                               "of the geometry mask (transparent materials?)")


def failures(checks: list[ViewCheck]) -> list[str]:
    return [f for c in checks for f in c.failures]
