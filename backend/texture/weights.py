"""Where the texture stage's weights come from: a local folder or a Hugging Face repo id.

Three sources, each in its release layout: SDXL base 1.0 (diffusers folders unet/, text_encoder/,
text_encoder_2/, tokenizer/, tokenizer_2/, scheduler/), the fp16-fix SDXL VAE (config.json and
weights at the root) and the Step1X-3D repo (the adapter at `Step1X-3D-Texture/...`). Repo ids go
through huggingface_hub, which honours HF_HUB_OFFLINE and HF_HOME; only the files the stage reads
are fetched (fp16 variants of SDXL where the repo has them).
"""
from __future__ import annotations

from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import EntryNotFoundError

from backend.runtime.weights import SDXL_BASE_FILES as BASE_FILES
from backend.runtime.weights import SDXL_REPO as SDXL_BASE
from backend.runtime.weights import SDXL_VAE_FILES as VAE_FILES
from backend.runtime.weights import SDXL_VAE_REPO as SDXL_VAE
from backend.runtime.weights import STEP1X3D_REPO as STEP1X3D
from shared.errors import BackendError

from .adapter import ADAPTER_FILE

__all__ = ["BASE_FILES", "SDXL_BASE", "SDXL_VAE", "STEP1X3D", "VAE_FILES", "adapter_path", "resolve", "weights_variant"]


def resolve(source: str, patterns: list[str], what: str) -> Path:
    """A local folder as is, or the snapshot folder of a hub repo (downloaded unless offline)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.is_absolute() or source.startswith((".", "~")) or path.exists():
        raise BackendError("weights_not_found", f"{what}: {source} is not a folder")
    try:
        return Path(snapshot_download(source, allow_patterns=patterns))
    except (OSError, EntryNotFoundError, ValueError) as exc:
        raise BackendError("weights_not_found", f"{what}: cannot get {source!r} from the local folder or "
                           f"the Hugging Face hub ({type(exc).__name__}: {exc})") from None


def adapter_path(source: str) -> Path:
    """The adapter file: given directly, in its `Step1X-3D-Texture` folder, in a Step1X-3D folder,
    or from the hub repo."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if (path / Path(ADAPTER_FILE).name).is_file():
        return path / Path(ADAPTER_FILE).name
    found = resolve(source, [ADAPTER_FILE], "texture adapter") / ADAPTER_FILE
    if not found.is_file():
        raise BackendError("weights_not_found", f"texture adapter: {found} does not exist")
    return found


def weights_variant(folder: Path, stem: str, prefer_fp16: bool) -> str | None:
    """"fp16" when `<stem>.fp16.safetensors` exists and is wanted (or is all there is), else None."""
    full, half = folder / f"{stem}.safetensors", folder / f"{stem}.fp16.safetensors"
    if half.is_file() and (prefer_fp16 or not full.is_file()):
        return "fp16"
    if full.is_file():
        return None
    raise BackendError("weights_not_found", f"no {stem}.safetensors (or .fp16 variant) in {folder}")
