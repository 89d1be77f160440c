"""Where the model weights are: a local folder in the official layout, or hub repos in the cache.

Step1X-3D's own components (geometry, texture adapter) come from the folder or hub id the user
names (`--weights`, STEP1X3D_WEIGHTS; default `stepfun-ai/Step1X-3D`); SDXL and its VAE from their
own repos (or beside a local Step1X-3D folder). A component counts as present only when every
file its loader reads is there and whole: JSON parses, a safetensors file is as long as its header
says, so an interrupted copy or download is reported as incomplete instead of failing at load.

Nothing here downloads except `download`, the one explicit, user-requested network operation; it
fetches only the files the chosen components read, checks the free disk space first, and reports
every file's bytes through a callback (the CLI's progress line and `--json` events).
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from shared.errors import BackendError

STEP1X3D_REPO = "stepfun-ai/Step1X-3D"
SDXL_REPO = "stabilityai/stable-diffusion-xl-base-1.0"
SDXL_VAE_REPO = "madebyollin/sdxl-vae-fp16-fix"
ENV_VAR = "STEP1X3D_WEIGHTS"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

# What the texture stage reads of SDXL (the whole base repo holds tens of GB of unused variants).
SDXL_BASE_FILES = ["model_index.json", "scheduler/*", "tokenizer/*", "tokenizer_2/*", "unet/config.json",
                   "text_encoder/config.json", "text_encoder_2/config.json",
                   "unet/diffusion_pytorch_model.fp16.safetensors", "text_encoder/model.fp16.safetensors",
                   "text_encoder_2/model.fp16.safetensors"]
SDXL_VAE_FILES = ["config.json", "diffusion_pytorch_model.safetensors"]
# the parts of a geometry folder that GeometryPipeline.from_pretrained loads when model_index.json names them
GEOMETRY_PARTS = ("transformer", "vae", "visual_encoder", "label_encoder")


def _either(folder: str, stem: str) -> tuple[str, str]:
    return f"{folder}/{stem}.fp16.safetensors", f"{folder}/{stem}.safetensors"


@dataclass(frozen=True)
class Component:
    """One loadable unit. `needs`: files (relative to its folder) the loader reads, each group
    satisfied by any one of its names; geometry folders add what their model_index.json names."""

    repo: str | None  # None: the Step1X-3D repo, or whatever --weights names
    subfolder: str
    patterns: tuple[str, ...]  # what `download` fetches, relative to the repo
    needs: tuple[tuple[str, ...], ...]
    indexed: bool = False


def _geometry(sub: str) -> Component:
    return Component(None, sub, (f"{sub}/*",), (("model_index.json",), ("scheduler/scheduler_config.json",)), True)


COMPONENTS: dict[str, Component] = {
    "geometry-base": _geometry("Step1X-3D-Geometry-1300m"),
    "geometry-label": _geometry("Step1X-3D-Geometry-Label-1300m"),
    "texture-adapter": Component(None, "Step1X-3D-Texture", ("Step1X-3D-Texture/step1x-3d-ig2v.safetensors",),
                                 (("step1x-3d-ig2v.safetensors",),)),
    "sdxl-base": Component(SDXL_REPO, "", tuple(SDXL_BASE_FILES), (
        ("model_index.json",), ("scheduler/scheduler_config.json",), ("tokenizer/vocab.json",),
        ("tokenizer/merges.txt",), ("tokenizer_2/vocab.json",), ("tokenizer_2/merges.txt",), ("unet/config.json",),
        ("text_encoder/config.json",), ("text_encoder_2/config.json",), _either("unet", "diffusion_pytorch_model"),
        _either("text_encoder", "model"), _either("text_encoder_2", "model"))),
    "sdxl-vae": Component(SDXL_VAE_REPO, "", tuple(SDXL_VAE_FILES), tuple((f,) for f in SDXL_VAE_FILES)),
}
GEOMETRY_COMPONENT = {"base": "geometry-base", "label": "geometry-label"}
TEXTURE_COMPONENTS = ("texture-adapter", "sdxl-base", "sdxl-vae")


def required_components(settings: dict, with_geometry: bool) -> list[str]:
    """The components a job (or a download for such jobs) needs: one geometry model, texture models."""
    needed = [GEOMETRY_COMPONENT[settings["model"]]] if with_geometry else []
    if settings["texture"]:
        needed += list(TEXTURE_COMPONENTS)
    return needed


# ---- is a file whole? ----
def safetensors_length(path: Path) -> int | None:
    """The file length a safetensors header promises (8 + header + largest tensor end), None if unreadable."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            size = int.from_bytes(head, "little") if len(head) == 8 else -1
            if not 0 < size < 1 << 28:
                return None
            header = json.loads(fh.read(size))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None
    return 8 + size + max(ends, default=0)


