"""The reference image as a file the backend can read, wherever it comes from in Blender."""
from __future__ import annotations

import re
import tempfile
import uuid
from pathlib import Path

import bpy

from ..shared.errors import BackendError


def temp_folder() -> Path:
    folder = Path(tempfile.gettempdir()) / "step1x3d"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def safe_stem(name: str) -> str:
    stem = re.sub(r"[^\w.-]+", "_", Path(name).stem).strip("._")
    return stem or "image"


def reference_image(props, override: str = "") -> tuple[str, str]:
    """(path, label) of the panel's reference image; `override` is a file path from a script."""
    if override or props.image_source == "FILE":
        raw = (override or props.image_path).strip()
        if not raw:
            raise BackendError("input_not_found", "no reference image is chosen")
        path = Path(bpy.path.abspath(raw)).expanduser()
        if not path.is_file():
            raise BackendError("input_not_found", f"the reference image does not exist: {path}")
        return str(path), Path(path).stem
    image = props.image
    if image is None:
        raise BackendError("input_not_found", "no Blender image is chosen")
    return image_file(image), Path(image.name).stem


def image_file(image) -> str:
    """A file with the image's current pixels: its own file when that is up to date, else a
    temporary copy (packed bytes as they are, generated or edited pixels saved as PNG)."""
    if image.source == "FILE" and not image.packed_file and not image.is_dirty:
        path = Path(bpy.path.abspath(image.filepath, library=image.library))
        if path.is_file():
            return str(path)
    if image.source not in ("FILE", "GENERATED"):
        raise BackendError("input_unreadable", f"the image {image.name!r} is a {image.source.lower()}, not a still image")
    stem = f"{safe_stem(image.name)}-{uuid.uuid4().hex[:8]}"
    if image.packed_file and not image.is_dirty:
        suffix = Path(image.filepath).suffix or f".{image.file_format.lower()}"
        target = temp_folder() / f"{stem}{suffix}"
        target.write_bytes(image.packed_file.data)
        return str(target)
    if image.size[0] == 0 or image.size[1] == 0:
        raise BackendError("input_unreadable", f"the image {image.name!r} has no pixels")
    target = temp_folder() / f"{stem}.png"
    if image.file_format == "PNG":
        image.save(filepath=str(target), save_copy=True)
    else:  # a float or other-format buffer: a PNG copy, leaving the original untouched
        copy = image.copy()
        try:
            copy.file_format = "PNG"
            copy.save(filepath=str(target), save_copy=True)
        finally:
            bpy.data.images.remove(copy)
    return str(target)
