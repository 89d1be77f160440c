"""The learned remover: BiRefNet (general) as an ONNX model in a rembg session on onnxruntime.

Why BiRefNet-general: it is MIT-licensed (BRIA RMBG-2.0, the same network on BRIA's data, is
CC BY-NC, unusable for commercial game assets), it is the network the release's texture stage
uses for the same job, and it is the most accurate general model rembg ships (DIS-VD S-measure
0.911 / weighted F 0.875 vs 0.882 / 0.830 for the Swin-T "lite" variant, per the BiRefNet model
zoo; about 165 ms per 1024 px image as ONNX on an A100 vs 94 ms for lite). U2-Net, what the
release falls back to, works at 320 px and loses thin parts.

The file is fetched only by `python -m backend download` (rembg's own URL and checksum) into our
cache folder; a job never downloads: rembg sessions fetch on creation, so ours is a subclass that
opens the cached file and nothing else. rembg's `predict` stretches its output to min..max,
which turns an empty prediction into noise, so the probabilities are read from the session here.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from shared.errors import BackendError

from .cutout import Cutout

MODEL_NAME = "birefnet-general"  # rembg's session name
MODEL_FILE = f"{MODEL_NAME}.onnx"
HOME_VAR = "STEP1X3D_REMOVER_HOME"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
GPU_ARENA_BYTES = 6 << 30  # the release caps the session's CUDA arena at 6 GiB too
DOWNLOAD_HINT = "run `python -m backend download` to fetch the BiRefNet background remover"


@dataclass(frozen=True)
class RemoverFile:
    name: str
    path: Path
    present: bool

    def describe(self) -> str:
        return f"{self.name}: {self.path}" + ("" if self.present else " (missing)")


def cache_folder() -> Path:
    """Where `download` puts the model: $STEP1X3D_REMOVER_HOME, else beside the other caches."""
    if os.environ.get(HOME_VAR):
        return Path(os.environ[HOME_VAR]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "step1x3d" / "rembg"


def model_path() -> Path | None:
    """The model file if one is on disk: our cache, then rembg's own folder ($U2NET_HOME or ~/.u2net)."""
    folders = [cache_folder()]
    folders.append(Path(os.environ.get("U2NET_HOME") or Path.home() / ".u2net").expanduser())
    for folder in folders:
        if (folder / MODEL_FILE).is_file():
            return folder / MODEL_FILE
    return None


def remover_model_files() -> list[RemoverFile]:
    """The background remover's model file, for `info`."""
    found = model_path()
    return [RemoverFile(MODEL_NAME, found or cache_folder() / MODEL_FILE, found is not None)]


def download_model() -> RemoverFile:
    """Fetch the model file into the cache with rembg's URL and checksum (the one network call)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise BackendError("weights_not_found", "HF_HUB_OFFLINE is set; downloads are disabled")
    from rembg.sessions import sessions

    folder = cache_folder()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with _env("U2NET_HOME", str(folder)):  # rembg reads its target folder from here
            sessions[MODEL_NAME].download_models()  # pooch: temp file, checksum, then rename
    except Exception as exc:  # network, disk or checksum: all end the same way for the user
        raise BackendError("weights_not_found", f"could not download the {MODEL_NAME} background remover: {exc}") from None
    return remover_model_files()[0]


@contextlib.contextmanager
def _env(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def providers_for(device: str) -> list:
    """onnxruntime providers: CUDA on the plan's GPU when this onnxruntime build has it, else CPU."""
    import onnxruntime as ort

    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        index = int(device.split(":")[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": index, "gpu_mem_limit": GPU_ARENA_BYTES,
                                           "arena_extend_strategy": "kSameAsRequested"}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class ModelRemover:
    """Image in, alpha out, through a BiRefNet-signature ONNX model: (1, 3, S, S) ImageNet-normalised
    RGB in, (1, 1, S, S) logits first out."""

    def __init__(self, path: Path, device: str = "cpu"):
        import onnxruntime as ort
        from rembg.sessions import sessions

        base = sessions[MODEL_NAME]
        # rembg's BiRefNet session (provider handling, its resize and normalisation) opening our file
        local = type("LocalBiRefNetSession", (base,), {"download_models": classmethod(lambda cls, *a, **k: k["model_path"])})
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = local(MODEL_NAME, options, providers=providers_for(device), model_path=str(path))
        self.providers = self.session.inner_session.get_providers()
        shape = self.session.inner_session.get_inputs()[0].shape
        self.size = tuple(shape[2:4]) if all(isinstance(s, int) for s in shape[2:4]) else (1024, 1024)
        self.name = MODEL_NAME

    def __call__(self, rgba: np.ndarray) -> Cutout:
        from PIL import Image

        h, w = rgba.shape[:2]
        feed = self.session.normalize(Image.fromarray(np.ascontiguousarray(rgba[..., :3])), MEAN, STD,
                                      (self.size[1], self.size[0]))
        logits = np.asarray(self.session.inner_session.run(None, feed)[0], np.float32)[0, 0]
        prob = 1.0 / (1.0 + np.exp(-np.clip(logits, -60.0, 60.0)))
        alpha = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
        alpha[alpha < 0.02] = 0.0  # faint speckle would widen the crop box
        decisive = 1.0 - float(np.mean(4.0 * alpha * (1.0 - alpha)))  # 1 = every pixel clearly in or out
        return Cutout(alpha.astype(np.float32), self.name, round(decisive, 3))


@lru_cache(maxsize=2)
def load_remover(path: str, device: str) -> ModelRemover:
    """One session per file and device for the life of the process (loading takes seconds)."""
    try:
        return ModelRemover(Path(path), device)
    except Exception as exc:  # a damaged or foreign ONNX file
        raise BackendError("weights_not_found", f"the background remover {path} could not be loaded ({exc}); "
                           f"delete it and {DOWNLOAD_HINT}") from None
