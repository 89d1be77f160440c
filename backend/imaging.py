"""Reading a reference image safely and finding its foreground.

Every way an image file can be wrong maps to a stable error code naming the file; every way it can
be unusual (16-bit, greyscale, palette, CMYK, EXIF-rotated) is normalised to 8-bit RGBA, so the
stages after this only ever see one format.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

from shared.errors import BackendError

MAX_SIDE = 8192
MIN_FOREGROUND = 0.002  # share of the frame below which the image holds no object
MAX_FOREGROUND = 0.995  # share above which there is no background left to separate


@dataclass
class LoadedImage:
    rgba: np.ndarray  # (H, W, 4) uint8, alpha 255 where the file had none
    path: Path
    has_alpha: bool  # the file carried some transparency


def load_image(path: str | Path) -> LoadedImage:
    path = Path(path)
    if not path.exists():
        raise BackendError("input_not_found", f"image not found: {path}")
    if not path.is_file():
        raise BackendError("input_unreadable", f"not a file: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w == 0 or h == 0:
                    raise BackendError("input_unreadable", f"image has zero size: {path}")
                if max(w, h) > MAX_SIDE:
                    raise BackendError(
                        "input_too_large", f"image is {w}x{h}; at most {MAX_SIDE} px a side is supported: {path}"
                    )
                im.load()
                im = ImageOps.exif_transpose(im)
                rgba, has_alpha = _to_rgba8(im)
    except BackendError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BackendError("input_too_large", f"image has too many pixels: {path}") from None
    except UnidentifiedImageError:
        raise BackendError("input_unreadable", f"not an image file (or an unsupported format): {path}") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        raise BackendError("input_unreadable", f"image file is damaged ({exc}): {path}") from None
    return LoadedImage(rgba=rgba, path=path, has_alpha=has_alpha)


def _to_rgba8(im: Image.Image) -> tuple[np.ndarray, bool]:
    """Any PIL mode to 8-bit RGBA; high bit depths are scaled, not clipped."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        if im.mode == "F":
            top = max(float(a.max()), 1e-12) if a.max() > 1.0 else 1.0
        grey = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        rgb = np.repeat(grey[..., None], 3, axis=2)
        return np.concatenate([rgb, np.full(grey.shape + (1,), 255, np.uint8)], axis=2), False
    if im.mode == "P":
        im = im.convert("RGBA")
    elif im.mode == "CMYK":
        im = im.convert("RGB")
    has_alpha = im.mode in ("RGBA", "LA", "PA", "La", "RGBa")
    rgba = np.array(im.convert("RGBA"), dtype=np.uint8)
    if has_alpha and rgba[..., 3].min() == 255:
        has_alpha = False  # an opaque alpha channel says nothing about the foreground
    return rgba, has_alpha


def foreground_alpha(image: LoadedImage, mode: str = "auto") -> np.ndarray:
    """Alpha in [0, 1] of the object: the file's alpha when it has one (mode auto), else the
    border-colour segmentation. Raises `empty_foreground` / `foreground_fills_frame`."""
    if mode == "never":
        alpha = np.ones(image.rgba.shape[:2], np.float32)
    elif image.has_alpha and mode == "auto":
        alpha = image.rgba[..., 3].astype(np.float32) / 255.0
    else:
        alpha = segment_by_border_colour(image)
    coverage = float((alpha > 0.5).mean())
    if coverage < MIN_FOREGROUND:
        raise BackendError("empty_foreground", f"no foreground object found in {image.path}")
    if coverage > MAX_FOREGROUND and mode != "never":
        raise BackendError(
            "foreground_fills_frame",
            f"the object fills the whole frame of {image.path}; leave a margin of background or give an alpha channel",
        )
    return alpha


def segment_by_border_colour(image: LoadedImage) -> np.ndarray:
    """Background = regions connected to the image border whose colour matches the border's.

    Works offline with no model for the common case of product shots and renders on a plain
    backdrop; a cluttered border has no single colour, and that is reported, not guessed.
    """
    rgb = image.rgba[..., :3].astype(np.float32) / 255.0
    h, w = rgb.shape[:2]
    ring = max(2, round(0.01 * min(h, w)))
    border = np.concatenate([
        rgb[:ring].reshape(-1, 3), rgb[-ring:].reshape(-1, 3),
        rgb[:, :ring].reshape(-1, 3), rgb[:, -ring:].reshape(-1, 3),
    ])
    background = np.median(border, axis=0)
    border_dist = np.abs(border - background).max(axis=1)
    if (border_dist < 0.1).mean() < 0.6:
        raise BackendError(
            "foreground_fills_frame",
            f"the border of {image.path} has no uniform background colour to separate; "
            "give an image with an alpha channel or a plain background",
        )
    threshold = float(np.clip(3.0 * np.quantile(border_dist, 0.9), 0.06, 0.25))
    dist = np.abs(rgb - background).max(axis=2)
    candidates, _ = ndimage.label(dist < threshold)
    edge_labels = np.unique(np.concatenate([candidates[0], candidates[-1], candidates[:, 0], candidates[:, -1]]))
    fg = ~np.isin(candidates, edge_labels[edge_labels > 0])
    parts, count = ndimage.label(fg)
    if count > 1:
        sizes = ndimage.sum_labels(fg, parts, index=np.arange(1, count + 1))
        keep = np.concatenate([[False], sizes >= 0.01 * sizes.max()])
        fg = keep[parts]
    return ndimage.gaussian_filter(fg.astype(np.float32), 0.6)
