"""Background removal behind one interface: an RGBA image in, the object's alpha (a Cutout) out.

Both engines and the texture stage's reference image get their alpha from `cutout()`: the file's
own alpha when it has transparency (mode "auto"), else the BiRefNet model when its file is on disk
(model.py), else the GrabCut fallback (grabcut.py). `check_coverage` turns an empty or
frame-filling result into the stable error codes, but only when the remover is confident; an
unsure fallback says so and names the download command instead.
"""
from __future__ import annotations

from typing import Callable, Union

import numpy as np

from shared.errors import BackendError

from .cutout import Cutout
from .grabcut import grabcut_cutout
from .model import DOWNLOAD_HINT, download_model, load_remover, model_path, remover_model_files

__all__ = ["Cutout", "Remover", "MODES", "REMOVER_COMPONENT", "default_remover", "cutout", "check_coverage", "remover_model_files",
           "download_model"]

# A remover maps an (H, W, 4) uint8 RGBA image to a Cutout (or, for simple callers, an (H, W) alpha).
Remover = Callable[[np.ndarray], Union[Cutout, np.ndarray]]
MODES = ("auto", "always", "never")
REMOVER_COMPONENT = "background-remover"  # its name for `python -m backend download`
MIN_FOREGROUND = 0.002  # share of the frame below which the image holds no object
MAX_FOREGROUND = 0.995  # share above which there is no background left to separate
CONFIDENT = 0.5


def default_remover(device: str = "cpu") -> Remover:
    """The best remover available offline: the model when its file is cached, else GrabCut."""
    path = model_path()
    if path is None:
        return _fallback
    return load_remover(str(path), str(device))


def _fallback(rgba: np.ndarray) -> Cutout:
    result = grabcut_cutout(rgba)
    result.note = " ".join(filter(None, [result.note, f"no background model file: used the GrabCut fallback; "
                                                     f"{DOWNLOAD_HINT}"]))
    return result


def cutout(rgba: np.ndarray, has_alpha: bool, mode: str = "auto", remover: Remover | None = None,
           device: str = "cpu") -> Cutout:
    """The object's alpha for `mode` (auto: the file's alpha if it has transparency, else remove;
    always: remove; never: the whole frame)."""
    if mode not in MODES:
        raise BackendError("invalid_setting", f"remove_background must be auto, always or never; got {mode!r}")
    h, w = rgba.shape[:2]
    if mode == "never":
        return Cutout(np.ones((h, w), np.float32), "none", 1.0)
    if has_alpha and mode == "auto":
        return Cutout(rgba[..., 3].astype(np.float32) / 255.0, "file", 1.0)
    result = (remover or default_remover(device))(rgba)
    if not isinstance(result, Cutout):  # a plain alpha from a caller's own remover
        result = Cutout(np.asarray(result, np.float32), getattr(remover, "__name__", "custom"), 1.0)
    if result.alpha.shape != (h, w):
        raise BackendError("internal_error", f"background remover returned a {result.alpha.shape} mask for a {(h, w)} image")
    result.alpha = np.clip(result.alpha, 0.0, 1.0).astype(np.float32)
    return result


def check_coverage(result: Cutout, name: str) -> Cutout:
    """Refuse an empty or frame-filling cut-out: with the stable codes when the remover is sure,
    else as `background_unclear` with the way to a better remover. `name` is the image's path."""
    coverage = result.coverage
    if MIN_FOREGROUND <= coverage and (coverage <= MAX_FOREGROUND or result.method == "none"):
        return result
    if result.confidence < CONFIDENT:
        raise BackendError("background_unclear",
                           f"could not tell the object from the background in {name} (the {result.method} remover "
                           f"is {result.confidence:.0%} sure); give an image with an alpha channel or a plainer "
                           f"background" + (f", or {DOWNLOAD_HINT}" if result.method == "grabcut" else ""))
    if coverage < MIN_FOREGROUND:
        raise BackendError("empty_foreground", f"no foreground object found in {name}")
    raise BackendError("foreground_fills_frame",
                       f"the object fills the whole frame of {name}; leave a margin of background or give an alpha channel")
