"""The cut-out preview: the framed RGBA the models will see, written as PNG before anything runs.

Shared by `python -m backend prepare-image`, the server's `prepare_image` op and so the add-on's
thumbnail. Optionally also the same image over a checkerboard, for viewers that show alpha as black.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from shared import settings as settings_schema
from shared.errors import BackendError

from .geometry.image_prep import prepare_image

CHECKER_CELLS = 16
CHECKER_GREYS = (0.80, 0.60)


@dataclass
class CutoutPreview:
    path: Path
    size: int  # side of the square image
    foreground_ratio: float  # share of the side the object's longer side fills in the written image
    coverage: float  # share of the input frame the object covers
    method: str  # file, none, grabcut or the model's name
    confidence: float
    note: str = ""
    checker: Path | None = None

    def as_dict(self) -> dict:
        return {"path": str(self.path), "size": self.size, "foreground_ratio": round(self.foreground_ratio, 4),
                "coverage": round(self.coverage, 4), "method": self.method, "confidence": self.confidence,
                "note": self.note, "checker": str(self.checker) if self.checker else None}

    def describe(self) -> str:
        text = (f"wrote {self.path} ({self.size}x{self.size}): the object fills {self.foreground_ratio:.0%} of the "
                f"frame (foreground ratio {self.foreground_ratio:.2f}); alpha from {self.method} "
                f"(confidence {self.confidence:.2f})")
        return text + (f"; {self.note}" if self.note else "")


def on_checkerboard(rgba: Image.Image) -> Image.Image:
    """The cut-out over a grey checkerboard, so transparency is visible in any viewer."""
    side = rgba.size[0]
    cell = max(1, side // CHECKER_CELLS)
    rows, cols = np.mgrid[0:rgba.size[1], 0:side] // cell
    grey = np.where((rows + cols) % 2 == 0, *CHECKER_GREYS)[..., None]
    a = np.asarray(rgba, np.float32) / 255.0
    out = a[..., :3] * a[..., 3:] + grey * (1.0 - a[..., 3:])
    return Image.fromarray(np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8), "RGB")


def _save_png(image: Image.Image, path: Path) -> None:
    """Write-then-rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        image.save(tmp, "PNG")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise BackendError("output_unwritable", f"cannot write {path}: {exc}") from None


def write_cutout(image: str | Path, output: str | Path, settings: dict | None = None,
                 checker: str | Path | None = None, device: str = "cuda:0") -> CutoutPreview:
    """Prepare `image` with the generation settings (remove_background, foreground_ratio) and write
    the cut-out to `output` (and over a checkerboard to `checker`). A model remover uses `device`
    when onnxruntime can, else the CPU."""
    s = settings_schema.resolve(settings or {})
    output = Path(output)
    if output.parent and not output.parent.is_dir():
        raise BackendError("output_unwritable", f"the folder of {output} does not exist")
    prepared = prepare_image(image, s["remove_background"], s["foreground_ratio"], device=device)
    _save_png(prepared.rgba, output)
    checker_path = None
    if checker:
        checker_path = Path(checker)
        _save_png(on_checkerboard(prepared.rgba), checker_path)
    cut = prepared.cutout
    return CutoutPreview(output, prepared.rgba.size[0], prepared.foreground_ratio, cut.coverage, cut.method,
                         cut.confidence, cut.note, checker_path)
