"""The reference image as the texture model saw it in training (step1x3d-reference.md §4.5).

The object's alpha bounding box (1 px margin) is scaled so its longer side is 90% of the view
size, centred on a square canvas and composited over grey 0.5, the training renders' background.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from shared.errors import BackendError

BACKGROUND = 0.5
FILL = 0.9


def reference_image(rgb: np.ndarray, alpha: np.ndarray, size: int) -> torch.Tensor:
    """rgb (H, W, 3) uint8 and alpha (H, W) in [0, 1] -> (3, size, size) float32 in [0, 1]."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or alpha.shape != rgb.shape[:2]:
        raise ValueError(f"expected (H, W, 3) colour and (H, W) alpha, got {rgb.shape} and {alpha.shape}")
    rows, cols = np.nonzero(alpha > 0)
    if len(rows) == 0:
        raise BackendError("empty_foreground", "the reference image has no foreground to texture from")
    h, w = alpha.shape
    top, bottom = max(rows.min() - 1, 0), min(rows.max() + 2, h)
    left, right = max(cols.min() - 1, 0), min(cols.max() + 2, w)
    crop = np.concatenate([rgb[top:bottom, left:right].astype(np.float32) / 255.0,
                           alpha[top:bottom, left:right, None].astype(np.float32)], axis=-1)
    side = int(FILL * size)
    scale = side / max(crop.shape[:2])
    new_h, new_w = max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale))
    # premultiplied resampling: colour from transparent pixels does not bleed into the edge
    crop[..., :3] *= crop[..., 3:]
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    small = np.clip(cv2.resize(crop, (new_w, new_h), interpolation=interp), 0.0, 1.0)
    canvas = np.zeros((size, size, 4), dtype=np.float32)
    y0, x0 = (size - new_h) // 2, (size - new_w) // 2
    canvas[y0:y0 + new_h, x0:x0 + new_w] = small
    a = canvas[..., 3:]
    out = np.clip(canvas[..., :3] + (1.0 - a) * BACKGROUND, 0.0, 1.0)
    return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))
