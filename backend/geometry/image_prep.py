"""Image preparation for the models: find the object, recentre it, pad to a square.

The alpha channel is trusted when the image has some transparency (mode "auto"); otherwise the
background remover (backend.background) produces one. The recentring follows the release step by
step (step1x3d-reference.md §2.2: alpha bounding box, scale so the box fills `foreground_ratio` of
the frame, composite on white, paste centred, pad to a square) so the geometry model sees what it
saw in the release's own examples. The same framing of the straight-colour cut-out (`rgba`) is
what the texture stage composites on its own grey and what `prepare-image` shows the artist.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import numpy as np
from PIL import Image

from backend.background import Cutout, Remover
from backend.imaging import LoadedImage, foreground, load_image
from shared.errors import BackendError


@dataclass
class PreparedImage:
    rgb: Image.Image  # square, object composited on the background colour: what the encoders see
    alpha: Image.Image  # square "L" mask of the object, zero in the padding
    alpha_source: str  # "file", "remover" or "none"
    rgba: Image.Image  # the same framing, straight colour with alpha: the cut-out
    cutout: Cutout  # the remover's answer on the original frame (method, confidence, note)

    @property
    def foreground_ratio(self) -> float:
        """Share of the square frame's side the object's longer side fills (the setting it was framed with)."""
        box = self.alpha.getbbox()
        return 0.0 if box is None else max(box[2] - box[0], box[3] - box[1]) / self.alpha.size[0]


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


def object_alpha(image: LoadedImage, mode: str = "auto", remover: Remover | None = None,
                 device: str = "cpu") -> tuple[np.ndarray, str, Cutout]:
    """uint8 alpha of the object, where it came from, and the remover's full answer."""
    result = foreground(image, mode, remover, device)
    source = {"none": "none", "file": "file"}.get(result.method, "remover")
    return np.clip(np.rint(result.alpha * 255.0), 0, 255).astype(np.uint8), source, result


@dataclass
class Framed:
    rgb: Image.Image  # square, composited on the background colour
    alpha: Image.Image  # square "L"
    rgba: Image.Image  # square, straight colour with alpha (zero in the padding)


def recentre(rgba: np.ndarray, alpha: np.ndarray, foreground_ratio: float = 0.95, background=(255, 255, 255),
             name: str = "the image") -> Framed:
    """The release's crop / rescale / centre / pad, on an RGBA array with the object's alpha."""
    height, width = alpha.shape
    alpha_img = Image.fromarray(alpha, "L")
    bbox = alpha_img.getbbox()
    if bbox is None:
        raise BackendError("empty_foreground", f"the alpha channel of {name} is empty: there is no object")
    x1, y1, x2, y2 = bbox
    dx, dy = x2 - x1, y2 - y1
    scale = min(height * foreground_ratio / dy, width * foreground_ratio / dx)
    size = (max(1, int(dx * scale)), max(1, int(dy * scale)))  # truncation, as the release does

    rgba_img = Image.fromarray(np.concatenate([rgba[..., :3], alpha[..., None]], axis=2), "RGBA")
    backdrop = Image.new("RGBA", (width, height), (*background, 255))
    obj = Image.alpha_composite(backdrop, rgba_img).crop(bbox).resize(size, Image.Resampling.BICUBIC)
    mask = alpha_img.crop(bbox).resize(size, Image.Resampling.BICUBIC)
    # Pillow resamples RGBA premultiplied: the colour under transparent pixels never bleeds into the edge
    cut = rgba_img.crop(bbox).resize(size, Image.Resampling.BICUBIC)

    side = max(width, height)
    canvas = Image.new("RGB", (side, side), tuple(background))
    canvas_alpha = Image.new("L", (side, side), 0)
    canvas_rgba = Image.new("RGBA", (side, side), (*background, 0))
    # Centred in the original frame first, then that frame centred in the square (two integer
    # divisions, exactly as the release rounds them).
    at = ((width - size[0]) // 2 + (side - width) // 2, (height - size[1]) // 2 + (side - height) // 2)
    canvas.paste(obj.convert("RGB"), at)
    canvas_alpha.paste(mask, at)
    canvas_rgba.paste(cut, at)
    canvas_rgba.putalpha(canvas_alpha)
    return Framed(canvas, canvas_alpha, canvas_rgba)


def prepare_image(
    image: str | Path | Image.Image | np.ndarray,
    remove_background: str = "auto",
    foreground_ratio: float = 0.95,
    remover: Remover | None = None,
    background=(255, 255, 255),
    device: str = "cpu",
) -> PreparedImage:
    """The square images the models see; `device` is where a model remover runs ("cuda:N" or "cpu")."""
    if not 0.0 < foreground_ratio <= 1.0:
        raise BackendError("invalid_setting", f"foreground_ratio must be in (0, 1]; got {foreground_ratio}")
    loaded = load(image)
    alpha, source, result = object_alpha(loaded, remove_background, remover, device)
    framed = recentre(loaded.rgba, alpha, foreground_ratio, background, str(loaded.path))
    return PreparedImage(rgb=framed.rgb, alpha=framed.alpha, alpha_source=source, rgba=framed.rgba, cutout=result)
