"""Where the model weights are: a local folder in the official layout, or hub repos in the cache.

Nothing here downloads: `find_weights` only looks (the hub cache through huggingface_hub with
local_files_only), and `download` is the one explicit, user-requested network operation.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from shared.errors import BackendError

STEP1X3D_REPO = "stepfun-ai/Step1X-3D"
SDXL_REPO = "stabilityai/stable-diffusion-xl-base-1.0"
SDXL_VAE_REPO = "madebyollin/sdxl-vae-fp16-fix"
# component -> (repo, subfolder inside it, a file whose presence proves the component is there)
COMPONENTS: dict[str, tuple[str, str, str]] = {
    "geometry-base": (STEP1X3D_REPO, "Step1X-3D-Geometry-1300m", "model_index.json"),
    "geometry-label": (STEP1X3D_REPO, "Step1X-3D-Geometry-Label-1300m", "model_index.json"),
    "texture-adapter": (STEP1X3D_REPO, "Step1X-3D-Texture", "step1x-3d-ig2v.safetensors"),
    "sdxl-base": (SDXL_REPO, "", "model_index.json"),
    "sdxl-vae": (SDXL_VAE_REPO, "", "config.json"),
}
ENV_VAR = "STEP1X3D_WEIGHTS"


@dataclass
class WeightsStatus:
    root: str  # the folder or hub id that was searched
    found: dict[str, Path] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if not self.missing:
            return f"all weights found under {self.root}"
        return f"missing under {self.root}: {', '.join(self.missing)}"

    def as_dict(self) -> dict:
        return {"root": self.root, "found": {k: str(v) for k, v in self.found.items()}, "missing": self.missing}


def _local(root: Path, repo: str, sub: str, marker: str) -> Path | None:
    # A local root may hold the Step1X-3D folder layout directly, and the SDXL repos beside it
    # in folders named after the repo (e.g. <root>/stable-diffusion-xl-base-1.0).
    for base in (root, root / repo.split("/")[-1]):
        candidate = base / sub if sub else base
        if (candidate / marker).is_file():
            return candidate
    return None


def _cached(repo: str, sub: str, marker: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(repo, f"{sub}/{marker}" if sub else marker)
    if isinstance(hit, str):
        return Path(hit).parent
    return None


def find_weights(location: str | None = None) -> WeightsStatus:
    """Look for every component in `location` (folder) or, by default, the hub cache."""
    location = location or os.environ.get(ENV_VAR) or STEP1X3D_REPO
    root = Path(location).expanduser()
    status = WeightsStatus(root=str(root) if root.is_dir() else location)
    for name, (repo, sub, marker) in COMPONENTS.items():
        path = _local(root, repo, sub, marker) if root.is_dir() else _cached(repo, sub, marker)
        if path is None and root.is_dir():
            path = _cached(repo, sub, marker)  # SDXL may live in the hub cache beside a local Step1X folder
        if path is None:
            status.missing.append(name)
        else:
            status.found[name] = path
    return status


def download(components: list[str] | None = None) -> WeightsStatus:
    """Fetch the given components (default: all) into the hub cache."""
    from huggingface_hub import snapshot_download

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise BackendError("weights_not_found", "HF_HUB_OFFLINE is set; downloads are disabled")
    from backend.texture.weights import BASE_FILES, VAE_FILES

    # only what the stages read: the whole SDXL base repo holds tens of GB of unused variants
    patterns = {"sdxl-base": BASE_FILES, "sdxl-vae": VAE_FILES}
    for name in components or list(COMPONENTS):
        if name not in COMPONENTS:
            raise BackendError("invalid_request", f"unknown component {name!r}; expected {', '.join(COMPONENTS)}")
        repo, sub, _ = COMPONENTS[name]
        try:
            snapshot_download(repo, allow_patterns=patterns.get(name, [f"{sub}/*"]))
        except Exception as exc:  # network, auth or disk: all end the same way for the user
            raise BackendError("weights_not_found", f"could not download {name} from {repo}: {exc}") from None
    return find_weights()
