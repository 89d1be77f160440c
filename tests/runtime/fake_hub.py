"""A Hugging Face cache written by hand (models--org--name/{refs/main, snapshots/REV, blobs}) and a
fake hub that "downloads" into it, for the weights lookup and `download` tests."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save

from backend.runtime.weights import RemoteFile

REV = "0123456789abcdef0123456789abcdef01234567"


def tensors(n: int = 64) -> bytes:
    return save({"weight": np.arange(n, dtype=np.float32)})


def geometry_files(sub: str, label: bool = False) -> dict[str, bytes]:
    """A geometry folder in the release layout: model_index.json naming its parts, their files."""
    parts = ["transformer", "vae", "visual_encoder"] + (["label_encoder"] if label else [])
    index = {"_class_name": "Step1X3DGeometryPipeline", "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
             **{p: ["step1x3d_geometry.models", p.title()] for p in parts}, "caption_encoder": [None, None]}
    files = {f"{sub}/model_index.json": json.dumps(index).encode(),
             f"{sub}/scheduler/scheduler_config.json": b'{"shift": 1.0}'}
    for i, p in enumerate(parts):
        files[f"{sub}/{p}/config.json"] = b"{}"
        files[f"{sub}/{p}/diffusion_pytorch_model.safetensors"] = tensors(64 + i)  # distinct blobs
    return files


def repo_dir(cache: Path, repo: str) -> Path:
    return cache / ("models--" + repo.replace("/", "--"))


def write_repo(cache: Path, repo: str, files: dict[str, bytes]) -> Path:
    """Files as huggingface_hub lays them out: content-addressed blobs, snapshot symlinks, refs/main."""
    root = repo_dir(cache, repo)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(REV)
    for name, data in files.items():
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = root / "snapshots" / REV / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(blob)
    return root / "snapshots" / REV


class FakeHub:
    """`plan` lists a repo's files matching the patterns; `fetch` writes one in chunks of 100 bytes."""

    def __init__(self, cache: Path, repos: dict[str, dict[str, bytes]], drop: str = ""):
        self.cache, self.repos, self.drop = cache, repos, drop
        self.fetched: list[str] = []

    def plan(self, repo: str, patterns: list[str]) -> list[RemoteFile]:
        from fnmatch import fnmatch

        files = self.repos[repo]
        return [RemoteFile(repo, name, len(data)) for name, data in sorted(files.items())
                if any(fnmatch(name, p) for p in patterns)]

    def fetch(self, file: RemoteFile, on_bytes) -> None:
        data = self.repos[file.repo][file.filename]
        self.fetched.append(file.filename)
        for start in range(0, len(data), 100):
            on_bytes(len(data[start:start + 100]))
        if file.filename != self.drop:  # a file the "network" lost
            write_repo(self.cache, file.repo, {file.filename: data})

    def cache_dir(self) -> Path:
        return self.cache
