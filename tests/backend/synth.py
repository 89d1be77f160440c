"""Synthetic reference images for the backend tests: a striped ellipse on a plain backdrop."""
from __future__ import annotations

import numpy as np


def striped_ellipse(size: int = 256, background=(255, 255, 255)) -> tuple[np.ndarray, np.ndarray]:
    """RGB image and its boolean foreground: an off-centre ellipse with horizontal colour bands."""
    rows, cols = np.mgrid[0:size, 0:size] + 0.5
    cy, cx, ry, rx = 0.55 * size, 0.45 * size, 0.32 * size, 0.22 * size
    fg = ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1.0
    bands = np.array([[220, 40, 40], [40, 160, 60], [40, 70, 210]], np.uint8)
    colour = bands[((rows - (cy - ry)) / (2 * ry) * 3).clip(0, 2.999).astype(int)]
    image = np.where(fg[..., None], colour, np.array(background, np.uint8))
    return image.astype(np.uint8), fg