def file_complete(path: Path) -> bool:
    """Present (a cache symlink's blob too), non-empty, and whole as far as its format tells."""
    try:
        size = path.stat().st_size
    except OSError:
        return False
    if not path.is_file() or size == 0:
        return False
    if path.suffix == ".safetensors":
        return safetensors_length(path) == size
    if path.suffix == ".json":
        try:
            json.loads(path.read_bytes())
        except (OSError, ValueError):
            return False
    return True


def lacking(folder: Path, component: Component) -> list[str]:
    """Files of `component` missing or incomplete under `folder` (first name of each unmet group)."""
    groups = list(component.needs)
    index_path = folder / "model_index.json"
    if component.indexed and file_complete(index_path):
        index = json.loads(index_path.read_bytes())
        for part in GEOMETRY_PARTS:
            entry = index.get(part)
            if isinstance(entry, list) and len(entry) == 2 and entry[1]:
                groups += [(f"{part}/config.json",), (f"{part}/diffusion_pytorch_model.safetensors",)]
    return [group[0] for group in groups if not any(file_complete(folder / name) for name in group)]


# ---- where are they? ----
@dataclass
class WeightsStatus:
    root: str  # the folder or hub id that was searched
    found: dict[str, Path] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    incomplete: dict[str, list[str]] = field(default_factory=dict)  # component -> files missing or cut short

    def describe(self) -> str:
        if not self.missing:
            return f"all weights found under {self.root}"
        parts = [f"{name} ({len(self.incomplete[name])} files missing or incomplete, e.g. {self.incomplete[name][0]})"
                 if self.incomplete.get(name) else name for name in self.missing]
        return f"missing under {self.root}: {', '.join(parts)}"

    def as_dict(self) -> dict:
        return {"root": self.root, "found": {k: str(v) for k, v in self.found.items()}, "missing": self.missing,
                "incomplete": self.incomplete}


def is_hub_id(location: str) -> bool:
    return bool(HUB_ID.match(location)) and not Path(location).expanduser().exists()


def repo_for(component: Component, location: str) -> str:
    """The hub repo a component comes from when `location` is a hub id."""
    return component.repo or location


