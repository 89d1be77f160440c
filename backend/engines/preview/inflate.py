"""Silhouette inflation: a closed, smooth volume from a single foreground mask.

The surface is the union of spheres centred on the silhouette's medial axis, each as wide as the
silhouette is there: a disc becomes a ball, a limb becomes a tube, and the thickness follows the
silhouette's local size instead of being one global depth. The union's height field is evaluated
exactly per radius bucket with one distance transform each, turned into a 3D implicit function
and meshed with marching cubes, so the result is watertight by construction.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import measure, morphology

from backend.mesh.frame import UnitFit, fit_unit_box


@dataclass(frozen=True)
class PixelMap:
    """Input pixels to the glTF frame's x/y: x = (col - centre_col) * scale, y = (centre_row - row) * scale."""

    scale: float  # world units per input pixel
    centre_col: float
    centre_row: float


def fit_silhouette(alpha: np.ndarray, vertices: np.ndarray) -> PixelMap:
    """Lay the image's foreground box over the front silhouette box of a given mesh: the two
    centres meet and one scale (the geometric mean of the width and height ratios) keeps the
    image's aspect, so a mesh of another shape still receives an undistorted picture."""
    rows, cols = np.nonzero(alpha > 0.5)  # never empty: foreground_alpha refuses an empty foreground
    lo, hi = np.asarray(vertices, np.float64)[:, :2].min(0), np.asarray(vertices, np.float64)[:, :2].max(0)
    width, height = cols.max() + 1 - cols.min(), rows.max() + 1 - rows.min()
    scale = float(np.sqrt(max(hi[0] - lo[0], 1e-9) / width * max(hi[1] - lo[1], 1e-9) / height))
    box_col, box_row = (cols.min() + cols.max() + 1) / 2.0, (rows.min() + rows.max() + 1) / 2.0
    mid = (lo + hi) / 2.0
    return PixelMap(scale, box_col - mid[0] / scale, box_row + mid[1] / scale)


@dataclass
class Inflated:
    """The mesh in the glTF frame (front +Z, up +Y, centred, largest extent 1) and the map from
    input pixels to it: x = (col - centre_col) * scale, y = (centre_row - row) * scale."""

    vertices: np.ndarray  # (V, 3) float32
    faces: np.ndarray  # (F, 3) int64, counter-clockwise seen from outside
    scale: float  # world units per input pixel
    centre_col: float
    centre_row: float

    def refit(self, vertices: np.ndarray, fit: UnitFit) -> "Inflated":
        """The same pixel map after `fit` moved and scaled the (possibly edited) vertices."""
        return replace(self, vertices=fit.apply(vertices), scale=self.scale * fit.factor,
                       centre_col=self.centre_col + fit.centre[0] / self.scale,
                       centre_row=self.centre_row - fit.centre[1] / self.scale)

    @property
    def pixels(self) -> PixelMap:
        return PixelMap(self.scale, self.centre_col, self.centre_row)


def union_of_balls_height(mask: np.ndarray) -> np.ndarray:
    """Height above the image plane of the union of the medial balls (0 outside the mask)."""
    # a fixed tie-breaking generator: scikit-image draws a fresh one per call otherwise, and the same
    # image gave a different skeleton (so a different mesh) from run to run
    skeleton, radius = morphology.medial_axis(mask, return_distance=True, rng=0)
    height_sq = np.zeros(mask.shape, np.float64)
    radii = np.round(radius[skeleton]).astype(np.int64)
    for r in np.unique(radii):
        if r < 1:
            continue
        centres = np.zeros(mask.shape, bool)
        centres[skeleton] = np.round(radius[skeleton]) == r
        dist = ndimage.distance_transform_edt(~centres)
        np.maximum(height_sq, r * r - dist * dist, out=height_sq)
    return np.sqrt(height_sq) * mask


def inflate(alpha: np.ndarray, grid: int = 160, depth_scale: float = 0.75) -> Inflated:
    """Mesh the inflated silhouette of `alpha` ((H, W) in [0, 1]) on a grid of `grid` cells along
    the silhouette's longer side; `depth_scale` flattens the round cross-sections a little,
    since most photographed objects are shallower than they are wide."""
    rows, cols = np.nonzero(alpha > 0.5)
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    side = max(r1 - r0, c1 - c0)
    cell = side / grid  # input pixels per grid cell
    pad = 3
    gh, gw = int(np.ceil((r1 - r0) / cell)), int(np.ceil((c1 - c0) / cell))
    crop = Image.fromarray((alpha[r0:r1, c0:c1] * 255).astype(np.uint8))
    small = np.asarray(crop.resize((gw, gh), Image.BOX), dtype=np.float32) / 255.0
    mask = np.pad(small > 0.5, pad)
    inside = ndimage.distance_transform_edt(mask)
    outside = ndimage.distance_transform_edt(~mask)
    height = union_of_balls_height(mask) * depth_scale
    # Implicit function: positive inside. Outside the silhouette it falls off with the 2D distance
    # so the rim closes where the balls touch the silhouette.
    field_2d = np.where(mask, np.maximum(height, 0.5 * inside), -outside)
    field_2d = ndimage.gaussian_filter(field_2d, 0.7)
    zmax = float(field_2d.max()) + 2.0
    z = np.arange(-np.ceil(zmax), np.ceil(zmax) + 1.0)
    volume = field_2d[:, :, None] - np.abs(z)[None, None, :]
    verts, faces, _, _ = measure.marching_cubes(volume, level=0.0, method="lewiner")
    # grid index (row, col, k) -> input pixels -> glTF frame (x right, y up, z towards the viewer)
    row_px = r0 + (verts[:, 0] - pad + 0.5) * cell
    col_px = c0 + (verts[:, 1] - pad + 0.5) * cell
    z_px = (verts[:, 2] + z[0]) * cell
    centre_row, centre_col = (r0 + r1) / 2.0, (c0 + c1) / 2.0
    world = np.stack([col_px - centre_col, centre_row - row_px, z_px], axis=1)
    faces = faces.astype(np.int64)
    tri = world[faces]
    signed_volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum()
    if signed_volume < 0:
        faces = faces[:, ::-1].copy()
    pixel_frame = Inflated(world.astype(np.float32), faces, 1.0, centre_col, centre_row)
    return pixel_frame.refit(world, fit_unit_box(world))
