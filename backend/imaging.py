"""Reading a reference image safely and finding its foreground (through backend.background).

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

from backend.background import Cutout, Remover, check_coverage, cutout
from shared.errors import BackendError

MAX_SIDE = 8192


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


def foreground(image: LoadedImage, mode: str = "auto", remover: Remover | None = None,
               device: str = "cpu") -> Cutout:
    """The object's cut-out (backend.background): the file's alpha when it has one (mode auto), else
    the background remover's. Raises `empty_foreground` / `foreground_fills_frame` when the remover is
    sure, `background_unclear` when it is not."""
    return check_coverage(cutout(image.rgba, image.has_alpha, mode, remover, device), str(image.path))


def foreground_alpha(image: LoadedImage, mode: str = "auto", remover: Remover | None = None,
                     device: str = "cpu") -> np.ndarray:
    """Alpha in [0, 1] of the object (see `foreground`)."""
    return foreground(image, mode, remover, device).alpha