def _snapshot(repo: str) -> Path | None:
    """The cached snapshot folder of `repo` (its refs/main), without touching the network."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, local_files_only=True))
    except Exception:  # not cached (huggingface_hub raises several types for that)
        return None


def _candidates(component: Component, location: str) -> Iterable[Path]:
    if not is_hub_id(location):
        root = Path(location).expanduser()
        # a local root holds the Step1X-3D layout directly (or in a Step1X-3D folder), and the SDXL
        # repos beside it in folders named after the repo (e.g. <root>/stable-diffusion-xl-base-1.0)
        repo = component.repo or STEP1X3D_REPO
        for base in (root, root / repo.split("/")[-1]):
            yield base / component.subfolder if component.subfolder else base
        if component.repo is None:
            return
    snapshot = _snapshot(repo_for(component, location))
    if snapshot is not None:
        yield snapshot / component.subfolder if component.subfolder else snapshot


def default_location(location: str | None) -> str:
    return location or os.environ.get(ENV_VAR) or STEP1X3D_REPO


def find_weights(location: str | None = None) -> WeightsStatus:
    """Look for every component in `location` (folder or hub id) and, for SDXL, the hub cache."""
    location = default_location(location)
    root = Path(location).expanduser()
    status = WeightsStatus(root=location if is_hub_id(location) else str(root))
    for name, component in COMPONENTS.items():
        best: list[str] | None = None
        for folder in _candidates(component, location):
            gaps = lacking(folder, component)
            if not gaps:
                status.found[name] = folder
                break
            if folder.is_dir() and (best is None or len(gaps) < len(best)):
                best = gaps
        else:
            status.missing.append(name)
            if best is not None:
                status.incomplete[name] = best
    return status


# ---- download ----
@dataclass(frozen=True)
class RemoteFile:
    repo: str
    filename: str
    size: int  # bytes still to fetch (0 when cached)


class Hub(Protocol):
    """The two hub operations `download` needs (huggingface_hub in use, a fake in tests)."""

    def plan(self, repo: str, patterns: list[str]) -> list[RemoteFile]: ...

    def fetch(self, file: RemoteFile, on_bytes: Callable[[int], None]) -> None: ...

    def cache_dir(self) -> Path: ...


class HuggingFaceHub:
    def plan(self, repo: str, patterns: list[str]) -> list[RemoteFile]:
        from huggingface_hub import snapshot_download

        infos = snapshot_download(repo, allow_patterns=patterns, dry_run=True)
        return [RemoteFile(repo, i.filename, int(i.file_size or 0)) for i in infos if i.will_download]

    def fetch(self, file: RemoteFile, on_bytes: Callable[[int], None]) -> None:
        from huggingface_hub import hf_hub_download

        hf_hub_download(file.repo, file.filename, tqdm_class=_byte_counter(on_bytes))

    def cache_dir(self) -> Path:
        from huggingface_hub import constants

        return Path(constants.HF_HUB_CACHE)


def _byte_counter(on_bytes: Callable[[int], None]) -> type:
    """A silent tqdm class that hands each byte increment to `on_bytes` (huggingface_hub reports
    through the tqdm class it is given; a resumed file starts at `initial`)."""
    from tqdm import tqdm

    class ByteCounter(tqdm):
        def __init__(self, *args: Any, **kwargs: Any):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            if kwargs.get("initial"):
                on_bytes(int(kwargs["initial"]))

        def update(self, n: float | None = 1) -> None:
            on_bytes(int(n or 0))

        def update_transfer(self, n: int) -> None:
            """Network bytes (Xet); the written bytes arrive through `update`, so these are not counted."""

    return ByteCounter


Event = dict[str, Any]


def free_bytes(folder: Path) -> int:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() not in ("0", "", "false", "no", "off")


def download(components: list[str] | None = None, location: str | None = None,
             on_event: Callable[[Event], None] = lambda event: None, hub: Hub | None = None) -> WeightsStatus:
    """Fetch what `components` (default: all) lack into the hub cache; raises `weights_not_found`
    naming what is still missing, `disk_full` before starting when the files would not fit."""
    location = default_location(location)
    names = components or list(COMPONENTS)
    unknown = [n for n in names if n not in COMPONENTS]
    if unknown:
        raise BackendError("invalid_request", f"unknown component {', '.join(unknown)}; expected {', '.join(COMPONENTS)}")
    todo = [n for n in names if n not in find_weights(location).found]
    in_folder = [n for n in todo if COMPONENTS[n].repo is None and not is_hub_id(location)]
    if in_folder:
        raise BackendError("weights_not_found", f"{', '.join(in_folder)} missing from the folder {location}; downloads "
                           "go into the Hugging Face cache: name a hub id with --weights, or copy the files there")
    if todo and _offline():
        raise BackendError("weights_not_found", f"HF_HUB_OFFLINE is set; downloads are disabled; missing: {', '.join(todo)}")
    hub = hub or HuggingFaceHub()
    files: list[RemoteFile] = []
    for name in todo:
        component = COMPONENTS[name]
        repo = repo_for(component, location)
        try:
            files += [f for f in hub.plan(repo, list(component.patterns)) if f not in files]
        except Exception as exc:  # network, auth, unknown repo: all end the same way for the user
            raise BackendError("weights_not_found", f"cannot list {name} in {repo}: {type(exc).__name__}: {exc}") from None
    total = sum(f.size for f in files)
    free = free_bytes(hub.cache_dir())
    if total > free:
        raise BackendError("disk_full", f"the download needs {total / 1e9:.2f} GB and {hub.cache_dir()} has "
                           f"{free / 1e9:.2f} GB free")
    on_event({"event": "start", "files": len(files), "total_bytes": total, "components": todo})
    done = 0
    for file in files:
        got = 0

        def on_bytes(n: int) -> None:
            nonlocal got, done
            got, done = got + n, done + n
            on_event({"event": "progress", "file": f"{file.repo}/{file.filename}", "bytes": got, "total": file.size,
                      "done_bytes": done, "total_bytes": total})

        try:
            hub.fetch(file, on_bytes)
        except Exception as exc:
            raise BackendError("weights_not_found", f"could not download {file.repo}/{file.filename}: "
                               f"{type(exc).__name__}: {exc}") from None
        done += file.size - got  # a file whose size the hub did not report exactly
    status = find_weights(location)
    still = [n for n in names if n not in status.found]
    if still:
        raise BackendError("weights_not_found", f"still missing after the download: {status.describe()}")
    return status
