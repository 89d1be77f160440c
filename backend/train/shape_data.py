"""Datasets over `backend.data.prepare` outputs (one .npz per object) and `blender_render` folders.

`ShapeSamples` draws, per object and visit, `n_samples` surface and sharp-edge points (without
replacement when there are enough) and `n_supervision` SDF points, half near the surface, half in
the volume; an optional random mirror x -> -x applies to all of them consistently.
`ShapeImages` adds one random rendered view of the same object (same id in both folders),
recentred on white as at inference, and its labels for the Label model.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from backend.geometry.conditioners import ShapeLabels
from backend.geometry.image_prep import prepare_image
from shared.errors import BackendError

SAMPLE_KEYS = ("surface", "sharp_surface", "near_surface_points", "volume_rand_points")


def npz_files(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise BackendError("input_not_found", f"training data folder {folder} does not exist")
    files = sorted(p for p in folder.glob("*.npz") if not p.name.startswith("."))
    if not files:
        raise BackendError("input_not_found", f"no .npz files in {folder} (run python -m backend.data.prepare)")
    return files


def _pick(rng: np.random.Generator, array: np.ndarray, count: int) -> np.ndarray:
    return array[rng.choice(len(array), size=count, replace=len(array) < count)]


class ShapeSamples(Dataset):
    def __init__(self, files: list[Path], n_samples: int, n_supervision: int = 0, flip_x: bool = False):
        self.files, self.n_samples, self.n_supervision, self.flip_x = list(files), n_samples, n_supervision, flip_x

    def __len__(self) -> int:
        return len(self.files)

    def object_id(self, index: int) -> str:
        return self.files[index].stem

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        path = self.files[index]
        try:
            with np.load(path) as data:
                arrays = {k: data[k] for k in SAMPLE_KEYS}
        except (OSError, KeyError, ValueError) as exc:
            raise BackendError("input_unreadable", f"{path}: not a prepared sample file ({exc})") from None
        rng = np.random.default_rng(torch.randint(0, 2**63 - 1, ()).item())  # follows torch's seeding per worker
        item = {"surface": _pick(rng, arrays["surface"], self.n_samples),
                "sharp_surface": _pick(rng, arrays["sharp_surface"], self.n_samples)}
        if self.n_supervision:
            near = self.n_supervision // 2
            sup = np.concatenate([_pick(rng, arrays["near_surface_points"], near),
                                  _pick(rng, arrays["volume_rand_points"], self.n_supervision - near)])
            item["points"], item["sdf"] = sup[:, :3], sup[:, 3]
        if self.flip_x and rng.random() < 0.5:
            for key in ("surface", "sharp_surface"):
                item[key] = item[key] * np.array([-1, 1, 1, -1, 1, 1], dtype=np.float32)
            if "points" in item:
                item["points"] = item["points"] * np.array([-1, 1, 1], dtype=np.float32)
        return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in item.items()}


@dataclass
class RenderedObject:
    folder: Path
    color_files: list[Path]


def rendered_objects(renders_dir: str | Path) -> dict[str, RenderedObject]:
    """Object id -> its colour views, for every complete and checked blender_render folder."""
    root = Path(renders_dir)
    if not root.is_dir():
        raise BackendError("input_not_found", f"renders folder {root} does not exist")
    found = {}
    for meta_path in sorted(root.glob("*/meta.json")):
        meta = json.loads(meta_path.read_text())
        if meta.get("status") != "ok":
            continue
        colors = [meta_path.parent / v["files"]["color"] for v in meta["views"] if "color" in v["files"]]
        if colors:
            found[meta_path.parent.name] = RenderedObject(meta_path.parent, colors)
    return found


def read_labels(path: str | Path | None) -> dict[str, ShapeLabels]:
    if path is None:
        return {}
    try:
        raw = json.loads(Path(path).read_text())
        return {k: ShapeLabels(**{f: str(v.get(f, "")) for f in ("pose", "symmetry", "geometry_quality")})
                for k, v in raw.items()}
    except (OSError, ValueError, AttributeError) as exc:
        raise BackendError("input_unreadable", f"labels file {path}: {exc}") from None


NO_LABELS = ShapeLabels(pose="", symmetry="", geometry_quality="")  # zero tokens: "not specified"


class ShapeImages(Dataset):
    """Point samples plus one random rendered view (a PIL image prepared as at inference)."""

    def __init__(self, samples: ShapeSamples, renders: dict[str, RenderedObject],
                 labels: dict[str, ShapeLabels] | None = None, foreground_ratio: float = 0.9):
        paired = [i for i in range(len(samples)) if samples.object_id(i) in renders]
        if not paired:
            raise BackendError("input_not_found", "no prepared object has renders with the same id "
                               "(prepare and render the same source files)")
        self.samples, self.renders, self.index = samples, renders, paired
        self.labels, self.foreground_ratio = labels or {}, foreground_ratio

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        index = self.index[i]
        oid = self.samples.object_id(index)
        item = self.samples[index]
        view = random.Random(torch.randint(0, 2**63 - 1, ()).item()).choice(self.renders[oid].color_files)
        item["image"] = prepare_image(view, "auto", self.foreground_ratio).rgb
        item["labels"] = self.labels.get(oid, NO_LABELS)
        return item


def collate_shapes(items: list[dict]) -> dict:
    """Stack tensors; keep images and labels as lists (the conditioners take lists)."""
    out = {}
    for key in items[0]:
        values = [it[key] for it in items]
        out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return out
