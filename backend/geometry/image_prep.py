"""Image preparation for the geometry model: find the object, recentre it, pad to a square.

The alpha channel is trusted when the image has some transparency (mode "auto"); otherwise a
background remover produces one. The recentring follows the release step by step (alpha bounding
box, scale so the box fills `foreground_ratio` of the frame, composite on white, paste centred,
pad to a square) so the model sees what it saw in the release's own examples.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from backend.imaging import LoadedImage, foreground_alpha, load_image
from shared.errors import BackendError

# A remover maps an (H, W, 4) uint8 RGBA image to an (H, W) alpha in [0, 1].
Remover = Callable[[np.ndarray], np.ndarray]


@dataclass
class PreparedImage:
    rgb: Image.Image  # square, object composited on the background colour: what the encoders see
    alpha: Image.Image  # square "L" mask of the object, zero in the padding
    alpha_source: str  # "file", "remover" or "none"


def load(image: str | Path | Image.Image | np.ndarray) -> LoadedImage:
    """A path, PIL image or RGBA/RGB array as the backend's one image format."""
    if isinstance(image, (str, Path)):
        return load_image(image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
            raise BackendError("input_unreadable", f"expected an (H, W, 3|4) uint8 array, got {image.dtype} {image.shape}")
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise BackendError("input_unreadable", f"unsupported image type {type(image).__name__}")
    rgba = np.array(image.convert("RGBA"), dtype=np.uint8)
    # The release's rule: an alpha channel counts only if some pixel is not fully opaque.
    has_alpha = bool(rgba[..., 3].min() < 255)
    return LoadedImage(rgba=rgba, path=Path("<image>"), has_alpha=has_alpha)


def object_alpha(image: LoadedImage, mode: str = "auto", remover: Remover | None = None) -> tuple[np.ndarray, str]:
    """uint8 alpha of the object and where it came from. Without a remover the backend's
    border-colour segmentation is used (works offline, no weights)."""
    if mode not in ("auto", "always", "never"):
        raise BackendError("invalid_setting", f"remove_background must be auto, always or never; got {mode!r}")
    source = "none" if mode == "never" else "file" if (image.has_alpha and mode == "auto") else "remover"
    if source == "remover" and remover is not None:
        alpha = np.asarray(remover(image.rgba), dtype=np.float32)
        if alpha.shape != image.rgba.shape[:2]:
            raise BackendError("internal_error", f"background remover returned a {alpha.shape} mask for a {image.rgba.shape[:2]} image")
    else:
        alpha = foreground_alpha(image, mode)
    return np.clip(np.rint(alpha * 255.0), 0, 255).astype(np.uint8), source


def recentre(
    rgba: np.ndarray, alpha: np.ndarray, foreground_ratio: float = 0.95, background=(255, 255, 255)
) -> tuple[Image.Image, Image.Image]:
    """The release's crop / rescale / centre / pad, on an RGBA array with the object's alpha."""
    height, width = alpha.shape
    alpha_img = Image.fromarray(alpha, "L")
    bbox = alpha_img.getbbox()
    if bbox is None:
        raise BackendError("empty_foreground", "the image's alpha channel is empty: there is no object")
    x1, y1, x2, y2 = bbox
    dx, dy = x2 - x1, y2 - y1
    scale = min(height * foreground_ratio / dy, width * foreground_ratio / dx)
    size = (max(1, int(dx * scale)), max(1, int(dy * scale)))  # truncation, as the release does

    rgba_img = Image.fromarray(np.concatenate([rgba[..., :3], alpha[..., None]], axis=2), "RGBA")
    backdrop = Image.new("RGBA", (width, height), (*background, 255))
    obj = Image.alpha_composite(backdrop, rgba_img).crop(bbox).resize(size, Image.Resampling.BICUBIC)
    mask = alpha_img.crop(bbox).resize(size, Image.Resampling.BICUBIC)

    side = max(width, height)
    canvas = Image.new("RGB", (side, side), tuple(background))
    canvas_alpha = Image.new("L", (side, side), 0)
    # Centred in the original frame first, then that frame centred in the square (two integer
    # divisions, exactly as the release rounds them).
    at = ((width - size[0]) // 2 + (side - width) // 2, (height - size[1]) // 2 + (side - height) // 2)
    canvas.paste(obj.convert("RGB"), at)
    canvas_alpha.paste(mask, at)
    return canvas, canvas_alpha


def prepare_image(
    image: str | Path | Image.Image | np.ndarray,
    remove_background: str = "auto",
    foreground_ratio: float = 0.95,
    remover: Remover | None = None,
    background=(255, 255, 255),
) -> PreparedImage:
    if not 0.0 < foreground_ratio <= 1.0:
        raise BackendError("invalid_setting", f"foreground_ratio must be in (0, 1]; got {foreground_ratio}")
    loaded = load(image)
    alpha, source = object_alpha(loaded, remove_background, remover)
    rgb, mask = recentre(loaded.rgba, alpha, foreground_ratio, background)
    return PreparedImage(rgb=rgb, alpha=mask, alpha_source=source)
