"""The texture adapter's training samples, read from `blender_render` output folders.

Per object: the 6 canonical views (front, right, back, left, top, bottom - the order the MV-Adapter
attention expects) as colour over grey 0.5, their control maps in the reference's encoding
(Blender Z-up world position + 0.5 and normal * 0.5 + 0.5, grey 0.5 off the object; the very
values the inference renderer produces), and a reference image made from one random listed view
exactly as inference prepares the user's image. Views are resized to the training resolution when
the renders differ.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from backend.texture.reference import reference_image
from backend.data.renders import load_meta, load_view
from shared.errors import BackendError
from shared.render_format import BACKGROUND
from shared.views import VIEW_NAMES


def _canonical_indices(meta: dict) -> list[int] | None:
    by_name = {v["name"]: i for i, v in enumerate(meta["views"]) if v.get("kind") == "canonical"}
    if not all(name in by_name for name in VIEW_NAMES):
        return None
    indices = [by_name[name] for name in VIEW_NAMES]
    needed = ("color", "position", "normal")
    return indices if all(all(k in meta["views"][i]["files"] for k in needed) for i in indices) else None


def _resize(image: torch.Tensor, size: int) -> torch.Tensor:
    if image.shape[-1] == size and image.shape[-2] == size:
        return image
    return F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


class MultiViewRenders(Dataset):
    def __init__(self, renders_dir: str | Path, resolution: int, reference_views: tuple[str, ...],
                 captions: str | Path | None = None, prompt: str = "high quality"):
        root = Path(renders_dir)
        if not root.is_dir():
            raise BackendError("input_not_found", f"renders folder {root} does not exist")
        self.objects: list[tuple[Path, list[int], list[int]]] = []
        for meta_path in sorted(root.glob("*/meta.json")):
            meta = load_meta(meta_path.parent)
            views = _canonical_indices(meta) if meta.get("status") == "ok" else None
            refs = [i for i, v in enumerate(meta["views"]) if v["name"] in reference_views and "color" in v["files"]]
            if views and refs:
                self.objects.append((meta_path.parent, views, refs))
        if not self.objects:
            raise BackendError("input_not_found", f"no complete 6-view render (color, position, normal) in {root}")
        self.resolution, self.prompt = resolution, prompt
        self.captions = json.loads(Path(captions).read_text()) if captions else {}

    def __len__(self) -> int:
        return len(self.objects)

    def __getitem__(self, index: int) -> dict:
        folder, views, refs = self.objects[index]
        meta = load_meta(folder)
        colours, controls = [], []
        for i in views:
            v = load_view(folder, i, meta)
            alpha = v.color[..., 3:]
            colours.append(v.color[..., :3] * alpha + BACKGROUND * (1.0 - alpha))
            controls.append(v.control if v.mask is not None else np.where(alpha > 0.5, v.control, BACKGROUND))
        size = self.resolution
        as_tensor = lambda a: _resize(torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32)), size)
        choice = random.Random(torch.randint(0, 2**63 - 1, ()).item()).choice(refs)
        ref = load_view(folder, choice, meta).color
        rgb = np.round(ref[..., :3] * 255.0).astype(np.uint8)
        return {
            "views": torch.stack([as_tensor(c) for c in colours]),
            "control": torch.stack([as_tensor(c) for c in controls]),
            "reference": reference_image(rgb, ref[..., 3], size),
            "prompt": self.captions.get(folder.name, self.prompt),
        }


def collate_views(items: list[dict]) -> dict:
    return {"views": torch.stack([it["views"] for it in items]), "control": torch.stack([it["control"] for it in items]),
            "reference": torch.stack([it["reference"] for it in items]), "prompt": [it["prompt"] for it in items]}
